"""Turning what the user has into an artifact directory with a signature.

Accepted: a scikit-learn estimator or Pipeline (in memory, ``.skops``, or a trusted pickle), an
``.onnx`` file, a directory with a custom Python ``model.py``, and what the framework modules in
:data:`FRAMEWORKS` claim (XGBoost and LightGBM, PyTorch, TensorFlow/Keras: objects and files). scikit-learn models are
converted to ONNX and verified against the original on the sample input; when conversion fails
or disagrees they are served natively (with a :class:`~modelport.errors.ConversionWarning` saying
why). Before a scikit-learn model is stored, the runtime that will serve it is loaded and checked
against the model on the sample: every row alone and all of them together, as requests come. A
DataFrame sample with text or categorical columns gives one input per column; a text pipeline
(one that starts with a text vectorizer) registered with a one-column DataFrame takes that column
as the 1-D sequence of texts it was fitted on. Whether an input takes missing values (NaN) is
asked of the model itself. Pickles and custom code need explicit trust.
"""

from __future__ import annotations

import importlib
import logging
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import ConversionWarning, InvalidInput, InvalidModel, ModelportError, UntrustedArtifact
from modelport.ingest import onnxgraph
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
from modelport.types import Signature, TensorSpec, datatype_of, dtype_of

log = logging.getLogger("modelport")

# Frameworks packaged by a module of their own in modelport.ingest, asked in this order. Each has
# ``claims(model) -> bool`` (True for its objects and files; it imports its library only for those)
# and ``package(model, *, workdir, sample_input, trust_pickle, runtime) -> Packaged``.
FRAMEWORKS = ("boosting", "pytorch", "tensorflow")

TOLERANCE = 1e-5
ROW_CHECKS = 50  # sample rows each checked alone (the first ones), besides the whole sample
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
    # the sample as the signature's inputs (what a request would carry), where the packager has it
    sample: Mapping[str, np.ndarray] | None = None


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
        packaged: Packaged = framework.package(
            model, workdir=workdir, sample_input=sample_input, trust_pickle=trust_pickle, runtime=runtime
        )
        return packaged
    directory = isinstance(model, str | Path) and Path(model).is_dir()
    if runtime not in (None, "onnx", "sklearn") and not directory:
        raise InvalidModel(
            f"unknown runtime {runtime!r} for registration; choose onnx or sklearn (or leave it out); "
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


def _framework_for(model: object) -> Any:
    """The module of :data:`FRAMEWORKS` that claims ``model``, or None."""
    for name in FRAMEWORKS:
        module = importlib.import_module(f"modelport.ingest.{name}")
        if module.claims(model):
            return module
    return None


def check_row_outputs(outputs: Mapping[str, np.ndarray], rows: int, whose: str) -> None:
    """InvalidModel unless every output has one row per input row (so requests can be batched)
    and a datatype the protocols carry; ``whose``: e.g. "the module's", for the message."""
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != rows:
            raise InvalidModel(
                f"{whose} output {name!r} has shape {list(arr.shape)}; give one row per input row "
                f"({rows} for the sample), so requests can be batched"
            )
        try:
            datatype_of(arr.dtype)
        except ValueError as exc:
            raise InvalidModel(f"{whose} output {name!r}: {exc}") from exc


def _new_directory(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="artifact-", dir=workdir))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(":. ")


def whole_reason(exc: BaseException) -> str:
    """An exception's type and its whole message on one line (:func:`_reason` keeps the first line):
    for a note that says why a conversion failed, whose cause is often past the first line."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}".rstrip(":. ")


def rows_alone(
    arrays: Mapping[str, np.ndarray], limit: int = ROW_CHECKS
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Each of the first ``limit`` rows of ``arrays`` as a batch of its own, with its index."""
    rows = len(next(iter(arrays.values())))
    for i in range(min(rows, limit)):
        yield i, {name: arr[i : i + 1] for name, arr in arrays.items()}


