"""What a connection may cost before the app sees it, the exposure rule on the address actually
bound, the drain on SIGTERM and the server's log lines: real `modelport serve` processes."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from modelport.api import register
from modelport.cli.main import app as cli
from modelport.server.spawn import Launched, ServerOutput, serving, stop, wait_ready
from modelport.settings import Settings
from tests.support.models import write_sleepy_model
from tests.support.serving import register_iris

ROW = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}
PREDICT = "/v1/models/iris:predict"
FD_LIMIT = 256  # the server's open-files limit in the connection tests (soft = hard: it cannot raise it)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, iris: tuple[pd.DataFrame, np.ndarray]) -> Path:
    """A home with iris@production registered and one API key (in KEY)."""
    home = tmp_path_factory.mktemp("httpserver") / "home"
    register_iris(Settings(home=home), iris)
    created = CliRunner().invoke(cli, ["keys", "create", "--scope", "infer"], env={"MODELPORT_HOME": str(home)})
    assert created.exit_code == 0, created.output
    (home / "KEY").write_text(created.stdout.strip())
    return home


def env_for(home: Path, **variables: str) -> dict[str, str]:
    return {**os.environ, "MODELPORT_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200", **variables}


def _low_fd_limit() -> None:  # runs in the server process before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@pytest.fixture(scope="module")
def guarded(home: Path) -> Iterator[Launched]:
    """`modelport serve` with authentication on, 1 s header and body timeouts and a low open-files limit."""
    env = env_for(home, MODELPORT_HEADER_TIMEOUT="1", MODELPORT_BODY_TIMEOUT="1")
    with serving(["iris@production"], env=env, preexec_fn=_low_fd_limit) as server:
        yield server


def headers(home: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {(home / 'KEY').read_text()}"}


def read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def test_oversized_headers_are_431_before_authentication(guarded: Launched) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Padding: ")
        try:
            for _ in range(100):  # 10 MB, unless the server closes first
                sock.sendall(b"a" * 100_000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_all(sock, 10)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"MODELPORT_MAX_HEADER_KB" in answer


@pytest.mark.parametrize(
    "extra",
    [{"X-Padding": "a" * 100_000}, {f"X-Padding-{i}": "a" * 8192 for i in range(100)}],
    ids=["one-100kb-header", "100-headers-of-8kb"],
)
def test_complete_requests_whose_headers_exceed_64_kib_are_431_not_served_or_reset(
    guarded: Launched, home: Path, extra: dict[str, str]
) -> None:
    """The whole request at once (headers complete within a read) is counted too, and the client
    that is still sending when the server answers reads the 431 rather than a reset."""
    for _ in range(3):  # each on a new connection: the answer is the same every time
        answer = httpx.post(
            f"{guarded.base}{PREDICT}", json={"instances": [ROW]}, headers={**headers(home), **extra}, timeout=10
        )
        assert answer.status_code == 431, answer.text[:200]
        assert "MODELPORT_MAX_HEADER_KB" in answer.text
    fields = "".join(f"{name}: {value}\r\n" for name, value in {**headers(home), **extra}.items())
    with socket.socket() as sock:  # small buffers: still sending when the server answers, as over a network
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.connect(("127.0.0.1", guarded.port))
        sock.sendall(f"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())  # no reset
        assert read_all(sock, 10).startswith(b"HTTP/1.1 431 ")
    just_under = {"X-Padding": "a" * (60 * 1024)}  # 60 KiB of headers are still served
    answer = httpx.post(
        f"{guarded.base}{PREDICT}", json={"instances": [ROW]}, headers={**headers(home), **just_under}, timeout=10
    )
    assert answer.status_code == 200, answer.text[:200]


def test_slow_headers_are_answered_408_after_the_header_timeout(guarded: Launched) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\n")
        sock.settimeout(0.2)
        answer = b""
        while time.monotonic() - started < 10 and not answer:
            try:
                sock.sendall(b"X")  # one byte at a time, as a slowloris client does
                answer = sock.recv(1000)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < 5


def request_head(home: Path, *, length: int | None) -> bytes:
    """A predict request's line and headers, authenticated: ``Content-Length: length``, or chunked (None)."""
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    fields = [f"POST {PREDICT} HTTP/1.1", "Host: x", "Content-Type: application/json", framing]
    fields += [f"{name}: {value}" for name, value in headers(home).items()]
    return ("\r\n".join(fields) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def read_response(sock: socket.socket, timeout: float) -> tuple[int, bytes]:
    """One response's status and body (by its Content-Length), leaving the connection open."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        received = sock.recv(65536)
        assert received, f"the server closed the connection after {data!r}"
        data += received
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert found, head
    while len(body) < int(found.group(1)):
        received = sock.recv(65536)
        assert received, f"the server closed the connection after {head!r}"
        body += received
    return int(head.split()[1]), body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_authenticated_slow_body_is_answered_408_after_the_body_timeout(
    guarded: Launched, home: Path, chunked: bool
) -> None:
    body = json.dumps({"instances": [ROW]}).encode()
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.sendall(request_head(home, length=None if chunked else len(body)))  # the headers at once
        started = time.monotonic()
        sock.settimeout(0.2)
        answer, sent = b"", 0
        while time.monotonic() - started < 10 and not answer and sent < len(body):
            try:
                piece = body[sent : sent + 1]  # then the body a byte per 0.2 s
                sock.sendall(chunk(piece) if chunked else piece)
                sent += 1
                answer = sock.recv(1000)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), (answer, sent)
        assert b"MODELPORT_BODY_TIMEOUT" in answer
        sock.settimeout(5)
        while sock.recv(65536):  # the rest of the answer, then the server closes (a TimeoutError if not)
            pass
    assert 0.9 < waited < 5, waited
    assert guarded.process.poll() is None


def test_a_large_body_at_a_steady_pace_and_keep_alive_pauses_outlast_the_body_timeout(
    guarded: Launched, home: Path
) -> None:
    body = json.dumps({"instances": [ROW]}).encode() + b" " * (1024 * 1024)  # 1 MiB, 2.4 s at 430 KiB/s
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.sendall(request_head(home, length=len(body)))
        started = time.monotonic()
        for offset in range(0, len(body), 128 * 1024):
            time.sleep(0.3)
            sock.sendall(body[offset : offset + 128 * 1024])
        status, answer = read_response(sock, 10)
        assert time.monotonic() - started > 2  # longer than the body timeout: the bytes that came earn time
        assert status == 200, answer
        assert json.loads(answer)["predictions"]
        time.sleep(1.5)  # idle on keep-alive, past both timeouts: not timed by either
        small = json.dumps({"instances": [ROW]}).encode()
        sock.sendall(request_head(home, length=None))
        for part in (small[:10], small[10:], b""):
            time.sleep(0.3)
            sock.sendall(chunk(part))
        status, answer = read_response(sock, 10)
        assert status == 200, answer


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(guarded: Launched) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        started = time.monotonic()
        assert read_all(sock, 10) == b""
    assert time.monotonic() - started < 5


def test_legitimate_requests_are_served_while_slow_connections_exceed_the_descriptor_limit(
    guarded: Launched, home: Path
) -> None:
    flood: list[socket.socket] = []
    try:
        for _ in range(FD_LIMIT + 100):
            sock = socket.create_connection(("127.0.0.1", guarded.port))
            sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
            flood.append(sock)
        time.sleep(0.2)
        answers = [
            httpx.post(f"{guarded.base}{PREDICT}", json={"instances": [ROW]}, headers=headers(home), timeout=10)
            for _ in range(3)
        ]
    finally:
        for sock in flood:
            sock.close()
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert guarded.process.poll() is None


def _outward_address() -> str | None:
    """An address of this machine that is not loopback, or None where it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_bare_uvicorn_on_all_interfaces_refuses_other_addresses_without_authentication(
    tmp_path: Path, iris: tuple[pd.DataFrame, np.ndarray]
) -> None:
    outward = _outward_address()
    if outward is None:
        pytest.skip("this machine has no non-loopback address to reach the server on")
    home = tmp_path / "home"
    register_iris(Settings(home=home), iris)
    command = ["-m", "uvicorn", "--factory", "modelport.app:create_app", "--host", "0.0.0.0", "--port", "0"]
    process = subprocess.Popen(
        [sys.executable, *command],
        env=env_for(home, MODELPORT_MODELS="iris@production", PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = ServerOutput(process)
    try:
        port = output.port(120)
        wait_ready(f"http://127.0.0.1:{port}", process, output=output)
        local = httpx.post(f"http://127.0.0.1:{port}{PREDICT}", json={"instances": [ROW]})
        assert local.status_code == 200, local.text
        remote = httpx.post(f"http://{outward}:{port}{PREDICT}", json={"instances": [ROW]})
        assert remote.status_code == 403, remote.text
        assert "no authentication configured" in remote.json()["error"]
        assert httpx.get(f"http://{outward}:{port}/docs").status_code == 403
        assert httpx.get(f"http://{outward}:{port}/v2/health/ready").status_code == 200  # probes stay open
        output.wait_for(re.compile("WITHOUT authentication"), 10)
    finally:
        stop(process)
        output.close()


def test_sigterm_drains_keep_alive_connections_and_exits_with_status_0(tmp_path: Path) -> None:
    code = write_sleepy_model(tmp_path / "code", 0.4)
    home = tmp_path / "home"
    register(code, name="slow", sample_input=np.ones((1, 3)), trust_pickle=True, settings=Settings(home=home))
    body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
    with serving(["slow"], env=env_for(home)) as server:
        url = f"{server.base}/v2/models/slow/infer"
        with httpx.Client(timeout=30) as idle, httpx.Client(timeout=30) as busy, ThreadPoolExecutor(1) as pool:
            assert idle.post(url, json=body).status_code == 200  # a keep-alive connection, idle from now on
            in_flight = pool.submit(busy.post, url, json=body)
            time.sleep(0.1)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.2)  # the server is draining: the request in flight holds it open
            during = idle.post(url, json=body)
            assert during.status_code == 200, during.text
            assert during.headers["connection"] == "close"
            assert in_flight.result().status_code == 200
        assert server.process.wait(timeout=30) == 0, server.output.text
    assert "Finished server process" in server.output.text


def test_server_logs_modelport_lines_in_text_and_json(home: Path) -> None:
    with serving(["iris@production"], env=env_for(home)) as server:
        pass
    assert "INFO    modelport: serving iris@1 (runtime onnx)" in server.output.text
    assert "modelport: authentication on: 1 active API key(s)" in server.output.text
    with serving(["iris@production"], env=env_for(home, MODELPORT_LOG_FORMAT="json")) as server:
        pass
    entries = [json.loads(line) for line in server.output.lines if line.startswith("{")]
    assert {"logger": "modelport", "level": "info", "message": "serving iris@1 (runtime onnx)"}.items() <= next(
        e for e in entries if e.get("message", "").startswith("serving iris@1")
    ).items()
    assert any(e["logger"] == "uvicorn" and "running on" in e["message"] for e in entries)
