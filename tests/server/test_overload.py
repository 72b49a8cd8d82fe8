"""Overload is shed early, deadlines fire on time, and slow predictions never freeze the server."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from modelport.errors import DeadlineExceeded, Overloaded
from modelport.runtimes.base import Capabilities, Runtime
from modelport.runtimes.fake import FakeRuntime
from modelport.server.app import build_app
from modelport.serving.batching import BatchSettings
from modelport.serving.manager import OVERLOAD_WINDOW, ModelManager
from modelport.settings import Settings
from modelport.types import Batching, InferRequest, ModelVersion
from tests.support.models import export_sleepy_model
from tests.support.serving import DirectorySource, client_for, fake_version

ROWS = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
CALL_SECONDS = 0.05


class SlowRuntime(FakeRuntime):
    """The fake linear model taking CALL_SECONDS per call (any number of rows), like a remote call
    or a big ensemble; thread-safe, so without batching calls overlap in the pool."""

    kind: ClassVar[str] = "slow"
    calls: ClassVar[list[int]] = []

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        type(self).calls.append(len(next(iter(inputs.values()))))
        threading.Event().wait(CALL_SECONDS)
        return super().predict(inputs)


class SlowSource(DirectorySource):
    def open(self, version: ModelVersion) -> Runtime:
        runtime = SlowRuntime()
        runtime.load(self.versions[0][1], version.signature)
        return runtime


async def slow_manager(tmp_path: Path, *, batching: BatchSettings | None, **options: Any) -> ModelManager:
    manager = ModelManager(SlowSource([fake_version(tmp_path)]), threads=2, batching=batching, **options)
    await manager.load(["iris"])
    SlowRuntime.calls = []
    return manager


async def timed(call: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    try:
        result = await call
    except Exception as exc:
        result = exc
    return time.perf_counter() - start, result


@pytest.mark.parametrize(
    "batching", [BatchSettings(max_batch_size=1, max_queue_wait=0.2), None], ids=["batched", "unbatched"]
)
async def test_overload_is_refused_within_milliseconds_and_accepted_requests_wait_about_the_bound(
    tmp_path: Path, batching: BatchSettings | None
) -> None:
    wait = 0.2
    manager = await slow_manager(tmp_path, batching=batching or BatchSettings(enabled=False, max_queue_wait=wait))
    outcomes = await asyncio.gather(
        *(timed(manager.infer("iris", None, InferRequest({"input": ROWS}))) for _ in range(60))
    )
    refused = [(s, r) for s, r in outcomes if isinstance(r, Overloaded)]
    served = [s for s, r in outcomes if not isinstance(r, BaseException)]
    assert len(refused) + len(served) == 60, [r for _, r in outcomes if isinstance(r, BaseException)]
    assert refused, "60 requests of 50 ms each at once are far more than 0.2 s of work"
    assert max(s for s, _ in refused) < 0.05, "a refusal is immediate, not after queueing"
    assert all(r.retry_after > 0 for _, r in refused)
    assert "MODELPORT_MAX_QUEUE_WAIT_MS" in str(refused[0][1])
    parallel = 1 if batching else 2
    assert max(served) < wait + 3 * CALL_SECONDS / parallel + 0.3, "accepted work stays near the bound"
    assert len(served) <= (wait / CALL_SECONDS + 2) * parallel + 2
    manager.close()


async def test_a_version_s_own_queue_bound_wins_over_the_server_s(tmp_path: Path) -> None:
    version, path = fake_version(tmp_path)
    source = SlowSource([(replace(version, batching=Batching(max_queue_wait_ms=10_000)), path)])
    manager = ModelManager(source, threads=2, batching=BatchSettings(max_batch_size=1, max_queue_wait=0.05))
    await manager.load(["iris"])
    model = manager.get("iris")
    assert model.overload.max_wait == 10.0
    assert model.batcher is not None
    assert model.batcher.settings.max_queue_wait == 10.0
    outcomes = await asyncio.gather(
        *(manager.infer("iris", None, InferRequest({"input": ROWS})) for _ in range(10)), return_exceptions=True
    )
    assert not [r for r in outcomes if isinstance(r, BaseException)]
    manager.close()


async def test_readiness_reports_overload_while_the_server_sheds_load(tmp_path: Path) -> None:
    manager = await slow_manager(
        tmp_path, batching=BatchSettings(max_batch_size=1, max_queue_wait=0.05), overload_unready=True
    )
    assert manager.ready()
    await asyncio.gather(
        *(manager.infer("iris", None, InferRequest({"input": ROWS})) for _ in range(20)), return_exceptions=True
    )
    assert not manager.ready()
    assert manager.not_ready() == f"overloaded: iris@1 refused requests in the last {OVERLOAD_WINDOW:g} s"
    assert manager.not_ready(overload=False) is None, "loaded is loaded: SageMaker's /ping stays healthy"
    manager.get("iris").overload.shed_at -= OVERLOAD_WINDOW
    assert manager.ready()
    manager.close()


@pytest.mark.parametrize("batching", [BatchSettings(max_batch_size=1), None], ids=["batched", "unbatched"])
async def test_deadline_drops_the_request_on_time(tmp_path: Path, batching: BatchSettings | None) -> None:
    manager = await slow_manager(tmp_path, batching=batching, timeout=10.0)
    first = asyncio.ensure_future(manager.infer("iris", None, InferRequest({"input": ROWS})))
    await asyncio.sleep(0.005)  # the first call is in flight
    elapsed, result = await timed(manager.infer("iris", None, InferRequest({"input": ROWS + 1}, timeout=0.02)))
    assert isinstance(result, DeadlineExceeded), result
    assert "did not answer within the deadline of 0.02 s (the request's own timeout)" in str(result)
    assert elapsed < 0.04
    await first
    await asyncio.sleep(CALL_SECONDS * 2)
    if batching is not None:
        assert SlowRuntime.calls == [1], "the dropped request never reached the model"
    manager.close()


async def test_the_server_deadline_applies_when_the_request_asks_for_none(tmp_path: Path) -> None:
    manager = await slow_manager(tmp_path, batching=None, timeout=0.02)
    elapsed, result = await timed(manager.infer("iris", None, InferRequest({"input": ROWS})))
    assert isinstance(result, DeadlineExceeded)
    assert "MODELPORT_REQUEST_TIMEOUT" in str(result)
    assert elapsed < 0.04
    manager.close()


class LoopRuntime(FakeRuntime):
    """Custom code in spirit: cheap on the example, slow when the first feature is large."""

    kind: ClassVar[str] = "loops"
    capabilities: ClassVar[Capabilities] = Capabilities(bounded_cost=False)
    threads: ClassVar[list[str]] = []

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        type(self).threads.append(threading.current_thread().name)
        return super().predict(inputs)


class OverrunRuntime(FakeRuntime):
    """A bounded-cost runtime that takes 20 ms once, on an input with a large first feature."""

    kind: ClassVar[str] = "overrun"
    threads: ClassVar[list[str]] = []

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        type(self).threads.append(threading.current_thread().name)
        if float(next(iter(inputs.values()))[0, 0]) > 100:
            threading.Event().wait(0.02)
        return super().predict(inputs)


class KindSource(DirectorySource):
    runtime: type[FakeRuntime] = FakeRuntime

    def open(self, version: ModelVersion) -> Runtime:
        runtime = self.runtime()
        runtime.load(self.versions[0][1], version.signature)
        return runtime


async def test_code_whose_cost_is_not_bounded_never_runs_on_the_event_loop(tmp_path: Path) -> None:
    source = KindSource([fake_version(tmp_path)])
    source.runtime = LoopRuntime
    manager = ModelManager(source, threads=1)
    await manager.load(["iris"])
    assert not manager.get("iris").cost.runs_inline(1)
    LoopRuntime.threads.clear()
    await manager.infer("iris", None, InferRequest({"input": ROWS}))
    assert LoopRuntime.threads[0].startswith("modelport-predict")
    manager.close()


async def test_a_call_that_overruns_on_the_event_loop_moves_the_model_to_the_pool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = KindSource([fake_version(tmp_path)])
    source.runtime = OverrunRuntime
    manager = ModelManager(source, threads=1)
    await manager.load(["iris"])
    model = manager.get("iris")
    model.cost.forget()
    model.cost.observe(0.0001, 1)  # measured cheap (set here: a loaded machine's warm-up may be slower)
    assert model.cost.runs_inline(len(ROWS))
    with caplog.at_level(logging.INFO, logger="modelport"):
        await manager.infer("iris", None, InferRequest({"input": ROWS + 1000}))  # >= 20 ms, on the loop
    assert not model.cost.inline
    assert re.search(r"a prediction took \d+ ms on the event loop; its predictions run in the thread pool", caplog.text)
    OverrunRuntime.threads.clear()
    await manager.infer("iris", None, InferRequest({"input": ROWS}))
    assert OverrunRuntime.threads == [OverrunRuntime.threads[0]]
    assert OverrunRuntime.threads[0].startswith("modelport-predict")
    manager.close()


# -- through the app: the wire status codes, health while a model computes ---------------------


@pytest.fixture
def slow_export(tmp_path: Path) -> Path:
    """Cheap at warm-up, 1.5 s on inputs over 100."""
    return export_sleepy_model(tmp_path, 1.5, over=100)


@pytest.fixture
def steady_export(tmp_path: Path) -> Path:
    """0.3 s for every call, as warm-up measures."""
    return export_sleepy_model(tmp_path, 0.3)


async def test_health_answers_and_the_timeout_fires_on_time_while_a_prediction_runs(
    slow_export: Path, tmp_path: Path
) -> None:
    settings = Settings.for_sagemaker(
        {"MODELPORT_HOME": str(tmp_path), "MODELPORT_SAGEMAKER_MODEL_DIR": str(slow_export)}
        | {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "0.5", "MODELPORT_TRUST_EXPORTED_CODE": "1"}
    )
    async with client_for(build_app(settings)) as client:
        assert (await client.post("/invocations", json=[[1.0, 2.0, 3.0]])).status_code == 200
        started = time.perf_counter()
        slow = asyncio.ensure_future(timed(client.post("/invocations", json=[[1.0, 2.0, 300.0]])))
        await asyncio.sleep(0.05)  # the slow call has started (on the loop, it would block it here)
        for path in ("/ping", "/v2/health/live", "/v2/health/ready"):
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)
            since = time.perf_counter() - started
            assert since < 0.4, f"{path} answered {since:.2f} s after a 1.5 s prediction started"
        elapsed, response = await slow
        assert response.status_code == 504
        assert "deadline of 0.5 s" in response.json()["error"]
        assert "SAGEMAKER_MODEL_SERVER_TIMEOUT" in response.json()["error"]
        assert elapsed < 1.0, "the 504 comes at the deadline, not when the model returns"


async def test_overload_reaches_clients_as_503_with_retry_after_and_readiness_follows(
    steady_export: Path, tmp_path: Path
) -> None:
    settings = Settings.for_sagemaker(
        {"MODELPORT_HOME": str(tmp_path), "MODELPORT_SAGEMAKER_MODEL_DIR": str(steady_export)}
        | {"MODELPORT_TRUST_EXPORTED_CODE": "1", "MODELPORT_MAX_QUEUE_WAIT_MS": "400"}
    )
    async with client_for(build_app(settings)) as client:
        slow = []
        for _ in range(2):  # apart, so that they are not merged into one batch
            slow.append(asyncio.ensure_future(client.post("/invocations", json=[[1.0, 2.0, 3.0]])))
            await asyncio.sleep(0.05)  # then one call runs (0.2 s left), one waits (0.3 s): 0.5 s ahead
        elapsed, refused = await timed(client.post("/invocations", json=[[1.0, 2.0, 3.0]]))
        assert refused.status_code == 503, refused.text
        assert elapsed < 0.1
        assert int(refused.headers["retry-after"]) >= 1
        assert "overloaded" in refused.json()["error"]
        ready = await client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert "overloaded: slow@1" in ready.json()["error"]
        assert (await client.get("/ping")).status_code == 200
        await asyncio.gather(*slow)


async def test_v2_timeout_parameter_and_header_set_the_request_deadline(slow_export: Path, tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, sagemaker=True, sagemaker_model_dir=slow_export, trust_exported_code=True, request_timeout=30
    )
    body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 300]}]}
    async with client_for(build_app(settings)) as client:
        by_parameter = {**body, "parameters": {"timeout": 200_000}}  # microseconds, as Triton's client sends
        elapsed, response = await timed(client.post("/v2/models/slow/infer", json=by_parameter))
        assert response.status_code == 504, response.text
        assert "deadline of 0.2 s (the request's own timeout)" in response.json()["error"]
        assert elapsed < 0.6
        elapsed, response = await timed(
            client.post("/v2/models/slow/infer", json=body, headers={"modelport-timeout": "0.2"})
        )
        assert response.status_code == 504, response.text
        assert elapsed < 0.6
        bad = await client.post("/v2/models/slow/infer", json={**body, "parameters": {"timeout": "soon"}})
        assert bad.status_code == 400
        assert "timeout" in bad.json()["error"]
        await asyncio.sleep(1.5)  # let the abandoned calls finish before the app closes


async def test_a_prediction_running_past_its_deadline_is_reported_until_it_ends(
    slow_export: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A call that outlives its deadline (a runaway: a thread cannot be stopped) makes the server
    not ready at once and not live past three deadlines, is counted in /metrics and logged once;
    all clears when the call ends."""
    settings = Settings.for_sagemaker(
        {"MODELPORT_HOME": str(tmp_path), "MODELPORT_SAGEMAKER_MODEL_DIR": str(slow_export)}
        | {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "0.3", "MODELPORT_TRUST_EXPORTED_CODE": "1"}
    )

    async def until(path: str, status: int, limit: float = 3.0) -> Any:
        deadline = time.perf_counter() + limit
        while True:
            response = await client.get(path)
            if response.status_code == status or time.perf_counter() > deadline:
                return response
            await asyncio.sleep(0.05)

    with caplog.at_level(logging.WARNING, logger="modelport"):
        async with client_for(build_app(settings)) as client:
            assert (await client.post("/invocations", json=[[1.0, 2.0, 3.0]])).status_code == 200
            slow = await client.post("/invocations", json=[[1.0, 2.0, 300.0]])  # runs 1.5 s
            assert slow.status_code == 504
            ready = await until("/v2/health/ready", 503)
            assert ready.status_code == 503, ready.text
            assert "runaway predictions past the 0.3 s deadline" in ready.json()["error"]
            assert (await client.get("/ping")).status_code != 200  # SageMaker replaces an instance failing /ping
            metrics = (await client.get("/metrics")).text
            assert re.search(r'modelport_runaway_predictions\{model="[^"]+",version="1"\} 1\.0', metrics), metrics
            live = await until("/v2/health/live", 503)
            assert live.status_code == 503, live.text
            assert "running far past the 0.3 s deadline" in live.json()["error"]
            assert (await until("/v2/health/ready", 200)).status_code == 200  # the call ended: all clear
            assert (await client.get("/v2/health/live")).status_code == 200
    said = "past the 0.3 s deadline, and answers nobody"
    warnings = [r.getMessage() for r in caplog.records if said in r.getMessage()]
    assert len(warnings) == 1, warnings
