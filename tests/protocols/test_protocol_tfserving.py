"""TF Serving REST over the real app: status, metadata, :predict in row and columnar form."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from httpx import AsyncClient

from modelport.protocols.tfserving import parse_path
from modelport.server.app import build_app
from modelport.serving.manager import ModelManager
from modelport.settings import Settings
from modelport.types import Signature, TensorSpec
from tests.conftest import IRIS_FEATURES
from tests.support.serving import DirectorySource, client_for, fake_version, register_iris, with_signature

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> tuple[Settings, Any]:
    settings = Settings(home=tmp_path_factory.mktemp("tf") / "home")
    _, estimator = register_iris(settings, iris, aliases=("production",))
    return settings, estimator


@pytest.fixture
async def client(registered: tuple[Settings, Any]) -> AsyncIterator[AsyncClient]:
    async with client_for(build_app(registered[0].with_(models=("iris@production",)))) as client:
        yield client


def expected(estimator: Any, rows: list[list[float]]) -> tuple[list[str], np.ndarray]:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=IRIS_FEATURES)
    return list(estimator.predict(frame)), estimator.predict_proba(frame)


def test_paths_parse_into_name_selector_and_action() -> None:
    assert parse_path("iris") == parse_path("iris")
    assert (parse_path("iris").name, parse_path("iris").action) == ("iris", "status")
    target = parse_path("iris/versions/3:predict")
    assert (target.name, target.selector, target.action) == ("iris", "3", "predict")
    target = parse_path("my.model/labels/production/metadata")
    assert (target.name, target.selector, target.action) == ("my.model", "production", "metadata")


async def test_status_of_the_model_its_version_and_label(client: AsyncClient) -> None:
    status = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    for path in ("/v1/models/iris", "/v1/models/iris/versions/1", "/v1/models/iris/labels/production"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.json() == status


async def test_metadata_has_the_tf_serving_signature_def(client: AsyncClient) -> None:
    body = (await client.get("/v1/models/iris/metadata")).json()
    assert body["model_spec"] == {"name": "iris", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["input"]["dtype"] == "DT_FLOAT"
    assert signature["inputs"]["input"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""},
        {"size": "4", "name": ""},
    ]
    assert signature["outputs"]["label"]["dtype"] == "DT_STRING"
    assert (await client.get("/v1/models/iris/labels/production/metadata")).json() == body


async def test_predict_rows_as_lists_and_as_feature_objects(
    client: AsyncClient, registered: tuple[Settings, Any]
) -> None:
    labels, probabilities = expected(registered[1], ROWS)
    for instances in (ROWS, [dict(zip(IRIS_FEATURES, row, strict=True)) for row in ROWS]):
        response = await client.post("/v1/models/iris:predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        assert response.headers["modelport-model-version"] == "1"
        predictions = response.json()["predictions"]
        assert [p["label"] for p in predictions] == labels
        np.testing.assert_allclose([p["probabilities"] for p in predictions], probabilities, atol=1e-5)


async def test_predict_columnar_inputs_as_a_tensor_or_by_feature(
    client: AsyncClient, registered: tuple[Settings, Any]
) -> None:
    labels, probabilities = expected(registered[1], ROWS)
    columns = {f: [row[i] for row in ROWS] for i, f in enumerate(IRIS_FEATURES)}
    for inputs in (ROWS, {"input": ROWS}, columns):
        response = await client.post("/v1/models/iris/versions/1:predict", json={"inputs": inputs})
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        assert outputs["label"] == labels
        np.testing.assert_allclose(outputs["probabilities"], probabilities, atol=1e-5)


async def test_predict_through_a_label(client: AsyncClient) -> None:
    response = await client.post("/v1/models/iris/labels/production:predict", json={"instances": ROWS[:1]})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "setosa"


async def test_unknown_verbs_methods_and_paths_are_refused(client: AsyncClient) -> None:
    response = await client.post("/v1/models/iris:classify", json={"instances": ROWS})
    assert response.status_code == 404
    assert response.json()["error"].startswith("':classify' is not supported; modelport serves ':predict'")
    response = await client.post("/v1/models/iris", json={"instances": ROWS})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json()["error"].startswith("POST is not supported on this path; use GET for status and /metadata")
    response = await client.get("/v1/models/iris/versions/production")
    assert response.status_code == 400
    assert "use /labels/production for an alias" in response.json()["error"]
    response = await client.get("/v1/models/iris/weights")
    assert response.status_code == 404
    assert response.json()["error"].startswith("no such endpoint /v1/models/iris/weights; paths are /v1/models/NAME")


@pytest.mark.parametrize("path", ["/v1/models/iris", "/v1/models/iris/metadata", "/v1/models/iris/versions/1"])
async def test_other_methods_on_status_and_metadata_are_405_allowing_exactly_get_and_head(
    client: AsyncClient, path: str
) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        response = await client.request(method, path)
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "GET, HEAD", method  # not POST, which is :predict's
        assert response.json()["error"].startswith(f"{method} is not supported on this path; use GET")
    assert (await client.head(path)).status_code == 200
    response = await client.get("/v1/models/iris:predict")
    assert (response.status_code, response.headers["allow"]) == (405, "POST")


async def test_single_output_model_answers_plain_lists(tmp_path: Path) -> None:
    pair = fake_version(tmp_path, "scores", 1, features=None)
    signature = pair[0].signature
    only_probabilities = Signature(signature.inputs, (signature.outputs[1],), signature.example)
    source = DirectorySource([with_signature(pair, only_probabilities)])
    manager = ModelManager(source)
    async with client_for(build_app(Settings(home=tmp_path / "h", models=("scores",)), manager=manager)) as client:
        rows = (await client.post("/v1/models/scores:predict", json={"instances": ROWS})).json()
        assert list(rows) == ["predictions"]
        assert np.asarray(rows["predictions"]).shape == (2, 3)
        columns = (await client.post("/v1/models/scores:predict", json={"inputs": ROWS})).json()
        assert columns == {"outputs": rows["predictions"]}
    manager.close()


WEIGHTED_SUM = """
import numpy as np


