"""Served versions: where they come from (:class:`ModelSource`), their state, and the parts that serve them.

A :class:`ServingModel` is one loaded version: its runtime and state, its :class:`CostModel`,
:class:`Overload` admission, :class:`Drain` and :class:`RunningCalls`. :class:`VersionStatus` is
what status endpoints show about any version the manager has seen, including ones that failed to load.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from modelport.reference import Reference
from modelport.registry.traffic import Snapshot
from modelport.runtimes.base import MultiSignature, Runtime
from modelport.serving.batching import Batcher, BatchSettings
from modelport.serving.hooks import UNWATCHED, VersionWatch
from modelport.signature import count_rows
from modelport.types import ModelVersion

logger = logging.getLogger("modelport")

if TYPE_CHECKING:
    from modelport.registry.registry import Registry

# Runs one call of a version's runtime (inline or in the pool): what its batcher's batches go through.
Execute = Callable[["ServingModel", Mapping[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]

# A prediction expected to take less than this runs on the event loop: handing it to a thread
# costs more (~100 us of wake-up and GIL hand-over) than the work. Longer ones go to the pool.
INLINE_SECONDS = 0.0005
# An inline call that took longer than this blocked every other request on the loop for that
# long: the version's predictions run in the pool from then on.
OVERRUN_SECONDS = 0.005
# A runtime call still running this many deadlines after it started makes the server not live, so
# that an orchestrator (Kubernetes' liveness probe, SageMaker's /ping) replaces the stuck process.
RUNAWAY_LIVENESS_FACTOR = 3.0


class ModelSource(Protocol):
    """Where the manager finds versions and opens them as loaded runtimes."""

    def resolve(self, ref: Reference) -> ModelVersion: ...

    def open(self, version: ModelVersion) -> Runtime: ...


@runtime_checkable
class WatchableSource(ModelSource, Protocol):
    """A source that can say what changed: a change counter and a routing snapshot."""

    def serial(self) -> int: ...

    def routing(self) -> Snapshot: ...


class RegistrySource:
    """A :class:`ModelSource` over a registry: resolve there, load its artifact with ``loading``."""

    def __init__(
        self, registry: Registry, *, threads: int = 1, allow_env_mismatch: bool = False, device: str | None = None
    ) -> None:
        self.registry = registry
        self.threads = threads
        self.allow_env_mismatch = allow_env_mismatch
        self.device = device  # where versions run (None: each on its own device, else the CPU)

    def resolve(self, ref: Reference) -> ModelVersion:
        return self.registry.get(ref)

    def open(self, version: ModelVersion) -> Runtime:
        from modelport.serving.loading import open_version

        artifact = self.registry.artifact_path(version)
        return open_version(
            version, artifact, threads=self.threads, allow_env_mismatch=self.allow_env_mismatch, device=self.device
        )

    def serial(self) -> int:
        return self.registry.serial()

    def routing(self) -> Snapshot:
        return self.registry.routing()


class VersionState(Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADING = "unloading"
    UNLOADED = "unloaded"


State = VersionState  # the name protocols used before rollouts


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """One version as status endpoints show it; ``error`` says why a FAILED version failed."""

    name: str
    version: int
    state: VersionState
    error: str | None = None


class CostModel:
    """What a call costs, measured, and whether a cheap one may run on the event loop.

    Running averages of a one-row call (the runtime's fixed overhead plus one row) and of each
    further row: a batch of 64 Iris rows costs about what 2 single rows do, so a per-row average
    alone would send batches to the pool needlessly. ``inline``: may a cheap call run on the loop
    at all (a runtime of bounded cost, until one such call overran).
    """

    __slots__ = ("inline", "per_call", "per_row")

    def __init__(self, *, inline: bool) -> None:
        self.inline = inline
        self.per_call = math.inf
        self.per_row = math.inf

    def observe(self, seconds: float, rows: int) -> None:
        """Account one call of ``rows`` rows that took ``seconds``."""
        if rows <= 1 or self.per_call == math.inf:
            self.per_call = _average(self.per_call, seconds / max(1, rows))
        if rows > 1:
            extra = max(0.0, seconds - self.per_call) / (rows - 1)
            self.per_row = _average(self.per_row, extra)

    def forget(self) -> None:
        """Start over (after a first call that paid for lazy set-up)."""
        self.per_call = self.per_row = math.inf

    def estimate(self, rows: int) -> float:
        """Expected seconds for a call of ``rows`` rows (inf before anything was measured)."""
        if rows <= 1:
            return self.per_call  # (not inf + inf * 0, which is NaN)
        per_row = self.per_call if self.per_row == math.inf else self.per_row
        return self.per_call + per_row * (rows - 1)

    def runs_inline(self, rows: int) -> bool:
        """Whether a prediction of ``rows`` rows is cheap enough to run on the event loop."""
        return self.inline and self.estimate(rows) < INLINE_SECONDS

    def overran(self, seconds: float) -> bool:
        """An inline call took ``seconds``: True when that was too long, the first time (calls
        run in the pool from then on)."""
        if seconds > OVERRUN_SECONDS and self.inline:
            self.inline = False
            return True
        return False


class Overload:
    """Admission without a batcher: the expected seconds of work handed to the pool and not
    finished (``backlog``), how many calls run at once there (``parallelism``) and the expected
    wait past which requests are refused (``max_wait``); what was refused (503, ``refused``, the
    last at ``shed_at``, monotonic seconds) and dropped past its deadline (504, ``timed_out``)."""

    __slots__ = ("backlog", "max_wait", "parallelism", "refused", "shed_at", "timed_out")

    def __init__(self, *, parallelism: int, max_wait: float) -> None:
        self.backlog = 0.0
        self.parallelism = parallelism
        self.max_wait = max_wait
        self.shed_at = -math.inf
        self.refused = 0
        self.timed_out = 0

    def wait(self) -> float:
        """Expected seconds before a call handed to the pool now would start."""
        return self.backlog / self.parallelism

    def refuse(self) -> None:
        """A request was refused as overload, now."""
        self.shed_at = time.monotonic()
        self.refused += 1

    def shedding(self, now: float, window: float) -> bool:
        """Whether a request was refused as overload within the last ``window`` seconds."""
        return now - self.shed_at < window


class Drain:
    """The requests (and shadow jobs) using a version now, and, once it retires, the wait for the
    last of them (on the event loop)."""

    __slots__ = ("_drained", "inflight")

    def __init__(self) -> None:
        self.inflight = 0
        self._drained: asyncio.Event | None = None

    def leave(self) -> None:
        """One request (or shadow job) stopped using the version."""
        self.inflight -= 1
        if self.inflight == 0 and self._drained is not None:
            self._drained.set()

    async def wait(self, seconds: float) -> bool:
        """Wait at most ``seconds`` for the requests in flight to end; False if some still run."""
        if self.inflight == 0:
            return True
        self._drained = asyncio.Event()
        try:
            await asyncio.wait_for(self._drained.wait(), seconds)
        except TimeoutError:
            return False
        return True


class RunningCalls:
    """Runtime calls in progress, in any thread: call number -> when it started (perf_counter).

    A call still running past the server's deadline answers nobody and cannot be stopped (a
    thread cannot be killed): it is a runaway, reported once by :meth:`runaways`.
    """

    __slots__ = ("_reported", "numbers", "ref", "started")

    def __init__(self, ref: str) -> None:
        self.ref = ref  # the version, as warnings name it
        self.started: dict[int, float] = {}
        self.numbers: Iterator[int] = itertools.count()
        self._reported: set[int] = set()

    def begin(self) -> tuple[int, float]:
        """A runtime call starts now (in the thread that runs it): its number and start (perf_counter)."""
        call = next(self.numbers)
        self.started[call] = start = time.perf_counter()
        return call, start

    def end(self, call: int) -> None:
        """Call ``call`` returned or raised."""
        del self.started[call]

    def runaways(self, limit: float) -> list[float]:
        """How long each call running for more than ``limit`` seconds (the server's deadline) has
        run; the first time a call is found, a warning says so (on the event loop)."""
        now = time.perf_counter()
        running = list(self.started.items())  # one C-level copy: worker threads add and remove calls
        found = [(call, now - start) for call, start in running if now - start > limit]
        self._reported &= {call for call, _ in running}
        for call, seconds in found:
            if call not in self._reported:
                self._reported.add(call)
                logger.warning(
                    "%s: a prediction has been running for %.0f s, past the %g s deadline, and answers nobody; "
                    "its thread cannot be stopped: the server reports not ready while it runs (liveness fails "
                    "past %g s); restart the server or this worker to recycle it",
                    self.ref,
                    seconds,
                    limit,
                    limit * RUNAWAY_LIVENESS_FACTOR,
                )
        return [seconds for _, seconds in found]


class ServingModel:
    """One served version: its registry record, its loaded runtime, its state, and the parts that
    serve it: ``cost`` (:class:`CostModel`), ``overload`` (:class:`Overload`), ``drain``
    (:class:`Drain`), ``calls`` (:class:`RunningCalls`) and, when batching is on, ``batcher``.

    ``threads`` is the prediction pool's size (a runtime that is not thread-safe runs one call at
    a time, under ``lock``); ``max_queue_wait`` the expected wait past which requests are refused;
    ``batching`` (when given, for a runtime whose rows may be merged) makes a :class:`Batcher`
    that runs its batches with ``execute``. ``multi`` is the runtime when it has several
    signatures (:class:`~modelport.runtimes.base.MultiSignature`), else None.
    """

    __slots__ = (
        "_example_outputs",
        "_load_seconds",
        "batcher",
        "calls",
        "cost",
        "drain",
        "lock",
        "multi",
        "outputs",
        "overload",
        "runtime",
        "state",
        "version",
        "watch",
    )

    def __init__(
        self,
        version: ModelVersion,
        runtime: Runtime,
        *,
        threads: int = 1,
        max_queue_wait: float = 1.0,
        batching: BatchSettings | None = None,
        execute: Execute | None = None,
    ) -> None:
        thread_safe = runtime.capabilities.thread_safe
        self.version = version
        self.runtime = runtime
        self.state = State.LOADING
        self.lock = None if thread_safe else threading.Lock()
        self.outputs = tuple(spec.name for spec in version.signature.outputs)  # the signature's, in order
        self.multi = runtime if isinstance(runtime, MultiSignature) else None
        self.cost = CostModel(inline=runtime.capabilities.bounded_cost)
        self.overload = Overload(parallelism=threads if thread_safe else 1, max_wait=max_queue_wait)
        self.drain = Drain()
        self.calls = RunningCalls(version.ref)
        self.watch: VersionWatch = UNWATCHED  # observability's hooks (metrics, capture): see watch_with
        self.batcher: Batcher | None = None
        if batching is not None and execute is not None and runtime.capabilities.batch_rows:
            self.batcher = Batcher(
                lambda inputs: execute(self, inputs),
                batching,
                cost=self.cost.estimate,
                queued=lambda seconds: self.watch.queued(seconds),
            )
        self._load_seconds = 0.0
        self._example_outputs: dict[str, np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"ServingModel({self.version.ref}, {self.state.value})"

    @property
    def name(self) -> str:
        return self.version.name

    @property
    def key(self) -> tuple[str, int]:
        return (self.version.name, self.version.version)

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    @property
    def load_seconds(self) -> float:
        """How long opening and warming it took."""
        return self._load_seconds

    @property
    def example_outputs(self) -> dict[str, np.ndarray] | None:
        """What it answered to the registered example when warmed (the signature's outputs; None: no example)."""
        return self._example_outputs

    def warmed(self, example_outputs: dict[str, np.ndarray] | None, seconds: float) -> None:
        """Warm-up is over: what it answered to the example, and how long opening and warming took."""
        self._example_outputs = example_outputs
        self._load_seconds = seconds

    def watch_with(self, watch: VersionWatch) -> None:
        """Tell ``watch`` (observability's hooks) of its traffic from now on."""
        self.watch = watch

    def predict(self, inputs: Mapping[str, np.ndarray], waited: float | None = None) -> dict[str, np.ndarray]:
        """Predict, holding the lock when the runtime is not thread-safe (``waited``: see :meth:`timed_predict`)."""
        if self.lock is None:
            return self.timed_predict(inputs, waited)
        with self.lock:
            return self.timed_predict(inputs, waited)

    def timed_predict(self, inputs: Mapping[str, np.ndarray], waited: float | None = None) -> dict[str, np.ndarray]:
        """Predict (caller holds the lock if any), update the cost model and tell the watch;
        ``waited``: how long the one request this call serves waited for it (None: a batch)."""
        calls = self.calls
        call, start = calls.begin()
        try:
            outputs = self.runtime.predict(inputs)
        finally:
            calls.end(call)
        seconds = time.perf_counter() - start
        rows = count_rows(inputs)
        self.cost.observe(seconds, rows)
        self.watch.ran(rows, seconds, waited)
        return outputs


def _average(old: float, new: float) -> float:
    return new if old == math.inf else 0.8 * old + 0.2 * new
