"""``modelport serve`` as a subprocess on a loopback port: start, wait until ready, stop.

The quickstart and ``modelport bench REF`` both run the real server command this way.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import httpx

from modelport.errors import ModelportError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class Launched:
    base: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[str]


@contextmanager
def serving(
    args: Sequence[str], *, port: int | None = None, capture: bool = True, ready_timeout_s: float = 120.0
) -> Iterator[Launched]:
    """Run ``modelport serve ARGS`` on 127.0.0.1 until the block ends (SIGINT, then kill after 30 s).

    ``capture`` keeps the server's output in a temporary file (shown if it dies before it is
    ready); without it the output goes to this process's stdout.
    """
    port = free_port() if port is None else port
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "modelport", "serve", *args, "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile(mode="w+") as log:
        output: IO[Any] | None = log if capture else None
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT if capture else None, text=True)
        try:
            wait_ready(base, process, timeout_s=ready_timeout_s, log=log if capture else None)
            yield Launched(base, process)
        finally:
            stop(process)


def wait_ready(
    base: str,
    process: subprocess.Popen[str],
    *,
    path: str = "/v2/health/ready",
    timeout_s: float = 120.0,
    log: IO[Any] | None = None,
) -> None:
    """Poll ``base + path`` until it answers 200; ModelportError (with the tail of ``log``) if the
    server exits first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = ""
            if log is not None:
                log.seek(0)
                tail = ":\n" + "\n".join(log.read().strip().splitlines()[-10:])
            raise ModelportError(f"modelport serve exited with code {process.returncode} before it was ready{tail}")
        try:
            if httpx.get(f"{base}{path}", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise ModelportError(f"modelport serve was not ready at {base}{path} within {timeout_s:g} s")


def stop(process: subprocess.Popen[str]) -> None:
    """SIGINT (graceful shutdown), then kill after 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
