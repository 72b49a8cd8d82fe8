"""Real sockets and real processes: `modelport serve` and `modelport quickstart` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import modelport
from modelport.client import predict_url
from modelport.settings import Settings
from tests.helpers import free_port, stop, wait_until_ready

pytestmark = pytest.mark.slow
ROW = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "MODELPORT_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}


@pytest.fixture
def registered(tmp_path: Path, iris: tuple[pd.DataFrame, np.ndarray]) -> Path:
    frame, labels = iris
    home = tmp_path / "home"
    model = LogisticRegression(max_iter=1000).fit(frame, labels)
    modelport.register(
        model, name="iris", sample_input=frame.head(30), alias="production", settings=Settings(home=home)
    )
    return home


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def server(request: pytest.FixtureRequest, registered: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "modelport", "serve", "iris@production", "--port", str(port)]
    command += ["--workers", str(request.param)]
    process = subprocess.Popen(
        command, env=_env(registered), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process)
        yield base
    finally:
        output = stop(process)
        assert process.returncode == 0, output


def test_served_model_answers_both_protocols_over_http(server: str) -> None:
    tf = httpx.post(f"{server}/v1/models/iris/labels/production:predict", json={"instances": [ROW, ROW]})
    assert tf.status_code == 200, tf.text
    assert [p["label"] for p in tf.json()["predictions"]] == ["virginica", "virginica"]
    assert tf.headers["modelport-model-version"] == "1"
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": list(ROW.values())}]}
    v2 = httpx.post(f"{server}/v2/models/iris/versions/production/infer", json=body)
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["label"]["data"] == ["virginica"]
    assert v2.json()["model_version"] == "1"
    assert httpx.get(f"{server}/docs").status_code == 200


def test_predict_command_reaches_a_server_by_url(server: str) -> None:
    v2 = predict_url(f"{server}/v2/models/iris", [list(ROW.values())])
    assert v2["label"].tolist() == ["virginica"]
    tf = predict_url(f"{server}/v1/models/iris", [ROW])
    assert tf["label"].tolist() == ["virginica"]


def test_server_survives_bad_requests_over_a_real_socket(server: str) -> None:
    url = f"{server}/v2/models/iris/infer"
    for content in [b"{", b"", b"[]", b'{"inputs": "x"}']:
        response = httpx.post(url, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 400, (content, response.text)
        assert response.json()["error"]
    good = httpx.post(f"{server}/v1/models/iris:predict", json={"instances": [ROW]})
    assert good.status_code == 200


def test_quickstart_runs_twice_and_serves_until_interrupted(tmp_path: Path) -> None:
    env = _env(tmp_path / "home")
    port = free_port()
    first = subprocess.run(
        [sys.executable, "-m", "modelport", "quickstart", "--port", str(port), "--no-serve"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert "registered iris@1 as iris@production" in first.stdout
    assert "virginica" in first.stdout
    assert f"http://127.0.0.1:{port}/docs" in first.stdout
    assert "curl -s" in first.stdout

    second = subprocess.Popen(
        [sys.executable, "-m", "modelport", "quickstart", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert second.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 240
    for line in second.stdout:
        seen.append(line)
        if "press Ctrl-C" in line or time.monotonic() > deadline:
            break
    text = "".join(seen)
    assert "registered iris@2 as iris@production" in text, text
    assert httpx.get(f"http://127.0.0.1:{port}/v2/models/iris/ready").status_code == 200
    output = stop(second)
    assert second.returncode == 0, text + output
    assert "stopped" in output
