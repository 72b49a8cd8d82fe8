"""The life of each version a manager has seen, one :class:`VersionRecord` per version.

LOADING -> READY or FAILED; READY -> UNLOADING (drained: in-flight requests finish) -> UNLOADED.
A FAILED version stays blocked, not retried, while the plans still want it; it is retried when
they stop wanting it and want it again, or when an operator loads it explicitly
(:meth:`Lifecycle.retry`). Status endpoints read the records; the routing table reads
:attr:`Lifecycle.loaded`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from modelport.errors import InvalidModel, ModelportError
from modelport.serving.versions import ServingModel, VersionState, VersionStatus
from modelport.signature import count_rows, to_inputs, validate_inputs

logger = logging.getLogger("modelport")

DRAIN_SECONDS = 30.0  # longest wait for in-flight requests before a retired version is unloaded anyway
Key = tuple[str, int]


@dataclass(eq=False, slots=True)
class VersionRecord:
    """One version: its state, why it failed if it did (the loaded model is in ``Lifecycle.loaded``)."""

    key: Key
    state: VersionState
    error: ModelportError | None = None
    blocked: bool = False  # failed while wanted: not retried until unwanted or loaded explicitly

    def status(self) -> VersionStatus:
        return VersionStatus(self.key[0], self.key[1], self.state, self.error.message if self.error else None)


class Lifecycle:
    """Every version's record, and the transitions between their states (on the event loop)."""

    def __init__(self, drain_seconds: float = DRAIN_SECONDS) -> None:
        self.drain_seconds = drain_seconds
        self.loaded: dict[Key, ServingModel] = {}  # READY and UNLOADING versions, in load order
        self._records: dict[Key, VersionRecord] = {}

    # -- planning ----------------------------------------------------------------------------

    def to_load(self, wanted: Iterable[Key]) -> list[Key]:
        """The ``wanted`` versions to load now: not loaded, not blocked. Versions no longer wanted
        are unblocked (a later plan that wants them again retries them)."""
        wanted = list(wanted)
        chosen = set(wanted)
        for record in self._records.values():
            if record.blocked and record.key not in chosen:
                record.blocked = False
        return [key for key in wanted if key not in self.loaded and not self._blocked(key)]

    def retry(self, name: str) -> None:
        """Unblock every failed version of ``name`` (an explicit load retries them)."""
        for record in self._records.values():
            if record.key[0] == name:
                record.blocked = False

    def _blocked(self, key: Key) -> bool:
        record = self._records.get(key)
        return record is not None and record.blocked

    # -- transitions -------------------------------------------------------------------------

    def loading(self, key: Key) -> None:
        self._records[key] = VersionRecord(key, VersionState.LOADING)

    def ready(self, model: ServingModel) -> None:
        model.state = VersionState.READY
        self._records[model.key] = VersionRecord(model.key, VersionState.READY)
        self.loaded[model.key] = model
        logger.info("serving %s (runtime %s)", model.version.ref, model.version.runtime)

    def failed(self, key: Key, exc: ModelportError) -> ModelportError:
        """Mark ``key`` FAILED and blocked. The log keeps the whole message; what clients see (status
        endpoints, the error returned) names files by their base name, never by a path on this server."""
        logger.error("model %s@%d failed to load: %s", key[0], key[1], exc.message)
        exc.message = without_paths(exc.message)
        exc.args = (exc.message,)
        self._records[key] = VersionRecord(key, VersionState.FAILED, error=exc, blocked=True)
        return exc

    async def retire(self, model: ServingModel) -> None:
        """UNLOADING: wait until its in-flight requests finish (at most ``drain_seconds``)."""
        self._set(model, VersionState.UNLOADING)
        if not await model.drain.wait(self.drain_seconds):
            logger.warning("unloading %s with %d requests still in flight", model.version.ref, model.drain.inflight)

    def unloaded(self, model: ServingModel) -> None:
        """UNLOADED: forget the model and release its runtime (may run in a thread)."""
        self.loaded.pop(model.key, None)
        self._set(model, VersionState.UNLOADED)
        try:
            model.runtime.unload()
        except Exception:
            logger.exception("unloading %s failed", model.version.ref)
        logger.info("unloaded %s", model.version.ref)

    def _set(self, model: ServingModel, state: VersionState) -> None:
        model.state = state  # what the request path reads
        self._records[model.key].state = state

    # -- reading -----------------------------------------------------------------------------

    def knows(self, name: str) -> bool:
        return any(key[0] == name for key in self._records)

    def status(self, name: str | None = None) -> list[VersionStatus]:
        return [r.status() for key, r in sorted(self._records.items()) if name is None or key[0] == name]

    def get(self, key: Key) -> VersionRecord | None:
        return self._records.get(key)

    def failures(self, name: str) -> list[ModelportError]:
        """Why the versions of ``name`` the last plans wanted failed to load (blocked ones: a failed
        version stays blocked only while wanted)."""
        return [r.error for key, r in self._records.items() if key[0] == name and r.blocked and r.error is not None]

    def errors(self) -> dict[Key, str]:
        """Why each FAILED version failed."""
        return {key: r.error.message for key, r in self._records.items() if r.error is not None}


def warm(model: ServingModel) -> dict[str, np.ndarray] | None:
    """Run the registered example through ``model`` (InvalidModel when it fails or lacks an output),
    then time one row and the whole example so the cost model starts from real figures. Returns what
    it answered (the signature's outputs: the documentation's response examples; None: no example)."""
    signature = model.version.signature
    if signature.example is None:
        return None
    try:
        inputs = validate_inputs(signature, to_inputs(signature, signature.example))
        outputs = model.predict(inputs)
        model.cost.forget()  # the first call pays for lazy set-up: time one row, then all
        model.predict({name: arr[:1] if arr.ndim else arr for name, arr in inputs.items()})
        if count_rows(inputs) > 1:
            model.predict(inputs)
    except Exception as exc:
        raise InvalidModel(
            f"model {model.version.ref} failed its warm-up prediction on the registered example: "
            f"{type(exc).__name__}: {exc}; check the artifact and its runtime ({model.version.runtime})"
        ) from exc
    missing = [spec.name for spec in signature.outputs if spec.name not in outputs]
    if missing:
        raise InvalidModel(
            f"model {model.version.ref}: the runtime returned no output {missing[0]!r} "
            f"(returned: {', '.join(outputs) or 'nothing'})"
        )
    return {spec.name: np.asarray(outputs[spec.name]) for spec in signature.outputs}


_PATH = re.compile(r"(?<![\w/.~-])(?:~|/)(?:[^\s/'\"]*/)+([^\s/'\"]*)")


def without_paths(message: str) -> str:
    """``message`` with every absolute path replaced by its last part (``/srv/a/model.skops`` -> ``model.skops``)."""
    return _PATH.sub(lambda match: match.group(1) or "…", message)
