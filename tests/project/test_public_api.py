"""The public API, pinned: what ``modelport`` exports, the conformance checks, the ASGI entry
point and the CLI's commands. Changing any of them is a decision, made here on purpose."""

from __future__ import annotations

import typer.main

import modelport
import modelport.app
import modelport.testing
from modelport.cli.main import app as cli


def test_the_package_exports() -> None:
    assert sorted(modelport.__all__) == ["__version__", "load", "register"]
    assert callable(modelport.register)
    assert callable(modelport.load)


def test_the_seams_checks_and_the_asgi_entry_point() -> None:
    assert sorted(modelport.testing.__all__) == ["check_artifact_store", "check_runtime"]
    assert sorted(modelport.app.__all__) == ["build_app", "create_app"]


def test_the_cli_commands() -> None:
    group = typer.main.get_group(cli)
    commands = {name: sorted(getattr(command, "commands", {})) for name, command in group.commands.items()}
    assert commands == {
        "alias": [],
        "bench": [],
        "build": [],
        "delete": [],
        "deploy": ["k8s", "kserve", "lambda", "sagemaker", "vm"],
        "drift": [],
        "export": [],
        "init-ci": [],
        "keys": ["create", "list", "revoke"],
        "models": [],
        "monitoring": ["export"],
        "predict": [],
        "promote": [],
        "quickstart": [],
        "register": [],
        "rollback": [],
        "serve": [],
        "show": [],
    }
