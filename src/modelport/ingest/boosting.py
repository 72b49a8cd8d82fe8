"""Registering XGBoost and LightGBM models: see :func:`claims` and :func:`package`.

Taken: the scikit-learn wrappers (``XGBClassifier``, ``XGBRegressor``, ``LGBMClassifier``,
``LGBMRegressor`` and their subclasses) and native ``Booster`` objects, in memory, or an XGBoost
JSON/UBJ or LightGBM text model file. The booster is always stored in the library's own format
(never a pickle) with ``boosted.json`` (:mod:`modelport.runtimes.boosted`), and checked by loading
it back; then it is converted to ONNX with onnxmltools and verified against the original on the
sample, as scikit-learn models are. ONNX serves it when verified, the native copy staying as the
fallback; otherwise the library's own runtime serves it, and the notes say why.

A scikit-learn Pipeline holding such an estimator is a scikit-learn model (ingest's path):
:func:`register_converters` gives skl2onnx onnxmltools' converters for the steps it holds.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import InvalidModel
from modelport.ingest import onnxgraph
from modelport.ingest.packaged import Packaged, new_directory, reason
from modelport.ingest.tabular import (
    Sample,
    canonical_labels,
    missing_value_answers,
    nan_probes,
    onnx_differs_on_nan,
    sample_of,
)
from modelport.ingest.verification import TOLERANCE, disagreement
from modelport.registry import environment
from modelport.runtimes import boosted
from modelport.runtimes import lightgbm as lightgbm_runtime
from modelport.runtimes import onnx as onnx_runtime
from modelport.runtimes import sklearn as sklearn_runtime
from modelport.runtimes import xgboost as xgboost_runtime
from modelport.signature import DEFAULT_INPUT, example_of, input_specs, output_specs, sample_arrays
from modelport.types import Signature

log = logging.getLogger("modelport")

LIBRARIES = ("xgboost", "lightgbm")
NAMES = {"xgboost": "XGBoost", "lightgbm": "LightGBM"}
# XGBoost objectives whose predictions are class probabilities (the others predict values)
XGBOOST_PROBABILITIES = ("binary:logistic", "multi:softprob")
LIGHTGBM_PROBABILITIES = ("binary", "multiclass", "multiclassova")
ONNXMLTOOLS_OPSET = 15  # the highest default-domain opset onnxmltools 1.16 converts to


def claims(model: object) -> bool:
    """Whether ``model`` is one of this module's kinds: an XGBoost or LightGBM object, or a model
    file of theirs (XGBoost ``.json``/``.ubj``, LightGBM text ``.txt``), recognised by its first bytes."""
    if isinstance(model, str | Path):
        return _library_of_file(Path(model)) is not None
    return type(model).__module__.split(".")[0] in LIBRARIES


def _library_of_file(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix not in (*xgboost_runtime.SUFFIXES, *lightgbm_runtime.SUFFIXES) or not path.is_file():
        return None
    with path.open("rb") as fh:
        head = fh.read(64)
    if suffix == ".txt":
        return "lightgbm" if head.split(b"\n", 1)[0].strip() == b"tree" else None
    # XGBoost's JSON starts {"learner":..., its UBJSON {L<8-byte length>learner...
    return "xgboost" if b"learner" in head[:32] else None


def package(
    model: object, *, workdir: Path, sample_input: object | None, trust_pickle: bool, runtime: str | None
) -> Packaged:
    """Make an artifact directory in ``workdir`` from an XGBoost or LightGBM model (see the module docstring).

    ``runtime``: None serves ONNX when verified and the library's runtime otherwise; "onnx"
    insists on ONNX; "xgboost" / "lightgbm" skips the conversion. ``trust_pickle`` is not needed:
    nothing stored runs code when loaded. A model file whose trees the library would follow out
    of bounds or round a cycle is refused before the library reads it
    (:class:`boosted.UncheckedTrees`), trusted or not.
    """
    found = _found(model)
    name = NAMES[found.library]
    if runtime not in (None, "onnx", found.library):
        raise InvalidModel(
            f"unknown runtime {runtime!r} for a {name} model; choose onnx or {found.library} (or leave it out)"
        )
    if sample_input is None:
        raise InvalidModel(
            f"a {name} model needs a sample input (a few rows of training data: DataFrame, ndarray or list of "
            "row dicts) to infer and verify its signature; pass sample_input= (Python) or --sample (CLI)"
        )
    taken = sample_of(found.names_holder(sample_input), sample_input)
    if taken.columns:
        raise InvalidModel(
            f"the sample for a {name} model must be numeric: one table of features. Encode text and categorical "
            "columns as numbers, or put the encoder and the model in a scikit-learn Pipeline"
        )
    n_features = taken.arrays[DEFAULT_INPUT].shape[1]
    if found.n_features and n_features != found.n_features:
        raise InvalidModel(f"the sample has {n_features} features, the model was trained on {found.n_features}")
    original = found.original()
    names = boosted.OUTPUTS[found.manifest.task]
    try:
        reference = sklearn_runtime.predict_outputs(original, taken.model_input(taken.arrays), names)
    except Exception as exc:  # the libraries raise their own errors
        raise InvalidModel(f"the model raised on the sample input: {reason(exc)}") from exc
    probes = nan_probes(taken.arrays)
    accepts_nan, nan_refusal = missing_value_answers(original, taken, probes, names)
    notes = [found.source] if found.source else []
    directory = new_directory(workdir)
    native_note = _store_native(found, directory, taken, reference)
    if runtime == found.library:
        converted, conversion_note = None, f"native {name} runtime requested; ONNX conversion skipped"
    else:
        converted, conversion_note = _convert(found, taken, reference)
        if converted is None and runtime == "onnx":
            raise InvalidModel(f"the ONNX runtime was requested but {conversion_note.rpartition(';')[0]}")
    notes.append(conversion_note)
    differ = onnx_differs_on_nan(converted, taken, probes, accepts_nan) if converted is not None else []
    if differ:
        accepts_nan = {key: answer for key, answer in accepts_nan.items() if key not in differ}
        notes.append(
            f"the ONNX graph answers missing values differently from {name}, so NaN is refused there; to accept "
            f"it, register with runtime='{found.library}' or with rows holding NaN in the sample (both serve the "
            "model natively)"
        )
    if converted is not None:
        (directory / onnx_runtime.FILENAME).write_bytes(converted)
        served = "onnx"
        notes.append(f"native {name} copy stored as {native_note} (fallback)")
    else:
        served = found.library
        notes.append(f"stored as {native_note}")
    if accepts_nan:
        notes.append(f"accepts missing values (NaN) in {', '.join(accepts_nan)}: checked with NaN put in the sample")
    elif probes and not differ:
        notes.append(f"refuses missing values (NaN): {nan_refusal}")
    (spec,) = input_specs(taken.arrays, taken.feature_names)
    datatype = taken.datatypes(served)[DEFAULT_INPUT]
    inputs = (replace(spec, datatype=datatype, allow_nan=DEFAULT_INPUT in accepts_nan),)
    signature = Signature(inputs=inputs, outputs=output_specs(reference), example=example_of(taken.arrays))
    return Packaged(
        directory, served, found.library, signature, environment.capture(found.library), tuple(notes), False
    )


@dataclass(frozen=True)
class _Found:
    """The model as given, its native booster and what the runtime's manifest records of it."""

    library: str
    booster: Any  # xgboost.Booster or lightgbm.Booster
    wrapper: Any  # the scikit-learn wrapper, or None for a booster
    manifest: boosted.Manifest
    feature_names: tuple[str, ...] | None  # names the model was fitted with, when it knows real ones
    n_features: int
    source: str | None  # "loaded from model.json" for a file
    suffix: str = ".json"  # the model file's format: XGBoost .json or .ubj, LightGBM .txt

    def names_holder(self, sample: object) -> Any:
        """An object with ``feature_names_in_`` as ingest's sample check reads it. LightGBM fits a
        DataFrame's columns with spaces made underscores: the sample's own names stand for those."""
        names = self.feature_names
        _, given = sample_arrays(sample)
        if names and given and self.library == "lightgbm" and tuple(n.replace(" ", "_") for n in given) == names:
            names = given
        return _Names(np.asarray(names, dtype=object) if names else None)

    def original(self) -> Any:
        """The model with scikit-learn's ``predict`` / ``predict_proba``, as ingest's helpers ask it."""
        return self.wrapper if self.wrapper is not None else _BoosterModel(self)

    def scores(self, x: np.ndarray) -> np.ndarray:
        if self.library == "xgboost":
            return xgboost_runtime.scores(self.booster, x, self.manifest.missing)
        return lightgbm_runtime.scores(self.booster, x)


