"""``GET /metrics``: what is counted, with which labels, under which policy, and the exposition
Prometheus parses. Several workers and a real Prometheus are in test_metrics_workers.py and
test_monitoring.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelport.server.app import build_app
from modelport.serving.manager import ModelManager
from modelport.settings import Settings
from tests.support.serving import DirectorySource, client_for, fake_version

BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
TWO_ROWS = {"instances": [[1, 2, 3, 4], [4, 3, 2, 1]]}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition by (name, sorted labels); the text must parse as Prometheus'."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def manager(fake_manager: ModelManager) -> ModelManager:
    return fake_manager


async def test_requests_are_counted_by_protocol_model_version_and_status_class(
    manager: ModelManager, settings: Settings
) -> None:
    async with client_for(build_app(settings, manager=manager)) as client:
        for _ in range(3):
            assert (await client.post("/v2/models/iris/infer", json=BODY)).status_code == 200
        assert (await client.post("/v1/models/iris:predict", json=TWO_ROWS)).status_code == 200
        assert (await client.post("/v2/models/iris/infer", json={"inputs": []})).status_code == 400
        assert (await client.get("/v2/health/ready")).status_code == 200
        scrape = await client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(scrape.text)
    mv = {"model": "iris", "version": "1"}
    assert value(found, "modelport_requests_total", protocol="v2", code="2xx", **mv) == 3
    assert value(found, "modelport_requests_total", protocol="tfserving", code="2xx", **mv) == 1
    assert value(found, "modelport_requests_total", protocol="v2", code="4xx", model="iris", version="") == 1
    assert value(found, "modelport_requests_total", protocol="other", code="2xx", model="", version="") == 1
    assert value(found, "modelport_request_duration_seconds_count", protocol="v2", **mv) == 3
    assert value(found, "modelport_request_duration_seconds_bucket", protocol="v2", le="+Inf", **mv) == 3
    # Every runtime call is observed: 3 + 1 calls, 3 + 2 rows; each request waited (0 inline)
    assert value(found, "modelport_inference_duration_seconds_count", **mv) == 4
    assert value(found, "modelport_batch_rows_sum", **mv) == 5
    assert value(found, "modelport_batch_rows_bucket", le="1.0", **mv) == 3
    assert value(found, "modelport_queue_wait_seconds_count", **mv) == 4
    # inline, they waited 0: the first bucket (0.1 ms) holds them, not an interpolated 0.5 ms p99
    assert value(found, "modelport_queue_wait_seconds_bucket", le="0.0001", **mv) == 4
    assert value(found, "modelport_version_state", state="ready", worker=str(_pid()), **mv) == 1
    assert value(found, "modelport_version_state", state="failed", worker=str(_pid()), **mv) == 0
    assert value(found, "modelport_inflight_requests", **mv) == 0
    assert value(found, "modelport_workers") == 1
    assert value(found, "process_open_fds", worker=str(_pid())) > 0
    assert value(found, "process_resident_memory_bytes", worker=str(_pid())) > 1e6


def _pid() -> int:
    import os

    return os.getpid()


async def test_unknown_models_versions_and_paths_never_make_a_series(manager: ModelManager, settings: Settings) -> None:
    async def strangers(client: Any, index: int) -> None:
        await client.post(f"/v2/models/nothing-{index}/infer", json=BODY)
        await client.post(f"/v2/models/iris/versions/{index + 7}/infer", json=BODY)
        await client.post(f"/v1/models/other-{index}:predict", json=TWO_ROWS)
        await client.get(f"/no/such/path/{index}")

    async with client_for(build_app(settings, manager=manager)) as client:
        await strangers(client, 100)
        await client.get("/metrics")  # the scrapes themselves are counted (protocol other, 2xx)
        first = samples((await client.get("/metrics")).text)
        for index in range(20):
            await strangers(client, index)
        found = samples((await client.get("/metrics")).text)
    # The same series as after the first round: twenty rounds of new names made none
    assert {key for key in found if "request" in key[0]} == {key for key in first if "request" in key[0]}
    assert {dict(labels).get("model") for name, labels in found if name == "modelport_requests_total"} == {
        "(unknown)",
        "iris",
        "",
    }
    assert value(found, "modelport_requests_total", protocol="v2", code="4xx", model="(unknown)", version="") == 21
    assert (
        value(found, "modelport_requests_total", protocol="tfserving", code="4xx", model="(unknown)", version="") == 21
    )
    assert value(found, "modelport_requests_total", protocol="v2", code="4xx", model="iris", version="") == 21
    assert value(found, "modelport_requests_total", protocol="other", code="4xx", model="", version="") == 21


async def test_alias_moves_splits_and_shadows_are_exported(settings: Settings, tmp_path: Path) -> None:
    from modelport.observability.metrics import Metrics
    from modelport.registry.registry import Registry
    from modelport.serving.plans import specs_from
    from modelport.types import InferRequest
    from tests.support.chance import Cycle
    from tests.support.rollout import FLIPPED, ROWS, following, register_fake
    from tests.support.waiting import eventually

    registry = Registry.open(settings)
    try:
        register_fake(registry, tmp_path, aliases=("production",))
        register_fake(registry, tmp_path, weights=FLIPPED)
        register_fake(registry, tmp_path)
        manager = following(registry, Cycle())
        metrics = Metrics(manager=lambda: manager)
        manager.watch_with(metrics)
        await manager.follow(specs_from(["iris@production"]))
        registry.set_alias("iris@2", "production")
        await manager.refresh()  # one hot swap: production 1 -> 2
        registry.split("iris@3", "production", 25)
        registry.set_shadow("iris@production", "iris@1", 1.0)
        await manager.refresh()  # production now splits 75/25 over 2 and 3: its route moved again
        for _ in range(8):
            await manager.infer("iris", "production", InferRequest({"input": ROWS}))
        await eventually(lambda: manager.shadow_report("iris", "production")["shadows"][0]["requests"] == 8, "shadows")
        found = samples(metrics.exposition().decode())
        manager.close()
    finally:
        registry.close()
    assert value(found, "modelport_hot_swaps_total", model="iris") == 2
    assert value(found, "modelport_traffic_weight", model="iris", alias="production", version="2") == 0.75
    assert value(found, "modelport_traffic_weight", model="iris", alias="production", version="3") == 0.25
    shadow = {"model": "iris", "alias": "production", "shadow_version": "1"}
    assert value(found, "modelport_shadow_requests_total", **shadow) == 8
    compared = value(found, "modelport_shadow_compared_values_total", **shadow)
    assert compared > 0
    assert 0 <= value(found, "modelport_shadow_agreed_values_total", **shadow) <= compared
    served = {dict(labels)["version"] for name, labels in found if name == "modelport_inference_duration_seconds_count"}
    assert {"2", "3"} <= served


async def test_overload_and_deadline_refusals_are_counted(tmp_path: Path) -> None:
    from modelport.errors import DeadlineExceeded, Overloaded
    from modelport.observability.metrics import Metrics
    from modelport.types import InferRequest

    manager = ModelManager(DirectorySource([fake_version(tmp_path)]), timeout=5.0)
    metrics = Metrics(manager=lambda: manager)
    manager.watch_with(metrics)
    await manager.load(["iris"])
    model = manager.get("iris")
    request = InferRequest({"input": __import__("numpy").ones((1, 4), dtype="float32")})
    model.overload.backlog = 10.0  # ten seconds of work queued ahead
    model.cost.forget()
    model.cost.observe(1.0, 1)
    model.cost.inline = False
    with pytest.raises(Overloaded):
        await manager.infer("iris", None, request)
    model.overload.backlog = 0.0
    model.runtime.predict = lambda inputs: __import__("time").sleep(0.3) or {}  # type: ignore[method-assign]
    request.timeout = 0.05
    with pytest.raises(DeadlineExceeded):
        await manager.infer("iris", None, request)
    found = samples(metrics.exposition().decode())
    manager.close()
    assert value(found, "modelport_rejected_requests_total", model="iris", version="1", reason="overload") == 1
    assert value(found, "modelport_rejected_requests_total", model="iris", version="1", reason="deadline") == 1


async def test_metrics_off_is_404(manager: ModelManager, settings: Settings) -> None:
    async with client_for(build_app(settings.with_(metrics=False), manager=manager)) as client:
        response = await client.get("/metrics")
    assert response.status_code == 404
    assert "metrics are off" in response.json()["error"]


@pytest.mark.parametrize("form", ["json", "text"])
async def test_one_access_line_per_request(
    manager: ModelManager, settings: Settings, caplog: pytest.LogCaptureFixture, form: str
) -> None:
    app = build_app(settings.with_(access_log=True, log_format=form), manager=manager)
    with caplog.at_level("INFO", logger="modelport.access"):
        async with client_for(app) as client:
            answer = await client.post("/v2/models/iris/infer", json=BODY, headers={"x-request-id": "req-7"})
            unknown = await client.post("/v1/models/nope:predict", json=TWO_ROWS)
    lines = [r for r in caplog.records if r.name == "modelport.access"]
    assert len(lines) == 2
    generated = unknown.headers["x-request-id"]
    if form == "json":
        first, second = (vars(r)["access"] for r in lines)
        assert {k: first[k] for k in ("request_id", "method", "path", "protocol", "model", "version", "status")} == {
            "request_id": "req-7",
            "method": "POST",
            "path": "/v2/models/iris/infer",
            "protocol": "v2",
            "model": "iris",
            "version": 1,
            "status": 200,
        }
        assert first["rows"] == 1
        assert first["key"] is None
        assert first["client"] == "127.0.0.1"
        assert first["latency_ms"] > 0
        assert (second["request_id"], second["status"], second["version"]) == (generated, 404, None)
    else:
        first, second = (r.getMessage() for r in lines)
        assert first.startswith('127.0.0.1 "POST /v2/models/iris/infer" 200 ')
        assert "id=req-7 key=- model=iris version=1 protocol=v2 rows=1" in first
        assert f"id={generated} key=- model=nope version=- protocol=tfserving rows=0" in second
    assert answer.headers["x-request-id"] == "req-7"


async def test_capture_writes_sampled_requests_and_counts_them(manager: ModelManager, settings: Settings) -> None:
    import asyncio

    import orjson

    key = ("modelport_capture_samples_total", (("model", "iris"), ("version", "1")))
    app = build_app(settings.with_(capture_rate=1.0), manager=manager)
    async with client_for(app) as client:
        for index in range(3):
            sent = await client.post("/v2/models/iris/infer", json=BODY, headers={"x-request-id": f"cap-{index}"})
            assert sent.status_code == 200
        for _ in range(500):  # the writer thread writes them soon after; a bound, not a wait
            written = samples((await client.get("/metrics")).text).get(key, 0)
            if written == 3:
                break
            await asyncio.sleep(0.01)
    assert written == 3
    files = list((settings.home / "capture" / "iris" / "1").glob("*.jsonl"))
    lines = [orjson.loads(line) for f in files for line in f.read_bytes().splitlines()]
    assert len(lines) == 3
    assert sorted(line["request_id"] for line in lines) == ["cap-0", "cap-1", "cap-2"]  # the server's ids
    assert lines[0]["inputs"] == {"input": [[1.0, 2.0, 3.0, 4.0]]}
    assert lines[0]["model"] == "iris"
    assert lines[0]["version"] == 1
    assert "label" in lines[0]["outputs"]


async def test_the_server_exports_drift_of_captured_traffic(settings: Settings, iris: Any) -> None:
    import asyncio

    from tests.support.serving import register_iris

    register_iris(settings, iris)  # its reference profile: the 20-row sample
    frame = iris[0]
    shifted = frame.iloc[:120].to_numpy(dtype="float32").copy()
    shifted[:, 2] += 6.0  # petal_length far beyond anything in the reference
    served = settings.with_(models=("iris@production",), capture_rate=1.0, drift_interval=0.05)
    key = ("modelport_drift_detected", (("feature", "petal_length"), ("model", "iris"), ("version", "1")))
    async with client_for(build_app(served)) as client:
        for start in range(0, 120, 10):
            body = {"instances": shifted[start : start + 10].tolist()}
            assert (await client.post("/v1/models/iris:predict", json=body)).status_code == 200
        for _ in range(500):  # capture writes, then the next refresh compares: bounded, not timed
            found = samples((await client.get("/metrics")).text)
            if key in found:
                break
            await asyncio.sleep(0.02)
    assert found[key] == 1
    assert value(found, "modelport_drift_psi", model="iris", version="1", feature="petal_length") > 0.2
    assert value(found, "modelport_drift_detected", model="iris", version="1", feature="sepal_width") == 0
    assert ("modelport_drift_detected", (("feature", "(prediction)"), ("model", "iris"), ("version", "1"))) in found
