"""ServingModel's parts (cost model, overload, drain, running calls), how it is built from what a
runtime declares, and runtimes with several signatures (MultiSignature)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from modelport.errors import InvalidInput
from modelport.runtimes.base import Capabilities, MultiSignature, Runtime
from modelport.runtimes.fake import FakeRuntime
from modelport.serving.batching import BatchSettings
from modelport.serving.manager import ModelManager
from modelport.serving.versions import INLINE_SECONDS, CostModel, Drain, Overload, RunningCalls, ServingModel
from modelport.types import InferRequest, ModelVersion, Signature, TensorSpec
from tests.support.serving import DirectorySource, fake_version

ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
DOUBLED = Signature(inputs=(TensorSpec("x", "FP32", (-1, 4)),), outputs=(TensorSpec("y", "FP32", (-1, 4)),))


class TwoSignatures(FakeRuntime):
    """The fake model, plus another signature (``doubled``) as a plugin runtime would declare it."""

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return {"doubled": DOUBLED}

    def predict_signature(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert name == "doubled"
        return {"y": inputs["x"] * 2}


class OneAtATime(FakeRuntime):
    capabilities: ClassVar[Capabilities] = Capabilities(batch_rows=False, thread_safe=False)


class Opening(DirectorySource):
    """Opens every version with ``runtime`` (a FakeRuntime class)."""

    def __init__(self, versions: list[tuple[ModelVersion, Path]], runtime: type[FakeRuntime]) -> None:
        super().__init__(versions)
        self.runtime = runtime

    def open(self, version: ModelVersion) -> Runtime:
        runtime = self.runtime()
        runtime.load(next(p for v, p in self.versions if v is version), version.signature)
        return runtime


def test_a_runtime_declares_several_signatures_by_having_them() -> None:
    assert isinstance(TwoSignatures(), MultiSignature)
    assert not isinstance(FakeRuntime(), MultiSignature)


async def test_another_signature_of_a_multisignature_runtime_is_served(tmp_path: Path) -> None:
    manager = ModelManager(Opening([fake_version(tmp_path)], TwoSignatures))
    await manager.load(["iris"])
    model = manager.get("iris")
    assert model.multi is model.runtime
    result = await manager.infer("iris", None, InferRequest({"x": ROW}, signature_name="doubled"))
    np.testing.assert_allclose(result.outputs["y"], ROW * 2)
    assert result.signature == DOUBLED
    assert model.drain.inflight == 0
    manager.close()


async def test_a_signature_name_for_a_runtime_with_one_signature_is_invalid_input(tmp_path: Path) -> None:
    manager = ModelManager(Opening([fake_version(tmp_path)], FakeRuntime))
    await manager.load(["iris"])
    assert manager.get("iris").multi is None
    with pytest.raises(InvalidInput, match="has no signature 'doubled'"):
        await manager.infer("iris", None, InferRequest({"x": ROW}, signature_name="doubled"))
    manager.close()


def test_a_serving_model_is_built_from_what_its_runtime_declares(tmp_path: Path) -> None:
    version, _ = fake_version(tmp_path)
    version = replace(version, signature=replace(version.signature, example=None))
    batching = BatchSettings(enabled=True)

    async def execute(model: ServingModel, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return model.predict(inputs)

    shared = FakeRuntime()
    model = ServingModel(version, shared, threads=4, max_queue_wait=2.5, batching=batching, execute=execute)
    assert model.lock is None
    assert model.overload.parallelism == 4
    assert model.overload.max_wait == 2.5
    assert model.batcher is not None
    assert model.cost.inline
    alone = ServingModel(version, OneAtATime(), threads=4, batching=batching, execute=execute)
    assert alone.lock is not None
    assert alone.overload.parallelism == 1
    assert alone.batcher is None, "rows of a runtime without batch_rows are never merged"
    assert model.example_outputs is None
    assert model.load_seconds == 0.0
    outputs = {"label": np.array(["setosa"])}
    model.warmed(outputs, 0.25)
    assert model.example_outputs is outputs
    assert model.load_seconds == 0.25


def test_the_cost_model_runs_cheap_calls_inline_until_one_overruns() -> None:
    cost = CostModel(inline=True)
    assert cost.estimate(1) == math.inf
    assert not cost.runs_inline(1)
    cost.observe(INLINE_SECONDS / 10, 1)
    assert cost.runs_inline(1)
    assert not cost.overran(INLINE_SECONDS)  # slower than measured, but not an overrun
    assert cost.overran(1.0), "the first overrun says so ..."
    assert not cost.overran(1.0), "... once"
    assert not cost.runs_inline(1)
    assert not CostModel(inline=False).runs_inline(0)


def test_overload_counts_what_it_refused_and_sheds_for_a_window() -> None:
    overload = Overload(parallelism=2, max_wait=1.0)
    overload.backlog = 3.0
    assert overload.wait() == 1.5
    now = time.monotonic()
    assert not overload.shedding(now, 5.0)
    overload.refuse()
    assert overload.refused == 1
    assert overload.shedding(time.monotonic(), 5.0)
    assert not overload.shedding(overload.shed_at + 5.0, 5.0)


async def test_drain_waits_for_the_last_request_at_most_so_long() -> None:
    drain = Drain()
    assert await drain.wait(0.0), "nothing in flight: drained at once"
    drain.inflight += 1
    asyncio.get_running_loop().call_later(0.01, drain.leave)
    assert await drain.wait(5.0)
    drain.inflight += 1
    assert not await drain.wait(0.01), "a request still in flight past the wait"
    assert drain.inflight == 1


def test_a_runaway_call_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    calls = RunningCalls("iris@1")
    calls.started[next(calls.numbers)] = time.perf_counter() - 10.0
    calls.started[next(calls.numbers)] = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="modelport"):
        assert [round(s) for s in calls.runaways(5.0)] == [10]
        assert len(calls.runaways(5.0)) == 1
    assert [r.getMessage().startswith("iris@1: a prediction has been running") for r in caplog.records] == [True]


def test_begin_and_end_track_each_running_call() -> None:
    calls = RunningCalls("iris@1")
    first, started = calls.begin()
    second, _ = calls.begin()
    assert first != second
    assert calls.started[first] == started
    calls.end(first)
    assert list(calls.started) == [second]
