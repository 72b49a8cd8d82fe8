"""SageMaker `text/csv` to `/invocations` for a model of several inputs (a mixed text/number
DataFrame pipeline: one input per column): rows in the signature's column order, or under a header
line in any order, answered as the model answers; what cannot be matched is a 400 that says why.
In-process, a SageMaker-mode app over the version's export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from httpx import AsyncClient

import modelport
from modelport.registry.export import export_version
from modelport.registry.registry import Registry
from modelport.server.app import build_app
from modelport.settings import Settings
from tests.support.serving import client_for
from tests.support.tabular import mixed_frame, mixed_pipeline

CSV = {"Content-Type": "text/csv"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, pd.DataFrame]:
    """The mixed pipeline (inputs color BYTES, size FP32, count INT64), registered and exported."""
    root = tmp_path_factory.mktemp("sagemaker-csv")
    settings = Settings(home=root / "home")
    frame, labels = mixed_frame()
    pipeline = mixed_pipeline(frame, labels)
    version = modelport.register(pipeline, name="tabular", sample_input=frame.head(20), settings=settings)
    assert [spec.name for spec in version.signature.inputs] == ["color", "size", "count"]
    with Registry.open(settings) as registry:
        export_version(version, registry.artifact_path(version), root / "out")
    return root / "out", pipeline, frame.iloc[100:106].reset_index(drop=True)


@pytest.fixture
async def client(exported: tuple[Path, Any, pd.DataFrame], tmp_path: Path) -> AsyncIterator[AsyncClient]:
    app = build_app(Settings(home=tmp_path, sagemaker=True, sagemaker_model_dir=exported[0]))
    async with client_for(app) as client:
        yield client


def csv_of(frame: pd.DataFrame, *, header: bool) -> str:
    return frame.to_csv(index=False, header=header)


def assert_predictions(answer: Any, pipeline: Any, frame: pd.DataFrame) -> None:
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["label"] for p in predictions] == list(pipeline.predict(frame))
    np.testing.assert_allclose([p["probabilities"] for p in predictions], pipeline.predict_proba(frame), atol=1e-5)


async def test_csv_rows_in_the_signatures_column_order_are_answered(
    client: AsyncClient, exported: tuple[Path, Any, pd.DataFrame]
) -> None:
    _, pipeline, frame = exported
    answer = await client.post("/invocations", content=csv_of(frame, header=False), headers=CSV)
    assert_predictions(answer, pipeline, frame)
    as_csv = await client.post(
        "/invocations", content=csv_of(frame, header=False), headers={**CSV, "Accept": "text/csv"}
    )
    assert as_csv.status_code == 200, as_csv.text
    lines = as_csv.text.splitlines()
    assert [line.split(",")[0] for line in lines] == list(pipeline.predict(frame))


async def test_csv_with_a_header_line_is_matched_by_name_in_any_order(
    client: AsyncClient, exported: tuple[Path, Any, pd.DataFrame]
) -> None:
    _, pipeline, frame = exported
    for order in (["color", "size", "count"], ["count", "color", "size"]):
        answer = await client.post("/invocations", content=csv_of(frame[order], header=True), headers=CSV)
        assert_predictions(answer, pipeline, frame)
    quoted = '"size","count","color"\n' + "".join(f'{r.size},{r.count},"{r.color}"\n' for r in frame.itertuples())
    assert_predictions(await client.post("/invocations", content=quoted, headers=CSV), pipeline, frame)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("colour,size,count\nred,0.5,3\n", "CSV header: missing feature 'color'; unknown feature 'colour'"),
        ("color,size\nred,0.5\n", "CSV header: missing feature 'count'"),
        ("color,size,count,extra\nred,0.5,3,1\n", "CSV header: unknown feature 'extra'"),
        ("color,size,count\n", "the CSV body has a header but no rows"),
        ("red,0.5\n", "CSV rows have 2 values; this model takes 3, one per input in this order: color, size, count"),
        ("red,big,3\n", "CSV row 0, column 'size': 'big' is not a number (FP32)"),
        ("red,0.5,3\nblue,0.1,2.5\n", "CSV row 1, column 'count': '2.5' is not a whole number (INT64)"),
        ("red,0.5,\n", "CSV row 0, column 'count': '' is not a whole number (INT64)"),
        ("red,0.5,99999999999999999999\n", "input 'count': values out of range for INT64"),
    ],
    ids=["misspelled", "missing", "unknown", "header-only", "too-few", "text-for-number", "fraction", "blank", "range"],
)
async def test_csv_that_does_not_match_the_inputs_is_400_saying_why(
    client: AsyncClient, body: str, message: str
) -> None:
    answer = await client.post("/invocations", content=body, headers=CSV)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith(message), answer.json()["error"]
