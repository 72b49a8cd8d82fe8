"""Traffic split and shadow on a real server: weighted canary, sticky routing, mirrored requests."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modelport.cli.main import app as cli
from modelport.registry.registry import Registry
from modelport.registry.traffic import FULL
from modelport.server.app import build_app
from modelport.serving.plans import specs_from
from modelport.settings import Settings
from tests.support.chance import Cycle
from tests.support.rollout import FLIPPED, ROWS, following, register_fake, register_python, wait_for
from tests.support.serving import running

pytestmark = pytest.mark.slow

BODY = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": ROWS.ravel().tolist()}]}
INFER = "/v2/models/iris/versions/production/infer"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", models=("iris@production",), poll_seconds=0.1)


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    registry = Registry.open(settings)
    yield registry
    registry.close()


def test_canary_weight_splits_traffic_exactly_with_an_exact_chance(
    settings: Settings, registry: Registry, tmp_path: Path
) -> None:
    register_fake(registry, tmp_path, aliases=("production",))
    register_fake(registry, tmp_path, weights=FLIPPED)
    registry.split("iris@2", "production", 10)
    manager = following(registry, chance=Cycle())  # draws every point of the split in turn
    asyncio.run(manager.follow(specs_from(["iris@production"])))
    seen: Counter[str] = Counter()
    try:
        app = build_app(settings.with_(models=()), manager=manager)
        with running(app) as address, httpx.Client(base_url=f"http://{address}") as client:
            for _ in range(2 * FULL):
                response = client.post(INFER, json=BODY)
                assert response.status_code == 200
                assert response.headers["modelport-model-version"] == response.json()["model_version"]
                seen[response.json()["model_version"]] += 1
    finally:
        manager.close()
    assert seen == {"1": 180, "2": 20}


def test_sticky_header_keeps_each_caller_on_one_version_in_both_protocols(
    settings: Settings, registry: Registry, tmp_path: Path
) -> None:
    register_fake(registry, tmp_path, aliases=("production",))
    register_fake(registry, tmp_path, weights=FLIPPED)
    registry.split("iris@2", "production", 50)
    rows = {"instances": ROWS.tolist()}
    with running(build_app(settings)) as address, httpx.Client(base_url=f"http://{address}") as client:
        chosen: dict[str, str] = {}
        for round_ in range(3):
            for key in (f"user-{i}" for i in range(30)):
                headers = {"X-Modelport-Routing-Key": key}
                v2 = client.post(INFER, json=BODY, headers=headers)
                tf = client.post("/v1/models/iris/labels/production:predict", json=rows, headers=headers)
                assert v2.status_code == tf.status_code == 200
                version = chosen.setdefault(key, v2.json()["model_version"])
                assert v2.json()["model_version"] == version, (round_, key)
                assert tf.headers["modelport-model-version"] == version
        assert set(chosen.values()) == {"1", "2"}


def test_shadow_mirrors_requests_without_touching_the_callers_answers_or_latency(
    settings: Settings, registry: Registry, tmp_path: Path
) -> None:
    register_fake(registry, tmp_path, aliases=("production",))
    delay = 0.2
    register_python(registry, tmp_path, delay=delay, cut=7.0)  # slow, and agrees on one row of two
    with running(build_app(settings)) as address, httpx.Client(base_url=f"http://{address}") as client:

        def latencies(count: int) -> list[float]:
            result = []
            for _ in range(count):
                start = time.perf_counter()
                response = client.post(INFER, json=BODY)
                result.append(time.perf_counter() - start)
                assert response.status_code == 200
                doc = response.json()
                assert doc["model_version"] == "1"  # only ever the primary's answer
                assert doc["outputs"][0]["data"] == ["setosa", "virginica"]
            return result

        before = statistics.median(latencies(30))
        registry.set_shadow("iris@production", "iris@2", 1.0)
        wait_for(lambda: client.get("/v2/models/iris/versions/production/shadow").status_code == 200, what="shadow")
        wait_for(lambda: client.get("/v2/models/iris/versions/production/shadow").json()["shadows"] != [])
        during = statistics.median(latencies(60))
        assert during < delay / 2, (before, during)  # a shadow in the request path would add 0.2 s each

        def report() -> dict[str, Any]:
            shadows: list[dict[str, Any]] = client.get("/v2/models/iris/versions/production/shadow").json()["shadows"]
            return shadows[0]

        wait_for(lambda: report()["requests"] >= 3, what="shadow requests")
        shadow = report()
        assert (shadow["version"], shadow["fraction"], shadow["errors"]) == (2, 1.0, 0)
        assert shadow["outputs"]["label"]["agreement"] == 0.5
        wait_for(lambda: registry.shadows("iris@production")[0].stats["requests"] >= 3, what="flush to the registry")
    env = {"MODELPORT_HOME": str(settings.home), "COLUMNS": "200"}
    shown = CliRunner().invoke(cli, ["show", "iris@production"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "version 1: 100%" in shown.output
    assert "label: 50.0% equal" in shown.output
