"""Rollout commands: alias --weight / --shadow, promote, rollback, show with traffic, serve --policy."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from modelport.cli.main import app
from modelport.registry.registry import Registry
from modelport.settings import Settings
from tests.support.rollout import FLIPPED, register_fake


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    with Registry.open(Settings(home=home)) as registry:
        register_fake(registry, tmp_path, aliases=("production",))
        register_fake(registry, tmp_path, weights=FLIPPED)
        register_fake(registry, tmp_path)
    runner = CliRunner()
    env = {"MODELPORT_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(app, list(args), env=env)

    return invoke


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_rollout_commands_have_help(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_canary_then_promote_then_rollback(run) -> None:  # type: ignore[no-untyped-def]
    result = run("alias", "iris@2", "production", "--weight", "10")
    assert result.exit_code == 0, result.output
    assert "iris@production → version 1: 90%, version 2: 10%" in result.output
    shown = orjson.loads(run("show", "iris@production", "--json").output)
    assert shown["traffic"] == {"weights": {"1": 90, "2": 10}, "shadows": []}
    result = run("promote", "iris@2", "production")
    assert result.exit_code == 0, result.output
    assert "iris@production → version 2 (promoted)" in result.output
    assert "version 2: 100%" in run("show", "iris@production").output
    result = run("rollback", "iris@production")
    assert result.exit_code == 0, result.output
    assert "iris@production → version 1 (rolled back)" in result.output


def test_shadow_is_set_shown_and_removed(run) -> None:  # type: ignore[no-untyped-def]
    result = run("alias", "iris@production", "--shadow", "iris@3", "--fraction", "0.25")
    assert result.exit_code == 0, result.output
    assert "iris@production: mirroring 25% of requests to iris@3" in result.output
    shown = run("show", "iris@production")
    assert "version 3" in shown.output
    assert "25%" in shown.output
    result = run("alias", "iris@production", "--shadow", "iris@3", "--remove")
    assert result.exit_code == 0, result.output
    assert orjson.loads(run("show", "iris@production", "--json").output)["traffic"]["shadows"] == []


def test_rollout_mistakes_are_one_clear_line(run) -> None:  # type: ignore[no-untyped-def]
    result = run("alias", "iris@2", "production", "--shadow", "iris@3")
    assert result.exit_code == 2
    assert "--shadow takes the alias from REF" in result.output
    result = run("rollback", "iris@production")
    assert result.exit_code == 1
    assert "no earlier version to roll back to" in result.output
    result = run("rollback", "iris")
    assert result.exit_code == 2
    assert "give NAME@ALIAS" in result.output
    result = run("serve", "--policy", "newest")
    assert result.exit_code == 2
    assert "invalid version policy 'newest'" in result.output
