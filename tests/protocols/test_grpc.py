"""The Open Inference Protocol over gRPC, through Triton's own gRPC client and stubs generated from
our proto, against real servers (uvicorn + grpc.aio in-process, and ``modelport serve`` processes)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.registry.registry import Registry
from modelport.server.app import build_app
from modelport.settings import Settings
from tests.conftest import IRIS_FEATURES
from tests.support.helpers import reserved_port
from tests.support.serving import register_iris, running

pytestmark = pytest.mark.slow

grpc = pytest.importorskip("grpc")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

from modelport.protocols.grpc.proto import grpc_predict_v2_pb2 as pb  # noqa: E402
from modelport.protocols.grpc.proto.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub  # noqa: E402
from modelport.server.grpc import grpc_endpoint  # noqa: E402


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> tuple[Settings, Any]:
    settings = Settings(home=tmp_path_factory.mktemp("grpc") / "home")
    _, estimator = register_iris(settings, iris, aliases=("production",))
    return settings, estimator


@pytest.fixture(scope="module")
def served(registered: tuple[Settings, Any], iris: Any) -> Iterator[tuple[str, Any, Any]]:
    settings, estimator = registered
    app = build_app(settings.with_(models=("iris@production",), grpc_port=0))
    with running(app):
        yield f"127.0.0.1:{app.grpc_port}", estimator, iris[0]


@pytest.fixture
def client(served: tuple[str, Any, Any]) -> Iterator[Any]:
    client = grpcclient.InferenceServerClient(url=served[0])
    yield client
    client.close()


def _tensor(data: np.ndarray, name: str = "input") -> Any:
    tensor = grpcclient.InferInput(name, list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return tensor


def _labels(result: Any) -> list[str]:
    return [v.decode() for v in result.as_numpy("label")]


def test_health_readiness_and_metadata_through_triton_grpc_client(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "1")
    assert client.is_model_ready("iris", "production")
    assert client.get_server_metadata(as_json=True)["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata("iris", as_json=True)
    assert (meta["name"], meta["versions"], meta["platform"]) == ("iris", ["1"], "onnxruntime_onnx")
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [("input", "FP32", ["-1", "4"])]
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [("label", "BYTES"), ("probabilities", "FP32")]


def test_infer_with_raw_contents_matches_the_model(client: Any, served: tuple[str, Any, Any]) -> None:
    _, estimator, frame = served
    rows = frame.iloc[45:55]
    result = client.infer("iris", [_tensor(rows.to_numpy(dtype=np.float32))], request_id="abc")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("iris", "1", "abc")
    assert len(response.raw_output_contents) == 2  # answered the way it was asked: raw
    assert _labels(result) == list(estimator.predict(rows))
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, estimator.predict_proba(rows), atol=1e-5)


def test_alias_as_version_selects_outputs_and_per_feature_tensors(client: Any, served: tuple[str, Any, Any]) -> None:
    _, estimator, frame = served
    rows = frame.iloc[100:104]
    inputs = [_tensor(rows[feature].to_numpy(dtype=np.float32), feature) for feature in IRIS_FEATURES]
    outputs = [grpcclient.InferRequestedOutput("label")]
    result = client.infer("iris", inputs, model_version="production", outputs=outputs)
    assert [out.name for out in result.get_response().outputs] == ["label"]
    assert result.get_response().model_version == "1"
    assert _labels(result) == list(estimator.predict(rows))


def test_typed_contents_are_answered_typed_with_the_version_in_metadata(served: tuple[str, Any, Any]) -> None:
    url, estimator, frame = served
    rows = frame.iloc[0:3]
    request = pb.ModelInferRequest(model_name="iris", model_version="1", id="typed")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[3, 4])
    tensor.contents.fp32_contents.extend(rows.to_numpy(dtype=np.float32).ravel().tolist())
    with grpc.insecure_channel(url) as channel:
        response, call = GRPCInferenceServiceStub(channel).ModelInfer.with_call(request, timeout=30)
    assert ("modelport-model-version", "1") in call.initial_metadata()
    assert response.id == "typed"
    assert not response.raw_output_contents
    label, probabilities = response.outputs
    assert [v.decode() for v in label.contents.bytes_contents] == list(estimator.predict(rows))
    assert list(probabilities.shape) == [3, 3]
    got = np.array(probabilities.contents.fp32_contents).reshape(3, 3)
    np.testing.assert_allclose(got, estimator.predict_proba(rows), atol=1e-5)


def test_domain_errors_reach_the_client_as_grpc_status_codes(client: Any) -> None:
    three = _tensor(np.ones((1, 3), dtype=np.float32))
    cases: list[tuple[Callable[[], object], str, str]] = [
        (lambda: client.infer("cheese", [three]), "StatusCode.NOT_FOUND", "model 'cheese' is not served"),
        (
            lambda: client.infer("iris", [three]),
            "StatusCode.INVALID_ARGUMENT",
            r"expected shape \[-1, 4\], got \[1, 3\]",
        ),
        (lambda: client.infer("iris", [three], model_version="7"), "StatusCode.NOT_FOUND", "no version 7 served"),
        (lambda: client.get_model_metadata("iris", "staging"), "StatusCode.NOT_FOUND", "no alias 'staging'"),
    ]
    for call, status, message in cases:
        with pytest.raises(InferenceServerException, match=message) as caught:
            call()
        assert caught.value.status() == status
    four = _tensor(np.ones((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="unknown output 'colour'") as caught:
        client.infer("iris", [four], outputs=[grpcclient.InferRequestedOutput("colour")])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_model_ready_is_false_for_an_unknown_model_version_or_alias_as_triton_answers(client: Any) -> None:
    # Triton's ModelReady answers ready=false (not an error) for what it does not serve; clients poll on it.
    assert client.is_model_ready("cheese") is False
    assert client.is_model_ready("iris", "7") is False
    assert client.is_model_ready("iris", "staging") is False
    assert client.is_model_ready("iris", "production") is True
    with pytest.raises(InferenceServerException, match="invalid model reference") as caught:
        client.is_model_ready("iris", "Bad!")  # a malformed selector is still the caller's error
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_messages_over_the_body_limit_are_refused(registered: tuple[Settings, Any]) -> None:
    app = build_app(registered[0].with_(models=("iris@production",), grpc_port=0, max_body_bytes=1024))
    with running(app):
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{app.grpc_port}")
        with pytest.raises(InferenceServerException) as caught:
            client.infer("iris", [_tensor(np.ones((100, 4), dtype=np.float32))])
        assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert client.infer("iris", [_tensor(np.ones((2, 4), dtype=np.float32))]).as_numpy("label").shape == (2,)
        client.close()


async def test_a_taken_port_fails_loudly_and_a_stopped_server_frees_its_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(home=tmp_path, grpc_port=taken.getsockname()[1])
        with pytest.raises(OSError, match="is the port in use"):
            async with grpc_endpoint(settings, lambda: None):  # type: ignore[arg-type,return-value]
                pass
    settings = Settings(home=tmp_path, grpc_port=0)
    async with grpc_endpoint(settings, lambda: None) as port:  # type: ignore[arg-type,return-value]
        assert port > 0
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # released at stop


def _listeners(port: int) -> int:
    """LISTEN sockets on ``port`` in this network namespace (one per process with SO_REUSEPORT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                count += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port
    return count


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")
def test_serve_with_two_workers_shares_the_grpc_port(registered: tuple[Settings, Any], iris: Any) -> None:
    settings, estimator = registered
    env = {**os.environ, "MODELPORT_HOME": str(settings.home)}
    with reserved_port() as grpc_port:  # the workers share one fixed port: held for them, race-free
        command = [sys.executable, "-m", "modelport", "serve", "iris@production", "--workers", "2"]
        command += ["--port", "0", "--grpc-port", str(grpc_port), "--log-level", "warning"]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while _listeners(grpc_port) < 2:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                assert time.monotonic() < deadline, f"{_listeners(grpc_port)} of 2 workers listen on the gRPC port"
                time.sleep(0.1)
            rows = iris[0].iloc[60:64]
            for _ in range(8):  # fresh connections, spread over the workers by the kernel
                client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}")
                assert _labels(client.infer("iris", [_tensor(rows.to_numpy(dtype=np.float32))])) == list(
                    estimator.predict(rows)
                )
                client.close()
        finally:
            process.terminate()
            process.wait(timeout=60)
            if process.stderr:
                process.stderr.close()


