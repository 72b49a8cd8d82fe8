"""``serve --workers 2``: one scrape answers for both workers, and a worker that dies and is
replaced neither loses nor double-counts what it counted."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from modelport.server.spawn import serving
from modelport.settings import Settings
from tests.observability.test_metrics import samples, value
from tests.support.serving import register_iris

pytestmark = pytest.mark.slow

ROWS = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
FLUSH_WAIT = 2.5  # seconds for every worker's last counts to reach the shared files (they flush each second)


def scrape(base: str) -> dict[Any, float]:
    return samples(httpx.get(f"{base}/metrics", timeout=10).text)


def workers(found: dict[Any, float]) -> set[str]:
    return {dict(labels)["worker"] for name, labels in found if name == "process_cpu_seconds_total"}


def predictions(found: dict[Any, float]) -> float:
    return value(found, "modelport_requests_total", protocol="tfserving", model="iris", version="1", code="2xx")


def send(base: str, count: int) -> None:
    """``count`` predictions, each on a new connection, so the kernel spreads them over the workers."""
    for _ in range(count):
        with httpx.Client(timeout=10) as client:
            assert client.post(f"{base}/v1/models/iris:predict", json=ROWS).status_code == 200


def settle(base: str, condition: Any, what: str, timeout: float = 90.0) -> dict[Any, float]:
    """Scrape until ``condition(found)`` holds on several scrapes in a row (either worker may answer)."""
    deadline = time.monotonic() + timeout
    good = 0
    while time.monotonic() < deadline:
        found = scrape(base)
        good = good + 1 if condition(found) else 0
        if good >= 6:
            return found
        time.sleep(0.2)
    pytest.fail(f"the scrapes never settled on {what}; the last: {sorted(found.items())[:40]}")


def test_two_workers_answer_as_one_and_a_dead_worker_is_neither_lost_nor_counted_twice(
    tmp_path: Path, iris: tuple[pd.DataFrame, np.ndarray]
) -> None:
    settings = Settings(home=tmp_path / "home")
    register_iris(settings, iris)
    shared = tmp_path / "metrics"  # where the workers exchange counts (a temporary folder unless given)
    env = {**os.environ, "MODELPORT_HOME": str(settings.home), "MODELPORT_METRICS_DIR": str(shared), "NO_COLOR": "1"}
    with serving(["iris", "--workers", "2", "--threads", "1"], env=env) as server:
        base = server.base
        found = settle(base, lambda f: len(workers(f)) == 2, "two workers")
        assert value(found, "modelport_workers") == 2
        send(base, 60)
        time.sleep(FLUSH_WAIT)
        found = settle(base, lambda f: predictions(f) == 60, "60 predictions")
        # Both workers served some: each has its own series of per-worker gauges, and a ready version
        first = workers(found)
        states = {dict(k)["worker"] for n, k in found if n == "modelport_version_state" and dict(k)["state"] == "ready"}
        assert states == first

        victim = sorted(first)[0]
        os.kill(int(victim), signal.SIGKILL)  # a worker of the server this test started
        found = settle(
            base,
            lambda f: len(workers(f)) == 2 and victim not in workers(f),
            "the dead worker replaced",
        )
        # Its counts stay in the total, once; its per-worker series are gone
        assert predictions(found) == 60
        assert all(dict(labels).get("worker") != victim for _, labels in found)
        send(base, 40)
        time.sleep(FLUSH_WAIT)
        found = settle(base, lambda f: predictions(f) == 100, "100 predictions")
        assert value(found, "modelport_workers") == 2
        # The dead worker's file was folded into dead.json and removed: no file lingers for it
        assert sorted(p.name for p in shared.glob("*.json")) == sorted(
            [*(f"{w}.json" for w in workers(found)), "dead.json"]
        )
