"""Triton's own V2 HTTP client, unchanged, against a real uvicorn serving a registered model."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from modelport.server.app import build_app
from modelport.server.spawn import ServerOutput, stop, wait_ready
from modelport.settings import Settings
from tests.conftest import IRIS_FEATURES
from tests.support.serving import register_iris, running

pytestmark = pytest.mark.slow

httpclient = pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> tuple[Settings, Any]:
    settings = Settings(home=tmp_path_factory.mktemp("triton") / "home")
    _, estimator = register_iris(settings, iris, aliases=("production",))
    return settings, estimator


@pytest.fixture(scope="module")
def served(registered: tuple[Settings, Any], iris: Any) -> Iterator[tuple[str, Any, Any]]:
    settings, estimator = registered
    with running(build_app(settings.with_(models=("iris@production",)))) as url:
        yield url, estimator, iris[0]


@pytest.fixture
def client(served: tuple[str, Any, Any]) -> Iterator[Any]:
    client = httpclient.InferenceServerClient(url=served[0])
    yield client
    client.close()


def test_health_readiness_and_metadata_through_tritonclient(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "1")
    assert not client.is_model_ready("cheese")
    meta = client.get_model_metadata("iris")
    assert meta["name"] == "iris"
    assert meta["versions"] == ["1"]
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [("input", "FP32", [-1, 4])]
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_through_tritonclient_matches_the_model(client: Any, served: tuple[str, Any, Any], binary: bool) -> None:
    _, estimator, frame = served
    rows = frame.iloc[45:55]
    data = rows.to_numpy(dtype=np.float32)
    tensor = httpclient.InferInput("input", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, binary_data=binary)
    outputs = None
    if not binary:
        outputs = [
            httpclient.InferRequestedOutput("label", binary_data=False),
            httpclient.InferRequestedOutput("probabilities", binary_data=False),
        ]
    result = client.infer("iris", [tensor], outputs=outputs, request_id="abc")
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("iris", "1", "abc")
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert labels == list(estimator.predict(rows))
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, estimator.predict_proba(rows), atol=1e-5)


def test_infer_by_alias_version_and_per_feature_tensors(client: Any, served: tuple[str, Any, Any]) -> None:
    _, estimator, frame = served
    rows = frame.iloc[100:104]
    inputs = []
    for feature in IRIS_FEATURES:
        column = rows[feature].to_numpy(dtype=np.float32)
        tensor = httpclient.InferInput(feature, [len(column)], "FP32")
        tensor.set_data_from_numpy(column)
        inputs.append(tensor)
    result = client.infer("iris", inputs, model_version="production")
    assert [v.decode() for v in result.as_numpy("label")] == list(estimator.predict(rows))


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compressed_requests_are_answered(
    client: Any, served: tuple[str, Any, Any], algorithm: str
) -> None:
    _, estimator, frame = served
    rows = frame.iloc[60:70]
    tensor = httpclient.InferInput("input", [len(rows), 4], "FP32")
    tensor.set_data_from_numpy(rows.to_numpy(dtype=np.float32))
    result = client.infer("iris", [tensor], request_compression_algorithm=algorithm)
    assert [v.decode() for v in result.as_numpy("label")] == list(estimator.predict(rows))


def test_server_errors_reach_tritonclient_as_exceptions(client: Any) -> None:
    from tritonclient.utils import InferenceServerException

    tensor = httpclient.InferInput("input", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"expected shape \[-1, 4\], got \[1, 3\]"):
        client.infer("iris", [tensor])
    with pytest.raises(InferenceServerException, match="model 'cheese' is not served"):
        client.infer("cheese", [tensor])


def test_uvicorn_factory_serves_the_models_named_in_the_environment(registered: tuple[Settings, Any]) -> None:
    """``uvicorn --factory modelport.app:create_app``, as ``modelport serve --workers N`` runs it."""
    settings = registered[0]
    env = {**os.environ, "MODELPORT_HOME": str(settings.home), "MODELPORT_MODELS": "iris@production"}
    command = [sys.executable, "-m", "uvicorn", "--factory", "modelport.app:create_app", "--port", "0"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = ServerOutput(process)
    try:
        port = output.port(60)
        wait_ready(f"http://127.0.0.1:{port}", process, output=output)
        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        assert client.is_server_ready()
        assert client.get_model_metadata("iris")["versions"] == ["1"]
        client.close()
    finally:
        stop(process)
        output.close()