def test_the_routing_key_metadata_pins_a_caller_to_one_version_of_a_split(tmp_path: Path, iris: Any) -> None:
    settings = Settings(home=tmp_path / "home")
    register_iris(settings, iris, aliases=("production",))
    register_iris(settings, iris, aliases=(), strength=0.05)
    with Registry.open(settings) as registry:
        registry.split("iris@2", "production", 50)
    row = _tensor(np.array([[5.9, 3.0, 5.1, 1.8]], dtype=np.float32))
    app = build_app(settings.with_(models=("iris@production",), grpc_port=0))
    with running(app):
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{app.grpc_port}")

        def version(key: str) -> str:
            response = client.infer("iris", [row], model_version="production", headers={settings.sticky_header: key})
            return str(response.get_response().model_version)

        for key in ("alice", "bob", "carol"):
            assert len({version(key) for _ in range(10)}) == 1, f"key {key!r} moved between versions"
        assert {version(f"caller-{n}") for n in range(40)} == {"1", "2"}  # all 40 on one side: p = 2e-12
        client.close()


def test_every_call_carries_a_request_id_in_its_trailing_metadata(served: tuple[str, Any, Any]) -> None:
    with grpc.insecure_channel(served[0]) as channel:
        stub = GRPCInferenceServiceStub(channel)
        _, call = stub.ServerLive.with_call(pb.ServerLiveRequest())
        assert len(dict(call.trailing_metadata())["x-request-id"]) == 16
        _, call = stub.ModelReady.with_call(pb.ModelReadyRequest(name="iris"), metadata=(("x-request-id", "r-7"),))
        assert dict(call.trailing_metadata())["x-request-id"] == "r-7"


