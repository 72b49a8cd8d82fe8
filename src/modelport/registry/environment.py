"""Library versions captured at registration, and how they compare with the serving process.

A native scikit-learn model (skops or pickle) may change results or fail to load under another
scikit-learn minor version, and a PyTorch program under another torch minor version, so those
differences are errors; an ONNX model depends only on the ONNX Runtime that serves it, so
differences there are information; XGBoost and LightGBM files and TensorFlow SavedModels load
across releases, so differences there are warnings (the library missing is an error). Libraries
the serving runtime does not use (:data:`SERVED_WITH`: the converters, scikit-learn under ONNX
Runtime...) and patch releases of Python are not compared at all: nothing is said about them.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Literal

from packaging.version import InvalidVersion, Version

Severity = Literal["error", "warning", "info"]

# Gradient-boosting libraries a scikit-learn Pipeline may hold (XGBClassifier, LGBMRegressor, ...):
# recorded when installed, since the native model then needs them to load and predict alike.
BOOSTING_LIBRARIES = ("xgboost", "lightgbm")
FRAMEWORK_LIBRARIES: dict[str, tuple[str, ...]] = {
    "sklearn": ("scikit-learn", "scipy", "skops", "skl2onnx", "onnx", "onnxruntime", *BOOSTING_LIBRARIES),
    "onnx": ("onnx", "onnxruntime"),
    "python": (),
    "xgboost": ("xgboost", "scikit-learn", "onnxmltools", "onnx", "onnxruntime"),
    "lightgbm": ("lightgbm", "scikit-learn", "onnxmltools", "onnx", "onnxruntime"),
    "torch": ("torch", "onnxscript", "onnx", "onnxruntime"),
    "tensorflow": ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"),
}
# Import names whose distribution goes by other names: the CPU-only wheel of XGBoost is xgboost-cpu.
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "xgboost": ("xgboost", "xgboost-cpu"),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),  # TensorFlow's CPU-only wheel
}
NOT_INSTALLED = "not installed"
# What each built-in runtime uses to load and run a model, Python and NumPy aside: only these are
# compared for it. A runtime not listed (custom Python code, plugins) may use anything recorded.
SERVED_WITH: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime",),
    "sklearn": ("scikit-learn", "scipy", "skops", *BOOSTING_LIBRARIES),
    "xgboost": ("xgboost",),
    "lightgbm": ("lightgbm",),
    "torch": ("torch",),
    "tensorflow": ("tensorflow",),
}


@dataclass(frozen=True, slots=True)
class Mismatch:
    library: str
    recorded: str
    running: str
    severity: Severity
    message: str


def installed(library: str) -> str | None:
    """The installed version of a distribution (or of the first installed of an import name's
    distributions, :data:`DISTRIBUTIONS`), or None."""
    for distribution in DISTRIBUTIONS.get(library, (library,)):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def capture(framework: str) -> dict[str, str]:
    """Python, NumPy and the framework's libraries, as installed now."""
    versions = {"python": platform.python_version()}
    for library in ("numpy", *FRAMEWORK_LIBRARIES.get(framework, ())):
        version = installed(library)
        if version is not None:
            versions[library] = version
    return versions


def running_versions(libraries: list[str]) -> dict[str, str]:
    versions = {}
    for library in libraries:
        version = platform.python_version() if library == "python" else installed(library)
        versions[library] = version if version is not None else NOT_INSTALLED
    return versions


def _parsed(version: str) -> Version | None:
    try:
        return Version(version)
    except InvalidVersion:
        return None


def _same(was: str, now: str) -> bool:
    """Equal versions (``1.5`` and ``1.5.0`` are the same release; pre-releases are not)."""
    a, b = _parsed(was), _parsed(now)
    return was == now if a is None or b is None else a == b


def _release(version: str, parts: int) -> tuple[int | str, ...]:
    """The first ``parts`` numbers of the release: ``1.5rc1`` and ``1.5.0`` are both (1, 5)."""
    parsed = _parsed(version)
    if parsed is None:
        return tuple(version.split("+", 1)[0].split(".")[:parts])
    release = parsed.release + (0,) * parts
    return release[:parts]


def compare(
    recorded: Mapping[str, str], *, runtime: str, pickled: bool = False, running: Mapping[str, str] | None = None
) -> list[Mismatch]:
    """How the running versions differ from ``recorded`` for a model served by ``runtime``.

    ``pickled``: the artifact is a pickle (a NumPy major change breaks pickled arrays).
    ``running``: the versions to compare with (default: this process's), e.g. an image's pins.
    Libraries ``runtime`` does not use and Python patch releases are left out.
    """
    used = SERVED_WITH.get(runtime)
    libraries = sorted(k for k in recorded if used is None or k in ("python", "numpy", *used))
    running = {**running_versions(libraries), **(running or {})}
    mismatches = []
    for library in libraries:
        was, now = recorded[library], running[library]
        if _same(was, now) or (library == "python" and _release(was, 2) == _release(now, 2)):
            continue
        severity = _severity(library, was, now, runtime=runtime, pickled=pickled)
        mismatches.append(Mismatch(library, was, now, severity, _message(library, was, now, severity)))
    return mismatches


def _severity(library: str, was: str, now: str, *, runtime: str, pickled: bool) -> Severity:
    if runtime == "onnx":
        return "warning" if library == "onnxruntime" and now == NOT_INSTALLED else "info"
    if runtime == "sklearn":
        if library == "scikit-learn" and (now == NOT_INSTALLED or _release(was, 2) != _release(now, 2)):
            return "error"
        if library == "numpy" and pickled and _release(was, 1) != _release(now, 1):
            return "error"
        if library in ("scikit-learn", "numpy", "scipy", "python", *BOOSTING_LIBRARIES):
            return "warning"
        return "info"  # skops, which reads its files alike across releases
    if runtime in BOOSTING_LIBRARIES:
        # the model file is the library's own format, stable across versions: a difference is a
        # warning; the library missing means the model cannot load
        return "error" if library == runtime and now == NOT_INSTALLED else "warning"
    if runtime == "torch":
        # an exported program or a TorchScript file may not load under another torch minor version
        if library == "torch" and (now == NOT_INSTALLED or _release(was, 2) != _release(now, 2)):
            return "error"
        return "warning"
    if runtime == "tensorflow":
        # a SavedModel is a graph TensorFlow keeps loadable across releases: a difference is a warning
        return "error" if library == "tensorflow" and now == NOT_INSTALLED else "warning"
    return "warning"


def _message(library: str, was: str, now: str, severity: Severity) -> str:
    if library == "python":
        fix = f"re-register the model under Python {now}, or serve it with Python {was}"
    elif now == NOT_INSTALLED:
        fix = f"install {library}=={was} in the serving environment"
    else:
        fix = f"re-register the model with {library} {now}, or pin {library}=={was} in the serving environment"
    consequence = {
        "error": "the model may fail to load or give different results",
        "warning": "results may differ slightly",
        "info": "the serving runtime does not depend on it",
    }[severity]
    return f"{library} {was} was recorded at registration, {now} is running: {consequence}; {fix}"
