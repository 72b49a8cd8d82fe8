"""The OpenAPI document against a real server, checked by schemathesis.

A real uvicorn (port 0) serves models of several shapes; schemathesis (its CLI, in a subprocess)
reads /openapi.json and sends every operation its examples, boundary cases and fuzzed requests,
schema-valid and schema-violating, with a fixed seed and a bounded number of examples. Every
check must pass: no 5xx, every status, header, content type and body as documented, valid data
accepted and invalid data refused, and other HTTP methods answered 405 with an ``Allow`` that lists
exactly the documented methods. The rules JSON Schema cannot state are in
tests/support/schemathesis_hooks.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelport.api import register
from modelport.server.app import build_app
from modelport.settings import Settings
from tests.support.serving import running
from tests.support.tabular import (
    missing_value_classifier,
    mixed_frame,
    mixed_pipeline,
    nan_frame,
    write_embedding_onnx,
    write_flags_onnx,
    write_pixels_onnx,
    write_two_input_onnx,
    write_word_codes_onnx,
)

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("iris", "tabular", "boosted", "pair", "words", "embed", "flags", "pixels")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> Iterator[str]:
    """Models of several shapes: iris (one 2-D input with feature names), tabular (one input per
    column of a mixed DataFrame: text, float, integer), boosted (takes missing values), pair (a
    2-D and a 1-D input), words (one text input), embed (token ids, INT64; ids past its table are
    refused by the model at run time), flags (BOOL in, BOOL and INT32 out), pixels (3-D UINT8)."""
    root = tmp_path_factory.mktemp("conformance")
    settings = Settings(home=root / "home")
    frame, labels = iris
    register(
        LogisticRegression(max_iter=500).fit(frame, labels), name="iris", sample_input=frame.head(20), settings=settings
    )
    table, classes = mixed_frame()
    register(mixed_pipeline(table, classes), name="tabular", sample_input=table.head(20), settings=settings)
    features, targets = nan_frame()
    register(
        missing_value_classifier(features, targets), name="boosted", sample_input=features.head(20), settings=settings
    )
    rng = np.random.default_rng(0)
    pair = {"x": rng.normal(size=(4, 3)).astype(np.float32), "weight": np.ones(4, np.float32)}
    register(write_two_input_onnx(root / "pair.onnx"), name="pair", sample_input=pair, settings=settings)
    words = {"word": np.array(["cat", "dog", "emu"], dtype=object)}
    register(write_word_codes_onnx(root / "words.onnx"), name="words", sample_input=words, settings=settings)
    ids = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    register(write_embedding_onnx(root / "embed.onnx"), name="embed", sample_input=ids, settings=settings)
    flags = np.array([[True, False]])
    register(write_flags_onnx(root / "flags.onnx"), name="flags", sample_input=flags, settings=settings)
    pixels = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
    register(write_pixels_onnx(root / "pixels.onnx"), name="pixels", sample_input=pixels, settings=settings)
    with running(build_app(settings.with_(models=MODELS))) as address:
        yield f"http://{address}"


@pytest.mark.slow
def test_every_operation_answers_as_documented_and_refuses_what_the_schema_forbids(server: str, tmp_path: Path) -> None:
    spec = httpx.get(f"{server}/openapi.json").json()
    operations = sum(len(item) for item in spec["paths"].values())
    for name in MODELS:
        assert f"/v2/models/{name}/infer" in spec["paths"], f"{name} is not documented"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server}/openapi.json",
        "--checks=all",
        "--mode=all",
        "--phases=examples,coverage,fuzzing",
        "--max-examples=10",
        "--seed=1",
        "--workers=1",
        "--no-shrink",
        "--max-failures=10",
        "--request-timeout=30",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=480, check=False)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-20000:]
    assert f"Tested: {operations}" in report, report[-5000:]
    assert "No issues found" in report, report[-5000:]
