"""Shadow runner: bounded queue that drops instead of waiting, agreement counts and their summary."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from functools import partial

import numpy as np

from modelport.registry.traffic import merge, summary
from modelport.serving.shadow import Job, ShadowRunner, compare

LABELS = np.array(["setosa", "virginica", "setosa", "setosa"], dtype=object)
SCORES = np.array([[0.1, 0.9], [0.5, 0.5]], dtype=np.float32)


def test_compare_counts_equal_labels_and_absolute_differences() -> None:
    primary = {"label": LABELS, "probabilities": SCORES, "only_primary": SCORES}
    shadow = {
        "label": np.array(["setosa", "setosa", "setosa", "virginica"], dtype=object),
        "probabilities": SCORES + 0.25,
    }
    result = compare(primary, shadow)
    assert result["label"] == {"kind": "label", "equal": 2, "total": 4}
    assert result["probabilities"]["kind"] == "numeric"
    assert result["probabilities"]["count"] == 4
    assert np.isclose(result["probabilities"]["max"], 0.25)
    assert "only_primary" not in result
    stats = merge(merge({}, {"requests": 1, "outputs": result}), {"requests": 1, "outputs": result})
    readable = summary(stats)
    assert readable["requests"] == 2
    assert readable["outputs"]["label"] == {"agreement": 0.5, "compared": 8}
    assert np.isclose(readable["outputs"]["probabilities"]["mean_abs_diff"], 0.25)


async def test_a_full_queue_drops_jobs_and_never_waits() -> None:
    runner = ShadowRunner(queue_size=2)
    gate = threading.Event()
    released: list[int] = []

    def slow(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        gate.wait(10)
        return {"label": LABELS}

    accepted = [
        runner.offer(Job(("iris", "production", 2), slow, {}, {"label": LABELS}, partial(released.append, i)))
        for i in range(10)
    ]
    assert 2 <= sum(accepted) <= 3  # the worker may have taken one job off the queue already
    assert len(released) == 10 - sum(accepted)  # dropped jobs release their version at once
    gate.set()
    deadline = asyncio.get_running_loop().time() + 10
    while len(released) < 10:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    totals = runner.totals[("iris", "production", 2)]
    assert totals["dropped"] == 10 - sum(accepted)
    assert totals["requests"] == sum(accepted)
    assert summary(runner.take_deltas()[("iris", "production", 2)])["outputs"]["label"]["agreement"] == 1.0
    assert runner.take_deltas() == {}
    runner.close()
