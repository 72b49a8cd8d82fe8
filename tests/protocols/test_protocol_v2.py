"""Open Inference Protocol V2 over the real app: a real Iris model registered and served by ref."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from httpx import AsyncClient

from modelport.server.app import build_app
from modelport.serving.manager import ModelManager
from modelport.settings import Settings
from modelport.version import __version__
from tests.conftest import IRIS_FEATURES
from tests.support.serving import DirectorySource, client_for, fake_version, register_iris

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> tuple[Settings, Any, Any]:
    """A registry with iris@1 (production) and iris@2 (staging, a differently regularised fit)."""
    settings = Settings(home=tmp_path_factory.mktemp("v2") / "home")
    _, production = register_iris(settings, iris, aliases=("production",))
    _, staging = register_iris(settings, iris, aliases=("staging",), strength=0.01)
    return settings, production, staging


@pytest.fixture
async def client(registered: tuple[Settings, Any, Any]) -> AsyncIterator[AsyncClient]:
    settings = registered[0].with_(models=("iris@production", "iris@staging"))
    async with client_for(build_app(settings)) as client:
        yield client


def tensor(data: Any, shape: list[int], name: str = "input", datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def flat(rows: list[list[float]]) -> list[float]:
    return [v for row in rows for v in row]


def frame(rows: list[list[float]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=IRIS_FEATURES)


def output(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(o for o in body["outputs"] if o["name"] == name)


async def test_health_and_server_metadata(client: AsyncClient) -> None:
    live, ready = await client.get("/v2/health/live"), await client.get("/v2/health/ready")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    meta = (await client.get("/v2")).json()
    assert meta == {"name": "modelport", "version": __version__, "extensions": ["binary_tensor_data"]}


async def test_ready_is_refused_until_the_models_are_loaded(registered: tuple[Settings, Any, Any]) -> None:
    import httpx

    app = build_app(registered[0].with_(models=("iris@production",)))
    transport = httpx.ASGITransport(app=app)  # no lifespan run: nothing loaded yet
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as raw:
        live = await raw.get("/v2/health/live")
        assert (live.status_code, live.json()) == (200, {"live": True})  # alive while it starts
        response = await raw.get("/v2/health/ready")
        assert response.status_code == 503
        assert "not ready" in response.json()["error"]
        response = await raw.post("/v2/models/iris/infer", json={"inputs": [tensor(ROWS[0], [1, 4])]})
        assert response.status_code == 503
        assert response.json() == {"error": "the server is starting: models are still loading; retry shortly"}


async def test_model_metadata_lists_inputs_outputs_versions_and_platform(client: AsyncClient) -> None:
    meta = (await client.get("/v2/models/iris")).json()
    assert meta["name"] == "iris"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 4], "parameters": {"feature_names": IRIS_FEATURES}}
    ]
    assert meta["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert (await client.get("/v2/models/iris/versions/2")).json()["versions"] == ["2"]
    assert (await client.get("/v2/models/iris/versions/staging")).json()["versions"] == ["2"]


async def test_model_ready_by_name_version_and_alias(client: AsyncClient) -> None:
    for path in ("/v2/models/iris/ready", "/v2/models/iris/versions/1/ready", "/v2/models/iris/versions/staging/ready"):
        assert (await client.get(path)).status_code == 200, path
    response = await client.get("/v2/models/iris/versions/9/ready")
    assert response.status_code == 404
    assert (
        response.json()["error"]
        == "model 'iris' has no version 9 served (versions: 1, 2; aliases: production, staging)"
    )


async def test_infer_matches_the_scikit_learn_model(client: AsyncClient, registered: tuple[Settings, Any, Any]) -> None:
    estimator = registered[1]
    response = await client.post("/v2/models/iris/infer", json={"id": "req-7", "inputs": [tensor(flat(ROWS), [3, 4])]})
    assert response.status_code == 200, response.text
    assert response.headers["modelport-model-version"] == "1"
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("iris", "1", "req-7")
    label = output(body, "label")
    assert label == {"name": "label", "datatype": "BYTES", "shape": [3], "data": list(estimator.predict(frame(ROWS)))}
    probabilities = output(body, "probabilities")
    assert probabilities["shape"] == [3, 3]
    expected = estimator.predict_proba(frame(ROWS)).ravel()
    np.testing.assert_allclose(probabilities["data"], expected, atol=1e-5)


async def test_version_alias_and_latest_paths_pick_the_right_version(
    client: AsyncClient, registered: tuple[Settings, Any, Any]
) -> None:
    staging = registered[2]
    request = {"inputs": [tensor(flat(ROWS), [3, 4])], "outputs": [{"name": "probabilities"}]}
    for path, version in (
        ("/v2/models/iris/versions/production/infer", "1"),
        ("/v2/models/iris/versions/2/infer", "2"),
        ("/v2/models/iris/versions/staging/infer", "2"),
        ("/v2/models/iris/versions/latest/infer", "2"),
    ):
        response = await client.post(path, json=request)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["model_version"] == version
        assert response.headers["modelport-model-version"] == version
    np.testing.assert_allclose(
        response.json()["outputs"][0]["data"], staging.predict_proba(frame(ROWS)).ravel(), atol=1e-5
    )


async def test_nested_data_and_declared_fp64_are_accepted(client: AsyncClient) -> None:
    flat_body = (await client.post("/v2/models/iris/infer", json={"inputs": [tensor(flat(ROWS), [3, 4])]})).json()
    nested = await client.post("/v2/models/iris/infer", json={"inputs": [tensor(ROWS, [3, 4], datatype="FP64")]})
    assert nested.status_code == 200, nested.text
    assert nested.json() == flat_body


async def test_one_tensor_per_feature_is_assembled_into_the_model_input(client: AsyncClient) -> None:
    columns = list(zip(*ROWS, strict=True))
    by_feature = [tensor(list(columns[i]), [3], name=f) for i, f in enumerate(IRIS_FEATURES)]
    by_feature[1] = tensor([[v] for v in columns[1]], [3, 1], name=IRIS_FEATURES[1])  # [N, 1] works too
    response = await client.post("/v2/models/iris/infer", json={"inputs": by_feature[::-1]})
    assert response.status_code == 200, response.text
    whole = (await client.post("/v2/models/iris/infer", json={"inputs": [tensor(flat(ROWS), [3, 4])]})).json()
    assert response.json() == whole


async def test_missing_feature_tensor_names_the_feature(client: AsyncClient) -> None:
    inputs = [tensor([1.0], [1], name=f) for f in IRIS_FEATURES[:3]]
    response = await client.post("/v2/models/iris/infer", json={"inputs": inputs})
    assert response.status_code == 400
    assert response.json()["error"] == f"missing feature 'petal_width' (features: {', '.join(IRIS_FEATURES)})"


async def test_output_selection_returns_only_the_requested_outputs(client: AsyncClient) -> None:
    request = {"inputs": [tensor(flat(ROWS), [3, 4])], "outputs": [{"name": "label"}]}
    body = (await client.post("/v2/models/iris/infer", json=request)).json()
    assert [o["name"] for o in body["outputs"]] == ["label"]


def binary_request(rows: list[list[float]], *, binary_output: bool) -> tuple[bytes, dict[str, str]]:
    raw = np.asarray(rows, dtype=np.float32).tobytes()
    doc: dict[str, Any] = {
        "inputs": [
            {"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
        ]
    }
    if binary_output:
        doc["parameters"] = {"binary_data_output": True}
    header = orjson.dumps(doc)
    return header + raw, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def decode_strings(raw: bytes) -> list[str]:
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + length].decode())
        offset += 4 + length
    return items


async def test_binary_tensor_data_in_and_out(client: AsyncClient, registered: tuple[Settings, Any, Any]) -> None:
    estimator = registered[1]
    body, headers = binary_request(ROWS, binary_output=True)
    response = await client.post("/v2/models/iris/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    size = int(response.headers["inference-header-content-length"])
    header = orjson.loads(response.content[:size])
    payload = response.content[size:]
    label, probabilities = header["outputs"]
    assert "data" not in label
    label_bytes = payload[: label["parameters"]["binary_data_size"]]
    prob_bytes = payload[label["parameters"]["binary_data_size"] :]
    assert len(prob_bytes) == probabilities["parameters"]["binary_data_size"] == 3 * 3 * 4
    assert decode_strings(label_bytes) == list(estimator.predict(frame(ROWS)))
    got = np.frombuffer(prob_bytes, dtype="<f4").reshape(3, 3)
    np.testing.assert_allclose(got, estimator.predict_proba(frame(ROWS)), atol=1e-5)


async def test_binary_input_with_json_output_per_output_choice(client: AsyncClient) -> None:
    body, headers = binary_request(ROWS, binary_output=False)
    doc_len = int(headers["Inference-Header-Content-Length"])
    doc = orjson.loads(body[:doc_len])
    doc["outputs"] = [{"name": "label", "parameters": {"binary_data": False}}, {"name": "probabilities"}]
    header = orjson.dumps(doc)
    headers["Inference-Header-Content-Length"] = str(len(header))
    response = await client.post("/v2/models/iris/infer", content=header + body[doc_len:], headers=headers)
    assert response.status_code == 200, response.text
    assert "inference-header-content-length" not in response.headers
    assert output(response.json(), "label")["data"][0] == "setosa"


async def test_binary_size_that_does_not_match_the_shape_is_refused(client: AsyncClient) -> None:
    body, headers = binary_request(ROWS, binary_output=False)
    response = await client.post("/v2/models/iris/infer", content=body[:-4], headers=headers)
    assert response.status_code == 400
    assert "runs past the end of the body" in response.json()["error"]


async def test_several_names_and_versions_served_by_one_app(tmp_path: Path) -> None:
    source = DirectorySource([fake_version(tmp_path, "iris", 1), fake_version(tmp_path, "wine", 3)])
    manager = ModelManager(source)
    app = build_app(Settings(home=tmp_path / "home", models=("iris", "wine@3")), manager=manager)
    async with client_for(app) as client:
        response = await client.post("/v2/models/wine/versions/3/infer", json={"inputs": [tensor(ROWS[0], [1, 4])]})
        assert response.status_code == 200
        assert response.json()["model_name"] == "wine"
        response = await client.get("/v2/models/cheese")
        assert response.status_code == 404
        assert response.json() == {"error": "model 'cheese' is not served (served: iris, wine)"}
    manager.close()
