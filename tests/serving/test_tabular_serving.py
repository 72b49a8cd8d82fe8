"""Tabular models end to end: a Pipeline over a mixed text/number DataFrame, and a model that handles
missing values, registered from memory and served over V2 and TF Serving REST."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from httpx import AsyncClient

import modelport
from modelport.errors import ConversionWarning, InvalidModel
from modelport.server.app import build_app
from modelport.settings import Settings
from tests.support.serving import client_for
from tests.support.tabular import missing_value_classifier, mixed_frame, mixed_pipeline, nan_frame

# tabular@1 is converted to ONNX, tabular@2 is the same pipeline served natively.
RUNTIMES = {"1": "onnx", "2": "sklearn"}


@dataclass(frozen=True)
class Served:
    settings: Settings
    frame: pd.DataFrame  # rows to send, none of them in the registration sample
    pipeline: Any
    boosted: Any  # HistGradientBoosting fitted and registered without missing values
    nan_features: pd.DataFrame


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    settings = Settings(home=tmp_path_factory.mktemp("tabular") / "home")
    frame, labels = mixed_frame()
    pipeline = mixed_pipeline(frame, labels)
    for runtime in RUNTIMES.values():
        modelport.register(pipeline, name="tabular", sample_input=frame.head(20), runtime=runtime, settings=settings)
    features, targets = nan_frame()
    boosted = missing_value_classifier(features, targets)
    modelport.register(boosted, name="boosted", sample_input=features.head(20), settings=settings)
    return Served(settings, frame.iloc[100:106].reset_index(drop=True), pipeline, boosted, features)


@pytest.fixture
async def client(served: Served) -> AsyncIterator[AsyncClient]:
    app = build_app(served.settings.with_(models=("tabular@1", "tabular@2", "boosted")))
    async with client_for(app) as client:
        yield client


def v2_columns(frame: pd.DataFrame) -> list[dict[str, Any]]:
    datatypes = {"color": "BYTES", "size": "FP64", "count": "INT64"}
    return [
        {"name": name, "shape": [len(frame)], "datatype": datatypes[name], "data": frame[name].tolist()}
        for name in frame.columns
    ]


def assert_answers(labels: list[Any], probabilities: Any, model: Any, frame: pd.DataFrame) -> None:
    assert labels == model.predict(frame).tolist()
    np.testing.assert_allclose(np.asarray(probabilities).reshape(len(frame), -1), model.predict_proba(frame), atol=1e-5)


@pytest.mark.parametrize("version", RUNTIMES)
async def test_mixed_dataframe_model_takes_one_v2_tensor_per_column(
    client: AsyncClient, served: Served, version: str
) -> None:
    meta = (await client.get(f"/v2/models/tabular/versions/{version}")).json()
    assert meta["platform"] == {"onnx": "onnxruntime_onnx", "sklearn": "sklearn"}[RUNTIMES[version]]
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        ("color", "BYTES", [-1]),
        ("size", "FP32" if RUNTIMES[version] == "onnx" else "FP64", [-1]),
        ("count", "INT64", [-1]),
    ]
    body = {"inputs": v2_columns(served.frame)}
    response = await client.post(f"/v2/models/tabular/versions/{version}/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert_answers(outputs["label"], outputs["probabilities"], served.pipeline, served.frame)


@pytest.mark.parametrize("version", RUNTIMES)
async def test_mixed_dataframe_model_takes_tf_serving_rows_and_columns(
    client: AsyncClient, served: Served, version: str
) -> None:
    rows = served.frame.to_dict(orient="records")
    assert rows[0].keys() == {"color", "size", "count"}  # written naturally: {"color": "red", "size": 0.1, ...}
    path = f"/v1/models/tabular/versions/{version}:predict"
    response = await client.post(path, json={"instances": rows})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    labels = [p["label"] for p in predictions]
    assert_answers(labels, [p["probabilities"] for p in predictions], served.pipeline, served.frame)
    response = await client.post(path, json={"inputs": served.frame.to_dict(orient="list")})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert_answers(outputs["label"], outputs["probabilities"], served.pipeline, served.frame)


async def test_mixed_dataframe_model_refuses_a_number_for_a_text_column(client: AsyncClient) -> None:
    row = {"color": 7, "size": 0.1, "count": 3}
    response = await client.post("/v1/models/tabular:predict", json={"instances": [row]})
    assert response.status_code == 400
    assert "input 'color'" in response.json()["error"]


def test_python_api_predicts_a_mixed_dataframe(served: Served) -> None:
    for version in RUNTIMES:
        with modelport.load(f"tabular@{version}", settings=served.settings) as model:
            out = model.predict(served.frame)
        assert_answers(out["label"].tolist(), out["probabilities"], served.pipeline, served.frame)


async def test_model_that_handles_missing_values_answers_null_with_its_own_prediction(
    client: AsyncClient, served: Served
) -> None:
    frame = served.nan_features.iloc[:4].copy()
    frame.iloc[0, 0] = frame.iloc[1, 3] = frame.iloc[2, 1] = np.nan
    frame.iloc[3, :] = np.nan
    rows = [[None if np.isnan(v) else v for v in row] for row in frame.to_numpy().tolist()]
    v2 = {"inputs": [{"name": "input", "shape": [4, 4], "datatype": "FP32", "data": [v for row in rows for v in row]}]}
    response = await client.post("/v2/models/boosted/infer", json=v2)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert_answers(outputs["label"], outputs["probabilities"], served.boosted, frame)
    instances = [dict(zip(frame.columns, row, strict=True)) for row in rows]
    response = await client.post("/v1/models/boosted:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    labels = [p["label"] for p in predictions]
    assert_answers(labels, [p["probabilities"] for p in predictions], served.boosted, frame)


async def test_model_that_does_not_handle_missing_values_refuses_null_saying_how_to_change_it(
    client: AsyncClient,
) -> None:
    row = {"color": "red", "size": None, "count": 3}
    response = await client.post("/v1/models/tabular:predict", json={"instances": [row]})
    assert response.status_code == 400
    message = response.json()["error"]
    assert message.startswith("input 'size': contains NaN or infinity, which this model does not accept")
    assert "fill in missing values before sending" in message
    assert "register a model that handles them" in message


REVIEWS = [
    ("a great film, fine acting", "pos"),
    ("awful plot and poor acting", "neg"),
    ("great fun, good music", "pos"),
    ("poor, bad and boring", "neg"),
    ("good story, nice and fine", "pos"),
    ("terrible, awful, bad", "neg"),
    ("nice good fun", "pos"),
    ("boring poor story", "neg"),
]


@pytest.mark.parametrize("runtime", [None, "sklearn"], ids=["default-runtime", "native"])
async def test_text_pipeline_registered_from_a_one_column_frame_classifies_the_text_not_the_column_name(
    tmp_path: Path, runtime: str | None
) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts, labels = [text for text, _ in REVIEWS], [label for _, label in REVIEWS]
    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, labels)
    settings = Settings(home=tmp_path / "home")
    with pytest.raises(InvalidModel, match=r"the sample for a text pipeline is a one-column DataFrame of texts"):
        modelport.register(pipeline, name="reviews", sample_input=texts, runtime=runtime, settings=settings)
    with warnings.catch_warnings():  # where ONNX Runtime cannot run the graph (its locale), it is served natively
        warnings.simplefilter("ignore", ConversionWarning)
        modelport.register(
            pipeline, name="reviews", sample_input=pd.DataFrame({"text": texts}), runtime=runtime, settings=settings
        )
    sent = ["good fun and a great story", "awful, boring and bad", "nice but poor"]

    def body(rows: list[str]) -> dict[str, Any]:
        return {"inputs": [{"name": "text", "shape": [len(rows)], "datatype": "BYTES", "data": rows}]}

    async with client_for(build_app(settings.with_(models=("reviews",)))) as client:
        alone = [await client.post("/v2/models/reviews/infer", json=body([text])) for text in sent[:2]]
        together = await client.post("/v2/models/reviews/infer", json=body(sent))
    assert [r.status_code for r in [*alone, together]] == [200, 200, 200], together.text
    labels_alone = [{o["name"]: o["data"] for o in r.json()["outputs"]}["label"][0] for r in alone]
    assert labels_alone == pipeline.predict(sent[:2]).tolist() == ["pos", "neg"]  # two texts, two answers
    outputs = {o["name"]: o["data"] for o in together.json()["outputs"]}
    assert outputs["label"] == pipeline.predict(sent).tolist()
    np.testing.assert_allclose(np.reshape(outputs["probabilities"], (3, 2)), pipeline.predict_proba(sent), atol=1e-5)
