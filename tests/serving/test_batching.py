"""Adaptive batching: pure merge/split properties and the queue's behaviour under a controlled clock."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.errors import InvalidInput, Overloaded
from modelport.serving.batching import Batcher, BatchSettings, merge, split
from tests.support.waiting import until

OUTPUTS = ("double", "total")


def model(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A real row-wise computation with two outputs; rows containing -1 make the whole call fail."""
    x = inputs["x"]
    if (x == -1).any():
        raise ValueError("row with -1")
    return {"double": x * 2, "total": x.sum(axis=1)}


def request(first: float, rows: int, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.arange(first, first + rows * width, dtype=np.float64).reshape(rows, width)}


class FakeClock:
    """Time moves only when the test says so."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.t + seconds, future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time and wake the sleepers now due; the test then waits (``until``) for what it needs."""
        self.t += seconds
        for deadline, future in list(self.sleepers):
            if deadline <= self.t and not future.done():
                future.set_result(None)
        self.sleepers = [(d, f) for d, f in self.sleepers if not f.done()]


class Gate:
    """A runtime whose calls wait until the test opens the gate; records every batch it saw."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.calls: list[int] = []

    async def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(inputs["x"].shape[0])
        await self.open.wait()
        return model(inputs)


def expected(inputs: dict[str, np.ndarray], selection: tuple[str, ...] | None) -> dict[str, np.ndarray]:
    full = model(inputs)
    return {name: full[name] for name in (selection or OUTPUTS)}


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=12),
    selections=st.data(),
)
def test_merge_then_split_gives_every_caller_its_own_rows_and_outputs(
    sizes: list[int], selections: st.DataObject
) -> None:
    requests = []
    start = 0.0
    for rows in sizes:
        requests.append(request(start, rows))
        start += rows * 3
    chosen = [
        selections.draw(
            st.one_of(st.none(), st.permutations(OUTPUTS).map(tuple), st.sampled_from([("total",), ("double",)]))
        )
        for _ in sizes
    ]
    merged, counted = merge(requests)
    assert counted == sizes
    parts = split(model(merged), counted, chosen)
    assert len(parts) == len(requests)
    for part, req, selection in zip(parts, requests, chosen, strict=True):
        assert_same(part, expected(req, selection))


def test_split_refuses_outputs_that_are_not_row_aligned() -> None:
    with pytest.raises(ValueError, match="has 1 rows for a batch of 3"):
        split({"total": np.zeros(1)}, [1, 2], [None, None])


async def test_idle_request_runs_at_once_without_waiting() -> None:
    clock = FakeClock()

    async def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return model(inputs)

    batcher = Batcher(run, BatchSettings(max_batch_size=8, max_wait=10.0), clock=clock)
    result = await batcher.submit(request(0, 2), ("total",))
    assert_same(result, expected(request(0, 2), ("total",)))
    assert clock.sleepers == []
    assert batcher.batches == 1


async def test_requests_arriving_in_one_pass_of_the_loop_run_as_one_batch_without_waiting() -> None:
    clock = FakeClock()
    calls: list[int] = []

    async def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(inputs["x"].shape[0])
        return model(inputs)

    batcher = Batcher(run, BatchSettings(max_batch_size=100, max_wait=60.0), clock=clock)
    selections = (None, ("total",), ("double",))
    futures = [asyncio.ensure_future(batcher.submit(request(10 * i, i + 1), sel)) for i, sel in enumerate(selections)]
    results = await asyncio.gather(*futures)  # the runtime was free: no max_wait, one call for all
    assert calls == [6]
    assert clock.sleepers == []
    for i, (result, sel) in enumerate(zip(results, selections, strict=True)):
        assert_same(result, expected(request(10 * i, i + 1), sel))
    assert batcher.idle


async def test_requests_arriving_while_busy_are_merged_after_max_wait() -> None:
    clock, gate = FakeClock(), Gate()
    batcher = Batcher(gate.run, BatchSettings(max_batch_size=100, max_wait=0.005), clock=clock)
    first = asyncio.ensure_future(batcher.submit(request(0, 1)))
    await until(lambda: gate.calls == [1], "the runtime to get the first request")
    queued = [
        asyncio.ensure_future(batcher.submit(request(10 * i, i), sel))
        for i, sel in ((1, None), (2, ("total",)), (3, ("double",)))
    ]
    await until(lambda: batcher.queued_rows == 6, "the three requests (6 rows) to queue")
    assert gate.calls == [1]
    gate.open.set()
    await until(first.done, "the first request to be answered")
    await until(lambda: len(clock.sleepers) == 1, "the batcher to wait on the clock for more rows")
    assert first.done()
    assert gate.calls == [1], "the queue waits for more rows until max_wait"
    clock.advance(0.004)
    await until(lambda: len(clock.sleepers) == 1, "the batcher to still wait on the clock (max_wait not reached)")
    assert gate.calls == [1]
    clock.advance(0.001)
    await until(lambda: all(f.done() for f in queued), "the queued requests to be answered after max_wait")
    assert gate.calls == [1, 6]
    for future, (i, sel) in zip(queued, ((1, None), (2, ("total",)), (3, ("double",))), strict=True):
        assert_same(future.result(), expected(request(10 * i, i), sel))


async def test_a_full_batch_is_dispatched_without_waiting() -> None:
    clock, gate = FakeClock(), Gate()
    batcher = Batcher(gate.run, BatchSettings(max_batch_size=4, max_wait=60.0), clock=clock)
    blocker = asyncio.ensure_future(batcher.submit(request(0, 1)))
    await until(lambda: gate.calls == [1], "the runtime to get the first request")
    waiting = [asyncio.ensure_future(batcher.submit(request(100 * i, 2))) for i in range(3)]
    await until(lambda: batcher.queued_rows == 6, "the three requests (6 rows) to queue")
    gate.open.set()
    await until(blocker.done, "the first request to be answered")
    await until(lambda: len(clock.sleepers) == 1, "the batcher to wait on the clock for more rows")
    assert blocker.done()
    assert gate.calls[:2] == [1, 4], "a full batch (4 rows) goes at once; the rest waits"
    assert not waiting[2].done()
    clock.advance(60.0)
    await until(lambda: all(f.done() for f in waiting), "the last queued request to be answered after max_wait")
    assert gate.calls == [1, 4, 2]
    for i, future in enumerate(waiting):
        assert_same(future.result(), expected(request(100 * i, 2), None))


async def test_a_request_larger_than_the_limit_runs_alone() -> None:
    clock, gate = FakeClock(), Gate()
    batcher = Batcher(gate.run, BatchSettings(max_batch_size=4, max_wait=0.0), clock=clock)
    blocker = asyncio.ensure_future(batcher.submit(request(0, 1)))
    await until(lambda: gate.calls == [1], "the runtime to get the first request")
    big = asyncio.ensure_future(batcher.submit(request(0, 9)))
    small = asyncio.ensure_future(batcher.submit(request(50, 1)))
    await until(lambda: batcher.queued_rows == 10, "the big and the small request (10 rows) to queue")
    gate.open.set()
    await until(lambda: blocker.done() and big.done() and small.done(), "all three requests to be answered")
    await asyncio.gather(blocker, big, small)
    assert gate.calls == [1, 9, 1]
    assert_same(big.result(), expected(request(0, 9), None))


async def test_one_failing_request_fails_alone_and_the_others_succeed() -> None:
    clock, gate = FakeClock(), Gate()
    batcher = Batcher(gate.run, BatchSettings(max_batch_size=100, max_wait=0.0), clock=clock)
    blocker = asyncio.ensure_future(batcher.submit(request(0, 1)))
    await until(lambda: gate.calls == [1], "the runtime to get the first request")
    good_a = asyncio.ensure_future(batcher.submit(request(0, 2)))
    bad = asyncio.ensure_future(batcher.submit({"x": np.array([[1.0, -1.0, 2.0]])}))
    good_b = asyncio.ensure_future(batcher.submit(request(7, 3), ("total",)))
    await until(lambda: batcher.queued_rows == 6, "the three requests (6 rows) to queue")
    gate.open.set()
    results = await asyncio.gather(blocker, good_a, bad, good_b, return_exceptions=True)
    assert isinstance(results[2], ValueError)
    assert isinstance(results[1], dict), results[1]
    assert isinstance(results[3], dict), results[3]
    assert_same(results[1], expected(request(0, 2), None))
    assert_same(results[3], expected(request(7, 3), ("total",)))
    assert gate.calls == [1, 6, 2, 1, 3], "merged call failed, then each request ran alone"


async def test_a_full_queue_refuses_with_overloaded() -> None:
    clock, gate = FakeClock(), Gate()
    batcher = Batcher(gate.run, BatchSettings(max_batch_size=4, max_wait=0.0, max_queue_rows=3), clock=clock)
    blocker = asyncio.ensure_future(batcher.submit(request(0, 1)))
    await until(lambda: gate.calls == [1], "the runtime to get the first request")
    queued = asyncio.ensure_future(batcher.submit(request(0, 3)))
    await until(lambda: batcher.queued_rows == 3, "the request of 3 rows to queue")
    with pytest.raises(Overloaded, match=r"3 rows wait \(the limit is 3: MODELPORT_MAX_QUEUE_ROWS\)"):
        await batcher.submit(request(0, 1))
    gate.open.set()
    await asyncio.gather(blocker, queued)
    assert batcher.queued_rows == 0


def linear_cost(rows: int) -> float:
    """A model measured at 50 ms per call plus 10 ms per row."""
    return 0.05 + 0.01 * rows


async def test_a_request_expected_to_wait_past_the_bound_is_refused_at_once() -> None:
    clock, gate = FakeClock(), Gate()
    settings = BatchSettings(max_batch_size=4, max_wait=0.0, max_queue_wait=0.3)
    batcher = Batcher(gate.run, settings, cost=linear_cost, clock=clock)
    assert batcher.expected_wait() == 0.0
    blocker = asyncio.ensure_future(batcher.submit(request(0, 4)))  # in flight: 90 ms
    await until(lambda: gate.calls == [4], "the runtime to get the first request")
    assert batcher.expected_wait() == pytest.approx(0.09)
    clock.advance(0.04)
    assert batcher.expected_wait() == pytest.approx(0.05), "the batch in flight has 50 ms left"
    queued = [asyncio.ensure_future(batcher.submit(request(0, 2))) for _ in range(2)]  # one batch of 4: 90 ms
    await until(lambda: batcher.queued_rows == 4, "the two requests of 2 rows to queue")
    assert batcher.expected_wait() == pytest.approx(0.05 + 0.09)
    queued += [asyncio.ensure_future(batcher.submit(request(0, 4))) for _ in range(2)]  # two more batches
    await until(lambda: batcher.queued_rows == 12, "the two requests of 4 rows to queue")
    assert batcher.expected_wait() == pytest.approx(0.05 + 3 * 0.09)
    with pytest.raises(Overloaded, match=r"about 0.32 s of work is queued ahead .*limit is 0.3 s") as refused:
        await batcher.submit(request(0, 1))
    assert refused.value.retry_after == pytest.approx(0.32)
    assert batcher.rejected == 1
    gate.open.set()
    await asyncio.gather(blocker, *queued)
    assert batcher.expected_wait() == 0.0
    assert gate.calls == [4, 4, 4, 4]


async def test_a_request_whose_caller_gave_up_leaves_the_queue_and_never_runs() -> None:
    clock, gate = FakeClock(), Gate()
    batcher = Batcher(gate.run, BatchSettings(max_batch_size=8, max_wait=0.0), cost=linear_cost, clock=clock)
    blocker = asyncio.ensure_future(batcher.submit(request(0, 1)))
    await until(lambda: gate.calls == [1], "the runtime to get the first request")
    abandoned = asyncio.ensure_future(batcher.submit(request(0, 5)))
    kept = asyncio.ensure_future(batcher.submit(request(0, 2)))
    await until(lambda: batcher.queued_rows == 7, "the two requests (7 rows) to queue")
    assert batcher.queued_rows == 7
    abandoned.cancel()
    await until(abandoned.done, "the abandoned request's cancellation to reach it")
    assert batcher.queued_rows == 2, "the abandoned rows stop counting at once"
    gate.open.set()
    await asyncio.gather(blocker, kept)
    assert gate.calls == [1, 2], "the abandoned request never reached the runtime"
    assert batcher.queued_rows == 0


async def test_validation_errors_from_the_runtime_reach_only_their_caller() -> None:
    async def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise InvalidInput("bad rows")

    batcher = Batcher(run, BatchSettings(), clock=FakeClock())
    with pytest.raises(InvalidInput, match="bad rows"):
        await batcher.submit(request(0, 1))
    assert batcher.queued_rows == 0


def test_settings_refuse_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchSettings(max_batch_size=0)
