"""/openapi.json and /docs generated from the served models' signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from httpx import AsyncClient
from openapi_spec_validator import validate

from modelport.app import build_app
from modelport.settings import Settings
from tests.conftest import IRIS_FEATURES
from tests.serving import client_for, register_iris


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


def test_request_schemas_name_the_real_inputs_and_features(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    v2 = schemas["iris.V2Request"]["properties"]["inputs"]["items"]["anyOf"]
    assert v2[0]["properties"]["name"]["enum"] == ["input"]
    assert "sepal_length" in v2[0]["description"]
    assert v2[1]["properties"]["name"]["enum"] == IRIS_FEATURES
    row = schemas["iris.TFRequest"]["properties"]["instances"]["items"]
    assert row["required"] == IRIS_FEATURES
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