@dataclass(frozen=True)
class _Names:
    feature_names_in_: np.ndarray | None


class _BoosterModel:
    """A native booster answering ``predict`` / ``predict_proba`` with the runtime's canonical outputs."""

    def __init__(self, found: _Found) -> None:
        self._found = found
        classes = found.manifest.classes
        self._classes = np.asarray(classes) if classes else np.empty(0)

    def _outputs(self, x: Any) -> dict[str, np.ndarray]:
        rows = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
        return boosted.outputs(self._found.scores(rows), self._found.manifest, self._classes)

    def predict(self, x: Any) -> np.ndarray:
        got = self._outputs(x)
        return got["label"] if self._found.manifest.task == "classifier" else got["prediction"]

    def predict_proba(self, x: Any) -> np.ndarray:
        return self._outputs(x)["probabilities"]


def _found(model: object) -> _Found:
    if isinstance(model, str | Path):
        path = Path(model)
        library = _library_of_file(path)
        if library is None:  # claims() said it is one
            raise InvalidModel(f"{path.name} is not an XGBoost or LightGBM model file")
        try:  # open_booster checks the trees before the library reads the file
            if library == "xgboost":
                booster = xgboost_runtime.open_booster(path)
            else:
                booster = lightgbm_runtime.open_booster(path)
        except boosted.UncheckedTrees:
            raise
        except Exception as exc:  # the libraries raise their own errors for broken files
            raise InvalidModel(f"{NAMES[library]} cannot load {path.name}: {reason(exc)}") from exc
        return _from_booster(library, booster, f"loaded from {path.name}", path.suffix.lower())
    library = type(model).__module__.split(".")[0]
    if hasattr(model, "get_params") and hasattr(model, "predict"):
        return _from_wrapper(library, model)
    booster_type = {"xgboost": "xgboost.core", "lightgbm": "lightgbm.basic"}[library]
    if type(model).__module__ == booster_type and type(model).__name__ == "Booster":
        return _from_booster(library, model, None, ".json" if library == "xgboost" else ".txt")
    raise InvalidModel(
        f"cannot register a {type(model).__module__}.{type(model).__qualname__}; give a fitted {NAMES[library]} "
        "scikit-learn estimator (classifier or regressor) or a Booster"
    )


