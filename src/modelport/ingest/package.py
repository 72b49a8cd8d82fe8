"""Turning what the user has into an artifact directory with a signature: :func:`package`.

Accepted: a scikit-learn estimator or Pipeline (in memory, ``.skops``, or a trusted pickle), an
``.onnx`` file, a directory with a custom Python ``model.py``, and what the frameworks of
:data:`~modelport.ingest.frameworks.FRAMEWORKS` claim (XGBoost and LightGBM, PyTorch,
TensorFlow/Keras: objects and files). scikit-learn models are converted to ONNX and verified
against the original on the sample input; when conversion fails or disagrees they are served
natively (with a :class:`~modelport.errors.ConversionWarning` saying why). Before a scikit-learn
model is stored, the runtime that will serve it is loaded and checked against the model on the
sample: every row alone and all of them together, as requests come. The sample's inputs (one per
text or categorical column of a DataFrame) and whether each takes missing values (NaN) are
:mod:`modelport.ingest.tabular`'s. Pickles and custom code need explicit trust.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import ConversionWarning, InvalidInput, InvalidModel, ModelportError, UntrustedArtifact
from modelport.ingest import onnxgraph
from modelport.ingest.frameworks import FRAMEWORKS, Framework
from modelport.ingest.packaged import TRUST_HINT, Packaged, new_directory, reason, whole_reason
from modelport.ingest.tabular import (
    Sample,
    canonical_labels,
    missing_value_answers,
    nan_probes,
    onnx_differs_on_nan,
    sample_of,
)
from modelport.ingest.verification import check_row_outputs, checked_rows, disagreement, row_of, rows_alone
from modelport.registry import environment
from modelport.runtimes import KINDS
from modelport.runtimes import onnx as onnx_runtime
from modelport.runtimes import sklearn as sklearn_runtime
from modelport.runtimes.python import ENTRYPOINT, PythonRuntime
from modelport.runtimes.sklearn_state import UncheckedState
from modelport.signature import (
    DEFAULT_INPUT,
    example_of,
    input_specs,
    output_specs,
    sample_arrays,
    validate_inputs,
)
from modelport.stores.local import artifact_files
from modelport.types import Signature, TensorSpec, dtype_of

log = logging.getLogger("modelport")

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
UNSAFE_TEXT = "names types or functions that skops does not trust and modelport does not allow"
ACCEPTED = (
    "a scikit-learn estimator or Pipeline, an XGBoost/LightGBM, PyTorch or Keras/TensorFlow model, "
    "a .onnx, .skops, .pkl/.pickle/.joblib, XGBoost .json/.ubj, LightGBM .txt, PyTorch .pt2/.pt/.pth "
    "or .keras file, a SavedModel directory, or a directory whose model.py defines class Model"
)


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
    (an error when conversion fails); "sklearn" skips conversion and serves the native model. A
    directory is served by the ``python`` runtime (its ``model.py``), or by the installed runtime
    plugin ``runtime`` names (:mod:`modelport.runtimes`).
    """
    framework = _framework_for(model)
    if framework is not None:
        return framework.package(
            model, workdir=workdir, sample_input=sample_input, trust_pickle=trust_pickle, runtime=runtime
        )
    directory = isinstance(model, str | Path) and Path(model).is_dir()
    if runtime not in (None, "onnx", "sklearn") and not directory:
        raise InvalidModel(
            f"unknown runtime {runtime!r} for registration; choose onnx or sklearn (or leave it out); "
            "XGBoost, LightGBM, PyTorch and TensorFlow models take their library's runtime; "
            "a runtime plugin serves a directory of its files"
        )
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.exists():
            raise InvalidModel(f"{path} does not exist; give {ACCEPTED}")
        if path.suffix.lower() == ".onnx" and runtime not in (None, "onnx"):
            raise InvalidModel(f"{path.name} is served by the onnx runtime; runtime={runtime!r} does not apply")
        if path.is_dir():
            return _package_directory(
                path, runtime or "python", workdir=workdir, sample=sample_input, trust=trust_pickle
            )
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


