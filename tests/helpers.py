"""Helpers for tests that use real sockets and subprocesses."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_process(args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    """``python -m modelport ARGS`` (usually ``serve ...``) with its output captured."""
    command = [sys.executable, "-m", "modelport", *args]
    return subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until_ready(
    base: str, process: subprocess.Popen[str], path: str = "/v2/health/ready", timeout: float = 90.0
) -> None:
    """Poll ``base + path`` until it answers 200; fail with the server's output if it dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(f"{base}{path}", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no 200 from {base}{path} within {timeout:g} s")


def stop(process: subprocess.Popen[str]) -> str:
    """Stop a server the way Ctrl-C does; return all it printed."""
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    return output
