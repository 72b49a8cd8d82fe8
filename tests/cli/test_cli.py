"""The CLI in-process (Typer's runner): commands, tables, messages and exit codes."""

from __future__ import annotations

import json
import pickle
import socket
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from modelport.cli.main import app
from modelport.settings import Settings

COMMANDS = [
    *("register", "models", "show", "alias", "delete", "promote", "rollback"),
    *("serve", "export", "predict", "bench", "keys", "quickstart", "drift", "monitoring"),
]


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    from modelport.registry.registry import Registry

    Registry.open(Settings(home=tmp_path / "home")).close()  # an empty registry: commands find it
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


# -- every mistake is one clear line and a non-zero exit, never a traceback ----------------------


def one_line_error(result, code: int, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_predict_by_url_with_nothing_listening_is_one_line(run, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/v2/models/iris"
        one_line_error(run("predict", url, "--input", str(files["rows"])), 1, "cannot connect to", "server running")


@pytest.mark.parametrize(
    ("content", "suffix", "fragment"),
    [
        (b"a,b\n", ".csv", "has a header but no rows"),
        (b'a,b\n1,2,3\n"x\n', ".csv", "cannot read"),
        (b"", ".csv", "cannot read"),
        (b"not numpy", ".npy", "as a NumPy .npy array"),
        (b"[1, 2", ".json", "is not valid JSON"),
    ],
    ids=["header-only-csv", "malformed-csv", "empty-csv", "garbage-npy", "bad-json"],
)
def test_unreadable_input_files_are_one_line(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, content: bytes, suffix: str, fragment: str
) -> None:
    path = tmp_path / f"input{suffix}"
    path.write_bytes(content)
    one_line_error(run("predict", "iris", "--input", str(path)), 2, fragment)


def test_pickled_npy_is_refused(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    one_line_error(run("predict", "iris", "--input", str(path)), 2, "pickled ones are refused")


@pytest.mark.parametrize(
    ("variable", "value", "code", "fragment"),
    [
        (
            "MODELPORT_CAPTURE_RATE",
            "1.5",
            2,
            "MODELPORT_CAPTURE_RATE='1.5' is not valid: give a number from 0 (off) to 1",
        ),
        ("MODELPORT_CAPTURE_RATE", "often", 2, "MODELPORT_CAPTURE_RATE='often' is not valid"),
        ("MODELPORT_DATABASE_URL", "nonsense", 2, "is not a database URL"),
        ("MODELPORT_DATABASE_URL", "mysql://user@host/db", 2, "is not installed"),
        ("MODELPORT_DATABASE_URL", "postgresql+psycopg://user:secret@127.0.0.1:1/db", 1, "cannot open the registry"),
        ("MODELPORT_PORT", "eighty", 2, "MODELPORT_PORT='eighty' is not valid: give a whole number"),
        ("MODELPORT_LOG_FORMAT", "xml", 2, "choose text, json"),
    ],
)
def test_bad_settings_are_one_line(tmp_path: Path, variable: str, value: str, code: int, fragment: str) -> None:
    env = {"MODELPORT_HOME": str(tmp_path / "home"), "COLUMNS": "200", variable: value}
    result = CliRunner().invoke(app, ["models"], env=env)
    one_line_error(result, code, fragment)
    assert "secret" not in result.output


def test_a_version_s_capture_rate_is_stored_shown_and_exported(run, files: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    register = ("register", str(files["skops"]), "--name", "iris", "--sample", str(files["csv"]))
    assert run(*register, "--capture-rate", "0.05").exit_code == 0
    assert run(*register).exit_code == 0
    assert "capture       rate 0.05 (this version's)" in run("show", "iris@1").output
    assert "capture       the server's rate" in run("show", "iris@2").output
    assert orjson.loads(run("show", "iris@1", "--json").output)["capture_rate"] == 0.05
    assert orjson.loads(run("show", "iris@2", "--json").output)["capture_rate"] is None
    assert run("export", "iris@1", str(tmp_path / "out")).exit_code == 0
    assert orjson.loads((tmp_path / "out" / "modelport.json").read_bytes())["capture_rate"] == 0.05


@pytest.mark.parametrize("rate", ["1.5", "-0.1"])
def test_capture_rates_outside_0_to_1_are_usage_errors(run, files: dict[str, Path], rate: str) -> None:  # type: ignore[no-untyped-def]
    registered = run("register", str(files["skops"]), "--name", "iris", "--capture-rate", rate)
    assert registered.exit_code == 2
    assert "--capture-rate" in registered.output
    served = run("serve", "iris", "--capture-rate", rate)
    assert served.exit_code == 2
    assert "--capture-rate" in served.output
    assert run("models").output.startswith("no models registered yet")


def test_serve_capture_options_become_the_server_s_settings(  # type: ignore[no-untyped-def]
    run, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelport.cli import serve

    started: list[Settings] = []
    monkeypatch.setattr(serve, "_run_uvicorn", lambda settings, **_: started.append(settings))
    assert run("register", str(files["skops"]), "--name", "iris", "--sample", str(files["csv"])).exit_code == 0
    result = run("serve", "iris", "--capture-rate", "0.25", "--capture-redact", "ssn, email,")
    assert result.exit_code == 0, result.output
    assert (started[0].capture_rate, started[0].capture_redact) == (0.25, ("ssn", "email"))
    assert started[0].capture_root == started[0].home / "capture"
    assert run("serve", "iris").exit_code == 0
    assert (started[1].capture_rate, started[1].capture_redact) == (0.0, ())


def test_promote_refuses_a_misspelled_alias_unless_told_to_create_it(run, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    assert run("register", str(files["skops"]), "--name", "iris", "--sample", str(files["csv"])).exit_code == 0
    assert run("alias", "iris@1", "production").exit_code == 0
    one_line_error(run("promote", "iris@1", "prodution"), 1, "has no alias 'prodution' (aliases: production)")
    created = run("promote", "iris@1", "canary", "--create")
    assert created.exit_code == 0, created.output
    assert "iris@canary → version 1 (promoted)" in created.output


def test_error_text_with_brackets_is_printed_as_is(run) -> None:  # type: ignore[no-untyped-def]
    one_line_error(run("show", "iris@[abc]"), 2, "aliases match [a-z][a-z0-9-]*")


def test_serve_without_references_or_a_sagemaker_model_is_one_line(tmp_path: Path) -> None:
    env = {"MODELPORT_HOME": str(tmp_path), "MODELPORT_SAGEMAKER_MODEL_DIR": str(tmp_path / "absent")}
    one_line_error(CliRunner().invoke(app, ["serve"], env=env), 2, "no models to serve: give references")


def test_an_unexpected_error_is_one_line_and_debug_shows_its_traceback(  # type: ignore[no-untyped-def]
    run, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelport.registry.registry import Registry

    def broken(self: Registry) -> None:
        raise RuntimeError("a bug in modelport\nwith a second line")

    monkeypatch.setattr(Registry, "models", broken)
    one_line_error(run("models"), 1, "unexpected RuntimeError: a bug in modelport (run modelport --debug")
    debug = run("--debug", "models")
    assert isinstance(debug.exception, RuntimeError)


def test_cli_log_lines_go_to_the_stderr_of_each_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs (CliRunner, notebooks) swap sys.stderr: a warning of the second run must not
    go to the first run's closed stream ("Logging error")."""
    import io
    import logging
    import sys

    from modelport.cli.common import configure_cli_logging

    configure_cli_logging(False)
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logging.getLogger("modelport").warning("one")
    assert first.getvalue() == "WARNING: one\n"
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("modelport").warning("two")
    assert second.getvalue() == "WARNING: two\n"


def test_inline_json_longer_than_a_file_name_is_read_as_json(tmp_path: Path) -> None:
    from modelport.cli.common import read_data

    rows = [[float(i)] * 4 for i in range(200)]  # far over the 255 bytes a file name may have
    assert read_data(json.dumps(rows)) == rows


def test_debug_belongs_to_its_run_not_to_the_process(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """--debug is held by the run's root context: a later run, or an app built without the root
    callback (as deploy tests build one around a command), shows errors as one line again."""
    import typer

    from modelport.cli.common import handled
    from modelport.registry.registry import Registry

    def broken(self: Registry) -> None:
        raise RuntimeError("a bug in modelport")

    monkeypatch.setattr(Registry, "models", broken)
    assert isinstance(run("--debug", "models").exception, RuntimeError)

    @handled
    def probe() -> None:
        raise RuntimeError("a bug in a sub-app")

    sub = typer.Typer()
    sub.command()(probe)
    sub.command("other")(probe)
    one_line_error(CliRunner().invoke(sub, ["probe"]), 1, "unexpected RuntimeError: a bug in a sub-app")
    one_line_error(run("models"), 1, "unexpected RuntimeError: a bug in modelport (run modelport --debug")