def _framework_for(model: object) -> Framework | None:
    """The first of :data:`FRAMEWORKS` that claims ``model``, or None."""
    return next((framework for framework in FRAMEWORKS if framework.claims(model)), None)


# --- scikit-learn -------------------------------------------------------------------------


def _load_skops(path: Path, *, trust: bool) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise InvalidModel(f"{path.name} is not a readable skops file: {reason(exc)}") from exc
    unsafe = sklearn_runtime.unsafe_types(untrusted)
    if unsafe and not trust:
        raise UntrustedArtifact(
            f"{path.name} {UNSAFE_TEXT}: {', '.join(unsafe)}; loading it runs code the file chooses. {TRUST_HINT}."
        )
    try:
        estimator = sio.load(path, trusted=untrusted)
    except Exception as exc:
        raise InvalidModel(f"cannot load {path.name} with skops: {reason(exc)}") from exc
    try:  # before anything converts it or predicts with it
        return sklearn_runtime.checked(estimator)
    except UncheckedState as exc:
        if not trust:
            raise UntrustedArtifact(
                f"{path.name} holds state scikit-learn's compiled code would run on unchecked ({exc.message}); "
                f"serving it could crash or hang the server. {TRUST_HINT}."
            ) from None
        return estimator


def _load_pickle(path: Path) -> Any:
    try:
        try:
            import joblib
        except ImportError:
            with path.open("rb") as fh:
                return pickle.load(fh)  # trusted by the caller
        return joblib.load(path)
    except Exception as exc:
        raise InvalidModel(f"cannot load {path.name}: {reason(exc)}") from exc


def _package_estimator(
    estimator: Any, workdir: Path, sample: object | None, trust: bool, source: str | None, runtime: str | None
) -> Packaged:
    if sample is None:
        raise InvalidModel(
            "a scikit-learn model needs a sample input (a few rows of training data: DataFrame, ndarray or "
            "list of row dicts) to infer and verify its signature; pass sample_input= (Python) or --sample (CLI)"
        )
    names = sklearn_runtime.output_names(estimator)
    taken = sample_of(estimator, sample)
    try:
        reference = sklearn_runtime.predict_outputs(estimator, taken.model_input(taken.arrays), names)
    except Exception as exc:
        raise InvalidModel(f"the model raised on the sample input: {reason(exc)}") from exc
    check_row_outputs(reference, taken.rows, "the model's")
    _check_rows_alone(estimator, taken, reference)
    probes = nan_probes(taken.arrays)
    accepts_nan, nan_refusal = missing_value_answers(estimator, taken, probes, names)
    notes = [source] if source else []
    directory = new_directory(workdir)
    asked = runtime
    if runtime == "sklearn":
        converted, conversion_note = None, "native scikit-learn runtime requested; ONNX conversion skipped"
    else:
        converted, conversion_note = _convert(estimator, taken, reference)
        if converted is None and runtime == "onnx":
            raise InvalidModel(f"the ONNX runtime was requested but {conversion_note.rpartition(';')[0]}")
    notes.append(conversion_note)
    differ = onnx_differs_on_nan(converted, taken, probes, accepts_nan) if converted is not None else []
    if differ:
        # ONNX stays (the fast path) and NaN is refused there; a sample with NaN fails the ONNX
        # check above and so is served natively, NaN accepted.
        accepts_nan = {name: answer for name, answer in accepts_nan.items() if name not in differ}
        where = ", ".join(repr(name) for name in differ)
        notes.append(
            f"the ONNX graph answers missing values in {where} differently from scikit-learn, so NaN is "
            "refused there; to accept it, register with runtime='sklearn' "
            "or with rows holding NaN in the sample (both serve the model natively)"
        )
    native_code = _store_native(estimator, directory, taken, reference, trust, required=converted is None)
    notes.extend(native_code[1])
    if converted is not None:
        (directory / onnx_runtime.FILENAME).write_bytes(converted)
        runtime, trusted_code = "onnx", False
    else:
        runtime, trusted_code = "sklearn", native_code[0]
    if accepts_nan:
        notes.append(f"accepts missing values (NaN) in {', '.join(accepts_nan)}: checked with NaN put in the sample")
    elif probes and not differ:
        notes.append(f"refuses missing values (NaN): {nan_refusal}")
    datatypes = taken.datatypes(runtime)
    if taken.columns:
        inputs = tuple(TensorSpec(name, datatypes[name], (-1,), allow_nan=name in accepts_nan) for name in taken.arrays)
    else:
        (spec,) = input_specs(taken.arrays, taken.feature_names)
        inputs = (replace(spec, datatype=datatypes[DEFAULT_INPUT], allow_nan=DEFAULT_INPUT in accepts_nan),)
    signature = Signature(inputs=inputs, outputs=output_specs(reference), example=example_of(taken.arrays))
    served = _served_inputs(signature, taken.arrays)
    _check_served(directory, runtime, signature, served, reference)
    notes.append(
        f"checked as served by the {runtime} runtime: the {taken.rows} sample rows together and "
        f"{checked_rows(taken.rows)} answer as the model does"
    )
    if converted is None and asked is None:  # said once the model is packaged
        warnings.warn(ConversionWarning(conversion_note), stacklevel=4)  # register() -> package() -> here
    return Packaged(
        directory, runtime, "sklearn", signature, environment.capture("sklearn"), tuple(notes), trusted_code, served
    )


