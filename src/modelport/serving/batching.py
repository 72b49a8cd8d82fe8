"""Adaptive batching: merge concurrent requests for one model version into one runtime call.

The pure part (``merge``, ``split``) is kept apart from the queue (``Batcher``) so each can be
tested on its own. Rules the batcher keeps:

- No timer when idle: a request that finds the runtime free starts a batch on the event loop's
  next pass, with every request that arrived in the same pass (a server reads all ready
  connections in one pass, so under load these are many; idle, it is one request, a few
  microseconds later). This is where most of batching's gain comes from on a loaded server: one
  runtime call and one burst of responses per pass instead of one per request.
- Requests that arrive while a batch runs queue; when it is done the queue is flushed in
  batches of at most ``max_batch_size`` rows, so the batch size follows the load. ``max_wait``
  (default 0) additionally holds such a batch, when not full, for up to that long after its
  oldest request arrived, trading latency for fuller batches. A request larger than
  ``max_batch_size`` runs alone.
- Every caller gets exactly its own rows, in order, with its own output selection.
- A batch that fails is retried request by request, so one bad request fails alone.
- The queue is bounded by expected wait: with the model's measured cost of a call (``cost``),
  a request that would wait more than ``max_queue_wait`` seconds behind the work already
  queued (and the batch in flight) is refused at once with ``Overloaded`` (503 + Retry-After
  in the protocols), as is one past ``max_queue_rows`` queued rows. A request that finds the
  batcher idle is never refused.
- A request whose caller gave up (its deadline passed: the awaiting task was cancelled) leaves
  the queue: its rows stop counting at once and it never reaches the runtime.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from modelport.errors import DeadlineExceeded, Overloaded
from modelport.settings import Settings
from modelport.signature import count_rows, select_outputs
from modelport.types import Batching, Marks

Arrays = Mapping[str, np.ndarray]
Run = Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]
Cost = Callable[[int], float]  # expected seconds of one runtime call of that many rows (inf: not measured)


def merge(requests: Sequence[Arrays]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Concatenate requests' inputs along the batch axis; return the batch and each one's rows."""
    sizes = [count_rows(r) for r in requests]
    if len(requests) == 1:
        return dict(requests[0]), sizes
    names = list(requests[0])
    return {name: np.concatenate([r[name] for r in requests], axis=0) for name in names}, sizes


def split(
    outputs: Arrays, sizes: Sequence[int], selections: Sequence[Sequence[str] | None]
) -> list[dict[str, np.ndarray]]:
    """Cut batch outputs back into each request's rows, applying each request's output selection."""
    total = sum(sizes)
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            raise ValueError(f"output {name!r} has {arr.shape[0] if arr.ndim else 0} rows for a batch of {total}")
    bounds = np.cumsum([0, *sizes])
    result = []
    for i, selection in enumerate(selections):
        start, stop = int(bounds[i]), int(bounds[i + 1])
        own = {name: arr[start:stop] for name, arr in outputs.items()}
        result.append(select_outputs(own, selection))
    return result


class Clock(Protocol):
    """Time as the batcher sees it; tests pass one they control."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """Per model version. ``max_wait`` and ``max_queue_wait`` in seconds; rows, not requests,
    count toward the sizes.

    ``enabled`` False keeps the sizes as defaults for versions that turn batching on themselves.
    ``max_queue_wait`` bounds the expected wait of a queued request whether batching is on or not.
    """

    max_batch_size: int = 64
    max_wait: float = 0.0
    max_queue_rows: int = 4096
    enabled: bool = True
    max_queue_wait: float = 1.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_wait < 0 or self.max_queue_rows < 1 or self.max_queue_wait < 0:
            raise ValueError("max_batch_size and max_queue_rows must be >= 1, max_wait and max_queue_wait >= 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchSettings:
        """The server's batching settings (the defaults for every version it serves)."""
        return cls(
            settings.max_batch_size,
            settings.max_batch_wait_ms / 1000.0,
            settings.max_queue_rows,
            settings.batching,
            settings.max_queue_wait_ms / 1000.0,
        )

    def queue_wait_for(self, own: Batching) -> float:
        """The expected wait past which one version refuses requests: its own setting, else this."""
        return self.max_queue_wait if own.max_queue_wait_ms is None else own.max_queue_wait_ms / 1000.0

    def for_version(self, own: Batching) -> BatchSettings | None:
        """What one version runs with: its own settings where it has them, else these; None: off."""
        if not (self.enabled if own.enabled is None else own.enabled):
            return None
        return BatchSettings(
            own.max_batch_size or self.max_batch_size,
            self.max_wait if own.max_wait_ms is None else own.max_wait_ms / 1000.0,
            self.max_queue_rows,
            max_queue_wait=self.queue_wait_for(own),
        )


