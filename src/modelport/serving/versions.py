"""Served versions: where they come from (:class:`ModelSource`), their state, their in-flight count.

A :class:`ServingModel` is one loaded version. :class:`VersionStatus` is what status endpoints
show about any version the manager has seen, including ones that failed to load.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from modelport.reference import Reference
from modelport.registry.traffic import Snapshot
from modelport.runtimes.base import Runtime
from modelport.serving.hooks import UNWATCHED, VersionWatch
from modelport.signature import count_rows
from modelport.types import ModelVersion

logger = logging.getLogger("modelport")

if TYPE_CHECKING:
    from modelport.registry.registry import Registry
    from modelport.serving.batching import Batcher

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


@dataclass(eq=False)
class ServingModel:
    """One served version: its registry record, its loaded runtime and its state."""

    version: ModelVersion
    runtime: Runtime
    state: State = State.LOADING
    lock: threading.Lock | None = field(default=None, repr=False)  # set when the runtime is not thread-safe
    outputs: tuple[str, ...] = field(init=False, repr=False)  # the signature's outputs, in order
    # The cost model behind runs_inline: running averages of a one-row call (the runtime's fixed
    # overhead plus one row) and of each further row. A batch of 64 Iris rows costs about what
    # 2 single rows do, so a per-row average alone would send batches to the pool needlessly.
    seconds_per_call: float = field(default=math.inf, repr=False)
    seconds_per_row: float = field(default=math.inf, repr=False)
    inflight: int = field(default=0, repr=False)  # requests (and shadow jobs) using it now
    batcher: Batcher | None = field(default=None, repr=False)  # merges concurrent requests when batching is on
    # Overload: the expected seconds of work handed to the pool and not finished (without a
    # batcher), how many calls run at once there, and the expected wait past which requests
    # are refused; when the version last refused one (monotonic seconds).
    backlog: float = field(default=0.0, repr=False)
    parallelism: int = field(default=1, repr=False)
    max_queue_wait: float = field(default=1.0, repr=False)
    shed_at: float = field(default=-math.inf, repr=False)
    inline: bool = field(init=False, repr=False)  # may a cheap call run on the event loop at all
    drained: asyncio.Event | None = field(default=None, repr=False)  # set when a retiring version's last request ends
    watch: VersionWatch = field(default=UNWATCHED, repr=False)  # observability's hooks (metrics, capture)
    load_seconds: float = field(default=0.0, repr=False)  # how long opening and warming it took
    # What it answered to the registered example when warmed (the signature's outputs; None: no example)
    example_outputs: dict[str, np.ndarray] | None = field(default=None, repr=False)
    overloaded: int = field(default=0, repr=False)  # requests refused as overload (503)
    timed_out: int = field(default=0, repr=False)  # requests dropped past their deadline (504)
    # Runtime calls in progress, in any thread: call number -> when it started (perf_counter). A
    # call still running past the server's deadline answers nobody and cannot be stopped (a
    # thread cannot be killed): it is a runaway, reported once by :meth:`runaways`.
    running: dict[int, float] = field(default_factory=dict, repr=False)
    calls: Iterator[int] = field(default_factory=itertools.count, repr=False)
    reported: set[int] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.outputs = tuple(spec.name for spec in self.version.signature.outputs)
        self.inline = self.runtime.capabilities.bounded_cost

    @property
    def name(self) -> str:
        return self.version.name

    @property
    def key(self) -> tuple[str, int]:
        return (self.version.name, self.version.version)

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def leave(self) -> None:
        """One request (or shadow job) stopped using this version (on the event loop)."""
        self.inflight -= 1
        if self.inflight == 0 and self.drained is not None:
            self.drained.set()

    def predict(self, inputs: Mapping[str, np.ndarray], waited: float | None = None) -> dict[str, np.ndarray]:
        """Predict, holding the lock when the runtime is not thread-safe (``waited``: see :meth:`timed_predict`)."""
        if self.lock is None:
            return self.timed_predict(inputs, waited)
        with self.lock:
            return self.timed_predict(inputs, waited)

    def timed_predict(self, inputs: Mapping[str, np.ndarray], waited: float | None = None) -> dict[str, np.ndarray]:
        """Predict (caller holds the lock if any), update the cost model and tell the watch;
        ``waited``: how long the one request this call serves waited for it (None: a batch)."""
        call = next(self.calls)
        self.running[call] = start = time.perf_counter()
        try:
            outputs = self.runtime.predict(inputs)
        finally:
            del self.running[call]
        seconds = time.perf_counter() - start
        rows = count_rows(inputs)
        self.observe(seconds, rows)
        self.watch.ran(rows, seconds, waited)
        return outputs

    def runaways(self, limit: float) -> list[float]:
        """How long each call running for more than ``limit`` seconds (the server's deadline) has
        run; the first time a call is found, a warning says so (on the event loop)."""
        now = time.perf_counter()
        running = list(self.running.items())  # one C-level copy: worker threads add and remove calls
        found = [(call, now - start) for call, start in running if now - start > limit]
        self.reported &= {call for call, _ in running}
        for call, seconds in found:
            if call not in self.reported:
                self.reported.add(call)
                logger.warning(
                    "%s: a prediction has been running for %.0f s, past the %g s deadline, and answers nobody; "
                    "its thread cannot be stopped: the server reports not ready while it runs (liveness fails "
                    "past %g s); restart the server or this worker to recycle it",
                    self.version.ref,
                    seconds,
                    limit,
                    limit * RUNAWAY_LIVENESS_FACTOR,
                )
        return [seconds for _, seconds in found]

    def observe(self, seconds: float, rows: int) -> None:
        """Account one call of ``rows`` rows that took ``seconds``."""
        if rows <= 1 or self.seconds_per_call == math.inf:
            self.seconds_per_call = _average(self.seconds_per_call, seconds / max(1, rows))
        if rows > 1:
            extra = max(0.0, seconds - self.seconds_per_call) / (rows - 1)
            self.seconds_per_row = _average(self.seconds_per_row, extra)

    def forget_costs(self) -> None:
        """Start the cost model over (after a first call that paid for lazy set-up)."""
        self.seconds_per_call = self.seconds_per_row = math.inf

    def estimate(self, rows: int) -> float:
        """Expected seconds for a call of ``rows`` rows (inf before anything was measured)."""
        per_row = self.seconds_per_call if self.seconds_per_row == math.inf else self.seconds_per_row
        return self.seconds_per_call + per_row * max(0, rows - 1)

    def runs_inline(self, rows: int) -> bool:
        """Whether a prediction of ``rows`` rows is cheap enough to run on the event loop."""
        return self.inline and self.estimate(rows) < INLINE_SECONDS

    def queue_wait(self) -> float:
        """Expected seconds before a request now would start (batcher, or the pool's backlog)."""
        if self.batcher is not None:
            return self.batcher.expected_wait()
        return self.backlog / self.parallelism

    def shedding(self, now: float, window: float) -> bool:
        """Whether the version refused a request as overload within the last ``window`` seconds."""
        return now - self.shed_at < window


def _average(old: float, new: float) -> float:
    return new if old == math.inf else 0.8 * old + 0.2 * new