def _check_rows_alone(estimator: Any, taken: Sample, reference: Mapping[str, np.ndarray]) -> None:
    """InvalidModel unless the model answers each sample row alone as it does in the whole sample:
    a server batches requests together (and splits them), so an answer must depend on its row only."""
    for i, row in rows_alone(taken.arrays):
        try:
            got = sklearn_runtime.predict_outputs(estimator, taken.model_input(row), list(reference))
        except Exception as exc:  # estimators raise what they raise
            raise InvalidModel(f"the model raised on sample row {i} alone: {reason(exc)}") from exc
        problem, _ = disagreement(got, row_of(reference, i))
        if problem:
            raise InvalidModel(
                f"the model answers sample row {i} alone differently from the same row among the {taken.rows} "
                f"sample rows ({problem}): a server batches requests together, so each answer would depend on the "
                "other requests; make each row's prediction depend on that row only (learn scaling and statistics "
                "at fit time, not from the rows being predicted)"
            )


def _served_inputs(signature: Signature, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The sample as a request carrying it reaches the runtime: cast and checked by the signature
    (NaN let through: the model answered the sample, NaN included)."""
    try:
        return validate_inputs(signature, arrays, finite=list(arrays))
    except InvalidInput:  # e.g. a text column holding None: no request can carry that
        return {spec.name: arrays[spec.name].astype(dtype_of(spec.datatype)) for spec in signature.inputs}


def _check_served(
    directory: Path,
    runtime: str,
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
) -> None:
    """Load the artifact with the runtime that will serve it, as a server would, and refuse it
    (InvalidModel) unless it answers the sample, and each sample row alone, as the model does."""
    served = KINDS[runtime]()
    try:
        served.load(directory, signature)
        answers = [("the sample", served.predict(inputs), dict(reference))]
        answers += [
            (f"sample row {i} alone", served.predict(row), row_of(reference, i)) for i, row in rows_alone(inputs)
        ]
    except ModelportError as exc:
        raise InvalidModel(f"the {runtime} runtime cannot serve the stored model: {exc.message}") from exc
    except Exception as exc:  # a runtime raises what its library raises
        raise InvalidModel(f"the {runtime} runtime fails on the sample with the stored model: {reason(exc)}") from exc
    finally:
        served.unload()
    for where, got, want in answers:
        problem = _shape_problem(got, want) or disagreement(canonical_labels(got), want)[0]
        if problem:
            raise InvalidModel(
                f"served by the {runtime} runtime, the stored model answers {where} differently from the model "
                f"({problem}); it is not registered, since it would answer requests wrongly"
            )


def _shape_problem(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> str:
    missing = [name for name in want if name not in got]
    return f"no output {missing[0]!r}" if missing else ""


def _convert(estimator: Any, taken: Sample, reference: Mapping[str, np.ndarray]) -> tuple[bytes | None, str]:
    """ONNX bytes with canonical output names, verified on the sample, or None and the reason."""
    native = "serving with the native scikit-learn runtime"
    try:
        _register_converters(estimator)
        if taken.columns:
            model = onnxgraph.from_sklearn(estimator, outputs=reference, columns=taken.datatypes("onnx"))
        else:
            n_features = taken.arrays[DEFAULT_INPUT].shape[1]
            model = onnxgraph.from_sklearn(estimator, n_features=n_features, outputs=reference)
        data: bytes = model.SerializeToString()
        session = onnx_runtime.session(data)
        outputs = list(reference)
        got = dict(zip(outputs, session.run(outputs, taken.onnx_feed(taken.arrays)), strict=True))
        alone = [
            (i, dict(zip(outputs, session.run(outputs, taken.onnx_feed(row)), strict=True)))
            for i, row in rows_alone(taken.arrays)
        ]
    except Exception as exc:  # skl2onnx and ONNX Runtime raise many types for unsupported models
        log.info("ONNX conversion failed", exc_info=True)
        return None, f"ONNX conversion failed: {whole_reason(exc)}; {native}"
    problem, max_diff = disagreement(canonical_labels(got), reference)
    symbol = "|Δp|" if "probabilities" in reference else "|Δ|"
    if problem:
        return None, f"ONNX output disagrees with scikit-learn on the sample ({problem}); {native}"
    for i, one in alone:
        problem, diff = disagreement(canonical_labels(one), row_of(reference, i))
        if problem:
            return None, f"ONNX output disagrees with scikit-learn on sample row {i} alone ({problem}); {native}"
        max_diff = max(max_diff, diff)
    return data, (
        f"converted to ONNX (opset {onnxgraph.opset(model)}); verified on {taken.rows} sample rows, "
        f"max {symbol} = {max_diff:.2g}"
    )


def _register_converters(estimator: Any) -> None:
    """Let the frameworks give skl2onnx converters for their estimators inside ``estimator`` (an
    XGBClassifier in a Pipeline): each one's ``register_converters(estimator)``."""
    for framework in FRAMEWORKS:
        framework.register_converters(estimator)


def _store_native(
    estimator: Any,
    directory: Path,
    taken: Sample,
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

    frame_x = taken.model_input(taken.arrays)
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
        unchecked = ""
        try:
            sklearn_runtime.checked(estimator)
        except UncheckedState as exc:
            unchecked = exc.message
        if unchecked and not trust:
            if required:
                raise UntrustedArtifact(
                    f"the model must be served natively, and it holds what scikit-learn's compiled code would run "
                    f"on unchecked ({unchecked}). {TRUST_HINT}."
                )
            return False, [f"no native copy stored: skops would need trust ({unchecked})"]
        manifest = sklearn_runtime.save(
            estimator, directory, format="skops", columns=taken.columns, unchecked=bool(unchecked), vector=taken.vector
        )
        _check_round_trip(directory, frame_x, reference)
        if not required:
            return manifest.runs_code, ["native scikit-learn copy stored with skops (fallback)"]
        return manifest.runs_code, [
            f"stored with skops{' (trusted types: ' + ', '.join(unsafe) + ')' if unsafe else ''}"
        ]
    except UntrustedArtifact:
        raise
    except Exception as exc:
        problem = f"skops cannot store it: {reason(exc)}"
        _clear_native(directory)
    if not required:
        return False, [f"no native copy stored: {problem}"]
    if not trust:
        raise UntrustedArtifact(
            f"the model must be served natively and {problem}; storing it as a pickle runs "
            f"arbitrary code when loaded. {TRUST_HINT}."
        )
    try:
        sklearn_runtime.save(estimator, directory, format="pickle", columns=taken.columns, vector=taken.vector)
        _check_round_trip(directory, frame_x, reference)
    except Exception as exc:
        raise InvalidModel(f"cannot store the model: {problem}; pickle failed too: {reason(exc)}") from exc
    return True, [f"stored as a trusted pickle ({problem})"]


def _check_round_trip(directory: Path, x: Any, reference: Mapping[str, np.ndarray]) -> None:
    loaded, _ = sklearn_runtime.load_estimator(directory)
    again = sklearn_runtime.predict_outputs(loaded, x, list(reference))
    problem, _ = disagreement(again, reference)
    if problem:
        raise InvalidModel(f"the saved model predicts differently after loading ({problem})")


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
            raise InvalidModel(f"ONNX Runtime cannot run {path.name} on the sample: {reason(exc)}") from exc
        found = output_specs(dict(zip([spec.name for spec in outputs], results, strict=True)))
        outputs = tuple(_prefer_declared(declared, got) for declared, got in zip(outputs, found, strict=True))
        sampled = {spec.name: spec for spec in input_specs(arrays, names)}
        inputs = tuple(
            replace(spec, feature_names=sampled[spec.name].feature_names, allow_nan=sampled[spec.name].allow_nan)
            for spec in inputs
        )
        example = example_of(arrays)
        notes.append(f"checked with ONNX Runtime on {len(next(iter(arrays.values())))} sample rows")
    directory = new_directory(workdir)
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


def _package_directory(path: Path, kind: str, *, workdir: Path, sample: object | None, trust: bool) -> Packaged:
    """A directory served by the ``kind`` runtime: its files copied, the runtime loaded on the copy
    with the sample's inputs, and its outputs on the sample as the signature's outputs."""
    if kind in ("onnx", "sklearn") or kind not in KINDS:
        raise InvalidModel(
            f"a directory is served by the python runtime (its {ENTRYPOINT}) or an installed runtime plugin; "
            f"runtime={kind!r} is neither (the kinds are: {KINDS.describe()})"
        )
    cls = KINDS[kind]
    custom = kind == PythonRuntime.kind
    if custom and not (path / ENTRYPOINT).is_file():
        raise InvalidModel(f"{path} is a directory without {ENTRYPOINT}; give {ACCEPTED}")
    runs_code = cls.capabilities.runs_code
    if runs_code and not trust:
        what = (
            f"a custom Python model: loading it runs the code in {ENTRYPOINT}"
            if custom
            else f"served by the {kind} runtime, which runs code from the artifact when it loads"
        )
        raise UntrustedArtifact(f"{path.name} is {what}. {TRUST_HINT}.")
    if sample is None:
        raise InvalidModel(
            f"a model served by the {kind} runtime needs a sample input to infer its signature; "
            "pass sample_input= (Python) or --sample (CLI)"
        )
    arrays, names = sample_arrays(sample)
    inputs = input_specs(arrays, names)
    rows = len(next(iter(arrays.values())))
    # The files as artifact_files lists them: a symlink leaving the directory (or naming a directory)
    # is refused rather than followed, so no host file or folder is copied into the store.
    files = [(rel, source) for rel, source in artifact_files(path) if not _bytecode(rel)]
    directory = new_directory(workdir)
    for rel, source in files:
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    runtime = cls()
    try:
        runtime.load(directory, Signature(inputs, ()))
        outputs = runtime.predict(arrays)
    except ModelportError as exc:
        raise InvalidModel(f"the {kind} model failed on the sample input: {exc}") from exc
    except Exception as exc:  # a plugin raises what it raises
        raise InvalidModel(f"the {kind} model failed on the sample input: {reason(exc)}") from exc
    finally:
        runtime.unload()
    check_row_outputs(outputs, rows, f"the {kind} model's")
    signature = Signature(inputs, output_specs(outputs), example_of(arrays))
    first = (
        f"custom Python model: runs {ENTRYPOINT} from the artifact when loaded"
        if custom
        else f"served by the {kind} runtime plugin ({KINDS.plugins[kind].value})"
    )
    notes = (first, f"outputs inferred from {rows} sample rows: {', '.join(outputs)}")
    return Packaged(directory, kind, kind, signature, environment.capture(kind), notes, runs_code)


def _bytecode(rel: str) -> bool:
    return rel.endswith(".pyc") or "__pycache__" in rel.split("/")
