"""The model manager: which versions this process serves, and the one neutral inference call.

Every protocol resolves ``name`` + an optional selector (version number, alias or ``latest``)
through :meth:`ModelManager.get` and runs :meth:`ModelManager.infer`. The manager knows no wire
format; it loads models through a :class:`ModelSource` (the registry in production).

What to serve is a list of :class:`~modelport.serving.plans.Spec` (references, an alias for every
model, a version policy). With a registry snapshot they become plans (:mod:`modelport.serving.plans`);
:meth:`ModelManager.refresh` loads and warms what a new snapshot names, swaps the routing table
in one assignment, drains in-flight requests on versions no longer routed, then unloads them.
A version that fails to load is FAILED with its error and the routes it would have taken keep
their old version.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import accumulate
from typing import Any

import numpy as np

from modelport.errors import (
    DeadlineExceeded,
    InvalidModel,
    ModelNotReady,
    ModelportError,
    NotFound,
    Overloaded,
    PredictionFailed,
)
from modelport.reference import Reference, parse_reference, parse_selector
from modelport.registry.traffic import AliasTarget, ModelRouting, Snapshot, summary
from modelport.serving.batching import Batcher, BatchSettings
from modelport.serving.plans import Plan, Spec, build_plans, pick
from modelport.serving.shadow import Job, ShadowRunner
from modelport.serving.versions import (
    INLINE_SECONDS,
    OVERRUN_SECONDS,
    ModelSource,
    RegistrySource,
    ServingModel,
    State,
    VersionState,
    VersionStatus,
    WatchableSource,
)
from modelport.signature import count_rows, select_outputs, to_inputs, validate_inputs
from modelport.types import InferRequest, InferResult, ModelVersion

__all__ = [
    "INLINE_SECONDS",
    "ModelManager",
    "ModelSource",
    "RegistrySource",
    "Route",
    "ServingModel",
    "State",
    "VersionState",
    "VersionStatus",
    "WatchableSource",
]

logger = logging.getLogger("modelport")

DRAIN_SECONDS = 30.0  # longest wait for in-flight requests before a retired version is unloaded anyway
OVERLOAD_WINDOW = 1.0  # seconds after a refusal during which an overload_unready server is not ready
DEADLINE_SETTING = "the server's: MODELPORT_REQUEST_TIMEOUT, or SAGEMAKER_MODEL_SERVER_TIMEOUT in SageMaker mode"
Key = tuple[str, int]


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """Where one name + selector goes: weighted loaded versions, and shadows mirrored to."""

    models: tuple[ServingModel, ...]
    bounds: tuple[int, ...]  # cumulative weights
    shadows: tuple[tuple[ServingModel, float], ...] = ()
    label: str = ""  # the alias shadow statistics are recorded under
    targets: tuple[tuple[int, int], ...] = field(default=(), repr=False)

    @property
    def primary(self) -> ServingModel:
        return self.models[0]

    def pick(self, key: str | None) -> ServingModel:
        models = self.models
        return models[0] if len(models) == 1 else models[pick(self.bounds, key)]


class ModelManager:
    """Loads versions from a source, resolves name + selector to a loaded version, runs inference.

    ``threads`` sizes the pool that runs predictions off the event loop. Predictions whose
    measured cost (:meth:`ServingModel.estimate`) is under ``INLINE_SECONDS`` run inline, if the
    runtime's cost is bounded (never custom code) and until one such call overruns
    ``OVERRUN_SECONDS``. ``batching`` (None: off) puts an adaptive
    :class:`~modelport.serving.batching.Batcher` in front of every loaded version whose runtime takes
    batches; a version's own settings (:class:`~modelport.types.Batching`, stored at
    registration) win over it. Its ``max_queue_wait`` bounds every version's expected queue wait,
    batched or not. ``timeout`` is every request's deadline in seconds (0: none; a request may
    ask for less). ``overload_unready``: :meth:`ready` is False while a version sheds load.
    """

    def __init__(
        self,
        source: ModelSource,
        *,
        threads: int = 1,
        batching: BatchSettings | None = None,
        timeout: float = 0.0,
        overload_unready: bool = False,
    ) -> None:
        self.source = source
        self.threads = max(1, threads)
        self.batching = batching
        self.timeout = timeout
        self.overload_unready = overload_unready
        self.shadows = ShadowRunner()
        self._specs: list[Spec] = []
        self._excluded: set[str] = set()  # names unloaded on request, left out of every spec
        self._static: dict[str, ModelRouting] = {}  # the snapshot of a source that cannot say what changed
        self._static_versions: dict[Key, ModelVersion] = {}
        self._loaded: dict[Key, ServingModel] = {}
        self._status: dict[Key, VersionStatus] = {}
        self._blocked: set[Key] = set()  # failed versions, not retried while still wanted
        self._errors: dict[Key, ModelportError] = {}  # why each failed version failed
        self._wanted: set[Key] = set()  # the versions the last plan named
        self._routes: dict[tuple[str, str | None], Route] = {}  # (name, selector) -> route; replaced whole
        self._unmet: dict[tuple[str, str | None], str] = {}  # required routes without a ready version -> why
        self._guard: asyncio.Lock | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    # -- what to serve -----------------------------------------------------------------------

    def load(self, refs: Sequence[str | Reference]) -> None:
        """Resolve, open and warm each reference, then serve it. The first ref of a name is its default.

        Raises NotFound for a reference the source does not know and the load error of the first
        version that fails to load or warm (it is FAILED; everything else is served).
        """
        specs = [Spec(ref=self._resolve(r)) for r in refs]
        self._specs.extend(s for s in specs if s not in self._specs)
        errors = self._apply_sync(self._snapshot())
        if errors:
            raise errors[0][1]

    def follow(self, specs: Sequence[Spec]) -> None:
        """Serve ``specs`` from the source's snapshot; failures are FAILED and logged, never raised."""
        self._specs.extend(s for s in specs if s not in self._specs)
        self._apply_sync(self._snapshot())

    async def refresh(self) -> None:
        """Re-read the source's snapshot and follow it: load new versions, swap, drain, unload old."""
        snapshot = await asyncio.to_thread(self._snapshot)
        await self._apply(snapshot)

    async def load_model(self, ref: str | Reference) -> None:
        """Serve one more reference at runtime (load, warm, route); raises on failure, old versions stay."""
        parsed = await asyncio.to_thread(self._resolve, ref)
        spec = Spec(ref=parsed)
        added = spec not in self._specs
        excluded = parsed.name in self._excluded
        self._excluded.discard(parsed.name)
        self._blocked = {key for key in self._blocked if key[0] != parsed.name}  # an explicit load retries
        if added:
            self._specs.append(spec)
        snapshot = await asyncio.to_thread(self._snapshot)
        await self._apply(snapshot)  # the watcher may have run this load first: look at the outcome
        selector = str(parsed.version) if parsed.version is not None else parsed.alias
        failed = [error for key, error in self._errors.items() if key[0] == parsed.name and key in self._wanted]
        if failed or (parsed.name, selector) not in self._routes:
            why = self._unmet.get((parsed.name, selector), "not loaded")
            if added:
                self._specs.remove(spec)
            if excluded:
                self._excluded.add(parsed.name)
            await self._apply(snapshot)  # route as before the attempt (its failure stays in status)
            raise failed[0] if failed else ModelNotReady(f"model {parsed} could not be loaded: {why}")

    async def unload_model(self, name: str) -> None:
        """Stop serving every version of ``name``: route away, drain in-flight requests, unload."""
        if not any(key[0] == name for key in self._status):
            raise NotFound(f"model {name!r} is not served (served: {', '.join(self.names()) or 'none'})")
        self._excluded.add(name)
        self._specs = [s for s in self._specs if s.ref is None or s.ref.name != name]
        await self._apply(await asyncio.to_thread(self._snapshot))

    def _resolve(self, ref: str | Reference) -> Reference:
        parsed = parse_reference(ref) if isinstance(ref, str) else ref
        version = self.source.resolve(parsed)  # NotFound, with what exists, for an unknown reference
        if not isinstance(self.source, WatchableSource):
            known = self._static.get(version.name, ModelRouting(()))
            aliases = dict(known.aliases)
            for alias in version.aliases:
                aliases.setdefault(alias, AliasTarget(version.version))
            if parsed.alias is not None:
                aliases[parsed.alias] = AliasTarget(version.version)
            numbers = tuple(sorted({*known.versions, version.version}))
            self._static[version.name] = ModelRouting(numbers, aliases)
            self._static_versions[(version.name, version.version)] = version
        return parsed

    def _snapshot(self) -> Snapshot:
        return self.source.routing() if isinstance(self.source, WatchableSource) else dict(self._static)

    # -- applying a snapshot ------------------------------------------------------------------

    def _plan(self, snapshot: Snapshot) -> tuple[dict[str, Plan], list[Key], dict[tuple[str, str | None], str]]:
        plans, missing = build_plans(self._specs, snapshot, self._excluded)
        wanted = [(name, v) for name, plan in plans.items() for v in sorted(plan.versions())]
        self._blocked &= set(wanted)
        self._wanted = set(wanted)
        unmet = {
            (text.partition("@")[0], text.partition("@")[2] or None): f"{text} is not in the registry"
            for text in missing
        }
        return plans, [key for key in wanted if key not in self._loaded and key not in self._blocked], unmet

    def _apply_sync(self, snapshot: Snapshot) -> list[tuple[Key, ModelportError]]:
        plans, to_load, unmet = self._plan(snapshot)
        errors: list[tuple[Key, ModelportError]] = []
        for key in to_load:
            self._mark(key, VersionState.LOADING)
            try:
                self._adopt(self._open(key))
            except ModelportError as exc:
                errors.append((key, self._fail(key, exc)))
        for model in self._switch(plans, unmet):
            self._unload(model)
        return errors

    async def _apply(self, snapshot: Snapshot) -> list[tuple[Key, ModelportError]]:
        if self._guard is None:
            self._guard = asyncio.Lock()
        async with self._guard:
            plans, to_load, unmet = self._plan(snapshot)
            errors: list[tuple[Key, ModelportError]] = []
            for key in to_load:
                self._mark(key, VersionState.LOADING)
                try:
                    self._adopt(await asyncio.to_thread(self._open, key))
                except ModelportError as exc:
                    errors.append((key, self._fail(key, exc)))
            retired = self._switch(plans, unmet)
            for model in retired:
                await self._drain(model)
                await asyncio.to_thread(self._unload, model)
            return errors

    def _open(self, key: Key) -> ServingModel:
        """Open and warm one version (runs in a thread for a live server)."""
        version = self._static_versions.get(key) or self.source.resolve(Reference(key[0], version=key[1]))
        runtime = self.source.open(version)
        model = ServingModel(version, runtime)
        if not runtime.capabilities.thread_safe:
            model.lock = threading.Lock()
        model.parallelism = self.threads if runtime.capabilities.thread_safe else 1
        defaults = self.batching or BatchSettings(enabled=False)
        model.max_queue_wait = defaults.queue_wait_for(version.batching)
        batching = defaults.for_version(version.batching)
        if batching is not None and runtime.capabilities.batch_rows:
            model.batcher = Batcher(lambda inputs: self._execute(model, inputs), batching, cost=model.estimate)
        try:
            self._warm(model)
        except BaseException:
            runtime.unload()
            raise
        return model

    def _adopt(self, model: ServingModel) -> None:
        model.state = VersionState.READY
        self._errors.pop(model.key, None)
        self._loaded[model.key] = model
        self._mark(model.key, VersionState.READY)
        logger.info("serving %s (runtime %s)", model.version.ref, model.version.runtime)

    def _fail(self, key: Key, exc: ModelportError) -> ModelportError:
        """Mark ``key`` FAILED. The log keeps the whole message; what clients see (status endpoints,
        the errors raised here) names files by their base name, never by a path on this server."""
        logger.error("model %s@%d failed to load: %s", key[0], key[1], exc.message)
        exc.message = without_paths(exc.message)
        exc.args = (exc.message,)
        self._blocked.add(key)
        self._errors[key] = exc
        self._mark(key, VersionState.FAILED, exc.message)
        return exc

    def _mark(self, key: Key, state: VersionState, error: str | None = None) -> None:
        self._status[key] = VersionStatus(key[0], key[1], state, error)

    def _warm(self, model: ServingModel) -> None:
        signature = model.version.signature
        if signature.example is None:
            return
        try:
            inputs = validate_inputs(signature, to_inputs(signature, signature.example))
            outputs = model.predict(inputs)
            model.forget_costs()  # the first call pays for lazy set-up: time one row, then all
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

    def _switch(self, plans: dict[str, Plan], unmet: dict[tuple[str, str | None], str]) -> list[ServingModel]:
        """Build the new routing table, assign it in one step; return the loaded versions it retires."""
        routes: dict[tuple[str, str | None], Route] = {}
        for name, plan in plans.items():
            for selector, targets in plan.routes.items():
                route = self._route(name, selector, targets, plan)
                if route is not None:
                    routes[(name, selector)] = route
                elif selector in plan.required:
                    errors = [self._status[(name, v)].error for v, _ in targets if (name, v) in self._status]
                    unmet[(name, selector)] = "; ".join(e for e in errors if e) or "not loaded yet"
        self._routes = routes
        self._unmet = unmet
        used = {m.key for route in routes.values() for m in (*route.models, *(s for s, _ in route.shadows))}
        return [model for key, model in self._loaded.items() if key not in used]

    def _route(self, name: str, selector: str | None, targets: tuple[tuple[int, int], ...], plan: Plan) -> Route | None:
        shadows = tuple(
            (self._loaded[(name, v)], fraction)
            for v, fraction in plan.shadows.get(selector, ())
            if (name, v) in self._loaded
        )
        label = plan.labels.get(selector, "")
        ready = [(self._loaded[(name, v)], w) for v, w in targets if (name, v) in self._loaded]
        if len(ready) < len(targets):  # a target failed or is loading: keep the old route while it works
            old = self._routes.get((name, selector))
            if old is not None and all(m.key in self._loaded for m in old.models):
                return replace(old, shadows=shadows, label=label)
        if not ready:
            return None
        models = tuple(m for m, _ in ready)
        return Route(models, tuple(accumulate(w for _, w in ready)), shadows, label, targets)

    async def _drain(self, model: ServingModel) -> None:
        model.state = VersionState.UNLOADING
        self._mark(model.key, VersionState.UNLOADING)
        deadline = time.monotonic() + DRAIN_SECONDS
        while model.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if model.inflight > 0:
            logger.warning("unloading %s with %d requests still in flight", model.version.ref, model.inflight)

    def _unload(self, model: ServingModel) -> None:
        model.state = VersionState.UNLOADED
        self._loaded.pop(model.key, None)
        self._mark(model.key, VersionState.UNLOADED)
        try:
            model.runtime.unload()
        except Exception:
            logger.exception("unloading %s failed", model.version.ref)
        logger.info("unloaded %s", model.version.ref)

    # -- lookup ------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True when every configured reference is loaded, warmed and routed (and, with
        ``overload_unready``, no version is shedding load)."""
        return self.not_ready() is None

    def not_ready(self, *, overload: bool = True) -> str | None:
        """Why the server is not ready, or None when it is (``overload`` False: loaded is ready)."""
        if self._closed:
            return "the server is shutting down"
        if self._unmet:
            return "the configured models are not all loaded yet"
        if overload and self.overload_unready:
            now = time.monotonic()
            shedding = sorted(m.version.ref for m in self._loaded.values() if m.shedding(now, OVERLOAD_WINDOW))
            if shedding:
                return f"overloaded: {', '.join(shedding)} refused requests in the last {OVERLOAD_WINDOW:g} s"
        return None

    def status(self, name: str | None = None) -> list[VersionStatus]:
        """Every version this manager has seen (loading, ready, failed, unloaded), by name and number."""
        if name is not None and not any(key[0] == name for key in self._status):
            raise NotFound(f"model {name!r} is not served (served: {', '.join(self.names()) or 'none'})")
        return [s for key, s in sorted(self._status.items()) if name is None or key[0] == name]

    def names(self) -> list[str]:
        return sorted({name for name, _ in self._routes})

    def model_ready(self, name: str, selector: str | None = None) -> bool:
        """Whether the version is ready; NotFound when it is not served at all."""
        return self.get(name, selector).ready

    def get(self, name: str, selector: str | None = None) -> ServingModel:
        route = self._routes.get((name, selector))
        if route is not None:
            return route.primary
        raise self._not_routed(name, selector)

    def route(self, name: str, selector: str | None = None) -> Route:
        route = self._routes.get((name, selector))
        if route is not None:
            return route
        raise self._not_routed(name, selector)

    def _not_routed(self, name: str, selector: str | None) -> ModelportError:
        ref = parse_selector(name, selector) if selector is not None else Reference(name)
        why = self._unmet.get((name, selector))
        failed = self._status.get((name, ref.version or 0))
        if failed is not None and failed.state is VersionState.FAILED:
            why = failed.error
        if why is not None:
            return ModelNotReady(f"model {ref} is not ready: {why}")
        models = [m for m in self._loaded.values() if m.name == name]
        if not models:
            served = ", ".join(self.names()) or "none"
            return NotFound(f"model {name!r} is not served (served: {served})")
        if ref.version is not None:
            what = f"version {ref.version}"
        elif ref.alias is not None:
            what = f"alias {ref.alias!r}"
        else:
            what = "a default version"
        versions = ", ".join(str(m.version.version) for m in sorted(models, key=lambda m: m.version.version))
        aliases = sorted(s for (n, s) in self._routes if n == name and s and not s.isdigit() and s != "latest")
        alias_text = f"; aliases: {', '.join(aliases)}" if aliases else ""
        return NotFound(f"model {name!r} has no {what} served (versions: {versions}{alias_text})")

    def served(self) -> list[ServingModel]:
        return list(self._loaded.values())

    def versions(self, name: str) -> list[ServingModel]:
        """Every served version of ``name``, default first; NotFound when none."""
        default = self.get(name)
        return [default, *(m for m in self._loaded.values() if m.name == name and m is not default)]

    def shadow_report(self, name: str, alias: str) -> dict[str, Any]:
        """Agreement between the alias's primary answers and each shadow version's, seen by this process."""
        route = self._routes.get((name, alias))
        fractions = {m.version.version: f for m, f in route.shadows} if route is not None else {}
        numbers = sorted({*fractions, *(v for (n, a, v) in self.shadows.totals if (n, a) == (name, alias))})
        if route is None and not numbers:
            raise self._not_routed(name, alias)
        shadows = []
        for number in numbers:
            stats = summary(self.shadows.totals.get((name, alias, number), {}))
            shadows.append({"version": number, "fraction": fractions.get(number, 0.0), **stats})
        return {"name": name, "alias": alias, "shadows": shadows}

    # -- inference ---------------------------------------------------------------------------

    def pick(self, name: str, selector: str | None, routing_key: str | None = None) -> tuple[Route, ServingModel]:
        """The route ``name`` + ``selector`` takes and the version it picks (by weight, sticky by key)."""
        route = self._routes.get((name, selector))
        if route is None:
            raise self._not_routed(name, selector)
        return route, route.pick(routing_key)

    async def infer(
        self, name: str, selector: str | None, request: InferRequest, *, routing_key: str | None = None
    ) -> InferResult:
        """Run ``request`` on the version ``selector`` routes to (split by weight, sticky by ``routing_key``)."""
        route, model = self.pick(name, selector, routing_key)
        return await self.run(route, model, request)

    async def run(self, route: Route, model: ServingModel, request: InferRequest) -> InferResult:
        """Run ``request`` on ``model``, picked from ``route`` by :meth:`pick` (protocols that decode
        against the picked version's signature call the two steps themselves)."""
        signature = model.version.signature
        requested = request.outputs
        if requested is not None:
            select_outputs(dict.fromkeys(model.outputs), requested)  # unknown names fail before any work
        inputs = request.inputs if request.checked is signature else validate_inputs(signature, request.inputs)
        deadline = self._deadline(request.timeout)
        model.inflight += 1
        try:
            outputs = await self._predict(model, inputs, deadline)
        except DeadlineExceeded:
            raise self._deadline_exceeded(model, deadline) from None
        except Overloaded:
            model.shed_at = time.monotonic()
            raise
        finally:
            model.inflight -= 1
        if route.shadows:
            self._mirror(route, inputs, select_outputs(outputs, model.outputs))
        return InferResult(
            model_name=model.version.name,
            model_version=model.version.version,
            outputs=select_outputs(outputs, model.outputs if requested is None else requested),
            signature=signature,
            id=request.id,
            parameters={},
        )

    def _deadline_exceeded(self, model: ServingModel, deadline: float | None) -> DeadlineExceeded:
        deadline = deadline or 0.0
        whose = DEADLINE_SETTING if deadline == self.timeout else "the request's own timeout"
        return DeadlineExceeded(
            f"model {model.version.ref} did not answer within the deadline of {deadline:g} s ({whose}); the "
            "request was dropped: send smaller batches, retry later, or raise the deadline"
        )

    def _deadline(self, asked: float | None) -> float | None:
        """Seconds this request may take: the server's deadline, or less if the request asks."""
        server = self.timeout if self.timeout > 0 else None
        if asked is None or asked <= 0:
            return server
        return asked if server is None else min(server, asked)

    async def _predict(
        self, model: ServingModel, inputs: Mapping[str, np.ndarray], timeout: float | None
    ) -> dict[str, np.ndarray]:
        """The outputs, within ``timeout`` seconds (DeadlineExceeded past it). The batcher keeps one
        timer for all its requests; a call that runs inline needs none (nothing can interrupt it,
        and it was measured cheap); a call in the pool is waited for at most that long."""
        if model.batcher is not None:
            return await model.batcher.submit(inputs, timeout=timeout)
        if model.backlog > 0:
            wait = model.queue_wait()
            if wait > model.max_queue_wait:
                raise Overloaded(
                    f"model {model.version.ref} is overloaded: about {wait:.2g} s of work is queued ahead of this "
                    f"request (the limit is {model.max_queue_wait:g} s: MODELPORT_MAX_QUEUE_WAIT_MS); "
                    "retry shortly or add capacity",
                    retry_after=wait,
                )
        return await self._execute(model, inputs, timeout)

    async def _execute(
        self, model: ServingModel, inputs: Mapping[str, np.ndarray], timeout: float | None = None
    ) -> dict[str, np.ndarray]:
        """Run the runtime: inline when measured cheaper than a thread hand-off, else in the pool.

        Work sent to the pool counts in the version's backlog until its thread finishes (even
        when the caller stopped waiting for it), so admission sees what the pool really holds.
        """
        rows = count_rows(inputs)
        try:
            if model.runs_inline(rows) and (model.lock is None or model.lock.acquire(blocking=False)):
                start = time.perf_counter()
                try:
                    return model.timed_predict(inputs)
                finally:
                    if model.lock is not None:
                        model.lock.release()
                    self._check_overrun(model, time.perf_counter() - start)
            return await self._in_pool(model, inputs, rows, timeout)
        except ModelportError:
            raise
        except Exception as exc:
            logger.exception("model %s failed to predict", model.version.ref)
            raise PredictionFailed(f"model {model.version.ref} failed to predict: {type(exc).__name__}: {exc}") from exc

    async def _in_pool(
        self, model: ServingModel, inputs: Mapping[str, np.ndarray], rows: int, timeout: float | None
    ) -> dict[str, np.ndarray]:
        expected = model.estimate(rows)
        expected = expected if math.isfinite(expected) else 0.0
        loop = asyncio.get_running_loop()

        def finished(_: Any) -> None:  # in the worker thread: account on the loop
            loop.call_soon_threadsafe(release)

        def release() -> None:
            model.backlog = max(0.0, model.backlog - expected)

        model.backlog += expected
        work = self._pool().submit(model.predict, inputs)
        work.add_done_callback(finished)
        if timeout is None:
            return await asyncio.wrap_future(work)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(work), timeout)
        except TimeoutError:
            raise DeadlineExceeded("the request's deadline passed") from None

    @staticmethod
    def _check_overrun(model: ServingModel, seconds: float) -> None:
        if seconds > OVERRUN_SECONDS and model.inline:
            model.inline = False
            logger.info(
                "%s: a prediction took %.0f ms on the event loop; its predictions run in the thread pool from now on",
                model.version.ref,
                seconds * 1000,
            )

    def _mirror(self, route: Route, inputs: Any, primary: Any) -> None:
        for shadow, fraction in route.shadows:
            if not shadow.ready or not self.shadows.sampled(fraction):
                continue
            shadow.inflight += 1
            done = _releaser(shadow)
            key = (shadow.name, route.label, shadow.version.version)
            self.shadows.offer(Job(key, shadow.predict, inputs, primary, done))

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="modelport-predict")
        return self._executor

    def close(self) -> None:
        """Unload every model and stop the prediction threads."""
        self._closed = True
        self.shadows.close()
        self._routes = {}
        for model in list(self._loaded.values()):
            self._unload(model)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


_PATH = re.compile(r"(?<![\w/.~-])(?:~|/)(?:[^\s/'\"]*/)+([^\s/'\"]*)")


def without_paths(message: str) -> str:
    """``message`` with every absolute path replaced by its last part (``/srv/a/model.skops`` -> ``model.skops``)."""
    return _PATH.sub(lambda match: match.group(1) or "…", message)


def _releaser(model: ServingModel) -> Callable[[], None]:
    def done() -> None:
        model.inflight -= 1

    return done
