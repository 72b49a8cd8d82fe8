"""Real sockets and real processes: `modelport serve` and `modelport quickstart` as a user runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import modelport
from modelport.cli.client import predict_url
from modelport.server.spawn import serving, start, stop
from modelport.settings import Settings

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
    with serving(["iris@production", "--workers", str(request.param)], env=_env(registered)) as server:
        yield server.base
    assert server.process.returncode == 0, server.output.text


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
    # Whole numbers in row objects: the client declares the model's FP32, which the server checks.
    whole = predict_url(
        f"{server}/v2/models/iris", [{"sepal_length": 6, "sepal_width": 3, "petal_length": 5, "petal_width": 2}]
    )
    assert whole["label"].tolist() == ["virginica"]
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
    first = subprocess.run(
        [sys.executable, "-m", "modelport", "quickstart", "--port", "0", "--no-serve"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert "registered iris@1 as iris@production" in first.stdout
    assert "virginica" in first.stdout
    assert re.search(r"http://127\.0\.0\.1:\d+/docs", first.stdout)
    assert "curl -s" in first.stdout

    second, output = start(["quickstart", "--port", "0"], env=env)
    try:
        output.wait_for(re.compile("press Ctrl-C"), 240)
        text = output.text
        assert "registered iris@2 as iris@production" in text, text
        port = re.search(r"serving on http://127\.0\.0\.1:(\d+)", text)
        assert port is not None, text
        assert httpx.get(f"http://127.0.0.1:{port.group(1)}/v2/models/iris/ready").status_code == 200
    finally:
        assert stop(second) == 0, output.text
    assert "stopped" in output.close()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a non-interactive shell's `cmd &` starts with


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("sig", "inherited"),
    [(signal.SIGINT, _ignore_sigint), (signal.SIGTERM, None)],
    ids=["sigint-inherited-ignored", "sigterm"],
)
def test_quickstart_stops_its_server_and_exits_on_a_signal_whatever_it_inherited(
    tmp_path: Path, sig: signal.Signals, inherited: Any
) -> None:
    """Started by a non-interactive shell's `cmd &` (SIGINT ignored, inherited by every child),
    the quickstart ignored SIGINT while serving until it was killed; SIGTERM killed it at once
    and left its server process running on the port."""
    process, output = start(["quickstart", "--port", "0"], env=_env(tmp_path / "home"), preexec_fn=inherited)
    server = None
    try:
        output.wait_for(re.compile("press Ctrl-C"), 240)
        started = re.search(r"Started server process \[(\d+)\]", output.text)
        assert started is not None, output.text
        server = int(started.group(1))
        process.send_signal(sig)
        assert process.wait(timeout=20) == 0, output.text
        assert not _running(server), f"the server process {server} outlived the quickstart"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if server is not None and _running(server):
            os.kill(server, signal.SIGKILL)
        text = output.close()
    assert "stopped" in text
