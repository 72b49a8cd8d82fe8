"""Where a version runs: per-version device and precision (registered, shown, exported) and the
server's default device; a runtime that cannot use the device or precision refuses clearly."""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from modelport.cli.main import app
from modelport.errors import DeviceWarning, InvalidModel, InvalidSetting
from modelport.registry.export import export_version, read_export
from modelport.registry.registry import Registry
from modelport.runtimes.base import Capabilities
from modelport.runtimes.onnx import CUDA_PROVIDER
from modelport.serving.loading import _placement, open_version
from modelport.settings import Settings
from modelport.types import ModelVersion
from tests.support.serving import register_iris

ROWS = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


@pytest.fixture
def iris_version(tmp_path: Path, iris: Any) -> tuple[Settings, ModelVersion]:
    settings = Settings(home=tmp_path / "home")
    version, _ = register_iris(settings, iris)
    return settings, version


class GpuRuntime:
    kind: ClassVar[str] = "gpu"
    capabilities: ClassVar[Capabilities] = Capabilities(devices=("cpu", "cuda"))


class CpuRuntime:
    kind: ClassVar[str] = "cpu-only"
    capabilities: ClassVar[Capabilities] = Capabilities()


def test_the_cpu_in_full_precision_passes_no_keywords_so_every_runtime_keeps_its_load(
    iris_version: tuple[Settings, ModelVersion],
) -> None:
    _, version = iris_version
    assert _placement(version, CpuRuntime, "cpu") == {}  # type: ignore[arg-type]
    assert _placement(version, GpuRuntime, "cpu") == {}  # type: ignore[arg-type]


def test_a_device_or_precision_goes_only_to_runtimes_that_offer_it(
    iris_version: tuple[Settings, ModelVersion],
) -> None:
    _, version = iris_version
    assert _placement(version, GpuRuntime, "cuda:1") == {"device": "cuda:1", "precision": "fp32"}  # type: ignore[arg-type]
    half = replace(version, precision="bf16")
    assert _placement(half, GpuRuntime, "cpu") == {"device": "cpu", "precision": "bf16"}  # type: ignore[arg-type]
    with pytest.raises(InvalidSetting, match=r"iris@1 is to run on cuda:1, and the onnx runtime runs on cpu only"):
        _placement(version, CpuRuntime, "cuda:1")  # type: ignore[arg-type]
    with pytest.raises(InvalidSetting, match="iris@1 asks for bf16, which the onnx runtime does not offer"):
        _placement(half, CpuRuntime, "cpu")  # type: ignore[arg-type]


