"""ModelManager: loading, resolving name + selector, inference off the event loop, errors."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from modelport.errors import InvalidInput, InvalidModel, InvalidReference, ModelNotReady, NotFound, PredictionFailed
from modelport.registry.registry import Registry
from modelport.runtimes.base import Capabilities, Runtime
from modelport.runtimes.fake import FakeRuntime
from modelport.server.app import build_app
from modelport.serving.manager import ModelManager
from modelport.settings import Settings
from modelport.types import InferRequest, ModelVersion, Signature
from tests.support.serving import (
    BIAS,
    CLASSES,
    WEIGHTS,
    DirectorySource,
    ExplodingSource,
    client_for,
    fake_version,
    register_iris,
)

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


def expected_labels(rows: np.ndarray) -> list[str]:
    scores = rows.astype(np.float64) @ np.asarray(WEIGHTS) + np.asarray(BIAS)
    return [CLASSES[i] for i in scores.argmax(axis=1)]


@pytest.fixture
def source(tmp_path: Path) -> DirectorySource:
    flipped = [row[::-1] for row in WEIGHTS]
    return DirectorySource(
        [
            fake_version(tmp_path, "iris", 1, aliases=("production",)),
            fake_version(tmp_path, "iris", 2, aliases=("staging",), weights=flipped),
            fake_version(tmp_path, "wine", 1),
        ]
    )


async def test_load_serves_each_reference_and_the_first_ref_is_the_default(source: DirectorySource) -> None:
    manager = ModelManager(source)
    await manager.load(["iris@production", "iris@2", "wine"])
    assert manager.ready()
    assert [m.version.ref for m in manager.served()] == ["iris@1", "iris@2", "wine@1"]
    assert manager.get("iris").version.version == 1
    assert manager.get("iris", "2").version.version == 2
    assert manager.get("iris", "staging").version.version == 2
    assert manager.get("iris", "production").version.version == 1
    assert manager.get("iris", "latest").version.version == 2
    assert manager.model_ready("wine", "1")
    manager.close()
    assert not manager.ready()


async def test_loading_the_same_version_twice_opens_it_once(source: DirectorySource) -> None:
    manager = ModelManager(source)
    await manager.load(["iris@1", "iris@production"])
    assert source.opened == 1
    assert len(manager.served()) == 1
    manager.close()


async def test_unknown_model_version_and_alias_name_what_is_served(source: DirectorySource) -> None:
    manager = ModelManager(source)
    await manager.load(["iris@production"])
    with pytest.raises(NotFound, match=r"model 'nope' is not served \(served: iris\)"):
        manager.get("nope")
    with pytest.raises(NotFound, match=r"model 'iris' has no version 7 served \(versions: 1; aliases: production\)"):
        manager.get("iris", "7")
    with pytest.raises(NotFound, match=r"model 'iris' has no alias 'staging' served \(versions: 1"):
        manager.get("iris", "staging")
    with pytest.raises(InvalidReference, match="invalid model reference 'iris@Bad!'"):
        manager.get("iris", "Bad!")
    manager.close()


async def test_infer_returns_the_runtime_outputs_for_the_served_version(source: DirectorySource) -> None:
    manager = ModelManager(source, threads=2)
    await manager.load(["iris@1"])
    result = await manager.infer("iris", None, InferRequest({"input": ROWS}, id="r1"))
    assert (result.model_name, result.model_version, result.id) == ("iris", 1, "r1")
    assert result.outputs["label"].tolist() == expected_labels(ROWS)
    np.testing.assert_allclose(result.outputs["probabilities"].sum(axis=1), 1.0, rtol=1e-6)
    manager.close()


async def test_infer_selects_requested_outputs_and_refuses_unknown_ones(source: DirectorySource) -> None:
    manager = ModelManager(source)
    await manager.load(["iris"])
    result = await manager.infer("iris", None, InferRequest({"input": ROWS}, outputs=("probabilities",)))
    assert list(result.outputs) == ["probabilities"]
    with pytest.raises(InvalidInput, match=r"unknown output 'score' \(outputs: label, probabilities\)"):
        await manager.infer("iris", None, InferRequest({"input": ROWS}, outputs=("score",)))
    manager.close()


async def test_infer_validates_inputs_against_the_signature(source: DirectorySource) -> None:
    manager = ModelManager(source)
    await manager.load(["iris"])
    with pytest.raises(InvalidInput, match=r"expected shape \[-1, 4\], got \[2, 3\]"):
        await manager.infer("iris", None, InferRequest({"input": ROWS[:, :3]}))
    with pytest.raises(InvalidInput, match="missing input 'input'"):
        await manager.infer("iris", None, InferRequest({}))
    manager.close()


async def test_inputs_checked_for_another_signature_are_checked_again(source: DirectorySource) -> None:
    manager = ModelManager(source)
    await manager.load(["iris@1"])
    route, model = manager.pick("iris", None)
    other = replace(model.version.signature, example=None)  # equal, but not the one this version has
    with pytest.raises(InvalidInput, match=r"expected shape \[-1, 4\], got \[2, 3\]"):
        await manager.run(route, model, InferRequest({"input": ROWS[:, :3]}, checked=other))
    checked = InferRequest({"input": ROWS}, checked=model.version.signature)  # a protocol checked these
    result = await manager.run(route, model, checked)
    assert result.outputs["label"].tolist() == expected_labels(ROWS)
    manager.close()


async def test_runtime_failure_becomes_prediction_failed_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = ModelManager(ExplodingSource([fake_version(tmp_path)]))
    await manager.load(["iris"])
    with caplog.at_level(logging.ERROR, logger="modelport"), pytest.raises(PredictionFailed) as info:
        await manager.infer("iris", None, InferRequest({"input": -ROWS}))
    assert "model iris@1 failed to predict: FloatingPointError: cannot score negative lengths" in str(info.value)
    assert "Traceback" in caplog.text
    result = await manager.infer("iris", None, InferRequest({"input": ROWS}))  # still serving
    assert result.outputs["label"].tolist() == expected_labels(ROWS)
    manager.close()


async def test_warm_up_failure_fails_the_load_with_the_reason(tmp_path: Path) -> None:
    version, path = fake_version(tmp_path)
    broken = Signature(version.signature.inputs, version.signature.outputs, example={"input": [[-1.0, 0, 0, 0]]})
    source = ExplodingSource([(replace(version, signature=broken), path)])
    manager = ModelManager(source)
    with pytest.raises(InvalidModel, match=r"iris@1 failed its warm-up prediction.*cannot score negative lengths"):
        await manager.load(["iris"])
    assert not manager.served()


async def test_observers_given_after_construction_watch_loaded_versions_and_hear_of_failed_loads(
    tmp_path: Path,
) -> None:
    """A manager built before its observers (one given to the app) gets both from watch_with."""
    from modelport.serving.hooks import Unwatched

    good = fake_version(tmp_path, "iris", 1)
    version, path = fake_version(tmp_path, "wine", 1)
    broken = Signature(version.signature.inputs, version.signature.outputs, example={"input": [[-1.0, 0, 0, 0]]})
    manager = ModelManager(ExplodingSource([good, (replace(version, signature=broken), path)]))
    await manager.load(["iris"])
    watched: list[str] = []
    failed: list[tuple[str, int, str]] = []

    class Watching(Unwatched):
        def version(self, version: ModelVersion) -> Unwatched:
            watched.append(version.ref)
            return self

    manager.watch_with(Watching(), lambda name, number, error: failed.append((name, number, type(error).__name__)))
    assert watched == ["iris@1"]  # the version loaded already
    with pytest.raises(InvalidModel):
        await manager.load(["wine"])
    assert failed == [("wine", 1, "InvalidModel")]
    manager.close()


class SlowUnsafeRuntime(FakeRuntime):
    """Not thread-safe: records how many predictions overlap."""

    kind: ClassVar[str] = "slow-unsafe"
    capabilities: ClassVar[Capabilities] = Capabilities(thread_safe=False)
    active = 0
    most = 0
    guard = threading.Lock()

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cls = type(self)
        with cls.guard:
            cls.active += 1
            cls.most = max(cls.most, cls.active)
        threading.Event().wait(0.01)
        with cls.guard:
            cls.active -= 1
        return super().predict(inputs)


class UnsafeSource(DirectorySource):
    def open(self, version: ModelVersion) -> Runtime:
        runtime = SlowUnsafeRuntime()
        runtime.load(self.versions[0][1], version.signature)
        return runtime


async def test_runtime_that_is_not_thread_safe_never_predicts_concurrently(tmp_path: Path) -> None:
    manager = ModelManager(UnsafeSource([fake_version(tmp_path)]), threads=4)
    await manager.load(["iris"])
    SlowUnsafeRuntime.most = 0
    results = await asyncio.gather(*(manager.infer("iris", None, InferRequest({"input": ROWS})) for _ in range(8)))
    assert len(results) == 8
    assert SlowUnsafeRuntime.most == 1
    manager.close()


async def test_closed_manager_serves_nothing(source: DirectorySource) -> None:
    manager = ModelManager(source)
    await manager.load(["iris"])
    model = manager.get("iris")
    manager.close()
    assert not model.ready
    with pytest.raises(NotFound, match="not served"):
        await manager.infer("iris", None, InferRequest({"input": ROWS}))
    with pytest.raises(ModelNotReady):
        model.runtime.predict({"input": ROWS})


class ThreadRecordingRuntime(FakeRuntime):
    """The fake model, noting which thread predicts; slow when the first feature is large."""

    kind: ClassVar[str] = "recording"
    threads: ClassVar[list[str]] = []

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        type(self).threads.append(threading.current_thread().name)
        if float(next(iter(inputs.values()))[0, 0]) > 100:
            threading.Event().wait(0.005)
        return super().predict(inputs)


class RecordingSource(DirectorySource):
    def open(self, version: ModelVersion) -> Runtime:
        runtime = ThreadRecordingRuntime()
        runtime.load(self.versions[0][1], version.signature)
        return runtime


async def test_the_cost_model_tells_the_fixed_cost_of_a_call_from_the_cost_of_its_rows(tmp_path: Path) -> None:
    manager = ModelManager(RecordingSource([fake_version(tmp_path)]))
    await manager.load(["iris"])
    model = manager.get("iris")
    model.cost.forget()
    model.cost.observe(0.000300, 1)  # a runtime with 300 us of overhead per call ...
    model.cost.observe(0.000364, 65)  # ... and 1 us per row
    assert model.cost.estimate(1) == pytest.approx(0.000300)
    assert model.cost.estimate(65) == pytest.approx(0.000364)
    assert model.cost.runs_inline(64)  # one batch of 64 costs little more than one row
    assert not model.cost.runs_inline(300)
    manager.close()


async def test_cheap_predictions_run_inline_and_slow_ones_in_the_pool(tmp_path: Path) -> None:
    manager = ModelManager(RecordingSource([fake_version(tmp_path)]), threads=2)
    await manager.load(["iris"])
    model = manager.get("iris")
    model.cost.forget()
    model.cost.observe(0.0001, 1)  # measured at 100 us a call (set here: a loaded machine's warm-up may be slower)
    assert model.cost.runs_inline(len(ROWS))
    ThreadRecordingRuntime.threads.clear()
    await manager.infer("iris", None, InferRequest({"input": ROWS}))
    assert ThreadRecordingRuntime.threads == [threading.current_thread().name]
    for _ in range(3):  # each slow prediction (>= 5 ms, 50x the inline bound) moves the model off the loop
        await manager.infer("iris", None, InferRequest({"input": ROWS + 1000}))
    assert not model.cost.runs_inline(len(ROWS))
    assert ThreadRecordingRuntime.threads[-1].startswith("modelport-predict")
    manager.close()


async def test_failed_version_errors_name_no_server_paths_but_the_log_does(
    settings: Settings, iris: tuple[pd.DataFrame, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    version, _ = register_iris(settings, iris)
    with Registry.open(settings) as registry:
        stored = registry.artifact_path(version) / "model.onnx"
    stored.chmod(0o644)
    stored.write_bytes(b"not an onnx model")
    app = build_app(settings.with_(models=("iris@production",), enable_management=False))
    with caplog.at_level(logging.ERROR, logger="modelport"):
        async with client_for(app) as client:
            answers = [
                await client.get("/v1/models/iris"),
                await client.get("/v2/models/iris/ready"),
                await client.post("/v2/models/iris/infer", json={"inputs": []}),
                await client.get("/v2/health/ready"),
            ]
    assert [a.status_code for a in answers] == [200, 503, 503, 503]
    assert "model.onnx" in answers[0].text  # the file is named ...
    for answer in answers:
        assert str(settings.home) not in answer.text  # ... but not where it lies on this server
        assert "/artifacts/" not in answer.text
    assert str(stored) in caplog.text
