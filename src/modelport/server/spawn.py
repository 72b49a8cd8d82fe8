"""``modelport serve`` as a subprocess on a loopback port: start, wait until ready, stop.

The quickstart and ``modelport bench REF`` run the real server command this way, and so do the
tests. Without a port the server binds port 0 and the port the system chose is read back from
the server's own "running on" line, so no port is ever picked, released and then raced for.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from modelport.errors import ModelportError

RUNNING = re.compile(r"running on https?://\S+?:(\d+)")
GRPC_RUNNING = re.compile(r"over gRPC on \S+?:(\d+)")


class ServerOutput:
    """Everything a server process prints, read by a thread (optionally echoed to this process)."""

    def __init__(self, process: subprocess.Popen[str], *, echo: bool = False) -> None:
        self.process = process
        self.lines: list[str] = []
        self._echo = echo
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="modelport-server-output", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if self._echo:
                sys.stdout.write(line)
                sys.stdout.flush()
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def tail(self, count: int = 10) -> str:
        with self._changed:
            return "".join(self.lines[-count:]).rstrip()

    def wait_for(self, pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
        """The first match of ``pattern`` in a line; ModelportError if the process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    match = pattern.search(line)
                    if match is not None:
                        return match
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._thread.is_alive()):
                    break
                self._changed.wait(min(remaining, 0.2))
        code = self.process.poll()
        what = f"exited with code {code}" if code is not None else "is silent"
        raise ModelportError(f"modelport serve {what} before it was listening:\n{self.tail()}")

    def port(self, timeout_s: float) -> int:
        """The HTTP port from the server's "running on" line."""
        return int(self.wait_for(RUNNING, timeout_s).group(1))

    def close(self) -> str:
        """Wait for the output to end (the process has exited or is being stopped); return all of it."""
        self._thread.join(timeout=10)
        if self.process.stdout is not None and not self._thread.is_alive():
            self.process.stdout.close()
        return self.text


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on, from its sockets and the kernel's socket table
    (Linux ``/proc``): a server started on port 0 is found where it really bound, with no port
    picked beforehand. Empty once the process has exited."""
    inodes, ports = set(), set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):  # closed meanwhile
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
        for table in ("tcp", "tcp6"):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    except FileNotFoundError:
        return set()
    return ports


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound now (a friendly check before a fixed port is used)."""
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
    output: ServerOutput

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])


def start(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    echo: bool = False,
    preexec_fn: Callable[[], None] | None = None,
) -> tuple[subprocess.Popen[str], ServerOutput]:
    """``python -m modelport ARGS`` with stdout and stderr read by a :class:`ServerOutput`."""
    command = [sys.executable, "-m", "modelport", *args]
    environment = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        preexec_fn=preexec_fn,
    )
    return process, ServerOutput(process, echo=echo)


@contextmanager
def serving(
    args: Sequence[str],
    *,
    port: int | None = None,
    capture: bool = True,
    ready_timeout_s: float = 120.0,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/v2/health/ready",
    host: str = "127.0.0.1",
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[Launched]:
    """Run ``modelport serve ARGS`` on ``host`` until the block ends (SIGINT, then kill after 30 s);
    it is reached through 127.0.0.1.

    ``port`` None binds port 0 and reads back the port the system chose. ``capture`` keeps the
    server's output (in ``Launched.output``; shown if it dies before it is ready); without it
    the output is also echoed to this process's stdout.
    """
    command = ["serve", *args, "--host", host, "--port", str(port or 0)]
    process, output = start(command, env=env, echo=not capture, preexec_fn=preexec_fn)
    try:
        bound = output.port(ready_timeout_s) if port is None else port
        base = f"http://127.0.0.1:{bound}"
        wait_ready(base, process, path=ready_path, timeout_s=ready_timeout_s, output=output)
        yield Launched(base, process, output)
    finally:
        stop(process)
        output.close()


def wait_ready(
    base: str,
    process: subprocess.Popen[str],
    *,
    path: str = "/v2/health/ready",
    timeout_s: float = 120.0,
    output: ServerOutput | None = None,
) -> None:
    """Poll ``base + path`` until it answers 200; ModelportError (with the tail of the server's
    output) if the server exits first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = f":\n{output.tail()}" if output is not None else ""
            raise ModelportError(f"modelport serve exited with code {process.returncode} before it was ready{tail}")
        try:
            if httpx.get(f"{base}{path}", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise ModelportError(f"modelport serve was not ready at {base}{path} within {timeout_s:g} s")


def stop(process: subprocess.Popen[str], sig: int = signal.SIGINT) -> int:
    """``sig`` (SIGINT: a graceful shutdown), then kill after 30 s; returns the exit status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
