"""The model manager: which versions this process serves, and the one neutral inference call.

Every protocol resolves ``name`` + an optional selector (version number, alias or ``latest``)
through :meth:`ModelManager.get` and runs :meth:`ModelManager.infer`. The manager knows no wire
format; it loads models through a :class:`ModelSource` (the registry in production).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

import numpy as np

from modelport.errors import InvalidInput, InvalidModel, ModelNotReady, ModelportError, NotFound, PredictionFailed
from modelport.reference import Reference, parse_reference, parse_selector
from modelport.runtimes.base import Runtime
from modelport.signature import select_outputs, to_inputs, validate_inputs
from modelport.types import InferRequest, InferResult, ModelVersion

if TYPE_CHECKING:
    from modelport.registry import Registry

logger = logging.getLogger("modelport")

# A prediction expected to take less than this runs on the event loop: handing it to a thread
# costs more (~100 us of wake-up and GIL hand-over) than the work. Longer ones go to the pool.
INLINE_SECONDS = 0.0005


class ModelSource(Protocol):
    """Where the manager finds versions and opens them as loaded runtimes."""

    def resolve(self, ref: Reference) -> ModelVersion: ...

    def open(self, version: ModelVersion) -> Runtime: ...


class RegistrySource:
    """A :class:`ModelSource` over a registry: resolve there, load its artifact with ``loading``."""

    def __init__(self, registry: Registry, *, threads: int = 1, allow_env_mismatch: bool = False) -> None:
        self.registry = registry
        self.threads = threads
        self.allow_env_mismatch = allow_env_mismatch

    def resolve(self, ref: Reference) -> ModelVersion:
        return self.registry.get(ref)

    def open(self, version: ModelVersion) -> Runtime:
        from modelport.loading import open_version

        artifact = self.registry.artifact_path(version)
        return open_version(version, artifact, threads=self.threads, allow_env_mismatch=self.allow_env_mismatch)


class State(Enum):
    LOADING = "loading"
    READY = "ready"
    UNLOADED = "unloaded"


@dataclass(eq=False)
class ServingModel:
    """One served version: its registry record, its loaded runtime and its state."""

    version: ModelVersion
    runtime: Runtime
    state: State = State.LOADING
    lock: threading.Lock | None = field(default=None, repr=False)  # set when the runtime is not thread-safe
    outputs: tuple[str, ...] = field(init=False, repr=False)  # the signature's outputs, in order
    seconds_per_row: float = field(default=math.inf, repr=False)  # running average of predict cost

    def __post_init__(self) -> None:
        self.outputs = tuple(spec.name for spec in self.version.signature.outputs)

    @property
    def name(self) -> str:
        return self.version.name

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Predict, holding the lock when the runtime is not thread-safe."""
        if self.lock is None:
            return self.timed_predict(inputs)
        with self.lock:
            return self.timed_predict(inputs)

    def timed_predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Predict (caller holds the lock if any) and update the running cost per row."""
        start = time.perf_counter()
        outputs = self.runtime.predict(inputs)
        cost = (time.perf_counter() - start) / max(1, _rows(inputs))
        self.seconds_per_row = cost if self.seconds_per_row == math.inf else 0.8 * self.seconds_per_row + 0.2 * cost
        return outputs

    def runs_inline(self, rows: int) -> bool:
        """Whether a prediction of ``rows`` rows is cheap enough to run on the event loop."""
        return self.seconds_per_row * rows < INLINE_SECONDS


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    for arr in inputs.values():
        return arr.shape[0] if arr.ndim else 1
    return 1


class ModelManager:
    """Loads versions from a source, resolves name + selector to a loaded version, runs inference.

    ``threads`` sizes the pool that runs predictions off the event loop. Predictions whose
    measured cost (per row, times the request's rows) is under ``INLINE_SECONDS`` run inline.
    """

    def __init__(self, source: ModelSource, *, threads: int = 1) -> None:
        self.source = source
        self.threads = max(1, threads)
        self._models: dict[str, list[ServingModel]] = {}  # name -> served versions, default first
        self._routes: dict[tuple[str, str | None], ServingModel] = {}  # (name, selector) -> model
        self._expected: list[Reference] = []
        self._pinned: dict[tuple[str, str], int] = {}  # (name, alias) given at load -> version
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    # -- loading -----------------------------------------------------------------------------

    def load(self, refs: Sequence[str | Reference]) -> None:
        """Resolve, open and warm each reference, then serve it. The first ref of a name is its default."""
        parsed = [parse_reference(r) if isinstance(r, str) else r for r in refs]
        self._expected.extend(parsed)
        try:
            for ref in parsed:
                self._load_one(ref)
        finally:
            self._reroute()

    def _load_one(self, ref: Reference) -> None:
        version = self.source.resolve(ref)
        if ref.alias is not None:
            self._pinned[(version.name, ref.alias)] = version.version
        if any(m.version.version == version.version for m in self._models.get(version.name, ())):
            return
        runtime = self.source.open(version)
        model = ServingModel(version, runtime)
        if not runtime.capabilities.thread_safe:
            model.lock = threading.Lock()
        try:
            self._warm(model)
        except BaseException:
            runtime.unload()
            raise
        model.state = State.READY
        self._models.setdefault(version.name, []).append(model)
        logger.info("serving %s (runtime %s)", version.ref, version.runtime)

    def _warm(self, model: ServingModel) -> None:
        signature = model.version.signature
        if signature.example is None:
            return
        try:
            inputs = validate_inputs(signature, to_inputs(signature, signature.example))
            outputs = model.predict(inputs)
            model.seconds_per_row = math.inf  # the first call pays for lazy set-up: time a second one
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

    def _reroute(self) -> None:
        routes: dict[tuple[str, str | None], ServingModel] = {}
        for name, models in self._models.items():
            routes[(name, None)] = models[0]
            newest = max(models, key=lambda m: m.version.version)
            routes[(name, "latest")] = newest
            for model in models:
                routes[(name, str(model.version.version))] = model
                for alias in model.version.aliases:
                    routes.setdefault((name, alias), model)
        for (name, alias), number in self._pinned.items():
            routes[(name, alias)] = routes[(name, str(number))]
        self._routes = routes

    # -- lookup ------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True when every configured reference is loaded and ready."""
        if self._closed:
            return False
        return all(self._find(ref) is not None for ref in self._expected)

    def _find(self, ref: Reference) -> ServingModel | None:
        selector = None if ref.version is None and ref.alias is None else str(ref.version or ref.alias)
        model = self._routes.get((ref.name, selector))
        return model if model is not None and model.ready else None

    def model_ready(self, name: str, selector: str | None = None) -> bool:
        """Whether the version is ready; NotFound when it is not served at all."""
        return self.get(name, selector).ready

    def get(self, name: str, selector: str | None = None) -> ServingModel:
        model = self._routes.get((name, selector))
        if model is not None:
            return model
        return self._get_slow(name, selector)

    def _get_slow(self, name: str, selector: str | None) -> ServingModel:
        models = self._models.get(name)
        if not models:
            served = ", ".join(sorted(self._models)) or "none"
            raise NotFound(f"model {name!r} is not served (served: {served})")
        ref = parse_selector(name, selector) if selector is not None else Reference(name)
        if ref.version is not None:
            what = f"version {ref.version}"
        elif ref.alias is not None:
            what = f"alias {ref.alias!r}"
        else:  # pragma: no cover - bare names and "latest" are always routed
            what = "a default version"
        versions = ", ".join(str(m.version.version) for m in models)
        aliases = sorted(
            sel for (n, sel) in self._routes if n == name and sel and not sel.isdigit() and sel != "latest"
        )
        alias_text = f"; aliases: {', '.join(aliases)}" if aliases else ""
        raise NotFound(f"model {name!r} has no {what} served (versions: {versions}{alias_text})")

    def served(self) -> list[ServingModel]:
        return [model for models in self._models.values() for model in models]

    def versions(self, name: str) -> list[ServingModel]:
        """Every served version of ``name``, default first; NotFound when none."""
        self.get(name)
        return list(self._models[name])

    # -- inference ---------------------------------------------------------------------------

    async def infer(self, name: str, selector: str | None, request: InferRequest) -> InferResult:
        model = self.get(name, selector)
        if not model.ready:
            raise ModelNotReady(f"model {model.version.ref} is {model.state.value}; retry shortly")
        signature = model.version.signature
        requested = request.outputs
        if requested is not None:
            for out in requested:
                if signature.output(out) is None:
                    names = ", ".join(spec.name for spec in signature.outputs)
                    raise InvalidInput(f"unknown output {out!r} (outputs: {names})")
        inputs = validate_inputs(signature, request.inputs)
        try:
            if model.runs_inline(_rows(inputs)) and (model.lock is None or model.lock.acquire(blocking=False)):
                # Cheaper than a thread hand-off (~100 us): predict on the event loop.
                try:
                    outputs = model.timed_predict(inputs)
                finally:
                    if model.lock is not None:
                        model.lock.release()
            else:
                outputs = await asyncio.get_running_loop().run_in_executor(self._pool(), model.predict, inputs)
        except ModelportError:
            raise
        except Exception as exc:
            logger.exception("model %s failed to predict", model.version.ref)
            raise PredictionFailed(f"model {model.version.ref} failed to predict: {type(exc).__name__}: {exc}") from exc
        return InferResult(
            model_name=model.version.name,
            model_version=model.version.version,
            outputs=select_outputs(outputs, model.outputs if requested is None else requested),
            signature=signature,
            id=request.id,
            parameters={},
        )

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="modelport-predict")
        return self._executor

    def close(self) -> None:
        """Unload every model and stop the prediction threads."""
        self._closed = True
        for model in self.served():
            model.state = State.UNLOADED
            try:
                model.runtime.unload()
            except Exception:
                logger.exception("unloading %s failed", model.version.ref)
        self._models.clear()
        self._routes = {}
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