def _from_wrapper(library: str, model: Any) -> _Found:
    from sklearn.base import is_classifier

    try:
        if library == "xgboost":
            booster = model.get_booster()
            best = getattr(model, "best_iteration", None) if _early_stopped(model) else None
            if best is not None:  # predict() uses the trees up to the best iteration only
                booster = booster[: best + 1]
        else:
            booster = model.booster_
    except Exception as exc:  # NotFittedError, LightGBMError, XGBoostError
        raise InvalidModel(f"the {type(model).__name__} is not fitted: {reason(exc)}") from exc
    missing = None
    if library == "xgboost":
        value = model.get_params().get("missing")
        missing = None if value is None or np.isnan(value) else float(value)
    if is_classifier(model):
        classes = sklearn_runtime.canonical_label(np.asarray(model.classes_))
        manifest = boosted.Manifest(
            library, "", "classifier", tuple(classes.tolist()), boosted.label_datatype(classes), missing
        )
    else:
        manifest = boosted.Manifest(library, "", "regressor", missing=missing)
    fitted = getattr(model, "feature_names_in_", None)
    names = tuple(str(n) for n in fitted) if fitted is not None else None
    n_features = int(getattr(model, "n_features_in_", 0) or 0)
    suffix = ".json" if library == "xgboost" else ".txt"
    return _Found(library, booster, model, manifest, names, n_features, None, suffix)


def _early_stopped(model: Any) -> bool:
    try:
        model.best_iteration  # noqa: B018 (XGBoost raises AttributeError without early stopping)
    except AttributeError:
        return False
    return True


def _from_booster(library: str, booster: Any, source: str | None, suffix: str) -> _Found:
    if library == "xgboost":
        config = json.loads(booster.save_config())["learner"]
        objective = config["objective"]["name"]
        n_classes = int(config["learner_model_param"].get("num_class", "0") or 0)
        names = tuple(booster.feature_names) if booster.feature_names else None
        n_features = int(booster.num_features())
        if objective in XGBOOST_PROBABILITIES:
            classes = tuple(range(max(n_classes, 2)))
            manifest = boosted.Manifest(library, "", "classifier", classes)
        elif objective.startswith(("multi:", "binary:")):
            raise InvalidModel(
                f"the XGBoost objective {objective} predicts no probabilities; modelport serves binary:logistic "
                "and multi:softprob classifiers, and regressors"
            )
        else:
            manifest = boosted.Manifest(library, "", "regressor")
    else:
        objective = str(booster.params.get("objective", "regression")).split()[0]
        n_features = int(booster.num_feature())
        given = tuple(booster.feature_name())
        names = None if given == tuple(f"Column_{i}" for i in range(n_features)) else given
        if objective in LIGHTGBM_PROBABILITIES:
            classes = tuple(range(max(int(booster.num_model_per_iteration()), 2)))
            manifest = boosted.Manifest(library, "", "classifier", classes)
        else:
            manifest = boosted.Manifest(library, "", "regressor")
    return _Found(library, booster, None, manifest, names, n_features, source, suffix)