def row_of(outputs: Mapping[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    return {name: arr[i : i + 1] for name, arr in outputs.items()}


def checked_rows(rows: int) -> str:
    """How many sample rows were checked alone, for a note."""
    return f"each of the {rows} rows alone" if rows <= ROW_CHECKS else f"each of the first {ROW_CHECKS} rows alone"


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
        estimator = sio.load(path, trusted=untrusted)
    except Exception as exc:
        raise InvalidModel(f"cannot load {path.name} with skops: {_reason(exc)}") from exc
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
    taken = _sample_of(estimator, sample)
    try:
        reference = sklearn_runtime.predict_outputs(estimator, taken.model_input(taken.arrays), names)
    except Exception as exc:
        raise InvalidModel(f"the model raised on the sample input: {_reason(exc)}") from exc
    check_row_outputs(reference, taken.rows, "the model's")
    _check_rows_alone(estimator, taken, reference)
    probes = _nan_probes(taken.arrays)
    accepts_nan, nan_refusal = _missing_value_answers(estimator, taken, probes, names)
    notes = [source] if source else []
    directory = _new_directory(workdir)
    asked = runtime
    if runtime == "sklearn":
        converted, conversion_note = None, "native scikit-learn runtime requested; ONNX conversion skipped"
    else:
        converted, conversion_note = _convert(estimator, taken, reference)
        if converted is None and runtime == "onnx":
            raise InvalidModel(f"the ONNX runtime was requested but {conversion_note.rpartition(';')[0]}")
    notes.append(conversion_note)
    differ = _onnx_differs_on_nan(converted, taken, probes, accepts_nan) if converted is not None else []
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


def _check_rows_alone(estimator: Any, taken: _Sample, reference: Mapping[str, np.ndarray]) -> None:
    """InvalidModel unless the model answers each sample row alone as it does in the whole sample:
    a server batches requests together (and splits them), so an answer must depend on its row only."""
    for i, row in rows_alone(taken.arrays):
        try:
            got = sklearn_runtime.predict_outputs(estimator, taken.model_input(row), list(reference))
        except Exception as exc:  # estimators raise what they raise
            raise InvalidModel(f"the model raised on sample row {i} alone: {_reason(exc)}") from exc
        problem, _ = _disagreement(got, row_of(reference, i))
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
        raise InvalidModel(f"the {runtime} runtime fails on the sample with the stored model: {_reason(exc)}") from exc
    finally:
        served.unload()
    for where, got, want in answers:
        problem = _shape_problem(got, want) or _disagreement(got, want)[0]
        if problem:
            raise InvalidModel(
                f"served by the {runtime} runtime, the stored model answers {where} differently from the model "
                f"({problem}); it is not registered, since it would answer requests wrongly"
            )


def _shape_problem(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> str:
    missing = [name for name in want if name not in got]
    return f"no output {missing[0]!r}" if missing else ""


@dataclass(frozen=True)
class _Sample:
    """A scikit-learn model's registration sample, as the signature's inputs and as the model takes it.

    A numeric table is the one input "input" [-1, features]; a DataFrame with text or categorical
    columns is one 1-D input per column, and ``columns`` says how to rebuild the frame from them;
    ``vector``: the model takes its one column as a 1-D array (a text pipeline), not as a frame.
    """

    arrays: dict[str, np.ndarray]
    feature_names: tuple[str, ...] | None
    fitted_names: tuple[str, ...] | None
    columns: tuple[sklearn_runtime.Column, ...] = ()
    vector: bool = False

    @property
    def rows(self) -> int:
        return len(next(iter(self.arrays.values())))

    def model_input(self, arrays: Mapping[str, np.ndarray]) -> Any:
        """What the estimator predicts on (a DataFrame where it was fitted on one), as the runtime builds it."""
        if self.columns:
            return sklearn_runtime.model_input(self.columns, arrays, vector=self.vector)
        return sklearn_runtime.as_frame(arrays[DEFAULT_INPUT], self.fitted_names)

    def datatypes(self, runtime: str) -> dict[str, str]:
        """Each input's datatype when served by ``runtime``: a table is FP32 in ONNX, FP64 natively;
        a column is FP32, INT64, BOOL or BYTES in ONNX, and natively its own dtype's (so values
        are range-checked for the column the model rebuilds)."""
        if not self.columns:
            return {DEFAULT_INPUT: "FP32" if runtime == "onnx" else "FP64"}
        return {name: _column_datatype(arr, runtime) for name, arr in self.arrays.items()}

    def onnx_feed(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: arrays[name].astype(dtype_of(datatype)) for name, datatype in self.datatypes("onnx").items()}


def _column_datatype(column: np.ndarray, runtime: str) -> str:
    kind = column.dtype.kind
    if kind not in "biuf":
        return "BYTES"
    if runtime != "onnx":
        return datatype_of(column.dtype)
    return {"f": "FP32", "i": "INT64", "u": "INT64", "b": "BOOL"}[kind]


def _sample_of(estimator: Any, sample: object) -> _Sample:
    """The sample as a float64 table with its feature names, or (a DataFrame with text or
    categorical columns) as one array per column; checked against the columns the model was fitted on."""
    arrays, names = sample_arrays(sample)
    fitted = getattr(estimator, "feature_names_in_", None)
    fitted_names = tuple(str(n) for n in fitted) if fitted is not None else None
    columns = names is not None and tuple(arrays) == names and all(arr.ndim == 1 for arr in arrays.values())
    if fitted_names is not None and names is not None and names != fitted_names:
        raise InvalidModel(
            f"the sample's columns ({', '.join(names)}) differ from those the model was fitted on "
            f"({', '.join(fitted_names)}); give the sample with the training columns in order"
        )
    if columns and names is not None:
        frame: Any = sample
        typed = tuple(
            sklearn_runtime.Column.of(name, frame[label]) for name, label in zip(names, frame.columns, strict=True)
        )
        vector = len(typed) == 1 and fitted_names is None and _takes_documents(estimator)
        return _Sample(arrays, None, fitted_names, typed, vector)
    x = arrays.get(DEFAULT_INPUT)
    if x is not None and x.ndim == 1 and _takes_documents(estimator):
        raise InvalidModel(
            "the sample for a text pipeline is a one-column DataFrame of texts, e.g. pd.DataFrame({'text': texts}): "
            "the column is the model's input, named by it, and the model is given its texts"
        )
    if len(arrays) != 1 or x is None or x.ndim != 2:
        raise InvalidModel(
            "the sample for a scikit-learn model must be one 2-D table (rows x features), "
            "or a DataFrame (text and categorical columns become one input each)"
        )
    if x.dtype.kind not in "biuf":
        raise InvalidModel(
            "the sample for a scikit-learn model must be numeric, or a DataFrame: give text and categorical "
            "columns as a DataFrame, and each column becomes an input of its own"
        )
    return _Sample({DEFAULT_INPUT: x.astype(np.float64)}, fitted_names or names, fitted_names)


def _takes_documents(estimator: Any) -> bool:
    """Whether the model starts with a text vectorizer (CountVectorizer, TfidfVectorizer,
    HashingVectorizer, also as a Pipeline's first step): it is fitted on a sequence of texts, and
    reads a DataFrame as the sequence of its column names."""
    first = estimator
    while hasattr(first, "steps") and first.steps:  # a Pipeline: its first step
        first = first.steps[0][1]
    return callable(getattr(first, "build_analyzer", None))


PROBE_ROWS = 32  # sample rows a column is set missing in, to see how the model answers


def _nan_probes(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """For each float input, the sample with missing values (NaN) put in it: a table gets one
    NaN per row, in a different feature each; a column is missing in every row."""
    probes = {}
    for name, arr in arrays.items():
        if arr.dtype.kind != "f":
            continue
        head = {key: value[:PROBE_ROWS] for key, value in arrays.items()}
        if arr.ndim == 2 and arr.shape[1]:
            diagonal = np.arange(arr.shape[1])
            probe = arr[diagonal % len(arr)].copy()
            probe[diagonal, diagonal] = np.nan
        else:
            probe = np.full_like(head[name], np.nan)
        probes[name] = {**head, name: probe}
    return probes


def _missing_value_answers(
    estimator: Any, taken: _Sample, probes: Mapping[str, Mapping[str, np.ndarray]], names: tuple[str, ...]
) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """The model's own answers on each input's NaN probe, for the inputs where it accepts missing
    values (answers without raising, all finite), and why it refuses them where it does.

    scikit-learn's ``allow_nan`` tag cannot decide this: a Pipeline's tag is False even when it
    starts with an imputer, and a StandardScaler's is True though it only passes NaN on; so the
    model itself is asked."""
    answers: dict[str, dict[str, np.ndarray]] = {}
    refusal = ""
    for name, probe in probes.items():
        try:
            got = sklearn_runtime.predict_outputs(estimator, taken.model_input(probe), names)
        except Exception as exc:  # estimators raise ValueError and others for NaN they do not take
            refusal = refusal or _reason(exc)
            continue
        bad = [output for output, arr in got.items() if arr.dtype.kind == "f" and not np.isfinite(arr).all()]
        if bad:
            refusal = refusal or f"its output {bad[0]!r} is NaN when an input value is missing"
            continue
        answers[name] = got
    return answers, refusal


def _onnx_differs_on_nan(
    data: bytes,
    taken: _Sample,
    probes: Mapping[str, Mapping[str, np.ndarray]],
    answers: Mapping[str, Mapping[str, np.ndarray]],
) -> list[str]:
    """The inputs whose NaN probe the ONNX graph answers differently from the estimator."""
    if not answers:
        return []
    session = onnx_runtime.session(data)
    differ = []
    for name, want in answers.items():
        try:
            got = dict(zip(want, session.run(list(want), taken.onnx_feed(probes[name])), strict=True))
        except Exception:  # ONNX Runtime raises its own types
            differ.append(name)
            continue
        if _disagreement(got, want)[0]:
            differ.append(name)
    return differ


def _convert(estimator: Any, taken: _Sample, reference: Mapping[str, np.ndarray]) -> tuple[bytes | None, str]:
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
    disagreement, max_diff = _disagreement(got, reference)
    symbol = "|Δp|" if "probabilities" in reference else "|Δ|"
    if disagreement:
        return None, f"ONNX output disagrees with scikit-learn on the sample ({disagreement}); {native}"
    for i, one in alone:
        disagreement, diff = _disagreement(one, row_of(reference, i))
        if disagreement:
            return None, f"ONNX output disagrees with scikit-learn on sample row {i} alone ({disagreement}); {native}"
        max_diff = max(max_diff, diff)
    return data, (
        f"converted to ONNX (opset {onnxgraph.opset(model)}); verified on {taken.rows} sample rows, "
        f"max {symbol} = {max_diff:.2g}"
    )


def _register_converters(estimator: Any) -> None:
    """Let the framework modules give skl2onnx converters for their estimators inside ``estimator``
    (an XGBClassifier in a Pipeline): each one's optional ``register_converters(estimator)``."""
    for name in FRAMEWORKS:
        hook = getattr(importlib.import_module(f"modelport.ingest.{name}"), "register_converters", None)
        if hook is not None:
            hook(estimator)


def disagreement(
    got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], *, atol: float, rtol: float
) -> tuple[str, float]:
    """What differs between two models' outputs beyond ``atol`` + ``rtol``·|want| (empty when nothing
    does: same names, shapes and datatypes, floats close, the rest equal), and the largest float
    difference. How a converted or stored model is checked against the original on the sample."""
    problems, max_diff = [], 0.0
    for name, expected in want.items():
        actual = np.asarray(got[name])
        if actual.shape != expected.shape or datatype_of(actual.dtype) != datatype_of(expected.dtype):
            problems.append(
                f"{name}: {datatype_of(actual.dtype)} {list(actual.shape)} instead of "
                f"{datatype_of(expected.dtype)} {list(expected.shape)}"
            )
        elif expected.dtype.kind == "f":
            diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
            largest = float(np.max(diff, initial=0.0, where=~np.isnan(diff)))  # NaN on both sides is agreement
            max_diff = max(max_diff, largest)
            missing = int(np.sum(np.isnan(actual) != np.isnan(expected)))
            if missing:
                problems.append(f"{name}: NaN in {missing} of {expected.size} places where the other has a number")
            elif not np.allclose(actual, expected, atol=atol, rtol=rtol, equal_nan=True):
                problems.append(f"{name}: max |Δ| = {largest:.2g}")
        elif not np.array_equal(actual, expected):
            problems.append(f"{name}: {int(np.sum(actual != expected))} of {expected.size} values differ")
    return "; ".join(problems), max_diff


def _disagreement(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> tuple[str, float]:
    """:func:`disagreement` for scikit-learn's outputs: labels compared as the runtime returns them,
    probabilities absolutely within ``TOLERANCE``, regression predictions also relatively."""
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
    taken: _Sample,
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
        sklearn_runtime.save(estimator, directory, format="pickle", columns=taken.columns, vector=taken.vector)
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
    directory = _new_directory(workdir)
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
        raise InvalidModel(f"the {kind} model failed on the sample input: {_reason(exc)}") from exc
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
