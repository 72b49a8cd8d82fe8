"""The model manager: which versions this process serves, and the one neutral inference call.

Every protocol resolves ``name`` + an optional selector (version number, alias or ``latest``)
through :meth:`ModelManager.get` / :meth:`ModelManager.pick` and runs the request with
:meth:`ModelManager.run` (or both with :meth:`ModelManager.infer`). The manager knows no wire
format; it loads models through a :class:`ModelSource` (the registry in production).

It is a façade over three parts:

- what to serve: a list of :class:`~modelport.serving.plans.Spec` (references, an alias for every
  model, a version policy) that, with the source's snapshot, become plans;
- :class:`~modelport.serving.lifecycle.Lifecycle`: one record per version (loading, ready,
  failed, unloading, unloaded);
- :class:`~modelport.serving.routes.RoutingTable`: immutable, replaced in one assignment;

and :class:`~modelport.serving.inference.Inference` runs the requests. Every change goes through
one async path under one lock: read the snapshot, load and warm what the plans name (in a
thread), build and swap the table, drain the versions no longer routed, unload them. A version
that fails to load is FAILED with its error and the routes it would have taken keep their old
version.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from modelport.errors import ModelNotReady, ModelportError, NotFound
from modelport.reference import Reference, parse_reference, parse_selector
from modelport.registry.traffic import AliasTarget, ModelRouting, Snapshot, summary
from modelport.runtimes.base import Runtime
from modelport.serving.batching import BatchSettings
from modelport.serving.hooks import UNWATCHED, Watching
from modelport.serving.inference import Inference
from modelport.serving.lifecycle import Lifecycle, warm
from modelport.serving.plans import Spec, build_plans
from modelport.serving.routes import NOT_LOADED, Chance, Route, RoutingTable, build_table
from modelport.serving.shadow import ShadowRunner
from modelport.serving.versions import (
    INLINE_SECONDS,
    RUNAWAY_LIVENESS_FACTOR,
    ModelSource,
    RegistrySource,
    ServingModel,
    State,
    VersionState,
    VersionStatus,
    WatchableSource,
)
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

OVERLOAD_WINDOW = 1.0  # seconds after a refusal during which an overload_unready server is not ready
Key = tuple[str, int]
LoadFailed = Callable[[str, int, ModelportError], None]  # a version (name, number) failed to load: why


class Pinned:
    """A source that cannot say what changed, made to answer snapshots: the versions resolved
    through it, each name's aliases as they were when resolved."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self._models: dict[str, ModelRouting] = {}
        self._versions: dict[Key, ModelVersion] = {}

    def resolve(self, ref: Reference) -> ModelVersion:
        if ref.version is not None and (ref.name, ref.version) in self._versions:
            return self._versions[(ref.name, ref.version)]
        version = self.source.resolve(ref)  # NotFound, with what exists, for an unknown reference
        known = self._models.get(version.name, ModelRouting(()))
        aliases = dict(known.aliases)
        for alias in version.aliases:
            aliases.setdefault(alias, AliasTarget(version.version))
        if ref.alias is not None:
            aliases[ref.alias] = AliasTarget(version.version)
        numbers = tuple(sorted({*known.versions, version.version}))
        self._models[version.name] = ModelRouting(numbers, aliases)
        self._versions[(version.name, version.version)] = version
        return version

    def open(self, version: ModelVersion) -> Runtime:
        return self.source.open(version)

    def routing(self) -> Snapshot:
        return dict(self._models)