def test_grpc_calls_are_counted_and_logged_like_rest(
    registered: tuple[Settings, Any], iris: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import httpx

    from tests.observability.test_metrics import samples, value

    settings, _ = registered
    app = build_app(settings.with_(models=("iris@production",), grpc_port=0, access_log=True, log_format="json"))
    rows = iris[0].iloc[0:3].to_numpy(dtype=np.float32)
    with running(app) as base, caplog.at_level("INFO", logger="modelport.access"):
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{app.grpc_port}")
        try:
            for _ in range(2):
                client.infer("iris", [_tensor(rows)], headers={"x-request-id": "grpc-call-1"})
            with pytest.raises(InferenceServerException):
                client.infer("nothing-here", [_tensor(rows)])
        finally:
            client.close()
        found = samples(httpx.get(f"http://{base}/metrics", timeout=10).text)
    assert value(found, "modelport_requests_total", protocol="grpc", model="iris", version="1", code="2xx") == 2
    assert value(found, "modelport_requests_total", protocol="grpc", model="(unknown)", version="", code="4xx") == 1
    assert value(found, "modelport_request_duration_seconds_count", protocol="grpc", model="iris", version="1") == 2
    access = [vars(r)["access"] for r in caplog.records if r.name == "modelport.access"]
    lines = [line for line in access if line["protocol"] == "grpc"]
    assert len(lines) == 3
    first = lines[0]
    assert (first["request_id"], first["status"], first["model"], first["version"], first["rows"]) == (
        "grpc-call-1",
        200,
        "iris",
        1,
        3,
    )
    assert first["method"] == "gRPC"
    assert first["path"].endswith("/ModelInfer")
    assert first["client"] == "127.0.0.1"
    assert lines[2]["status"] == 404
    assert lines[2]["version"] is None
