"""``modelport models [NAME]``: the models, or one model's versions with their aliases, runtime,
metrics and creation time, as a table or JSON; an unknown NAME is one line and exit 1."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from modelport.cli.main import app
from modelport.settings import Settings


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, iris: tuple[pd.DataFrame, Any]) -> Path:
    """iris@1 (production, accuracy=0.9) and iris@2 (staging, accuracy=0.97), and one version of wine."""
    from sklearn.linear_model import LogisticRegression

    from modelport.api import register

    frame, labels = iris
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    settings = Settings(home=tmp_path_factory.mktemp("models") / "home")
    sample = frame.head(20)
    register(model, name="iris", sample_input=sample, alias="production", metrics={"accuracy": 0.9}, settings=settings)
    register(
        model,
        name="iris",
        sample_input=sample,
        alias="staging",
        metrics={"accuracy": 0.97, "f1": 0.96},
        description="retrained",
        runtime="sklearn",
        settings=settings,
    )
    register(model, name="wine", sample_input=sample, settings=settings)
    return settings.home


def _run(home: Path, *args: str) -> Any:
    env = {"MODELPORT_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    return CliRunner().invoke(app, list(args), env=env)


def test_models_name_lists_its_versions_with_aliases_runtime_metrics_and_created(home: Path) -> None:
    result = _run(home, "models", "iris")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.lstrip("│ ").startswith(("1 ", "2 "))]
    assert len(rows) == 2, result.output
    first, second = rows
    for text in ("production", "onnx", "accuracy=0.9", "UTC"):
        assert text in first, first
    for text in ("staging", "sklearn", "accuracy=0.97, f1=0.96", "retrained"):
        assert text in second, second
    assert "wine" not in result.output


def test_models_name_as_json(home: Path) -> None:
    result = _run(home, "models", "iris", "--json")
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.output)
    assert data["name"] == "iris"
    assert [(v["version"], v["aliases"], v["runtime"]) for v in data["versions"]] == [
        (1, ["production"], "onnx"),
        (2, ["staging"], "sklearn"),
    ]
    assert data["versions"][1]["metrics"] == {"accuracy": 0.97, "f1": 0.96}
    assert data["versions"][1]["description"] == "retrained"
    assert data["versions"][0]["created_at"].startswith("20")


def test_models_without_a_name_lists_every_model_also_as_json(home: Path) -> None:
    table = _run(home, "models")
    assert table.exit_code == 0, table.output
    assert "production→1, staging→2" in table.output
    data = orjson.loads(_run(home, "models", "--json").output)
    assert [(m["name"], m["latest_version"], m["version_count"]) for m in data] == [("iris", 2, 2), ("wine", 1, 1)]
    assert data[0]["aliases"] == {"production": 1, "staging": 2}


@pytest.mark.parametrize(
    ("name", "code", "fragment"),
    [
        ("ghost", 1, "model 'ghost' not found (registered: iris, wine)"),
        ("iris@2", 2, "models takes a model NAME, not 'iris@2'; for one version: modelport show iris@2"),
        ("Bad Name", 2, "invalid model"),
    ],
)
def test_an_unknown_or_malformed_name_is_one_line(home: Path, name: str, code: int, fragment: str) -> None:
    result = _run(home, "models", name)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), lines[0]
    assert fragment in lines[0], lines[0]


def test_a_model_whose_versions_were_all_deleted_says_so(tmp_path: Path, home: Path) -> None:
    copy = tmp_path / "home"
    shutil.copytree(home, copy)  # the module's registry stays as it is
    assert _run(copy, "delete", "wine@1", "--yes").exit_code == 0
    result = _run(copy, "models", "wine")
    assert result.exit_code == 0, result.output
    assert "wine has no versions left (all were deleted)" in result.output