def _store_native(found: _Found, directory: Path, taken: Sample, reference: Mapping[str, np.ndarray]) -> str:
    """Save the booster in the library's format with its manifest, load it back with the native
    runtime and check it answers the sample as the original does; returns what it was stored as."""
    if found.library == "xgboost":
        file = "model.ubj" if found.suffix == ".ubj" else "model.json"
        what = f"XGBoost {'UBJ' if file.endswith('.ubj') else 'JSON'} ({file})"
        found.booster.save_model(str(directory / file))
        cls: type[boosted.BoostedRuntime] = xgboost_runtime.XGBoostRuntime
    else:
        file, what = "model.txt", "a LightGBM text model (model.txt)"
        found.booster.save_model(str(directory / file))  # the best iteration only, when early stopping set one
        cls = lightgbm_runtime.LightGBMRuntime
    manifest = replace(found.manifest, file=file)
    manifest.write(directory)
    (spec,) = input_specs(taken.arrays, taken.feature_names)
    runtime = cls()
    runtime.load(directory, Signature((replace(spec, datatype="FP64"),), output_specs(reference)))
    try:
        again = runtime.predict(taken.arrays)
    finally:
        runtime.unload()
    problem, _ = disagreement(canonical_labels(again), reference)
    if problem:
        raise InvalidModel(f"the saved {NAMES[found.library]} model predicts differently after loading ({problem})")
    return what


def _convert(found: _Found, taken: Sample, reference: Mapping[str, np.ndarray]) -> tuple[bytes | None, str]:
    """ONNX bytes with canonical output names, verified on the sample, or None and the reason."""
    name = NAMES[found.library]
    native = f"serving with the native {name} runtime"
    try:
        model = _onnx(found, taken.arrays[DEFAULT_INPUT].shape[1], reference)
        data: bytes = model.SerializeToString()
        session = onnx_runtime.session(data)
        got = dict(zip(reference, session.run(list(reference), taken.onnx_feed(taken.arrays)), strict=True))
    except Exception as exc:  # onnxmltools and ONNX Runtime raise many types for unsupported models
        log.info("ONNX conversion failed", exc_info=True)
        return None, f"ONNX conversion failed: {reason(exc)}; {native}"
    problem, max_diff, agreed = _verify(got, reference)
    symbol = "|Δp|" if "probabilities" in reference else "|Δ|"
    if problem:
        return None, f"ONNX output disagrees with {name} on the sample ({problem}); {native}"
    labels = f", labels agree on {agreed}" if agreed else ""
    return data, (
        f"converted to ONNX with onnxmltools (opset {onnxgraph.opset(model)}); verified on {taken.rows} sample rows, "
        f"max {symbol} = {max_diff:.2g}{labels}"
    )