@pytest.mark.skipif(CUDA_PROVIDER in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_onnx_on_cuda_without_the_cuda_provider_says_what_to_install(
    iris_version: tuple[Settings, ModelVersion],
) -> None:
    settings, version = iris_version
    with Registry.open(settings) as registry:
        artifact = registry.artifact_path(version)
    with pytest.raises(InvalidSetting, match=r"has no CUDA execution provider .* install onnxruntime-gpu"):
        open_version(version, artifact, device="cuda")
    with pytest.raises(InvalidSetting, match="serves the graph as it was converted"):
        open_version(replace(version, precision="fp16"), artifact)
    runtime = open_version(version, artifact, device="cpu")  # and the CPU still works
    assert runtime.predict({"input": ROWS})["label"].shape == (1,)


def test_device_and_precision_are_registered_shown_and_exported(tmp_path: Path, iris: Any) -> None:
    settings = Settings(home=tmp_path / "home")
    from sklearn.linear_model import LogisticRegression

    from modelport.api import register

    frame, labels = iris
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    with warnings.catch_warnings():  # a DeviceWarning where onnxruntime has no CUDA (test below)
        warnings.simplefilter("ignore", DeviceWarning)
        version = register(model, name="iris", sample_input=frame.head(20), device="cuda:0", settings=settings)
    assert (version.device, version.precision) == ("cuda:0", None)
    with Registry.open(settings) as registry:
        assert registry.get("iris@1").device == "cuda:0"
        export_version(version, registry.artifact_path(version), tmp_path / "export")
    assert (read_export(tmp_path / "export").device, read_export(tmp_path / "export").precision) == ("cuda:0", None)
    shown = CliRunner().invoke(app, ["show", "iris@1", "--json"], env={"MODELPORT_HOME": str(settings.home)})
    assert shown.exit_code == 0, shown.output
    assert (json.loads(shown.stdout)["device"], json.loads(shown.stdout)["precision"]) == ("cuda:0", None)
    with pytest.raises(InvalidModel, match="device is cpu, cuda or cuda:N"):
        register(model, name="iris", sample_input=frame.head(20), device="tpu", settings=settings)
    # a precision the serving runtime does not offer is refused at registration, not at every load
    # (bf16 registered, shown and exported: tests/ingest/test_pytorch.py)
    with pytest.raises(InvalidModel, match="precision bf16: the onnx runtime serves the graph as it was converted"):
        register(model, name="iris", sample_input=frame.head(20), precision="bf16", settings=settings)


def test_bad_devices_are_one_line_on_the_command_line_and_in_the_environment(tmp_path: Path) -> None:
    env = {"MODELPORT_HOME": str(tmp_path / "home")}
    served = CliRunner().invoke(app, ["serve", "iris@1", "--device", "gpu0"], env=env)
    assert served.exit_code == 2
    assert "--device: device is cpu, cuda or cuda:N" in served.output
    with pytest.raises(InvalidSetting, match="MODELPORT_DEVICE='mps' is not valid"):
        Settings.from_env({"MODELPORT_DEVICE": "mps"})
    assert Settings.from_env({"MODELPORT_DEVICE": "CUDA:1"}).device == "cuda:1"


NO_CUDA = pytest.mark.skipif(CUDA_PROVIDER in ort.get_available_providers(), reason="this onnxruntime has CUDA")


@NO_CUDA
def test_a_device_this_machine_lacks_is_a_warning_at_registration_in_python_and_on_the_command_line(
    tmp_path: Path, iris: Any
) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    from modelport.api import register

    frame, labels = iris
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    settings = Settings(home=tmp_path / "home")
    advice = r"a server that has it runs the version there, and `serve --device cpu` \(MODELPORT_DEVICE=cpu\) serves it"
    with pytest.warns(
        DeviceWarning,
        match=rf"iris@1: registered to run on cuda, which this machine cannot use \(.*"
        rf"no CUDA execution provider.*\); {advice}",
    ):
        register(model, name="iris", sample_input=frame.head(20), device="cuda", settings=settings)
    sio.dump(model, tmp_path / "iris.skops")
    frame.head(20).to_csv(tmp_path / "sample.csv", index=False)
    result = CliRunner().invoke(
        app,
        [
            "register",
            str(tmp_path / "iris.skops"),
            "--name",
            "iris",
            "--sample",
            str(tmp_path / "sample.csv"),
            "--device",
            "cuda:1",
        ],
        env={"MODELPORT_HOME": str(settings.home), "COLUMNS": "300"},
    )
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert line.startswith("warning: iris@2: registered to run on cuda:1, which this machine cannot use")
    assert "registered iris@2" in result.stdout
    with pytest.raises(InvalidModel, match="the sklearn runtime that serves this model runs on cpu only"):
        register(model, name="iris", sample_input=frame.head(20), runtime="sklearn", device="cuda", settings=settings)


@NO_CUDA
async def test_the_servers_device_wins_over_the_registered_one_so_serve_device_cpu_serves_it(
    tmp_path: Path, iris: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from sklearn.linear_model import LogisticRegression

    from modelport.api import register
    from modelport.server.app import build_app
    from tests.support.serving import client_for

    settings = Settings(home=tmp_path / "home")
    frame, labels = iris
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    with pytest.warns(DeviceWarning):
        version = register(model, name="iris", sample_input=frame.head(20), device="cuda", settings=settings)
    with Registry.open(settings) as registry:
        artifact = registry.artifact_path(version)
    with pytest.raises(InvalidSetting, match="no CUDA execution provider"):
        open_version(version, artifact)  # no device given: the version's own
    with caplog.at_level(logging.INFO, logger="modelport"):
        runtime = open_version(version, artifact, device="cpu")  # given: it wins
    assert runtime.predict({"input": ROWS})["label"].shape == (1,)
    assert "iris@1 was registered to run on cuda; running it on cpu, as the server's --device" in caplog.text
    assert Settings.from_env({}).device is None  # not given
    assert Settings.from_env({"MODELPORT_DEVICE": "cpu"}).to_env()["MODELPORT_DEVICE"] == "cpu"
    assert "MODELPORT_DEVICE" not in Settings().to_env()  # workers started from these settings: not given either
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROWS.ravel().tolist()}]}
    async with client_for(build_app(settings.with_(models=("iris@1",), device="cpu"))) as client:
        answered = await client.post("/v2/models/iris/versions/1/infer", json=body)
    assert answered.status_code == 200, answered.text
    assert {o["name"]: o["data"] for o in answered.json()["outputs"]}["label"] == ["setosa"]
