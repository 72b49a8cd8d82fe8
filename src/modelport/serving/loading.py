"""Open a registered version as a loaded runtime: trust, environment check, load."""

from __future__ import annotations

import logging
from pathlib import Path

from modelport.errors import EnvironmentMismatch, InvalidModel, InvalidSetting, ModelportError, UntrustedArtifact
from modelport.registry.environment import compare
from modelport.runtimes import KINDS, Runtime
from modelport.runtimes import sklearn as sklearn_runtime
from modelport.types import ModelVersion

log = logging.getLogger("modelport")


def open_version(
    version: ModelVersion,
    artifact: Path,
    *,
    threads: int = 1,
    allow_env_mismatch: bool = False,
    device: str | None = None,
) -> Runtime:
    """A runtime of ``version.runtime`` with ``artifact`` loaded, ready to predict.

    The version runs on ``device`` when it is given (the server's ``--device`` or
    ``MODELPORT_DEVICE``: it wins over the version's own device, with a log line when they differ),
    else on its own device, else on the CPU; in its own precision (fp32 unless it opted in to fp16
    or bf16). Raises UntrustedArtifact when the
    artifact runs code but the version was not registered as trusted, EnvironmentMismatch when
    library versions make the model unsafe to serve (unless ``allow_env_mismatch``),
    InvalidSetting when its runtime cannot use the device or precision, and InvalidModel when
    loading fails.
    """
    if version.runtime not in KINDS:
        raise InvalidModel(
            f"{version.ref} needs the {version.runtime!r} runtime, which this server does not have "
            f"(the kinds are: {KINDS.describe()})"
        )
    cls = KINDS[version.runtime]
    pickled = _check_trust(version, artifact, runs_code=cls.capabilities.runs_code)
    _check_environment(version, pickled=pickled, allow_env_mismatch=allow_env_mismatch)
    placement = _placement(version, cls, _device(version, device))
    runtime = cls()
    try:
        runtime.load(artifact, version.signature, threads=threads, **placement)
    except (UntrustedArtifact, EnvironmentMismatch, InvalidSetting):
        raise
    except Exception as exc:  # corrupt files surface as anything the library raises
        cause = exc.message if isinstance(exc, ModelportError) else f"{type(exc).__name__}: {exc}"
        raise InvalidModel(f"cannot load {version.ref} with the {version.runtime} runtime: {cause}") from exc
    return runtime


def _device(version: ModelVersion, given: str | None) -> str:
    """Where ``version`` runs: on the server's device when one is ``given``, else on its own, else the CPU."""
    if given is None:
        return version.device or "cpu"
    if version.device and version.device != given:
        log.info(
            "%s was registered to run on %s; running it on %s, as the server's --device (MODELPORT_DEVICE) says",
            version.ref,
            version.device,
            given,
        )
    return given


def _placement(version: ModelVersion, cls: type[Runtime], device: str) -> dict[str, str]:
    """The ``device`` / ``precision`` keywords for ``load``: none for the CPU in full precision
    (every runtime's default), else checked against what the runtime says it can use."""
    precision = version.precision or "fp32"
    if device == "cpu" and precision == "fp32":
        return {}
    kind = device.split(":")[0]
    if kind not in cls.capabilities.devices:
        raise InvalidSetting(
            f"{version.ref} is to run on {device}, and the {version.runtime} runtime runs on "
            f"{', '.join(cls.capabilities.devices)} only; serve it with --device cpu (or register it without --device)"
        )
    if precision != "fp32" and cls.capabilities.devices == ("cpu",):
        raise InvalidSetting(f"{version.ref} asks for {precision}, which the {version.runtime} runtime does not offer")
    return {"device": device, "precision": precision}


def _check_trust(version: ModelVersion, artifact: Path, *, runs_code: bool) -> bool:
    """Refuse code-running artifacts not registered as trusted; return whether it is a pickle.

    For scikit-learn, PyTorch and TensorFlow artifacts the model file itself says whether it runs
    code (what a skops file would import; a TorchScript program or a pickled part of a .pt2; a
    SavedModel's ops that read files, run Python or reach the network), not the manifest beside it.
    """
    pickled, why = False, ""
    if version.runtime == "torch":  # a TorchScript program, or a .pt2 with pickled parts, runs code
        from modelport.runtimes import torch as torch_runtime

        try:
            runs_code = runs_code or torch_runtime.inspect(artifact).runs_code
        except InvalidModel as exc:
            raise InvalidModel(f"cannot load {version.ref}: {exc.message}") from exc
    if version.runtime == sklearn_runtime.SklearnRuntime.kind:
        try:
            manifest = sklearn_runtime.inspect(artifact)
        except InvalidModel as exc:
            raise InvalidModel(f"cannot load {version.ref}: {exc.message}") from exc
        runs_code = runs_code or manifest.runs_code
        pickled = manifest.format == "pickle"
    if version.runtime == "tensorflow":  # a SavedModel whose ops read files, run Python or reach the network
        from modelport.runtimes import tensorflow as tf_runtime

        try:
            reaching = tf_runtime.unsafe_ops(artifact / tf_runtime.SAVED_MODEL)
        except InvalidModel as exc:
            raise InvalidModel(f"cannot load {version.ref}: {exc.message}") from exc
        runs_code, why = runs_code or bool(reaching), "; ".join(reaching)
    if runs_code and not version.trusted_code:
        raise UntrustedArtifact(
            f"{version.ref} runs code when loaded ({version.runtime} runtime{': ' + why if why else ''}) "
            "but was not registered as trusted; "
            "re-register it with --trust-pickle (CLI) or trust_pickle=True (Python) if you trust its source"
        )
    return pickled


def _check_environment(version: ModelVersion, *, pickled: bool, allow_env_mismatch: bool) -> None:
    mismatches = compare(version.environment, runtime=version.runtime, pickled=pickled)
    for mismatch in mismatches:
        level = logging.INFO if mismatch.severity == "info" else logging.WARNING
        log.log(level, "%s: %s", version.ref, mismatch.message)
    errors = [m for m in mismatches if m.severity == "error"]
    if errors and not allow_env_mismatch:
        raise EnvironmentMismatch(
            f"{version.ref} cannot be served safely here: "
            + "; ".join(m.message for m in errors)
            + " (to serve it anyway: MODELPORT_ALLOW_ENV_MISMATCH=1 or allow_env_mismatch=True)"
        )
