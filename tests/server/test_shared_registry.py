"""Past one machine: two `modelport serve` processes share one PostgreSQL registry and one S3 store
(real PostgreSQL, real SeaweedFS). A third process registers a new version and moves the alias;
both servers switch to it under load with zero failed requests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from modelport.server.spawn import serving
from tests.support.load import hammer
from tests.support.postgres import fresh_database
from tests.support.s3 import S3Server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# The third process: train, register (artifact to S3, row to PostgreSQL), optionally move the alias.
REGISTER = """
import sys
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
import modelport
from modelport.registry.registry import Registry
from modelport.settings import Settings

data = load_iris(as_frame=True)
frame = data.data.set_axis(["sepal_length", "sepal_width", "petal_length", "petal_width"], axis=1)
labels = data.target_names[data.target]
model = LogisticRegression(C=float(sys.argv[1]), max_iter=500).fit(frame, labels)
version = modelport.register(model, name="iris", sample_input=frame.head(20), alias=sys.argv[2:])
print(version.version)
"""
MOVE = """
import sys
from modelport.registry.registry import Registry
from modelport.settings import Settings
with Registry.open(Settings.from_env()) as registry:
    registry.set_alias(sys.argv[1], "production")
"""


def run(env: dict[str, str], script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def served(base: str) -> dict[str, str]:
    doc = httpx.get(f"{base}/v1/models/iris", timeout=5.0).json()
    return {entry["version"]: entry["state"] for entry in doc["model_version_status"]}


def test_two_servers_on_one_postgresql_and_s3_registry_follow_an_alias_move_without_failures(
    postgres_url: str, s3_server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = {
        **os.environ,
        **s3_server.env(),
        "MODELPORT_DATABASE_URL": fresh_database(postgres_url),
        "MODELPORT_ARTIFACTS": f"s3://{s3_server.bucket()}/registry?addressing_style=path",
        "MODELPORT_POLL_SECONDS": "0.2",
        "NO_COLOR": "1",
    }
    writer = {**shared, "MODELPORT_HOME": str(tmp_path / "writer")}
    assert run(writer, REGISTER, "1.0", "production") == "1"
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                serving(
                    ["iris@production", "--threads", "1"], env={**shared, "MODELPORT_HOME": str(tmp_path / f"s{i}")}
                )
            )
            for i in range(2)
        ]
        stop = threading.Event()
        results: list[tuple[Counter[str], list[str], int]] = []

        async def load() -> None:
            results.extend(await asyncio.gather(*(hammer(server.base, stop) for server in servers)))

        loader = threading.Thread(target=lambda: asyncio.run(load()))
        started = time.monotonic()
        loader.start()
        time.sleep(2)  # both under load before anything changes
        assert run(writer, REGISTER, "0.5") == "2"  # a third process registers version 2 ...
        run(writer, MOVE, "iris@2")  # ... and moves the alias
        deadline = time.monotonic() + 60
        while any(served(server.base) != {"2": "AVAILABLE", "1": "END"} for server in servers):
            assert time.monotonic() < deadline, [served(server.base) for server in servers]
            time.sleep(0.1)
        time.sleep(2)  # and keep the load on the new version a while
        stop.set()
        loader.join(timeout=60)
        elapsed = time.monotonic() - started
    assert len(results) == 2
    for versions, failures, _ in results:
        assert failures == [], failures[:5]
        assert set(versions) == {"1", "2"}, versions  # each server answered with both versions
    total = sum(count for _, _, count in results)
    for i in range(2):  # each server fetched the artifacts from S3 into its own cache
        assert len(list((tmp_path / f"s{i}" / "cache" / "artifacts" / "sha256").iterdir())) == 2
    with capsys.disabled():
        print(f"\nshared registry: {total} requests to 2 servers in {elapsed:.1f} s, alias moved 1 -> 2, 0 failed")
