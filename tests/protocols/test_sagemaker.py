"""The SageMaker container contract, exercised as SageMaker calls it: `<image> serve`, then /ping and /invocations.

`docker run image serve` is simulated by running `python -m modelport serve` (the single argument
`serve`) with MODELPORT_SAGEMAKER_MODEL_DIR standing in for /opt/ml/model.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from modelport.errors import InvalidSetting, UntrustedArtifact
from modelport.protocols.sagemaker import accept_type, encode
from modelport.registry.export import ARCHIVE, export_version
from modelport.registry.registry import Registry
from modelport.server.app import build_app
from modelport.settings import MIB, Settings
from modelport.types import InferResult, Signature
from tests.support.models import export_sleepy_model
from tests.support.sagemaker import sagemaker_serve
from tests.support.serving import client_for, register_iris

pytestmark = pytest.mark.slow
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def exported_iris(home: Path, out: Path, iris: Any) -> Any:
    settings = Settings(home=home)
    version, model = register_iris(settings, iris)
    with Registry.open(settings) as registry:
        export_version(version, registry.artifact_path(version), out)
    return model


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> Iterator[tuple[str, Any]]:
    """The export's model.tar.gz, extracted as SageMaker does into the model dir, served with a 1 MB payload limit."""
    root = tmp_path_factory.mktemp("sagemaker")
    model = exported_iris(root / "home", root / "export", iris)
    model_dir = root / "opt" / "ml" / "model"
    with tarfile.open(root / "export" / ARCHIVE) as tar:
        tar.extractall(model_dir, filter="data")
    with sagemaker_serve(
        MODELPORT_SAGEMAKER_MODEL_DIR=str(model_dir),
        SAGEMAKER_MAX_PAYLOAD_IN_MB="1",
        SAGEMAKER_MODEL_SERVER_TIMEOUT="30",
    ) as base:
        yield base, model


def expected(model: Any) -> tuple[list[str], np.ndarray]:
    frame = pd.DataFrame(ROWS, columns=FEATURES)
    return list(model.predict(frame)), model.predict_proba(frame)


def check_rows(predictions: list[dict[str, Any]], model: Any) -> None:
    labels, probabilities = expected(model)
    assert [p["label"] for p in predictions] == labels
    np.testing.assert_allclose([p["probabilities"] for p in predictions], probabilities, atol=1e-5)


