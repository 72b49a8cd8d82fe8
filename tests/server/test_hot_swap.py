"""Hot swap under load: a real `modelport serve iris@production` process, concurrent clients, and
another process moving the alias back and forth; zero failed requests."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from modelport.registry.registry import Registry
from modelport.server.spawn import serving
from modelport.settings import Settings
from tests.support.load import hammer
from tests.support.serving import register_iris

pytestmark = pytest.mark.slow

SECONDS = 20.0  # client load duration
MOVES = 12  # alias moves during the load


def status(base: str) -> dict[str, str]:
    doc = httpx.get(f"{base}/v1/models/iris", timeout=5.0).json()
    return {entry["version"]: entry["state"] for entry in doc["model_version_status"]}


def test_alias_move_swaps_version_without_failed_requests(
    tmp_path: Path, iris: tuple[pd.DataFrame, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(home=tmp_path / "home")
    register_iris(settings, iris, aliases=("production",), strength=1.0)
    register_iris(settings, iris, aliases=(), strength=0.5)
    env = {**os.environ, "MODELPORT_HOME": str(settings.home), "MODELPORT_POLL_SECONDS": "0.2", "NO_COLOR": "1"}
    with serving(["iris@production", "--threads", "1"], env=env) as server:
        base = server.base
        stop = threading.Event()
        moved: list[int] = []

        def mover() -> None:  # another writer of the shared registry, like `modelport alias` elsewhere
            registry = Registry.open(settings)
            try:
                for i in range(MOVES):
                    if stop.wait(SECONDS / (MOVES + 1)):
                        return
                    target = 2 if i % 2 == 0 else 1
                    registry.set_alias(f"iris@{target}", "production")
                    moved.append(target)
            finally:
                registry.close()

        thread = threading.Thread(target=mover)
        timer = threading.Timer(SECONDS, stop.set)
        start = time.monotonic()
        thread.start()
        timer.start()
        versions, failures, total = asyncio.run(hammer(base, stop))
        elapsed = time.monotonic() - start
        thread.join(timeout=30)
        assert len(moved) == MOVES
        assert failures == [], failures[:5]
        assert set(versions) == {"1", "2"}, versions
        final = str(moved[-1])
        other = "1" if final == "2" else "2"
        deadline = time.monotonic() + 30
        while status(base) != {final: "AVAILABLE", other: "END"}:
            assert time.monotonic() < deadline, status(base)
            time.sleep(0.1)
        with capsys.disabled():
            print(f"\nhot swap: {total} requests in {elapsed:.1f} s = {total / elapsed:.0f} req/s, "
                  f"{MOVES} alias moves, versions {dict(versions)}, 0 failed")  # fmt: skip