def _verify(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> tuple[str, float, str]:
    """Probabilities and predictions within tolerance (:func:`disagreement`); labels equal but where the
    original's two most probable classes tie within the tolerance, a tie float32 may break otherwise.
    Returns what differs (empty when nothing does), the largest difference and the label agreement."""
    numbers = {key: value for key, value in want.items() if key != "label"}
    problem, max_diff = disagreement(got, numbers)
    if "label" not in want or problem:
        return problem, max_diff, ""
    labels = sklearn_runtime.canonical_label(np.asarray(got["label"]))
    expected = want["label"]
    if labels.shape != expected.shape or labels.dtype.kind != expected.dtype.kind:
        return f"label: {labels.dtype} {list(labels.shape)} instead of {expected.dtype} {list(expected.shape)}", 0, ""
    differ = labels != expected
    top = np.sort(want["probabilities"], axis=1)[:, -2:] if "probabilities" in want else None
    ties = np.abs(top[:, 1] - top[:, 0]) <= TOLERANCE if top is not None else np.zeros_like(differ)
    if np.any(differ & ~ties):
        return f"label: {int(np.sum(differ & ~ties))} of {len(expected)} values differ", max_diff, ""
    return "", max_diff, f"{len(expected) - int(differ.sum())} of {len(expected)} rows"


def _onnx(found: _Found, n_features: int, reference: Mapping[str, np.ndarray]) -> Any:
    """The onnxmltools graph: input "input" [-1, n_features] FP32, outputs named as ``reference``."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    initial = [(DEFAULT_INPUT, FloatTensorType([None, n_features]))]
    if found.library == "xgboost":
        # onnxmltools converts the booster (the trees predict() uses: sliced at an early-stopping
        # best iteration) and needs XGBoost's default feature names f0, f1...
        model = found.booster[:]
        model.feature_names = None
        model.feature_types = None
    else:
        model = found.wrapper if found.wrapper is not None else found.booster
    # onnxmltools and the libraries warn about their own deprecations while converting; the graph
    # is verified below, so the warnings are logged, not raised (the suite's filterwarnings=error).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if found.library == "xgboost":
            graph = onnxmltools.convert_xgboost(model, initial_types=initial, target_opset=ONNXMLTOOLS_OPSET)
        else:
            graph = onnxmltools.convert_lightgbm(
                model, initial_types=initial, target_opset=ONNXMLTOOLS_OPSET, zipmap=False
            )
    for warning in caught:
        log.debug("onnxmltools: %s", warning.message)
    _canonical_outputs(graph, reference)
    return graph


def _canonical_outputs(model: Any, reference: Mapping[str, np.ndarray]) -> None:
    """Rename the graph's outputs as ``reference`` (label, probabilities / prediction), make their
    batch dimension free (onnxmltools declares LightGBM's label [1]) and a 1-D prediction [-1]."""
    import onnx

    graph = model.graph
    onnxgraph.name_outputs(graph, list(reference), "onnxmltools")
    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("", ONNXMLTOOLS_OPSET))  # for the Reshape below
    for output in graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "N"
    if "prediction" in reference and reference["prediction"].ndim == 1:
        onnxgraph._flatten_output(graph, "prediction")
    onnx.checker.check_model(model)


def register_converters(estimator: object) -> None:
    """Give skl2onnx onnxmltools' converters for the XGBoost and LightGBM estimators ``estimator``
    holds (a Pipeline's steps), as onnxmltools documents; the libraries are imported only when it does."""
    held = {type(value) for value in _parts(estimator) if type(value).__module__.split(".")[0] in LIBRARIES}
    if not held:
        return
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from sklearn.base import is_classifier

    for cls in held:
        library = cls.__module__.split(".")[0]
        if library == "xgboost":
            from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost as convert
        else:
            from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm as convert
        converter = _ml_opset_capped(convert)
        alias = f"{NAMES[library]}{cls.__name__}"
        if is_classifier(cls()):
            options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
            update_registered_converter(
                cls, alias, calculate_linear_classifier_output_shapes, converter, options=options
            )
        else:
            update_registered_converter(cls, alias, calculate_linear_regressor_output_shapes, converter)


def _parts(estimator: object) -> list[object]:
    """The estimator and everything its parameters hold, deeply (a Pipeline's steps, a ColumnTransformer's)."""
    get_params = getattr(estimator, "get_params", None)
    if get_params is None:
        return [estimator]
    try:
        params = get_params(deep=True)
    except Exception:  # an estimator whose get_params fails holds nothing we convert
        return [estimator]
    return [estimator, *params.values()]


def _ml_opset_capped(convert: Any) -> Any:
    """onnxmltools' converter, made to write ``ai.onnx.ml`` operators at the highest version skl2onnx
    accepts: without a target for that domain (ingest converts with skl2onnx's default opset) the
    converter takes the newest tree operators onnx knows (ai.onnx.ml 5), which skl2onnx then refuses."""
    from skl2onnx.common._topology import get_default_opset_for_domain

    ml = get_default_opset_for_domain("ai.onnx.ml") or 3

    def converter(scope: Any, operator: Any, container: Any) -> Any:
        before = container.target_opset_all
        targets = dict(before) if isinstance(before, dict) else {"": container.target_opset}
        if targets.get("ai.onnx.ml") is None:
            container.target_opset_all = {**targets, "ai.onnx.ml": ml}
        try:
            return convert(scope, operator, container)
        finally:
            container.target_opset_all = before

    return converter
