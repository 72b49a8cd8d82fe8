from __future__ import annotations

from typing import Any

import pytest
import typer.main

from modelport.cli.main import app
from modelport.settings import DECLARED, declared_default, shown_default


def _options(command: str) -> dict[str, Any]:
    group: Any = typer.main.get_command(app)
    return {param.name: param for param in group.commands[command].params}


def test_serve_defaults_are_the_declared_ones() -> None:
    options = _options("serve")
    given = {
        name: p.default
        for name, p in options.items()
        if name in DECLARED and p.default is not None and p.default is not False
    }
    assert given == {name: declared_default(name) for name in given}
    assert set(given) >= {"workers", "threads", "log_level"}
    assert _options("quickstart")["port"].default == declared_default("port")


@pytest.mark.parametrize(
    ("option", "field", "shown"),
    [
        ("max_batch_size", "max_batch_size", "({}; a version's own setting wins)"),
        ("max_batch_wait_ms", "max_batch_wait_ms", "({}; a version's own setting wins)"),
        ("max_queue_wait_ms", "max_queue_wait_ms", "({}; a version's setting wins)"),
        ("request_timeout", "request_timeout", "({}; 0: none)"),
        ("batching", "batching", "(default: {};"),
        ("host", "host", "else {})"),
        ("port", "port", "else {})"),
    ],
)
def test_serve_help_shows_the_declared_default(option: str, field: str, shown: str) -> None:
    assert shown.format(shown_default(field)) in _options("serve")[option].help