@dataclass(eq=False)
class _Pending:
    inputs: Arrays
    outputs: Sequence[str] | None
    rows: int
    arrived: float
    future: asyncio.Future[dict[str, np.ndarray]] = field(repr=False)
    queued: bool = True  # its rows count in the queue (until taken, or dropped by its caller)
    deadline: float = math.inf  # clock time past which it is answered DeadlineExceeded
    marks: Marks | None = None  # a traced request's: told when its runtime call started and ended

    def __lt__(self, other: _Pending) -> bool:  # heap order: earliest deadline first
        return self.deadline < other.deadline


class Batcher:
    """Queue in front of one model version's ``run`` coroutine (one batch in flight at a time)."""

    def __init__(
        self,
        run: Run,
        settings: BatchSettings,
        *,
        cost: Cost | None = None,
        clock: Clock | None = None,
        queued: Callable[[float], None] | None = None,
    ) -> None:
        self._run = run
        self._queued = queued  # told each request's wait when its batch starts
        self.settings = settings
        self._cost = cost
        self._clock = clock or MonotonicClock()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._busy = False
        self._running_until: float | None = None  # when the batch in flight is expected to end
        self._dispatcher: asyncio.Task[None] | None = None  # held: the loop keeps only weak references
        self.batches = 0  # runtime calls made, for tests and metrics
        self.largest_batch = 0
        self.rejected = 0  # requests refused as overload
        self._deadlines: list[_Pending] = []  # a heap: the requests held that have a deadline
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at = math.inf

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def idle(self) -> bool:
        """No batch running and none waiting."""
        return not self._busy and not self._queue

    def expected_wait(self) -> float:
        """Seconds a request submitted now is expected to wait before its batch starts: the rest
        of the batch in flight, then the queued rows in batches of ``max_batch_size`` (0 while the
        model's cost is not measured)."""
        if self._cost is None:
            return 0.0
        size = self.settings.max_batch_size
        full, rest = divmod(self._queued_rows, size)
        wait = full * self._cost(size) + (self._cost(rest) if rest else 0.0)
        if self._running_until is not None:
            wait += max(0.0, self._running_until - self._clock.now())
        return wait if math.isfinite(wait) else 0.0

    def _admit(self, rows: int) -> None:
        """Overloaded when the request would wait too long, or the queue holds too many rows."""
        if not self._busy:
            return
        wait = self.expected_wait()
        settings = self.settings
        if wait > settings.max_queue_wait:
            why = (
                f"about {wait:.2g} s of work is queued ahead of this request (the limit is "
                f"{settings.max_queue_wait:g} s: MODELPORT_MAX_QUEUE_WAIT_MS)"
            )
        elif self._queue and self._queued_rows + rows > settings.max_queue_rows:
            why = f"{self._queued_rows} rows wait (the limit is {settings.max_queue_rows}: MODELPORT_MAX_QUEUE_ROWS)"
        else:
            return
        self.rejected += 1
        raise Overloaded(f"the model is overloaded: {why}; retry shortly or add capacity", retry_after=wait)

    async def submit(
        self,
        inputs: Arrays,
        outputs: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        marks: Marks | None = None,
    ) -> dict[str, np.ndarray]:
        """Predict ``inputs`` (validated) and return the selected outputs for exactly these rows.

        ``timeout``: seconds after which the request fails with ``DeadlineExceeded``, at that
        moment, whether it is still queued (it then never reaches the runtime) or in a batch
        being computed (its answer is abandoned). ``marks`` (a traced request's) are told when
        the runtime call serving it started and ended, and its rows.
        """
        rows = count_rows(inputs)
        self._admit(rows)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        now = self._clock.now()
        pending = _Pending(inputs, outputs, rows, now, future, marks=marks)
        self._queue.append(pending)
        self._queued_rows += rows
        if timeout is not None:
            pending.deadline = now + timeout
            self._watch(pending, loop)
        if not self._busy:
            self._busy = True
            self._dispatcher = loop.create_task(self._dispatch())  # after the requests ready in this pass
        try:
            return await future
        except asyncio.CancelledError:
            self._dropped(pending)
            raise

    # -- deadlines: one timer per batcher, at the earliest deadline of the requests it holds ---------

    def _watch(self, pending: _Pending, loop: asyncio.AbstractEventLoop) -> None:
        heapq.heappush(self._deadlines, pending)
        if self._expiry is None or pending.deadline < self._expiry_at:
            self._arm(pending.deadline, loop)

    def _arm(self, at: float, loop: asyncio.AbstractEventLoop) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = loop.call_later(max(0.0, at - self._clock.now()), self._expire, loop)
        self._expiry_at = at

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._expiry = None
        now = self._clock.now()
        heap = self._deadlines
        while heap:
            head = heap[0]
            if not head.future.done() and head.deadline > now:
                break
            heapq.heappop(heap)
            if not head.future.done():
                self._dropped(head)
                head.future.set_exception(DeadlineExceeded("the request's deadline passed"))
        if heap:
            self._arm(heap[0].deadline, loop)

    def _forget_settled(self) -> None:
        """Drop answered requests from the deadline heap (they are the oldest: at its top)."""
        heap = self._deadlines
        while heap and heap[0].future.done():
            heapq.heappop(heap)

    def _dropped(self, pending: _Pending) -> None:
        """Its caller gave up while it was queued: its rows no longer count (it is skipped when taken)."""
        if pending.queued:
            pending.queued = False
            self._queued_rows -= pending.rows

    def _count(self, rows: int) -> None:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, rows)

    async def _dispatch(self) -> None:
        """Run batches until the queue is empty: the first at once, later ones after ``_fill``."""
        try:
            first = True
            while self._queue:
                if not first:
                    await self._fill()
                first = False
                batch = self._take()
                if batch:
                    await self._execute(batch)
        finally:
            self._busy = False  # if cancelled with requests queued, the next submit starts over

    async def _fill(self) -> None:
        """Wait, up to max_wait from the oldest request, for a full batch."""
        limit = self.settings.max_batch_size
        while self._queue and self._queued_rows < limit:
            remaining = self._queue[0].arrived + self.settings.max_wait - self._clock.now()
            if remaining <= 0:
                return
            await self._clock.sleep(remaining)

    def _take(self) -> list[_Pending]:
        limit = self.settings.max_batch_size
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if batch and head.queued and rows + head.rows > limit:
                break
            self._queue.popleft()
            if not head.queued or head.future.done():
                continue
            head.queued = False
            self._queued_rows -= head.rows
            batch.append(head)
            rows += head.rows
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        if self._queued is not None:
            now = self._clock.now()
            for pending in batch:
                self._queued(now - pending.arrived)
        try:
            merged, sizes = merge([p.inputs for p in batch])
            self._count(sum(sizes))
            if self._cost is not None:
                self._running_until = self._clock.now() + self._cost(sum(sizes))
            _mark(batch, sum(sizes))
            try:
                outputs = await self._run(merged)
            finally:
                self._running_until = None
                _mark(batch)
            parts = split(outputs, sizes, [p.outputs for p in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], error=exc)
            else:
                await self._one_by_one(batch)
        else:
            for pending, part in zip(batch, parts, strict=True):
                _settle(pending, result=part)
        if self._deadlines:
            self._forget_settled()

    async def _one_by_one(self, batch: list[_Pending]) -> None:
        """The merged call failed: isolate the culprit by running each request alone."""
        for pending in batch:
            self._count(pending.rows)
            _mark([pending], pending.rows)
            try:
                outputs = await self._run(dict(pending.inputs))
                _settle(pending, result=split(outputs, [pending.rows], [pending.outputs])[0])
            except Exception as exc:
                _settle(pending, error=exc)
            finally:
                _mark([pending])


def _mark(batch: Sequence[_Pending], rows: int | None = None) -> None:
    """Tell the traced requests of ``batch`` that its runtime call started (of ``rows`` rows), or
    with ``rows`` None that it ended (a loop of None checks when nothing is traced)."""
    now = 0
    for pending in batch:
        marks = pending.marks
        if marks is not None:
            now = now or time.time_ns()
            if rows is None:
                marks.ended = now
            else:
                marks.started, marks.rows = now, rows


def _settle(
    pending: _Pending, *, result: dict[str, np.ndarray] | None = None, error: BaseException | None = None
) -> None:
    if pending.future.done():
        return
    if error is not None:
        pending.future.set_exception(error)
    else:
        assert result is not None
        pending.future.set_result(result)
