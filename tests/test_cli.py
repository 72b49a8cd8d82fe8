"""The CLI in-process (Typer's runner): commands, tables, messages and exit codes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from modelport.cli import app

COMMANDS = [
    *("register", "models", "show", "alias", "delete", "promote", "rollback"),
    *("serve", "export", "predict", "bench", "keys", "quickstart"),
]


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    env = {"MODELPORT_HOME": str(tmp_path / "home"), "COLUMNS": "200", "NO_COLOR": "1"}

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(app, list(args), env=env)

    return invoke


@pytest.fixture
def files(tmp_path: Path, iris: tuple[pd.DataFrame, np.ndarray]) -> dict[str, Path]:
    frame, labels = iris
    model = LogisticRegression(max_iter=1000).fit(frame, labels)
    paths = {
        "skops": tmp_path / "model.skops",
        "pickle": tmp_path / "model.pkl",
        "csv": tmp_path / "sample.csv",
        "rows": tmp_path / "rows.json",
    }
    sio.dump(model, paths["skops"])
    paths["pickle"].write_bytes(pickle.dumps(model))
    frame.sample(20, random_state=0).to_csv(paths["csv"], index=False)
    paths["rows"].write_bytes(orjson.dumps(frame.head(2).to_dict(orient="records")))
    return paths


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_register_show_and_list_a_skops_model(run, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    result = run(
        "register", str(files["skops"]), "--name", "iris", "--sample", str(files["csv"]),
        "--alias", "production", "--tag", "team=botany", "--metric", "accuracy=0.97", "--param", "C=1",
        "--max-batch-size", "8",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "registered iris@1 (aliases: production), served by the onnx runtime" in result.output
    listing = run("models")
    assert listing.exit_code == 0
    assert "iris" in listing.output
    assert "production→1" in listing.output
    shown = run("show", "iris@production")
    assert shown.exit_code == 0, shown.output
    for text in [
        "iris@1", "onnx", "sepal_length", "probabilities", "team=botany", "accuracy=0.97", "scikit-learn",
        "max_batch_size=8",
    ]:  # fmt: skip
        assert text in shown.output
    data = orjson.loads(run("show", "iris", "--json").output)
    assert data["version"] == 1
    assert data["metrics"] == {"accuracy": 0.97}
    assert data["params"] == {"C": 1}
    assert data["batching"] == {"max_batch_size": 8}
    assert data["signature"]["inputs"][0]["feature_names"][0] == "sepal_length"


def test_pickle_is_refused_without_trust_and_accepted_with_it(run, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    refused = run("register", str(files["pickle"]), "--name", "p", "--sample", str(files["csv"]))
    assert refused.exit_code == 1
    assert "--trust-pickle" in refused.output
    assert "arbitrary code" in refused.output
    accepted = run("register", str(files["pickle"]), "--name", "p", "--sample", str(files["csv"]), "--trust-pickle")
    assert accepted.exit_code == 0, accepted.output
    assert "registered p@1" in accepted.output


def test_bad_reference_is_a_usage_error(run) -> None:  # type: ignore[no-untyped-def]
    result = run("show", "iris@Prod")
    assert result.exit_code == 2
    assert "invalid model reference 'iris@Prod'" in result.output


def test_unknown_model_is_a_failure_with_one_clear_line(run) -> None:  # type: ignore[no-untyped-def]
    result = run("show", "nope")
    assert result.exit_code == 1
    assert "model 'nope' not found" in result.output
    assert "Traceback" not in result.output


def test_alias_moves_and_delete_is_refused_while_aliased(run, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    for _ in range(2):
        assert run("register", str(files["skops"]), "--name", "iris", "--sample", str(files["csv"])).exit_code == 0
    assert "iris@production → version 1" in run("alias", "iris@1", "production").output
    assert "iris@production → version 2" in run("alias", "iris@2", "production").output
    refused = run("delete", "iris@2", "--yes")
    assert refused.exit_code == 1
    assert "alias 'production' points to it" in refused.output
    assert run("delete", "iris@1", "--yes").exit_code == 0
    assert run("alias", "iris", "production", "--remove").exit_code == 0
    assert run("delete", "iris@2", "--yes").exit_code == 0
    assert run("show", "iris@2").exit_code == 1


def test_predict_locally_from_inline_json_and_files(run, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    assert run("register", str(files["skops"]), "--name", "iris", "--sample", str(files["csv"])).exit_code == 0
    inline = run("predict", "iris", "--input", "[[5.9, 3.0, 5.1, 1.8]]", "--json")
    assert inline.exit_code == 0, inline.output
    assert orjson.loads(inline.output)["label"] == ["virginica"]
    from_rows = run("predict", "iris@1", "--input", str(files["rows"]))
    assert from_rows.exit_code == 0, from_rows.output
    assert from_rows.output.count("setosa") == 2
    from_csv = run("predict", "iris", "--input", str(files["csv"]), "--output", "label", "--json")
    assert len(orjson.loads(from_csv.output)["label"]) == 20
    bad = run("predict", "iris", "--input", "[[1, 2, 3]]")
    assert bad.exit_code == 1
    assert "expected shape [-1, 4], got [1, 3]" in bad.output


def test_serve_refuses_unknown_models_before_binding(run) -> None:  # type: ignore[no-untyped-def]
    result = run("serve", "ghost@production", "--port", "1")
    assert result.exit_code == 1
    assert "model 'ghost' not found" in result.output
