"""The Python API: ``modelport.register(model, ...)`` and ``modelport.load(ref)``."""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from modelport.errors import DeviceWarning, InvalidInput, InvalidModel, ModelportError
from modelport.ingest import placement
from modelport.ingest.package import package
from modelport.ingest.packaged import Packaged
from modelport.observability.profile import build_profile, write_profile
from modelport.reference import parse_name, validate_alias
from modelport.registry.registry import Registry
from modelport.runtimes import KINDS
from modelport.runtimes.base import Runtime
from modelport.serving.loading import open_version
from modelport.settings import Settings
from modelport.signature import select_outputs, to_inputs, validate_inputs
from modelport.types import Batching, ModelVersion, Signature, device_of, precision_of

log = logging.getLogger("modelport")


def register(
    model: Any,
    *,
    name: str,
    sample_input: Any = None,
    reference_data: Any = None,
    alias: str | Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    metrics: Mapping[str, float | str] | None = None,
    params: Mapping[str, float | str] | None = None,
    description: str = "",
    trust_pickle: bool = False,
    runtime: str | None = None,
    batching: Batching | None = None,
    capture_rate: float | None = None,
    device: str | None = None,
    precision: str | None = None,
    precision_tolerance: float | None = None,
    allow_signature_change: bool = False,
    settings: Settings | None = None,
) -> ModelVersion:
    """Register ``model`` as the next version of ``name`` and return that version.

    ``model`` is a fitted scikit-learn estimator or Pipeline, an XGBoost or LightGBM model, a
    PyTorch module or exported program, a Keras/TensorFlow model, or a path to an ``.onnx``,
    ``.skops``, pickle, XGBoost ``.json``/``.ubj``, LightGBM ``.txt``, PyTorch
    ``.pt2``/``.pt``/``.pth`` or ``.keras`` file, a SavedModel directory, or a directory holding a
    custom Python model. Models are converted to ONNX and verified on ``sample_input`` (an
    ndarray, a DataFrame whose columns become named features, or a list of row dicts), else
    served by their library's runtime; pickles, TorchScript archives and custom Python code need
    ``trust_pickle=True``. ``reference_data`` (same forms as ``sample_input``; ideally a few
    thousand rows of training data) is what ``modelport drift`` compares traffic with: its
    profile and the model's predictions on it are stored with the version; without it the sample
    input is profiled, with a warning that it is small. ``runtime="sklearn"`` (``"xgboost"``,
    ``"lightgbm"``, ``"torch"``, ``"tensorflow"``) serves the model natively instead of
    converting it;
    ``runtime="onnx"`` makes a failed conversion an error.
    ``batching`` (a :class:`~modelport.types.Batching`) sets this version's own adaptive-batching
    settings; a server uses them instead of its own defaults. ``capture_rate`` (0 to 1) is the
    share of this version's requests that payload capture writes, instead of the server's rate.
    ``device`` (``cpu``, ``cuda``, ``cuda:N``) is where servers run this version unless their own
    ``--device`` says otherwise; one this machine cannot use is a
    :class:`~modelport.errors.DeviceWarning`. ``precision`` ``fp16`` or ``bf16`` (runtimes that offer
    it: torch; a PyTorch model is then served by the torch runtime) is measured against fp32 on the
    sample, noted, and refused when it moves an output by more than ``precision_tolerance`` (default
    0.02) of that output's largest magnitude.
    An ``alias`` that clients call is moved to the new version only if its signature keeps what
    they send and read (else :class:`~modelport.errors.Conflict` naming the difference), or with
    ``allow_signature_change=True``.
    """
    parse_name(name)
    aliases = [alias] if isinstance(alias, str) else list(alias)
    for each in aliases:
        validate_alias(each)
    settings = settings or Settings.from_env()
    device, precision = _checked(device_of, device), _checked(precision_of, precision)
    reduced = precision not in (None, "fp32")
    if precision_tolerance is not None and not reduced:
        raise InvalidModel("a precision tolerance applies to a reduced precision: give precision='bf16' or 'fp16' too")
    tolerance = placement.tolerance_of(
        placement.PRECISION_TOLERANCE if precision_tolerance is None else precision_tolerance
    )
    chosen = runtime
    if reduced and runtime is None and _is_pytorch(model):
        chosen = "torch"  # ONNX Runtime serves the graph in fp32 only
    with tempfile.TemporaryDirectory(prefix="modelport-") as workdir:
        packaged = package(
            model, workdir=Path(workdir), sample_input=sample_input, trust_pickle=trust_pickle, runtime=chosen
        )
        notes, device_warning = _placement(packaged, device, precision, tolerance, sample_input)
        if chosen != runtime:
            notes = (f"{precision}: served by the torch runtime (ONNX Runtime computes in fp32 only)", *notes)
        _keep_reference_profile(packaged, reference_data, sample_input)
        registry = Registry.open(settings)
        try:
            version = registry.register(
                name,
                packaged.directory,
                runtime=packaged.runtime,
                framework=packaged.framework,
                signature=packaged.signature,
                environment=packaged.environment,
                tags=tags,
                metrics=metrics,
                params=params,
                description=description,
                notes=notes,
                trusted_code=packaged.trusted_code,
                aliases=aliases,
                batching=batching,
                capture_rate=capture_rate,
                device=device,
                precision=precision,
                allow_signature_change=allow_signature_change,
            )
        finally:
            registry.close()
    if device_warning:
        warnings.warn(DeviceWarning(f"{version.ref}: {device_warning}"), stacklevel=2)
    return version