class ModelManager:
    """Loads versions from a source, resolves name + selector to a loaded version, runs inference.

    ``threads`` sizes the pool that runs predictions off the event loop. Predictions whose measured
    cost (:meth:`~modelport.serving.versions.CostModel.estimate`) is under ``INLINE_SECONDS`` run
    inline, if the runtime's cost is bounded (never custom code) and until one such call overruns
    ``OVERRUN_SECONDS``. ``batching`` (None: off) puts an adaptive
    :class:`~modelport.serving.batching.Batcher` in front of every loaded version whose runtime takes
    batches; a version's own settings (:class:`~modelport.types.Batching`, stored at
    registration) win over it. Its ``max_queue_wait`` bounds every version's expected queue wait,
    batched or not. ``timeout`` is every request's deadline in seconds (0: none; a request may
    ask for less). ``overload_unready``: :meth:`ready` is False while a version sheds load.
    ``chance`` is where traffic splits and shadow sampling draw from (tests pass an exact one).
    ``watching`` gives each loaded version its :class:`~modelport.serving.hooks.VersionWatch`
    (metrics, payload capture); :attr:`swaps` counts, per model, routes moved to other versions.
    ``load_failed`` hears of every version that fails to load or warm up: its name, number and
    error (error reports). A manager built before its observers (one given to the app) gets both
    from :meth:`watch_with`.
    """

    def __init__(
        self,
        source: ModelSource,
        *,
        threads: int = 1,
        batching: BatchSettings | None = None,
        timeout: float = 0.0,
        overload_unready: bool = False,
        chance: Chance | None = None,
        watching: Watching = UNWATCHED,
        load_failed: LoadFailed | None = None,
    ) -> None:
        self.source = source
        self.watching = watching
        self.load_failed = load_failed
        self.swaps: dict[str, int] = {}
        self.threads = max(1, threads)
        self.batching = batching
        self.timeout = timeout
        self.overload_unready = overload_unready
        self.chance = chance if chance is not None else random.Random()
        self.shadows = ShadowRunner(chance=self.chance)
        self._source: WatchableSource | Pinned = source if isinstance(source, WatchableSource) else Pinned(source)
        self._specs: list[Spec] = []
        self._excluded: set[str] = set()  # names unloaded on request, left out of every spec
        self._versions = Lifecycle()
        self._table = RoutingTable()
        self._lock = asyncio.Lock()  # one change at a time: every edit of specs, versions and table
        self._inference = Inference(self.threads, timeout, self.shadows)
        self._closed = False
        # The request path: bound once, no façade frame per request
        self.run: Callable[[Route, ServingModel, InferRequest], Awaitable[InferResult]] = self._inference.run

    # -- what to serve -----------------------------------------------------------------------

    async def load(self, refs: Sequence[str | Reference]) -> None:
        """Resolve, open and warm each reference, then serve it. The first ref of a name is its default.

        Raises NotFound for a reference the source does not know and the load error of the first
        version that fails to load or warm (it is FAILED; everything else is served).
        """
        async with self._lock:
            for ref in refs:
                spec = Spec(ref=await asyncio.to_thread(self._resolve, ref))
                if spec not in self._specs:
                    self._specs.append(spec)
            errors = await self._apply()
        if errors:
            raise errors[0]

    async def follow(self, specs: Sequence[Spec]) -> None:
        """Serve ``specs`` from the source's snapshot; failures are FAILED and logged, never raised."""
        async with self._lock:
            self._specs.extend(s for s in specs if s not in self._specs)
            await self._apply()

    async def refresh(self) -> None:
        """Re-read the source's snapshot and follow it: load new versions, swap, drain, unload old."""
        async with self._lock:
            await self._apply()

    async def load_model(self, ref: str | Reference) -> None:
        """Serve one more reference at runtime (load, warm, route); raises on failure, old versions stay."""
        async with self._lock:
            parsed = await asyncio.to_thread(self._resolve, ref)
            spec = Spec(ref=parsed)
            added = spec not in self._specs
            excluded = parsed.name in self._excluded
            self._excluded.discard(parsed.name)
            self._versions.retry(parsed.name)  # an explicit load retries a failed version
            if added:
                self._specs.append(spec)
            await self._apply()  # the watcher may have run this load first: look at the outcome
            selector = str(parsed.version) if parsed.version is not None else parsed.alias
            failed = self._versions.failures(parsed.name)
            if failed or self._table.get(parsed.name, selector) is None:
                why = self._table.unmet.get((parsed.name, selector), "not loaded")
                if added:
                    self._specs.remove(spec)
                if excluded:
                    self._excluded.add(parsed.name)
                await self._apply()  # route as before the attempt (its failure stays in status)
                raise failed[0] if failed else ModelNotReady(f"model {parsed} could not be loaded: {why}")

    async def unload_model(self, name: str) -> None:
        """Stop serving every version of ``name``: route away, drain in-flight requests, unload."""
        async with self._lock:
            if not self._versions.knows(name):
                raise NotFound(f"model {name!r} is not served (served: {', '.join(self.names()) or 'none'})")
            self._excluded.add(name)
            self._specs = [s for s in self._specs if s.ref is None or s.ref.name != name]
            await self._apply()

    def _resolve(self, ref: str | Reference) -> Reference:
        parsed = parse_reference(ref) if isinstance(ref, str) else ref
        self._source.resolve(parsed)  # NotFound, with what exists, for an unknown reference
        return parsed

    # -- applying a snapshot (under the lock) ------------------------------------------------

    async def _apply(self) -> list[ModelportError]:
        """Follow the source's snapshot; the load errors of versions that failed now."""
        snapshot = await asyncio.to_thread(self._source.routing)
        plans, missing = build_plans(self._specs, snapshot, self._excluded)
        wanted = [(name, v) for name, plan in plans.items() for v in sorted(plan.versions())]
        unmet = {
            (text.partition("@")[0], text.partition("@")[2] or None): f"{text} is not in the registry"
            for text in missing
        }
        errors: list[ModelportError] = []
        for key in self._versions.to_load(wanted):
            self._versions.loading(key)
            try:
                self._versions.ready(await asyncio.to_thread(self._open, key))
            except ModelportError as exc:
                errors.append(self._versions.failed(key, exc))
                if self.load_failed is not None:
                    self.load_failed(key[0], key[1], exc)
        loaded = self._versions.loaded
        old, self._table = (
            self._table,
            build_table(plans, unmet, loaded, self._versions.errors(), self._table, self.chance),
        )
        self._count_swaps(old, self._table)
        used = self._table.used()
        for model in [m for key, m in loaded.items() if key not in used]:
            await self._versions.retire(model)
            await asyncio.to_thread(self._versions.unloaded, model)
        return errors

    def _count_swaps(self, old: RoutingTable, new: RoutingTable) -> None:
        """A change that moves any route of a model, which served before, to other versions is one
        hot swap of that model (an alias move also moves its default route: still one swap)."""
        swapped = set()
        for selector, route in new.routes.items():
            before = old.routes.get(selector)
            if before is not None and [m.key for m in before.models] != [m.key for m in route.models]:
                swapped.add(selector[0])
        for name in swapped:
            self.swaps[name] = self.swaps.get(name, 0) + 1

    def _open(self, key: Key) -> ServingModel:
        """Open and warm one version (in a thread)."""
        started = time.perf_counter()
        version = self._source.resolve(Reference(key[0], version=key[1]))
        runtime = self._source.open(version)
        defaults = self.batching or BatchSettings(enabled=False)
        model = ServingModel(
            version,
            runtime,
            threads=self.threads,
            max_queue_wait=defaults.queue_wait_for(version.batching),
            batching=defaults.for_version(version.batching),
            execute=self._inference.execute,
        )
        try:
            example_outputs = warm(model)
        except BaseException:
            runtime.unload()
            raise
        model.warmed(example_outputs, time.perf_counter() - started)
        model.watch_with(self.watching.version(version))  # after warming: warm-up calls are not traffic
        return model

    # -- lookup ------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True when every configured reference is loaded, warmed and routed (and, with
        ``overload_unready``, no version is shedding load)."""
        return self.not_ready() is None

    def not_ready(self, *, overload: bool = True) -> str | None:
        """Why the server is not ready, or None when it is (``overload`` False: loaded is ready)."""
        if self._closed:
            return "the server is shutting down"
        if self._table.unmet:
            return self._unmet()
        runaway = self._runaways(1.0)
        if runaway:
            return f"runaway predictions past the {self.timeout:g} s deadline: {runaway}; restart to recycle"
        if overload and self.overload_unready:
            now = time.monotonic()
            loaded = self._versions.loaded.values()
            shedding = sorted(m.version.ref for m in loaded if m.overload.shedding(now, OVERLOAD_WINDOW))
            if shedding:
                return f"overloaded: {', '.join(shedding)} refused requests in the last {OVERLOAD_WINDOW:g} s"
        return None

    def _unmet(self) -> str:
        """Why the configured references are not all served, each reason once: failed to load (for
        good: a failed version is not retried on its own), not loaded yet, or not in the registry."""
        refs: dict[str, list[str]] = {}  # what is wrong -> the references it holds back
        for (name, selector), why in self._table.unmet.items():
            if any(error.message in why for error in self._versions.failures(name)):
                what = f"failed to load: {why} (not retried: fix it, then move the alias again or load it again)"
            elif why == NOT_LOADED:
                what = "not loaded yet"
            else:  # "iris@3 is not in the registry": it names its reference
                refs.setdefault(why, [])
                continue
            refs.setdefault(what, []).append(name if selector is None else f"{name}@{selector}")
        parts = []
        for what, held in refs.items():
            # a model's default route beside one of its named ones says nothing new
            named = sorted(r for r in held if "@" in r or not any(o.startswith(f"{r}@") for o in held))
            parts.append(f"{', '.join(named)} {what}" if named else what)
        return "; ".join(parts)

    def not_live(self) -> str | None:
        """Why the server should be replaced, or None: a runtime call has run for more than
        ``RUNAWAY_LIVENESS_FACTOR`` deadlines (a thread that cannot be stopped)."""
        runaway = self._runaways(RUNAWAY_LIVENESS_FACTOR)
        return f"a prediction has been running far past the {self.timeout:g} s deadline: {runaway}" if runaway else None

    def runaways(self) -> dict[tuple[str, int], int]:
        """(name, number) -> runtime calls running past the server's deadline now (none without one)."""
        if self.timeout <= 0:
            return {}
        return {model.key: len(model.calls.runaways(self.timeout)) for model in self._versions.loaded.values()}

    def _runaways(self, deadlines: float) -> str:
        """The versions with calls running longer than ``deadlines`` x the server's deadline, described."""
        if self.timeout <= 0:
            return ""
        found = []
        for model in self._versions.loaded.values():
            seconds = [s for s in model.calls.runaways(self.timeout) if s > self.timeout * deadlines]
            if seconds:
                found.append(f"{model.version.ref} ({len(seconds)} call(s), the longest {max(seconds):.0f} s)")
        return ", ".join(found)

    def status(self, name: str | None = None) -> list[VersionStatus]:
        """Every version this manager has seen (loading, ready, failed, unloaded), by name and number."""
        if name is not None and not self._versions.knows(name):
            raise NotFound(f"model {name!r} is not served (served: {', '.join(self.names()) or 'none'})")
        return self._versions.status(name)

    def serves(self, name: str) -> bool:
        """Whether ``name`` is a model this manager has loaded or tried to load."""
        return self._versions.knows(name)

    def names(self) -> list[str]:
        return self._table.names()

    def model_ready(self, name: str, selector: str | None = None) -> bool:
        """Whether the version is ready; NotFound when it is not served at all."""
        return self.get(name, selector).ready

    def get(self, name: str, selector: str | None = None) -> ServingModel:
        return self.route(name, selector).primary

    def route(self, name: str, selector: str | None = None) -> Route:
        route = self._table.routes.get((name, selector))
        if route is not None:
            return route
        raise self._not_routed(name, selector)

    def _not_routed(self, name: str, selector: str | None) -> ModelportError:
        ref = parse_selector(name, selector) if selector is not None else Reference(name)
        why = self._table.unmet.get((name, selector))
        record = self._versions.get((name, ref.version or 0))
        if record is not None and record.error is not None and record.state is VersionState.FAILED:
            why = record.error.message
        if why is not None:
            return ModelNotReady(f"model {ref} is not ready: {why}")
        models = [m for m in self._versions.loaded.values() if m.name == name]
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
        aliases = self._table.aliases(name)
        alias_text = f"; aliases: {', '.join(aliases)}" if aliases else ""
        return NotFound(f"model {name!r} has no {what} served (versions: {versions}{alias_text})")

    def served(self) -> list[ServingModel]:
        return list(self._versions.loaded.values())

    def versions(self, name: str) -> list[ServingModel]:
        """Every served version of ``name``, default first; NotFound when none."""
        default = self.get(name)
        return [default, *(m for m in self._versions.loaded.values() if m.name == name and m is not default)]

    def watch_with(self, watching: Watching, load_failed: LoadFailed | None = None) -> None:
        """Watch every version with ``watching`` from now on, the ones loaded already included, and
        tell ``load_failed`` (when given) of every version that fails to load from now on."""
        self.watching = watching
        if load_failed is not None:
            self.load_failed = load_failed
        for model in self._versions.loaded.values():
            model.watch_with(watching.version(model.version))

    def traffic(self) -> list[tuple[str, str, int, float]]:
        """(model, alias, version, share of the alias's traffic) of every alias target routed now."""
        table = self._table
        shares = []
        for name in table.names():
            for alias in table.aliases(name):
                route = table.routes[(name, alias)]
                total = route.bounds[-1]
                previous = 0
                for model, bound in zip(route.models, route.bounds, strict=True):
                    shares.append((name, alias, model.version.version, (bound - previous) / total))
                    previous = bound
        return shares

    def shadow_report(self, name: str, alias: str) -> dict[str, Any]:
        """Agreement between the alias's primary answers and each shadow version's, seen by this process."""
        route = self._table.get(name, alias)
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
        """The route ``name`` + ``selector`` takes and the version it picks (by weight, sticky by key).
        Protocols that decode against the picked version's signature then call :attr:`run`."""
        route = self._table.routes.get((name, selector))
        if route is None:
            raise self._not_routed(name, selector)
        return route, route.pick(routing_key)

    async def infer(
        self, name: str, selector: str | None, request: InferRequest, *, routing_key: str | None = None
    ) -> InferResult:
        """Run ``request`` on the version ``selector`` routes to (split by weight, sticky by ``routing_key``)."""
        route, model = self.pick(name, selector, routing_key)
        return await self.run(route, model, request)

    def close(self) -> None:
        """Unload every model and stop the prediction threads."""
        self._closed = True
        self._table = RoutingTable()
        self._inference.close()
        for model in list(self._versions.loaded.values()):
            self._versions.unloaded(model)
