"""What an image must install to serve some versions, pinned: the environment recorded at
registration where it matters, the versions installed here for everything else.

:func:`image_requirements` starts from modelport's own dependencies and the libraries each
version's runtime needs (a native scikit-learn model needs scikit-learn and skops; an ONNX model
only what modelport needs anyway), follows the installed packages' dependencies for the image's
platform (Linux, this Python's minor version), and pins each at the version recorded at
registration when a version recorded it, else at the installed one. Where versions recorded
different releases of one library, the pin is the one every version can live with, and a pin that
one of them cannot load under (:func:`modelport.registry.environment.compare` says ``error``) is
refused with the versions named.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from modelport.errors import InvalidSetting
from modelport.registry.environment import DISTRIBUTIONS, compare
from modelport.types import ModelVersion

# What each runtime imports beyond modelport's own dependencies, to load and predict.
RUNTIME_LIBRARIES: dict[str, tuple[str, ...]] = {
    "onnx": (),
    "sklearn": ("scikit-learn", "skops", "pandas", "joblib", "threadpoolctl"),
    "python": (),
    "xgboost": ("xgboost",),
    "lightgbm": ("lightgbm",),
    "torch": ("torch",),
    "tensorflow": ("tensorflow",),
}
REGISTRY_LIBRARIES = ("psycopg", "psycopg-binary")  # --models registry: the shared PostgreSQL registry
S3_LIBRARIES = ("boto3",)  # --models registry: artifacts in S3 (MODELPORT_ARTIFACTS=s3://...), when installed here
# Libraries the environment of a version records that do not decide how it is served
NOT_SERVING = frozenset({"skl2onnx", "onnx"})
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


@dataclass(frozen=True, slots=True)
class Requirements:
    """The pinned distributions an image installs (name -> version) and what was decided on the way."""

    pins: dict[str, str]
    notes: list[str] = field(default_factory=list)  # warnings worth a line each

    def lines(self) -> list[str]:
        return [f"{name}=={version}" for name, version in sorted(self.pins.items())]


def machine(platform_spec: str | None) -> str:
    """The CPU architecture (``x86_64``/``aarch64``) of ``linux/amd64``-style ``platform_spec``, default this one."""
    if platform_spec is None:
        arch = platform.machine().lower()
    else:
        system, _, arch = platform_spec.lower().partition("/")
        if system != "linux":
            raise InvalidSetting(f"--platform {platform_spec!r}: modelport images are Linux images (linux/amd64)")
        arch = arch.split("/")[0]
    if arch not in _ARCH:
        raise InvalidSetting(
            f"platform architecture {arch!r} is not supported: give linux/amd64 or linux/arm64 "
            "(the wheels of modelport's dependencies exist for those)"
        )
    return _ARCH[arch]


def image_requirements(
    versions: Iterable[ModelVersion],
    *,
    own: tuple[str, list[str]] | None = None,
    registry: bool = False,
    extra: Iterable[str] = (),
    arch: str = "x86_64",
) -> Requirements:
    """The pinned requirements of an image serving ``versions`` (see the module's docstring).

    ``own``: the version and ``Requires-Dist`` lines of the modelport wheel the image installs
    (default: the installed modelport's). ``registry``: the image serves from a shared PostgreSQL
    registry. ``extra``: more distributions the user asks for (a custom runtime's), by name,
    pinned as installed.
    """
    versions = list(versions)
    if own is None:
        own = (metadata.version("modelport"), metadata.requires("modelport") or [])
    roots = [*(line for line in own[1] if _unconditional(line)), *extra]
    for version in versions:
        roots += [_distribution(name) for name in RUNTIME_LIBRARIES.get(version.runtime, ())]
    notes: list[str] = []
    if registry:
        roots += REGISTRY_LIBRARIES
        missing = [name for name in S3_LIBRARIES if _installed(name) is None]
        if missing:
            notes.append(
                f"{', '.join(missing)} is not installed here, so the image cannot read s3:// artifacts: "
                "pip install 'modelport[s3]' and build again if the registry's artifacts are in S3"
            )
        roots += [name for name in S3_LIBRARIES if name not in missing]
    installed = _closure(roots, arch)
    pins = {"modelport": own[0], **installed}
    for name, recorded in _recorded(versions, set(installed)).items():
        pin, note = _choose(name, recorded, installed[name], versions)
        pins[name] = pin
        if note:
            notes.append(note)
    python = f"{platform.python_version_tuple()[0]}.{platform.python_version_tuple()[1]}"
    for version in versions:
        was = version.environment.get("python", "")
        if was and ".".join(was.split(".")[:2]) != python:
            notes.append(
                f"{version.ref} was registered under Python {was}; the image gets Python {python} (the wheels "
                f"are for the Python running modelport build): re-register it under {python} if it matters"
            )
    return Requirements(pins, notes)


def _closure(roots: Iterable[str], arch: str) -> dict[str, str]:
    """Installed distribution name -> version for ``roots`` and everything they need on Linux."""
    environment = {
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": arch,
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "python_full_version": platform.python_version(),
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    found: dict[str, str] = {}
    pending = [(root, frozenset[str]()) for root in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        text, extras = pending.pop()
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            raise InvalidSetting(f"{text!r} is not a requirement: {exc}") from None
        if requirement.marker is not None and not _applies(requirement.marker, environment, frozenset()):
            continue
        name = canonicalize_name(requirement.name)
        wanted = extras | frozenset(requirement.extras)
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise InvalidSetting(
                f"{name} is needed in the image but not installed here, so its version and dependencies are "
                f"unknown: install it (pip install {name}, or the modelport extra that brings it) and build again"
            ) from None
        found[name] = dist.version
        for line in dist.requires or ():
            dependency = Requirement(line)
            if dependency.marker is None or _applies(dependency.marker, environment, wanted):
                pending.append((_without_marker(dependency), frozenset()))
    return found


def _distribution(library: str) -> str:
    """The installed distribution that provides ``library`` (xgboost-cpu for xgboost, ...), else its name."""
    for name in DISTRIBUTIONS.get(library, (library,)):
        if _installed(name) is not None:
            return name
    return library


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _unconditional(line: str) -> bool:
    """A dependency that is not behind an extra (the image installs modelport without extras)."""
    marker = Requirement(line).marker
    return marker is None or "extra" not in str(marker)


def _applies(marker: Marker, environment: dict[str, str], extras: frozenset[str]) -> bool:
    return any(marker.evaluate({**environment, "extra": extra}) for extra in (extras or {""}))


def _without_marker(requirement: Requirement) -> str:
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return f"{requirement.name}{extras}"


def _recorded(versions: list[ModelVersion], names: set[str]) -> dict[str, dict[str, list[ModelVersion]]]:
    """library -> recorded release -> the versions that recorded it, for libraries the image installs."""
    result: dict[str, dict[str, list[ModelVersion]]] = {}
    for version in versions:
        for library, release in version.environment.items():
            name = canonicalize_name(_distribution(library))  # recorded as "xgboost", installed as xgboost-cpu
            if name in names and name not in NOT_SERVING and _valid(release):
                result.setdefault(name, {}).setdefault(release, []).append(version)
    return result


def _choose(
    name: str, recorded: Mapping[str, list[ModelVersion]], installed: str, versions: list[ModelVersion]
) -> tuple[str, str]:
    """The pin for ``name`` and a note when the choice is worth a line."""
    if len(recorded) == 1:
        (pin,) = recorded
        if Version(pin) != Version(installed):
            refs = ", ".join(v.ref for v in recorded[pin])
            return pin, f"{name}=={pin}, as recorded at registration by {refs} (installed here: {installed})"
        return pin, ""
    # Several releases: prefer the installed one, then the newest, and keep the first every version accepts.
    candidates = sorted(recorded, key=Version, reverse=True)
    if installed in recorded:
        candidates.remove(installed)
        candidates.insert(0, installed)
    for pin in candidates:
        refused = [
            (v, m) for v in versions for m in _mismatches(v, name, pin) if m.severity == "error" and v.environment
        ]
        if not refused:
            others = ", ".join(f"{release} by {', '.join(v.ref for v in vs)}" for release, vs in recorded.items())
            return pin, f"{name}=={pin} for every model; registered with {others}"
    listing = "; ".join(f"{', '.join(v.ref for v in vs)} recorded {release}" for release, vs in recorded.items())
    raise InvalidSetting(
        f"these models cannot share one image: they need different {name} releases ({listing}), and a native "
        f"model may not load under another {name}; build one image per model, or re-register them with one {name}"
    )


def _mismatches(version: ModelVersion, name: str, pin: str) -> list[Any]:
    recorded = {k: v for k, v in version.environment.items() if canonicalize_name(k) == name}
    if not recorded:
        return []
    (library,) = recorded
    pickled = version.trusted_code
    return list(compare(recorded, runtime=version.runtime, pickled=pickled, running={library: pin}))


def _valid(release: str) -> bool:
    try:
        Version(release)
    except InvalidVersion:
        return False
    return bool(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", release))