def test_ping_is_healthy_once_the_model_is_loaded(served: tuple[str, Any]) -> None:
    response = httpx.get(f"{served[0]}/ping")
    assert response.status_code == 200
    assert response.json() == {"status": "Healthy"}


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [dict(zip(FEATURES, row, strict=True)) for row in ROWS]},
        {"instances": ROWS},
        [dict(zip(FEATURES, row, strict=True)) for row in ROWS],
        ROWS,
    ],
    ids=["instances-objects", "instances-lists", "bare-list-objects", "bare-list-rows"],
)
def test_json_rows_are_answered_with_predictions(served: tuple[str, Any], body: Any) -> None:
    base, model = served
    response = httpx.post(f"{base}/invocations", json=body, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    assert response.headers["modelport-model-version"] == "1"
    check_rows(response.json()["predictions"], model)


def test_gzip_csv_invocation_is_decompressed_within_the_payload_limit(served: tuple[str, Any]) -> None:
    base, model = served
    csv = "".join(",".join(str(v) for v in row) + "\n" for row in ROWS).encode()
    headers = {"Content-Type": "text/csv", "Content-Encoding": "gzip", "Accept": "application/json"}
    response = httpx.post(f"{base}/invocations", content=gzip.compress(csv), headers=headers)
    assert response.status_code == 200, response.text
    check_rows(response.json()["predictions"], model)
    bomb = gzip.compress(b"1,2,3,4\n" * 300_000)  # 2.4 MB inflated, over SAGEMAKER_MAX_PAYLOAD_IN_MB=1
    assert httpx.post(f"{base}/invocations", content=bomb, headers=headers).status_code == 413


def test_json_columns_are_answered_with_outputs(served: tuple[str, Any]) -> None:
    base, model = served
    columns = {name: [row[i] for row in ROWS] for i, name in enumerate(FEATURES)}
    response = httpx.post(f"{base}/invocations", json={"inputs": columns})
    assert response.status_code == 200, response.text
    labels, probabilities = expected(model)
    assert response.json()["outputs"]["label"] == labels
    np.testing.assert_allclose(response.json()["outputs"]["probabilities"], probabilities, atol=1e-5)


def test_csv_rows_answered_in_csv_give_label_then_probabilities(served: tuple[str, Any]) -> None:
    base, model = served
    body = "".join(",".join(str(v) for v in row) + "\n" for row in ROWS)
    response = httpx.post(
        f"{base}/invocations", content=body, headers={"Content-Type": "text/csv", "Accept": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.splitlines()
    labels, probabilities = expected(model)
    assert [line.split(",")[0] for line in lines] == labels
    np.testing.assert_allclose([[float(v) for v in line.split(",")[1:]] for line in lines], probabilities, atol=1e-5)


def test_csv_request_with_missing_accept_is_answered_in_json(served: tuple[str, Any]) -> None:
    base, model = served
    body = "\n".join(",".join(str(v) for v in row) for row in ROWS)
    response = httpx.post(f"{base}/invocations", content=body, headers={"Content-Type": "text/csv; charset=utf-8"})
    assert response.status_code == 200, response.text
    check_rows(response.json()["predictions"], model)


def test_json_request_can_ask_for_csv_by_quality(served: tuple[str, Any]) -> None:
    base, _ = served
    accept = "application/json;q=0.5, text/csv"
    response = httpx.post(f"{base}/invocations", json={"instances": ROWS}, headers={"Accept": accept})
    assert response.status_code == 200
    assert len(response.text.splitlines()) == 2


def test_csv_with_a_header_row_is_matched_by_feature_name_in_any_order(served: tuple[str, Any]) -> None:
    base, model = served
    order = [3, 0, 2, 1]
    body = ",".join(FEATURES[i] for i in order) + "\n"
    body += "".join(",".join(str(row[i]) for i in order) + "\n" for row in ROWS)
    response = httpx.post(f"{base}/invocations", content=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    check_rows(response.json()["predictions"], model)
    misspelled = body.replace("petal_width", "petal_widht", 1)
    response = httpx.post(f"{base}/invocations", content=misspelled, headers={"Content-Type": "text/csv"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("CSV header: missing feature 'petal_width'; unknown feature")


def test_unsupported_content_type_is_415(served: tuple[str, Any]) -> None:
    response = httpx.post(f"{served[0]}/invocations", content=b"\x00", headers={"Content-Type": "image/png"})
    assert response.status_code == 415
    assert "text/csv" in response.json()["error"]


def test_unsupported_accept_is_406(served: tuple[str, Any]) -> None:
    response = httpx.post(f"{served[0]}/invocations", json=ROWS, headers={"Accept": "application/x-protobuf"})
    assert response.status_code == 406
    assert "application/json or text/csv" in response.json()["error"]


def test_payload_over_sagemaker_max_payload_is_413(served: tuple[str, Any]) -> None:
    body = b"[" + b"[5.1,3.5,1.4,0.2]," * (MIB // 17 + 1) + b"[5.1,3.5,1.4,0.2]]"
    response = httpx.post(f"{served[0]}/invocations", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"].startswith("request body is larger than the limit of 1048576 bytes (1 MiB)")
    # the advice names the variable that raises the limit here: SageMaker's, which wins in SageMaker mode
    assert response.json()["error"].endswith("raise SAGEMAKER_MAX_PAYLOAD_IN_MB on the server")
    assert response.headers["connection"] == "close"


def test_the_same_port_also_speaks_v2(served: tuple[str, Any]) -> None:
    body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]}
    response = httpx.post(f"{served[0]}/v2/models/iris/infer", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "iris"
    outputs = {output["name"]: output for output in answer["outputs"]}
    labels, probabilities = expected(served[1])
    assert outputs["label"]["data"] == labels
    np.testing.assert_allclose(outputs["probabilities"]["data"], probabilities.ravel(), atol=1e-5)


def test_plain_onnx_file_served_by_two_workers(tmp_path: Path, iris: Any) -> None:
    model = exported_iris(tmp_path / "home", tmp_path / "export", iris)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copyfile(tmp_path / "export" / "model.onnx", model_dir / "model.onnx")
    with sagemaker_serve(MODELPORT_SAGEMAKER_MODEL_DIR=str(model_dir), SAGEMAKER_MODEL_SERVER_WORKERS="2") as base:
        for _ in range(4):  # whichever worker answers
            response = httpx.post(f"{base}/invocations", json={"instances": ROWS})
            assert response.status_code == 200, response.text
            check_rows(response.json()["predictions"], model)


def test_serve_without_a_model_exits_with_what_to_put_there(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    env = {**os.environ, "MODELPORT_SAGEMAKER_MODEL_DIR": str(tmp_path / "empty"), "MODELPORT_HOST": "127.0.0.1"}
    env["MODELPORT_PORT"] = "0"
    result = subprocess.run(
        [sys.executable, "-m", "modelport", "serve"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "exactly one .onnx or .skops file" in result.stdout + result.stderr


# -- in-process: readiness and the time limit ---------------------------------------------------


@pytest.fixture
def slow_export(tmp_path: Path) -> Path:
    """A trusted custom Python model that sleeps on inputs over 100, exported from the registry
    (the deadline and health-while-computing tests are in test_overload.py)."""
    return export_sleepy_model(tmp_path, 1.5, over=100)


async def test_ping_is_503_until_the_model_is_loaded(slow_export: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, sagemaker=True, sagemaker_model_dir=slow_export, trust_exported_code=True)
    app = build_app(settings)
    transport = httpx.ASGITransport(app=app)  # no lifespan: the model is never loaded
    async with httpx.AsyncClient(transport=transport, base_url="http://sagemaker.test") as client:
        assert (await client.get("/ping")).status_code == 503
        assert (await client.post("/invocations", json=[[1.0, 2.0, 3.0]])).status_code == 503
    async with client_for(app) as client:
        ping = await client.get("/ping")
        assert (ping.status_code, ping.json()) == (200, {"status": "Healthy"})


async def test_code_running_export_stops_the_start_unless_the_server_trusts_exported_code(
    slow_export: Path, tmp_path: Path
) -> None:
    app = build_app(Settings(home=tmp_path, sagemaker=True, sagemaker_model_dir=slow_export))
    with pytest.raises(UntrustedArtifact, match="MODELPORT_TRUST_EXPORTED_CODE=1"):
        async with client_for(app):
            pass


# -- settings -----------------------------------------------------------------------------------


def test_sagemaker_settings_default_to_port_8080_on_all_interfaces() -> None:
    settings = Settings.for_sagemaker({})
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 8080, 1)
    assert settings.sagemaker
    assert settings.insecure_open
    assert not settings.sagemaker_multi_model
    assert settings.sagemaker_model_dir == Path("/opt/ml/model")


def test_sagemaker_variables_are_honoured_and_survive_the_worker_environment() -> None:
    settings = Settings.for_sagemaker(
        {
            "SAGEMAKER_BIND_TO_PORT": "9090",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "45",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6",
            "SAGEMAKER_MULTI_MODEL": "True",
        }
    )
    assert (settings.port, settings.workers, settings.request_timeout) == (9090, 3, 45.0)
    assert settings.max_body_bytes == 6 * MIB
    assert settings.sagemaker_multi_model
    assert Settings.from_env(settings.to_env()) == settings


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SAGEMAKER_BIND_TO_PORT", "http"), ("SAGEMAKER_BIND_TO_PORT", "70000"), ("SAGEMAKER_MODEL_SERVER_WORKERS", "0")],
)
def test_invalid_sagemaker_variable_names_itself(variable: str, value: str) -> None:
    with pytest.raises(InvalidSetting, match=variable):
        Settings.for_sagemaker({variable: value})


# -- wire details -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("text/csv", "text/csv"),
        ("text/*", "text/csv"),
        ("application/json, text/csv", "application/json"),
        ("text/csv;q=0.9, application/json;q=0.4", "text/csv"),
        ("image/png, text/csv;q=0.1", "text/csv"),
    ],
)
def test_accept_header_picks_the_preferred_answer_type(accept: str | None, chosen: str) -> None:
    assert accept_type(accept) == chosen


def test_csv_answer_quotes_text_cells_and_keeps_one_line_per_row() -> None:
    result = InferResult(
        model_name="m",
        model_version=2,
        outputs={
            "label": np.array(["a,b", 'say "hi"'], dtype=object),
            "scores": np.array([[0.25, 1e-8], [3.0, 0.1]], dtype=np.float32),
        },
        signature=Signature((), ()),
    )
    response = encode(result, "text/csv", row_format=True)
    assert bytes(response.body).decode() == '"a,b",0.25,1e-8\n"say ""hi""",3.0,0.1\n'
    assert response.headers["modelport-model-version"] == "2"
