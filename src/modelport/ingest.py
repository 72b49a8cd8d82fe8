"""Turning what the user has into an artifact directory with a signature.

Accepted: a scikit-learn estimator or Pipeline (in memory, ``.skops``, or a trusted pickle), an
``.onnx`` file, or a directory with a custom Python ``model.py``. scikit-learn models are
converted to ONNX and verified against the original on the sample input; when conversion fails
or disagrees they are served natively. Pickles and custom code need explicit trust.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from modelport import environment, onnxgraph
from modelport.errors import InvalidModel, ModelportError, UntrustedArtifact
from modelport.runtimes import onnx as onnx_runtime
from modelport.runtimes import sklearn as sklearn_runtime
from modelport.runtimes.python import ENTRYPOINT, PythonRuntime
from modelport.signature import example_of, input_specs, output_specs, sample_arrays
from modelport.stores.local import artifact_files
from modelport.types import Signature, TensorSpec, datatype_of, dtype_of

log = logging.getLogger("modelport")

TOLERANCE = 1e-5
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
TRUST_HINT = "Register it only if you trust its source, with --trust-pickle (CLI) or trust_pickle=True (Python)"
UNSAFE_TEXT = "names types or functions that skops does not trust and modelport does not allow"
ACCEPTED = (
    "a scikit-learn estimator or Pipeline, a .onnx, .skops or .pkl/.pickle/.joblib file, "
    "or a directory whose model.py defines class Model"
)


@dataclass(frozen=True)
class Packaged:
    directory: Path  # a directory with the artifact's files, inside workdir; the caller stores it
    runtime: str  # kind that serves it
    framework: str  # "sklearn" | "onnx" | "python"
    signature: Signature
    environment: dict[str, str]
    notes: tuple[str, ...]  # human-readable facts for `modelport show`
    trusted_code: bool  # the artifact executes code when loaded (pickle, custom Python)


def package(
    model: object,
    *,
    workdir: Path,
    sample_input: object | None = None,
    trust_pickle: bool = False,
    runtime: str | None = None,
) -> Packaged:
    """Make an artifact directory in ``workdir`` from ``model`` (see the module docstring).

    ``runtime`` chooses how a scikit-learn model is served: None converts to ONNX when the
    conversion is verified and falls back to the native runtime otherwise; "onnx" insists on ONNX
    (an error when conversion fails); "sklearn" skips conversion and serves the native model.
    """
    if runtime not in (None, "onnx", "sklearn"):
        raise InvalidModel(f"unknown runtime {runtime!r} for registration; choose onnx or sklearn (or leave it out)")
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.exists():
            raise InvalidModel(f"{path} does not exist; give {ACCEPTED}")
        if path.is_dir() or path.suffix.lower() == ".onnx":
            served_by = "python" if path.is_dir() else "onnx"
            if runtime not in (None, served_by):
                message = f"{path.name} is served by the {served_by} runtime; runtime={runtime!r} does not apply"
                raise InvalidModel(message)
        if path.is_dir():
            return _package_python(path, workdir=workdir, sample=sample_input, trust=trust_pickle)
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            return _package_onnx(path, workdir=workdir, sample=sample_input)
        if suffix == ".skops":
            estimator = _load_skops(path, trust=trust_pickle)
            return _package_estimator(
                estimator, workdir, sample_input, trust_pickle, f"loaded from {path.name}", runtime
            )
        if suffix in PICKLE_SUFFIXES:
            if not trust_pickle:
                raise UntrustedArtifact(
                    f"{path.name} is a pickle file: loading it runs arbitrary code. {TRUST_HINT}; "
                    "better, save it with skops (skops.io.dump) or export it to ONNX."
                )
            estimator = _load_pickle(path)
            note = f"loaded from trusted pickle {path.name}"
            return _package_estimator(estimator, workdir, sample_input, True, note, runtime)
        raise InvalidModel(f"{path.name}: unsupported file type {suffix or '(none)'!r}; give {ACCEPTED}")
    if hasattr(model, "predict") and hasattr(model, "get_params"):
        return _package_estimator(model, workdir, sample_input, trust_pickle, None, runtime)
    raise InvalidModel(f"cannot register a {type(model).__module__}.{type(model).__qualname__}; give {ACCEPTED}")


def _new_directory(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="artifact-", dir=workdir))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(":. ")


# --- scikit-learn -------------------------------------------------------------------------


def _load_skops(path: Path, *, trust: bool) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise InvalidModel(f"{path.name} is not a readable skops file: {_reason(exc)}") from exc
    unsafe = sklearn_runtime.unsafe_types(untrusted)
    if unsafe and not trust:
        raise UntrustedArtifact(
            f"{path.name} {UNSAFE_TEXT}: {', '.join(unsafe)}; loading it runs code the file chooses. {TRUST_HINT}."
        )
    try:
        return sio.load(path, trusted=untrusted)
    except Exception as exc:
        raise InvalidModel(f"cannot load {path.name} with skops: {_reason(exc)}") from exc


def _load_pickle(path: Path) -> Any:
    try:
        try:
            import joblib
        except ImportError:
            with path.open("rb") as fh:
                return pickle.load(fh)  # trusted by the caller
        return joblib.load(path)
    except Exception as exc:
        raise InvalidModel(f"cannot load {path.name}: {_reason(exc)}") from exc


def _package_estimator(
    estimator: Any, workdir: Path, sample: object | None, trust: bool, source: str | None, runtime: str | None
) -> Packaged:
    if sample is None:
        raise InvalidModel(
            "a scikit-learn model needs a sample input (a few rows of training data: DataFrame, ndarray or "
            "list of row dicts) to infer and verify its signature; pass sample_input= (Python) or --sample (CLI)"
        )
    names = sklearn_runtime.output_names(estimator)
    x, feature_names, fitted_names = _sample_table(estimator, sample)
    try:
        reference = sklearn_runtime.predict_outputs(estimator, sklearn_runtime.as_frame(x, fitted_names), names)
    except Exception as exc:
        raise InvalidModel(f"the model raised on the sample input: {_reason(exc)}") from exc
    notes = [source] if source else []
    directory = _new_directory(workdir)
    if runtime == "sklearn":
        converted, conversion_note = None, "native scikit-learn runtime requested; ONNX conversion skipped"
    else:
        converted, conversion_note = _convert(estimator, x, reference)
        if converted is None and runtime == "onnx":
            raise InvalidModel(f"the ONNX runtime was requested but {conversion_note.rpartition(';')[0]}")
    notes.append(conversion_note)
    native_code = _store_native(estimator, directory, x, fitted_names, reference, trust, required=converted is None)
    if converted is not None:
        (directory / onnx_runtime.FILENAME).write_bytes(converted)
        notes.extend(native_code[1])
        runtime, trusted_code, input_type = "onnx", False, "FP32"
    else:
        notes.extend(native_code[1])
        runtime, trusted_code, input_type = "sklearn", native_code[0], "FP64"
    (spec,) = input_specs({"input": x}, feature_names)
    signature = Signature(
        inputs=(replace(spec, datatype=input_type),),
        outputs=output_specs(reference),
        example=example_of({"input": x}),
    )
    return Packaged(
        directory, runtime, "sklearn", signature, environment.capture("sklearn"), tuple(notes), trusted_code
    )


def _sample_table(estimator: Any, sample: object) -> tuple[np.ndarray, tuple[str, ...] | None, tuple[str, ...] | None]:
    """The sample as a float64 table, its feature names, and the names the model was fitted on."""
    arrays, names = sample_arrays(sample)
    x = arrays.get("input")
    if len(arrays) != 1 or x is None or x.ndim != 2:
        raise InvalidModel("the sample for a scikit-learn model must be one 2-D table (rows x features)")
    if x.dtype.kind not in "biuf":
        raise InvalidModel("the sample for a scikit-learn model must be numeric (converted models take FP32 input)")
    fitted = getattr(estimator, "feature_names_in_", None)
    fitted_names = tuple(str(n) for n in fitted) if fitted is not None else None
    if fitted_names is not None:
        if names is not None and names != fitted_names:
            raise InvalidModel(
                f"the sample's columns ({', '.join(names)}) differ from those the model was fitted on "
                f"({', '.join(fitted_names)}); give the sample with the training columns in order"
            )
        names = fitted_names
    return x.astype(np.float64), names, fitted_names


def _convert(estimator: Any, x: np.ndarray, reference: Mapping[str, np.ndarray]) -> tuple[bytes | None, str]:
    """ONNX bytes with canonical output names, verified on the sample, or None and the reason."""
    native = "serving with the native scikit-learn runtime"
    try:
        model = onnxgraph.from_sklearn(estimator, n_features=x.shape[1], outputs=reference)
        data: bytes = model.SerializeToString()
        session = onnx_runtime.session(data)
        got = dict(zip(reference, session.run(list(reference), {"input": x.astype(np.float32)}), strict=True))
    except Exception as exc:  # skl2onnx and ONNX Runtime raise many types for unsupported models
        log.info("ONNX conversion failed", exc_info=True)
        return None, f"ONNX conversion failed: {_reason(exc)}; {native}"
    disagreement, max_diff = _disagreement(got, reference)
    symbol = "|Δp|" if "probabilities" in reference else "|Δ|"
    if disagreement:
        return None, f"ONNX output disagrees with scikit-learn on the sample ({disagreement}); {native}"
    return data, (
        f"converted to ONNX (opset {onnxgraph.opset(model)}); verified on {len(x)} sample rows, "
        f"max {symbol} = {max_diff:.2g}"
    )


def _disagreement(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> tuple[str, float]:
    """What differs beyond tolerance (empty when nothing does), and the largest numeric difference."""
    problems, max_diff = [], 0.0
    for name, expected in want.items():
        actual = np.asarray(got[name])
        if name == "label":
            actual = sklearn_runtime.canonical_label(actual)
        if actual.shape != expected.shape or datatype_of(actual.dtype) != datatype_of(expected.dtype):
            problems.append(
                f"{name}: {datatype_of(actual.dtype)} {list(actual.shape)} instead of "
                f"{datatype_of(expected.dtype)} {list(expected.shape)}"
            )
        elif expected.dtype.kind == "f":
            diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
            max_diff = max(max_diff, float(diff.max(initial=0.0)))
            rel = name == "prediction"
            if not np.allclose(actual, expected, rtol=TOLERANCE if rel else 0.0, atol=TOLERANCE):
                problems.append(f"max |Δ{'p' if name == 'probabilities' else ''}| = {float(diff.max()):.2g}")
        elif not np.array_equal(actual, expected):
            problems.append(f"{int(np.sum(actual != expected))} of {len(expected)} labels differ")
    return "; ".join(problems), max_diff


def _store_native(
    estimator: Any,
    directory: Path,
    x: np.ndarray,
    fitted_names: tuple[str, ...] | None,
    reference: Mapping[str, np.ndarray],
    trust: bool,
    *,
    required: bool,
) -> tuple[bool, list[str]]:
    """Save the estimator for the native runtime: skops when it can, else (trusted) pickle.

    Returns whether loading it runs code and notes. When ``required`` (no ONNX) a model that
    cannot be stored safely raises; otherwise the native copy is skipped with a note.
    """
    import skops.io as sio

    frame_x = sklearn_runtime.as_frame(x, fitted_names)
    problem = ""
    try:
        untrusted = sio.get_untrusted_types(data=sio.dumps(estimator))
        unsafe = sklearn_runtime.unsafe_types(untrusted)
        if unsafe and not trust:
            if required:
                raise UntrustedArtifact(
                    f"the model must be served natively, and its skops file {UNSAFE_TEXT}: {', '.join(unsafe)}; "
                    f"loading it runs code the file chooses. {TRUST_HINT}."
                )
            return False, [f"no native copy stored: skops would need trust for {', '.join(unsafe)}"]
        manifest = sklearn_runtime.save(estimator, directory, format="skops")
        _check_round_trip(directory, frame_x, reference)
        if not required:
            return manifest.runs_code, ["native scikit-learn copy stored with skops (fallback)"]
        return manifest.runs_code, [
            f"stored with skops{' (trusted types: ' + ', '.join(unsafe) + ')' if unsafe else ''}"
        ]
    except UntrustedArtifact:
        raise
    except Exception as exc:
        problem = f"skops cannot store it: {_reason(exc)}"
        _clear_native(directory)
    if not required:
        return False, [f"no native copy stored: {problem}"]
    if not trust:
        raise UntrustedArtifact(
            f"the model must be served natively and {problem}; storing it as a pickle runs "
            f"arbitrary code when loaded. {TRUST_HINT}."
        )
    try:
        sklearn_runtime.save(estimator, directory, format="pickle")
        _check_round_trip(directory, frame_x, reference)
    except Exception as exc:
        raise InvalidModel(f"cannot store the model: {problem}; pickle failed too: {_reason(exc)}") from exc
    return True, [f"stored as a trusted pickle ({problem})"]


def _check_round_trip(directory: Path, x: Any, reference: Mapping[str, np.ndarray]) -> None:
    loaded, _ = sklearn_runtime.load_estimator(directory)
    again = sklearn_runtime.predict_outputs(loaded, x, list(reference))
    disagreement, _ = _disagreement(again, reference)
    if disagreement:
        raise InvalidModel(f"the saved model predicts differently after loading ({disagreement})")


def _clear_native(directory: Path) -> None:
    for name in (sklearn_runtime.MANIFEST, "model.skops", "model.pkl"):
        (directory / name).unlink(missing_ok=True)


# --- ONNX files ---------------------------------------------------------------------------


def _package_onnx(path: Path, *, workdir: Path, sample: object | None) -> Packaged:
    model = onnxgraph.load_checked(path)
    notes = [f"ONNX file {path.name} registered as is (opset {onnxgraph.opset(model)})"]
    for old, new in onnxgraph.remove_zipmap(model):
        notes.append(f"removed the ZipMap on output {old!r}: it now returns the plain tensor {new!r}")
    inputs, outputs = onnxgraph.specs(model)
    example = None
    data = model.SerializeToString()
    if sample is not None:
        arrays, names = sample_arrays(sample)
        if len(arrays) == 1 and len(inputs) == 1:
            arrays = {inputs[0].name: next(iter(arrays.values()))}
        missing = [spec.name for spec in inputs if spec.name not in arrays]
        if missing or len(arrays) != len(inputs):
            raise InvalidModel(
                f"the sample's inputs ({', '.join(arrays)}) do not match the graph's "
                f"({', '.join(spec.name for spec in inputs)})"
            )
        arrays = {spec.name: arrays[spec.name].astype(dtype_of(spec.datatype)) for spec in inputs}
        try:
            session = onnx_runtime.session(data)
            results = session.run([spec.name for spec in outputs], arrays)
        except Exception as exc:
            raise InvalidModel(f"ONNX Runtime cannot run {path.name} on the sample: {_reason(exc)}") from exc
        found = output_specs(dict(zip([spec.name for spec in outputs], results, strict=True)))
        outputs = tuple(_prefer_declared(declared, got) for declared, got in zip(outputs, found, strict=True))
        sampled = {spec.name: spec for spec in input_specs(arrays, names)}
        inputs = tuple(
            replace(spec, feature_names=sampled[spec.name].feature_names, allow_nan=sampled[spec.name].allow_nan)
            for spec in inputs
        )
        example = example_of(arrays)
        notes.append(f"checked with ONNX Runtime on {len(next(iter(arrays.values())))} sample rows")
    directory = _new_directory(workdir)
    (directory / onnx_runtime.FILENAME).write_bytes(data)
    return Packaged(
        directory, "onnx", "onnx", Signature(inputs, outputs, example), environment.capture("onnx"), tuple(notes), False
    )


def _prefer_declared(declared: TensorSpec, found: TensorSpec) -> TensorSpec:
    """The graph's declared shape where it has one, else the shape seen on the sample."""
    if len(declared.shape) == len(found.shape):
        return replace(found, shape=declared.shape)
    return found


