"""Helpers for tests that use real sockets and subprocesses."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

from modelport.errors import ModelportError
from modelport.launcher import free_port, wait_ready

__all__ = ["free_port", "serve_process", "stop", "wait_until_ready"]


def serve_process(args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    """``python -m modelport ARGS`` (usually ``serve ...``) with its output captured."""
    command = [sys.executable, "-m", "modelport", *args]
    return subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until_ready(
    base: str, process: subprocess.Popen[str], path: str = "/v2/health/ready", timeout: float = 90.0
) -> None:
    """launcher.wait_ready as a test assertion, with everything the server printed if it died."""
    try:
        wait_ready(base, process, path=path, timeout_s=timeout)
    except ModelportError as exc:
        output = process.communicate(timeout=5)[0] if process.poll() is not None else ""
        raise AssertionError(f"{exc}\n{output}") from None


def stop(process: subprocess.Popen[str]) -> str:
    """Stop a server the way Ctrl-C does; return all it printed."""
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    return output
