"""Hot swap under load: a real `modelport serve iris@production` process, concurrent clients, and
another process moving the alias back and forth; zero failed requests."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from modelport.registry.registry import Registry
from modelport.server.launcher import serving
from modelport.settings import Settings
from tests.serving import register_iris

pytestmark = pytest.mark.slow

SECONDS = 20.0  # client load duration
MOVES = 12  # alias moves during the load
CLIENTS = 16  # concurrent connections
BODY = {
    "inputs": [
        {
            "name": "input",
            "shape": [2, 4],
            "datatype": "FP32",
            "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3],
        }
    ]
}


async def hammer(base: str, stop: threading.Event) -> tuple[Counter[str], list[str], int]:
    """Send V2 requests from CLIENTS connections until ``stop``; count versions and failures."""
    versions: Counter[str] = Counter()
    failures: list[str] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10.0) as client:

        async def one_client() -> None:
            while not stop.is_set():
                try:
                    response = await client.post("/v2/models/iris/versions/production/infer", json=BODY)
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text}")
                    continue
                doc = response.json()
                header = response.headers.get("modelport-model-version")
                if header is None or header != doc.get("model_version"):
                    failures.append(f"version header {header!r} but body {doc.get('model_version')!r}")
                elif doc["outputs"][0]["data"] != ["setosa", "virginica"]:
                    failures.append(f"wrong answer {doc['outputs'][0]['data']}")
                versions[header] += 1

        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
    return versions, failures, sum(versions.values()) + len(failures)


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