# --- custom Python ------------------------------------------------------------------------


def _package_python(path: Path, *, workdir: Path, sample: object | None, trust: bool) -> Packaged:
    if not (path / ENTRYPOINT).is_file():
        raise InvalidModel(f"{path} is a directory without {ENTRYPOINT}; give {ACCEPTED}")
    if not trust:
        raise UntrustedArtifact(
            f"{path.name} is a custom Python model: loading it runs the code in {ENTRYPOINT}. {TRUST_HINT}."
        )
    if sample is None:
        raise InvalidModel(
            "a custom Python model needs a sample input to infer its signature; "
            "pass sample_input= (Python) or --sample (CLI)"
        )
    arrays, names = sample_arrays(sample)
    inputs = input_specs(arrays, names)
    rows = len(next(iter(arrays.values())))
    # The files as artifact_files lists them: a symlink leaving the directory (or naming a directory)
    # is refused rather than followed, so no host file or folder is copied into the store.
    files = [(rel, source) for rel, source in artifact_files(path) if not _bytecode(rel)]
    directory = _new_directory(workdir)
    for rel, source in files:
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    runtime = PythonRuntime()
    runtime.load(directory, Signature(inputs, ()))
    try:
        outputs = runtime.predict(arrays)
    except ModelportError as exc:
        raise InvalidModel(f"the custom model failed on the sample input: {exc}") from exc
    finally:
        runtime.unload()
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != rows:
            raise InvalidModel(
                f"Model.predict returned output {name!r} with shape {list(arr.shape)}; "
                f"give one row per input row ({rows} for the sample)"
            )
        try:
            datatype_of(arr.dtype)
        except ValueError as exc:
            raise InvalidModel(f"Model.predict returned output {name!r}: {exc}") from exc
    signature = Signature(inputs, output_specs(outputs), example_of(arrays))
    notes = (
        f"custom Python model: runs {ENTRYPOINT} from the artifact when loaded",
        f"outputs inferred from {rows} sample rows: {', '.join(outputs)}",
    )
    return Packaged(directory, "python", "python", signature, environment.capture("python"), notes, True)


def _bytecode(rel: str) -> bool:
    return rel.endswith(".pyc") or "__pycache__" in rel.split("/")
