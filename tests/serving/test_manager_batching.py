"""Batching inside the manager: concurrent requests to a costly model share runtime calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from modelport.errors import PredictionFailed
from modelport.runtimes.base import Runtime
from modelport.runtimes.fake import FakeRuntime
from modelport.serving.batching import BatchSettings
from modelport.serving.manager import ModelManager
from modelport.types import Batching, InferRequest, ModelVersion
from tests.support.serving import BIAS, CLASSES, WEIGHTS, DirectorySource, fake_version


class CostlyRuntime(FakeRuntime):
    """The fake linear model with a fixed 20 ms cost per call (like a forest's per-call overhead);
    rows whose first feature is negative make the call fail."""

    kind: ClassVar[str] = "costly"
    calls: ClassVar[list[int]] = []

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = next(iter(inputs.values()))
        type(self).calls.append(len(rows))
        threading.Event().wait(0.02)
        if (rows[:, 0] < 0).any():
            raise FloatingPointError("cannot score negative lengths")
        return super().predict(inputs)


class CostlySource(DirectorySource):
    def open(self, version: ModelVersion) -> Runtime:
        runtime = CostlyRuntime()
        runtime.load(next(p for v, p in self.versions if v is version), version.signature)
        return runtime


def labels(rows: np.ndarray) -> list[str]:
    scores = rows.astype(np.float64) @ np.asarray(WEIGHTS) + np.asarray(BIAS)
    return [CLASSES[i] for i in scores.argmax(axis=1)]


def requests(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.uniform(0.1, 8.0, size=(1 + i % 3, 4)).astype(np.float32) for i in range(count)]


@pytest.fixture
async def manager(tmp_path: Path) -> ModelManager:
    CostlyRuntime.calls = []
    source = CostlySource([fake_version(tmp_path, "iris", 1)])
    manager = ModelManager(source, threads=2, batching=BatchSettings(max_batch_size=64, max_wait=0.001))
    await manager.load(["iris"])
    CostlyRuntime.calls = []  # forget the warm-up calls
    return manager


async def test_concurrent_requests_are_merged_and_each_gets_its_own_rows(manager: ModelManager) -> None:
    batches = requests(40)
    results = await asyncio.gather(*(manager.infer("iris", None, InferRequest({"input": x})) for x in batches))
    for x, result in zip(batches, results, strict=True):
        assert result.outputs["label"].tolist() == labels(x)
        assert result.outputs["probabilities"].shape == (len(x), 3)
    assert sum(CostlyRuntime.calls) == sum(len(x) for x in batches)
    assert len(CostlyRuntime.calls) <= 5, f"40 concurrent requests took {len(CostlyRuntime.calls)} runtime calls"
    manager.close()


async def test_a_failing_request_in_a_batch_fails_alone(manager: ModelManager) -> None:
    good = requests(6)
    bad = np.array([[-1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    calls = [manager.infer("iris", None, InferRequest({"input": x})) for x in (*good[:3], bad, *good[3:])]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[3], PredictionFailed)
    assert "cannot score negative lengths" in str(results[3])
    for x, result in zip((*good[:3], *good[3:]), (*results[:3], *results[4:]), strict=True):
        assert not isinstance(result, BaseException)
        assert result.outputs["label"].tolist() == labels(x)
    manager.close()


async def test_without_batching_every_request_is_its_own_call(tmp_path: Path) -> None:
    CostlyRuntime.calls = []
    manager = ModelManager(CostlySource([fake_version(tmp_path, "iris", 1)]), threads=2)
    await manager.load(["iris"])
    CostlyRuntime.calls = []
    await asyncio.gather(*(manager.infer("iris", None, InferRequest({"input": x})) for x in requests(8)))
    assert len(CostlyRuntime.calls) == 8
    manager.close()


@pytest.mark.parametrize(
    ("server", "own", "expected"),
    [
        (BatchSettings(max_batch_size=16), Batching(), (16, 0.0)),
        (BatchSettings(max_batch_size=16), Batching(max_batch_size=4, max_wait_ms=2.0), (4, 0.002)),
        (BatchSettings(max_batch_size=16), Batching(enabled=False), None),
        (BatchSettings(max_batch_size=16, enabled=False), Batching(enabled=True), (16, 0.0)),
        (BatchSettings(enabled=False), Batching(max_batch_size=4), None),
        (None, Batching(enabled=True, max_batch_size=4), (4, 0.0)),
        (None, Batching(), None),
    ],
)
async def test_a_version_s_own_batching_settings_win_over_the_server_s(
    tmp_path: Path, server: BatchSettings | None, own: Batching, expected: tuple[int, float] | None
) -> None:
    base = fake_version(tmp_path, "iris", 1)
    source = DirectorySource([(replace(base[0], batching=own), base[1])])
    manager = ModelManager(source, batching=server)
    await manager.load(["iris"])
    batcher = manager.get("iris").batcher
    if expected is None:
        assert batcher is None
    else:
        assert batcher is not None
        assert (batcher.settings.max_batch_size, batcher.settings.max_wait) == expected
    manager.close()


def test_batching_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1"):
        Batching(max_batch_size=0)
    with pytest.raises(ValueError, match="max_wait_ms must be a number"):
        Batching(max_wait_ms=-1)
    with pytest.raises(ValueError, match="unknown batching setting 'max_rows'"):
        Batching.from_dict({"max_rows": 3})
    assert Batching.from_dict(Batching(enabled=False, max_wait_ms=1).to_dict()) == Batching(False, None, 1)
