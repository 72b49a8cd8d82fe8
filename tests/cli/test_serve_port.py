"""``modelport serve`` on a port that is in use: one line naming the port and the option that picks
another, and a non-zero exit, before any model loads (the port is bound first)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelport.settings import Settings
from tests.support.serving import register_iris

pytestmark = pytest.mark.slow  # real processes and sockets


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> Path:
    settings = Settings(home=tmp_path_factory.mktemp("port") / "home")
    register_iris(settings, iris)
    return settings.home


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port another process (this one) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _serve(home: Path, *args: str, **env: str) -> tuple[int, list[str], float]:
    """``modelport serve ARGS`` (killed after 60 s): exit status, non-empty output lines, seconds taken."""
    environment = {**os.environ, "MODELPORT_HOME": str(home), "COLUMNS": "300", "NO_COLOR": "1", **env}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "modelport", "serve", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return result.returncode, lines, time.monotonic() - started


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_port_in_use_says_so_in_one_line_before_loading_any_model(
    home: Path, taken: int, workers: str
) -> None:
    code, lines, seconds = _serve(home, "iris@production", "--port", str(taken), "--workers", workers)
    assert code == 1, lines
    said = f"error: port {taken} on 127.0.0.1 is in use: another process listens there; "
    said += "pick another with --port, or stop it"
    assert lines == [said]
    assert seconds < 30  # nothing loaded: the start-up of the command itself


def test_a_grpc_port_in_use_is_named_with_its_option(home: Path, taken: int) -> None:
    code, lines, _ = _serve(home, "iris@production", "--port", "0", "--grpc-port", str(taken))
    assert code == 1, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: port {taken} on 127.0.0.1 is in use"), lines
    assert "pick another with --grpc-port" in lines[0]


def test_sagemaker_mode_on_a_port_in_use_names_its_variable(home: Path, taken: int, tmp_path: Path) -> None:
    from modelport.registry.export import export_version
    from modelport.registry.registry import Registry

    with Registry.open(Settings(home=home), create=False) as registry:
        version = registry.get("iris@production")
        export_version(version, registry.artifact_path(version), tmp_path / "model")
    variables = {"SAGEMAKER_BIND_TO_PORT": str(taken), "MODELPORT_SAGEMAKER_MODEL_DIR": str(tmp_path / "model")}
    code, lines, _ = _serve(home, **variables)
    assert code == 1, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: port {taken} on "), lines
    assert "pick another with SAGEMAKER_BIND_TO_PORT (or MODELPORT_PORT)" in lines[0]


def test_an_address_that_is_not_this_machine_s_is_one_line(home: Path) -> None:
    code, lines, _ = _serve(home, "iris@production", "--host", "192.0.2.1", "--port", "0", "--insecure-open")
    assert code == 1, lines
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [
        "error: cannot bind 192.0.2.1:0: 192.0.2.1 is not an address of this machine; "
        "give one of its addresses with --host (0.0.0.0: all of them)"
    ], lines
    assert not any(line.startswith("serving ") for line in lines), lines  # 192.0.2.1: TEST-NET-1, nobody's


def test_a_server_that_takes_the_port_while_the_models_load_stops_the_start(capfd: pytest.CaptureFixture[str]) -> None:
    """Bound early, the port can still be bound by a server that also sets SO_REUSEADDR (uvicorn
    does) and listens first; uvloop then drops the socket silently. The start must fail, not run
    a server that listens nowhere."""
    from starlette.applications import Starlette

    from modelport.server import http

    sockets = http.bind("127.0.0.1", 0)
    port = sockets[0].getsockname()[1]
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        with pytest.raises(SystemExit) as stopped:
            http.run(Starlette(), Settings(port=port), sockets=sockets)
    assert stopped.value.code == 3  # uvicorn's start-up failure
    assert (
        f"port {port} on 127.0.0.1 is in use: another server took it while the models loaded" in capfd.readouterr().err
    )