def _checked(check: Any, value: Any) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise InvalidModel(str(exc)) from None


def _is_pytorch(model: Any) -> bool:
    from modelport.ingest import pytorch

    return bool(pytorch.claims(model))


def _placement(
    packaged: Packaged, device: str | None, precision: str | None, tolerance: float, sample_input: Any
) -> tuple[tuple[str, ...], str]:
    """The version's notes with a reduced precision's deviation from fp32 on the sample (refused
    past ``tolerance``), and a warning when this machine cannot run it on ``device`` ("" if it can)."""
    notes = packaged.notes
    problem = placement.device_problem(packaged, device) if device else None
    if precision not in (None, "fp32"):
        assert precision is not None
        where = device if device and problem is None else "cpu"
        inputs = _sample_inputs(packaged, sample_input)
        deviation = placement.measure_precision(packaged, precision, inputs, device=where)
        notes = (*notes, deviation.note(tolerance))
        placement.check_tolerance(deviation, tolerance)
    if problem is None:
        return notes, ""
    return notes, (
        f"registered to run on {device}, which this machine cannot use ({problem}); a server that has it runs "
        "the version there, and `serve --device cpu` (MODELPORT_DEVICE=cpu) serves it on the CPU anywhere"
    )


def _sample_inputs(packaged: Packaged, sample_input: Any) -> dict[str, np.ndarray]:
    """The sample as the signature's inputs (as a request would carry it)."""
    signature = packaged.signature
    try:
        data = packaged.sample if packaged.sample is not None else to_inputs(signature, sample_input)
        return validate_inputs(signature, data, finite=[spec.name for spec in signature.inputs])
    except InvalidInput as exc:
        raise InvalidModel(f"the precision cannot be measured on the sample: {exc}") from None


def _keep_reference_profile(packaged: Packaged, reference_data: Any, sample_input: Any) -> None:
    """Write the version's reference profile (for drift) into the packaged directory: from
    ``reference_data``, else from the sample input with a warning, else none (warned too)."""
    hint = "pass reference_data= (Python) or --reference data.csv (CLI) with a few thousand rows of training data"
    if reference_data is None and sample_input is None:
        log.warning("no reference profile kept for drift (no reference data and no sample input); %s", hint)
        return
    given = reference_data is not None
    what = "the reference data" if given else "the sample input"
    signature = packaged.signature
    try:
        data = reference_data if given else sample_input
        only = signature.inputs[0] if len(signature.inputs) == 1 else None
        if hasattr(data, "columns") and only is not None and len(only.shape) == 2 and not only.feature_names:
            data = data.to_numpy()  # a table for a model without feature names: its columns in order
        inputs = validate_inputs(signature, to_inputs(signature, data))
        outputs = _predict(packaged, inputs, what)
        profile = build_profile(signature, inputs, outputs, source="reference_data" if given else "sample_input")
    except ModelportError as exc:
        if given and isinstance(exc, InvalidInput):
            raise InvalidInput(f"{what} does not fit the model's inputs: {exc}") from None
        if given:
            raise
        log.warning("no reference profile kept for drift: %s cannot be profiled (%s); %s", what, exc, hint)
        return
    if not given:
        log.warning(
            "the reference profile for drift comes from the sample input (%d rows), too few to tell drift "
            "from chance well; %s",
            profile.rows,
            hint,
        )
    write_profile(packaged.directory, profile)


def _predict(packaged: Packaged, inputs: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """The packaged model's outputs on ``inputs``, loaded from its directory as a server would."""
    runtime = KINDS[packaged.runtime]()
    try:
        runtime.load(packaged.directory, packaged.signature)
        return runtime.predict(inputs)
    except InvalidInput:
        raise
    except ModelportError as exc:
        raise InvalidModel(f"the model failed on {what}: {exc}") from exc
    except Exception as exc:  # a runtime raises what its library raises
        raise InvalidModel(f"the model failed on {what}: {type(exc).__name__}: {exc}") from exc
    finally:
        runtime.unload()


class LoadedModel:
    """A registered version loaded in this process, with the same input rules as the server."""

    def __init__(self, version: ModelVersion, runtime: Runtime) -> None:
        self.version = version
        self._runtime = runtime

    @property
    def signature(self) -> Signature:
        return self.version.signature

    def predict(self, data: Any, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Predict on a DataFrame, ndarray, list of rows, list of row dicts or dict of arrays."""
        signature = self.version.signature
        result = self._runtime.predict(validate_inputs(signature, to_inputs(signature, data)))
        return select_outputs(result, outputs)

    def close(self) -> None:
        self._runtime.unload()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LoadedModel {self.version.ref} runtime={self.version.runtime}>"


def load(
    ref: str, *, settings: Settings | None = None, threads: int | None = None, allow_env_mismatch: bool | None = None
) -> LoadedModel:
    """Load a registered version (``iris``, ``iris@3``, ``iris@production``) for prediction."""
    settings = settings or Settings.from_env()
    registry = Registry.open(settings, create=False)  # loading never makes a registry
    try:
        version = registry.get(ref)
        runtime = open_version(
            version,
            registry.artifact_path(version),
            threads=threads or settings.compute_threads,
            allow_env_mismatch=settings.allow_env_mismatch if allow_env_mismatch is None else allow_env_mismatch,
            device=settings.device,
        )
    finally:
        registry.close()
    return LoadedModel(version, runtime)
