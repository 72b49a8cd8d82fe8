"""/openapi.json and /docs generated from the served models' signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from httpx import AsyncClient
from openapi_spec_validator import validate

from modelport.api import register
from modelport.server.app import build_app
from modelport.settings import Settings
from tests.conftest import IRIS_FEATURES
from tests.support.serving import client_for, register_iris
from tests.support.tabular import mixed_frame, mixed_pipeline, write_two_input_onnx


@pytest.fixture(scope="module")
def settings_with_iris(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("openapi") / "home")
    register_iris(settings, iris, aliases=("production",))
    register_iris(settings, iris, aliases=("staging",), strength=0.1)
    return settings.with_(models=("iris@production", "iris@staging"))


@pytest.fixture
async def client(settings_with_iris: Settings) -> AsyncIterator[AsyncClient]:
    async with client_for(build_app(settings_with_iris)) as client:
        yield client


@pytest.fixture
async def spec(client: AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_spec_validates_as_openapi_3(spec: dict[str, Any]) -> None:
    validate(spec)
    assert spec["openapi"].startswith("3.")


def test_spec_has_concrete_paths_for_each_served_model(spec: dict[str, Any]) -> None:
    paths = set(spec["paths"])
    assert {
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/iris",
        "/v2/models/iris/ready",
        "/v2/models/iris/infer",
        "/v2/models/iris/versions/{version}/infer",
        "/v1/models/iris",
        "/v1/models/iris/metadata",
        "/v1/models/iris:predict",
        "/v1/models/iris/versions/{version}:predict",
        "/v1/models/iris/labels/{label}:predict",
    } <= paths
    version = spec["paths"]["/v2/models/iris/versions/{version}/infer"]["post"]["parameters"][0]
    assert version["schema"]["enum"] == ["1", "2", "production", "staging", "latest"]
    label = spec["paths"]["/v1/models/iris/labels/{label}:predict"]["post"]["parameters"][0]
    assert label["schema"]["enum"] == ["production", "staging"]


def tensor_names(form: dict[str, Any]) -> list[str]:
    """The input names a V2 ``inputs`` array schema holds, each exactly once."""
    assert form["minItems"] == form["maxItems"]
    tensors = [form["items"]] if form["maxItems"] == 1 else form["items"]["anyOf"]
    return [(t.get("anyOf") or [t])[0]["properties"]["name"]["const"] for t in tensors]


def test_request_schemas_name_the_real_inputs_and_features(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    whole, by_feature = schemas["iris.V2Request"]["properties"]["inputs"]["oneOf"]
    assert tensor_names(whole) == ["input"]
    assert "sepal_length" in whole["items"]["description"]
    assert tensor_names(by_feature) == IRIS_FEATURES
    fp32 = whole["items"]["anyOf"][0]["properties"]
    assert fp32["shape"]["prefixItems"] == [{"type": "integer", "minimum": 0}, {"const": 4}]
    assert fp32["data"]["items"] == {
        "type": "number",
        "minimum": -3.4028234663852886e38,
        "maximum": 3.4028234663852886e38,
    }
    row = schemas["iris.TFRequest"]["properties"]["instances"]["oneOf"][0]["items"]
    assert row["required"] == IRIS_FEATURES
    assert row["additionalProperties"] is False
    assert row["properties"]["petal_width"]["type"] == "number"
    outputs = schemas["iris.V2Request"]["properties"]["outputs"]["items"]["properties"]["name"]["enum"]
    assert outputs == ["label", "probabilities"]


def _concrete(path: str, operation: dict[str, Any]) -> str:
    for param in operation.get("parameters", []):
        path = path.replace("{" + param["name"] + "}", param["example"])
    return path


async def test_every_example_and_endpoint_in_the_spec_answers_200(client: AsyncClient, spec: dict[str, Any]) -> None:
    posted = 0
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            url = _concrete(path, operation)
            if method == "post":
                example = operation["requestBody"]["content"]["application/json"]["example"]
                response = await client.post(url, json=example)
                posted += 1
            else:
                response = await client.get(url)
            assert response.status_code == 200, (method, url, response.text)
    assert posted == 5  # V2 infer x2, TF predict x3


async def test_docs_serve_swagger_ui_pointing_at_the_spec(client: AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "swagger-ui" in response.text
    assert "/openapi.json" in response.text
    assert "https://" not in response.text  # nothing from a CDN: the assets come from the server


async def test_docs_assets_come_from_the_package_and_only_those_the_page_loads(client: AsyncClient) -> None:
    script = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in script.text
    assert (await client.get("/docs/assets/swagger-ui.css")).headers["content-type"].startswith("text/css")
    for name in ("index.html", "swagger-ui.js.map"):
        response = await client.get(f"/docs/assets/{name}")
        assert response.status_code == 404, name
        assert "no such documentation asset" in response.json()["error"]
    assert (await client.get("/docs/assets/..%2F__init__.py")).status_code == 404


@pytest.fixture(scope="module")
def settings_with_shapes(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> Settings:
    """iris, a model with a 2-D and a 1-D input, a mixed-column model, and a model with a scalar
    input, which the document cannot describe (it has no batch dimension)."""
    root = tmp_path_factory.mktemp("openapi-shapes")
    settings = Settings(home=root / "home")
    register_iris(settings, iris)
    rng = np.random.default_rng(0)
    sample = {"x": rng.normal(size=(4, 3)).astype(np.float32), "weight": np.ones(4, np.float32)}
    register(write_two_input_onnx(root / "pair.onnx"), name="pair", sample_input=sample, settings=settings)
    frame, labels = mixed_frame()
    register(mixed_pipeline(frame, labels), name="tabular", sample_input=frame.head(10), settings=settings)
    register(write_scalar_onnx(root / "scalar.onnx"), name="scalar", settings=settings)
    return settings.with_(models=("iris", "pair", "tabular", "scalar"))


def write_scalar_onnx(path: Path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["s", "s"], ["square"])],
        "scalar",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("square", TensorProto.FLOAT, [])],
    )
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    return path


async def test_each_model_is_documented_on_its_own_so_one_cannot_break_the_others(
    settings_with_shapes: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for(build_app(settings_with_shapes)) as client:
        response = await client.get("/openapi.json")
        assert response.status_code == 200, response.text
        spec = response.json()
        validate(spec)
        models = [path for path in spec["paths"] if path.startswith(("/v1/models/", "/v2/models/"))]
        documented = {path.split("/")[3].split(":")[0] for path in models}
        assert documented == {"iris", "pair", "tabular"}
        assert "Left out (see the server log): scalar." in spec["info"]["description"]
        assert "OpenAPI: model scalar is left out of the document" in caplog.text
        posted = 0
        for path, item in spec["paths"].items():
            operation = item.get("post")
            if operation and ("/pair" in path or "/tabular" in path):
                example = operation["requestBody"]["content"]["application/json"]["example"]
                response = await client.post(_concrete(path, operation), json=example)
                assert response.status_code == 200, (path, example, response.text)
                posted += 1
        assert posted == 8  # V2 infer x2, TF predict x2, per model
        assert (await client.get("/docs")).status_code == 200


async def test_tf_example_of_a_model_with_several_inputs_gives_each_row_as_an_object(
    settings_with_shapes: Settings,
) -> None:
    async with client_for(build_app(settings_with_shapes)) as client:
        spec = (await client.get("/openapi.json")).json()
    post = spec["paths"]["/v1/models/pair:predict"]["post"]
    (row, *_) = post["requestBody"]["content"]["application/json"]["example"]["instances"]
    assert row.keys() == {"x", "weight"}
    assert isinstance(row["weight"], float)
    assert len(row["x"]) == 3
    post = spec["paths"]["/v1/models/tabular:predict"]["post"]
    (row, *_) = post["requestBody"]["content"]["application/json"]["example"]["instances"]
    assert row.keys() == {"color", "size", "count"}
    assert isinstance(row["color"], str)


@pytest.fixture(scope="module")
def settings_with_class_ids(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> tuple[Settings, Any, Any]:
    """Iris with integer class ids (0, 1, 2) as labels: an INT64 label output, whose schema alone
    made Swagger show -9223372036854776000."""
    from sklearn.linear_model import LogisticRegression

    frame, names = iris
    ids = np.unique(names, return_inverse=True)[1]
    model = LogisticRegression(max_iter=500).fit(frame, ids)
    settings = Settings(home=tmp_path_factory.mktemp("openapi-ids") / "home")
    register(model, name="iris", sample_input=frame.head(20), alias="production", settings=settings)
    return settings.with_(models=("iris@production",)), model, frame


async def test_response_examples_are_the_models_real_answers_to_the_request_examples(
    settings_with_class_ids: tuple[Settings, Any, Any],
) -> None:
    settings, model, frame = settings_with_class_ids
    async with client_for(build_app(settings)) as client:
        spec = (await client.get("/openapi.json")).json()
        validate(spec)
        for path in ("/v2/models/iris/infer", "/v1/models/iris:predict"):
            operation = spec["paths"][path]["post"]
            request = operation["requestBody"]["content"]["application/json"]["example"]
            example = operation["responses"]["200"]["content"]["application/json"]["example"]
            answered = (await client.post(path, json=request)).json()
            assert example == answered, path  # what the server answers to the request example
            if path.startswith("/v2"):
                outputs = {o["name"]: o for o in example["outputs"]}
                labels = outputs["label"]["data"]
                probabilities = np.reshape(outputs["probabilities"]["data"], outputs["probabilities"]["shape"])
            else:
                labels = [p["label"] for p in example["predictions"]]
                probabilities = np.array([p["probabilities"] for p in example["predictions"]])
            rows = frame[IRIS_FEATURES].head(len(labels))
            assert labels == model.predict(rows).tolist()
            assert set(labels) <= {0, 1, 2}
            np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
            np.testing.assert_allclose(probabilities, model.predict_proba(rows), atol=1e-5)