class Model:
    def load(self, path):
        pass

    def predict(self, inputs):
        return {"total": inputs["input"].sum(axis=1) * inputs["weight"]}
"""


async def test_multi_input_rows_are_keyed_by_input_name(tmp_path: Path) -> None:
    """A custom model with two named inputs: rows are objects keyed by input name, columns a dict."""
    directory = tmp_path / "weighted"
    directory.mkdir()
    (directory / "model.py").write_text(WEIGHTED_SUM)
    signature = Signature(
        (TensorSpec("input", "FP64", (-1, 4)), TensorSpec("weight", "FP64", (-1,))),
        (TensorSpec("total", "FP64", (-1,)),),
        example={"input": ROWS, "weight": [1.0, 2.0]},
    )
    version = replace(fake_version(tmp_path, "weighted", 1)[0], runtime="python", signature=signature)
    manager = ModelManager(DirectorySource([(version, directory)]))
    async with client_for(build_app(Settings(home=tmp_path / "h", models=("weighted",)), manager=manager)) as client:
        instances = [{"input": ROWS[0], "weight": 1.0}, {"input": ROWS[1], "weight": 2.0}]
        response = await client.post("/v1/models/weighted:predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        totals = [sum(ROWS[0]), 2 * sum(ROWS[1])]
        np.testing.assert_allclose(response.json()["predictions"], totals)
        response = await client.post("/v1/models/weighted:predict", json={"inputs": {"input": ROWS, "weight": [1, 2]}})
        np.testing.assert_allclose(response.json()["outputs"], totals)
        response = await client.post("/v1/models/weighted:predict", json={"instances": [{"input": ROWS[0]}]})
        assert response.status_code == 400
        assert response.json()["error"] == "missing input 'weight' in a row (expected: input, weight)"
    manager.close()


@pytest.mark.parametrize("value", [{}, [], 0, None, False])
async def test_a_signature_name_that_is_not_a_string_is_refused(value: Any, client: Any) -> None:
    body = {"instances": [[5.1, 3.5, 1.4, 0.2]], "signature_name": value}
    answer = await client.post("/v1/models/iris:predict", json=body)
    assert answer.status_code == 400
    assert "signature_name must be a string" in answer.json()["error"]
