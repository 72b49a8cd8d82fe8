"""Where there is no registry, commands that read one create none: they say where they looked
and how to point elsewhere, with exit code 1. Only registering (and keys create) makes one."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modelport.cli.main import app
from modelport.errors import NotFound
from modelport.registry.registry import Registry, RegistryNotFound
from modelport.settings import Settings

UNSET = {"MODELPORT_HOME": None, "MODELPORT_DATABASE_URL": None, "MODELPORT_ARTIFACTS": None}

# every command that reads the registry, or changes only what it holds
COMMANDS = [
    ["models"],
    ["show", "iris"],
    ["show", "iris@production", "--json"],
    ["predict", "iris", "--input", "[[5.1, 3.5, 1.4, 0.2]]"],
    ["drift", "iris"],
    ["export", "iris@1", "{out}/export"],
    ["alias", "iris@1", "production"],
    ["promote", "iris@1", "production"],
    ["rollback", "iris@production"],
    ["delete", "iris@1", "--yes"],
    ["keys", "list"],
    ["keys", "revoke", "abc"],
    ["serve", "iris", "--port", "0"],
    ["bench", "iris", "--requests", "1", "--output", "{out}/bench"],
    ["build", "iris", "--context", "{out}/context"],
    ["deploy", "k8s", "iris", "--out", "{out}/k8s"],
    ["deploy", "vm", "iris", "--out", "{out}/vm"],
]


def _invoke(args: list[str], out: Path, **env: str | None) -> Any:
    filled = [arg.format(out=out) for arg in args]
    return CliRunner().invoke(app, filled, env={**UNSET, "COLUMNS": "400", "NO_COLOR": "1", **env})


def _one_error_line(result: Any) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: no modelport registry "), result.output
    return str(lines[0])


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_a_command_run_where_there_is_no_registry_says_where_it_looked_and_creates_nothing(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    line = _one_error_line(_invoke(args, tmp_path / "out"))
    assert f"in {empty / '.modelport'} (MODELPORT_HOME; default: .modelport in the current directory)" in line
    assert f"{empty / '.modelport' / 'registry.db'} does not exist" in line
    assert "MODELPORT_HOME (or MODELPORT_DATABASE_URL)" in line
    assert "modelport register PATH --name NAME" in line
    assert list(empty.iterdir()) == []


def test_a_home_that_does_not_exist_is_named_and_left_uncreated(tmp_path: Path) -> None:
    home = tmp_path / "elsewhere" / "home"
    line = _one_error_line(_invoke(["models"], tmp_path, MODELPORT_HOME=str(home)))
    assert f"no modelport registry in {home} (MODELPORT_HOME" in line
    assert not (tmp_path / "elsewhere").exists()


def test_a_database_url_naming_a_missing_file_is_named_and_left_uncreated(tmp_path: Path) -> None:
    database = tmp_path / "db" / "registry.db"
    env = {"MODELPORT_HOME": str(tmp_path / "home"), "MODELPORT_DATABASE_URL": f"sqlite:///{database}"}
    line = _one_error_line(_invoke(["models"], tmp_path, **env))
    assert f"in the database MODELPORT_DATABASE_URL names: {database} does not exist" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_database_without_the_registry_s_tables_is_left_as_it_is(tmp_path: Path) -> None:
    database = tmp_path / "other.db"
    sqlite3.connect(database).close()  # an empty SQLite database: someone else's, or a mistyped path
    database.chmod(0o600)
    env = {"MODELPORT_HOME": str(tmp_path / "home"), "MODELPORT_DATABASE_URL": f"sqlite:///{database}"}
    line = _one_error_line(_invoke(["show", "iris"], tmp_path, **env))
    assert f"in the database MODELPORT_DATABASE_URL names: sqlite:///{database} has none of its tables" in line
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    assert not (tmp_path / "home").exists()


def test_registering_and_creating_a_key_make_the_registry_that_other_commands_then_find(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    created = _invoke(["keys", "create", "--scope", "infer"], tmp_path)
    assert created.exit_code == 0, created.output
    assert (tmp_path / ".modelport" / "registry.db").is_file()
    listed = _invoke(["models"], tmp_path)
    assert listed.exit_code == 0, listed.output
    assert "no models registered yet" in listed.output


def test_python_load_where_there_is_no_registry_raises_and_creates_nothing(tmp_path: Path) -> None:
    from modelport import load

    home = tmp_path / "home"
    with pytest.raises(RegistryNotFound, match=f"no modelport registry in {home}") as error:
        load("iris", settings=Settings(home=home))
    assert isinstance(error.value, NotFound)
    with pytest.raises(RegistryNotFound):
        Registry.open(Settings(home=home), create=False)
    assert list(tmp_path.iterdir()) == []
    Registry.open(Settings(home=home)).close()  # create=True, the default, makes it
    Registry.open(Settings(home=home), create=False).close()
