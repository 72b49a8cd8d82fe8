"""`modelport build` for real: podman builds the image (no network in its RUN steps), runs it read-only
as the non-root user, and the server in it answers /ping, /v2/health/ready and correct predictions.

No image can be pulled here, so the base is a minimal Debian with Python made by debootstrap
(scripts/base-image.sh, cached in ~/.cache/modelport) and imported as localhost/py311-base:bookworm.
podman runs with tests/containers/containers.conf (runc, ulimits the sandbox allows).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from rich.console import Console

from modelport.api import load
from modelport.cli.quickstart import train_and_register
from modelport.registry.registry import Registry
from modelport.server.spawn import listening_ports
from modelport.settings import Settings
from modelport.shipping import container

pytestmark = [pytest.mark.slow, pytest.mark.container]

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/py311-base:bookworm"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    """The environment podman runs with; makes the debootstrap base image once (minutes) if missing."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/setup.sh --test installs it, as root)")
    env = {**os.environ, "CONTAINERS_CONF": str(ROOT / "tests" / "containers" / "containers.conf"), "NO_COLOR": "1"}
    subprocess.run([str(ROOT / "scripts" / "base-image.sh")], env=env, check=True, timeout=1200)
    return env


def podman(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def build(env: dict[str, str], home: Path, *args: str, tag: str | None = None) -> tuple[str, str]:
    """`modelport build ARGS` with the test base image; returns (tag, output)."""
    tag = tag or f"localhost/modelport-test-{uuid.uuid4().hex[:10]}:1"
    command = [sys.executable, "-m", "modelport", "build", *args, "--tag", tag, "--base-image", BASE_IMAGE]
    done = subprocess.run(
        [*command, "--engine", "podman"],
        env={**env, "MODELPORT_HOME": str(home), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return tag, done.stdout


@pytest.fixture
def images(podman_env: dict[str, str]) -> Iterator[list[str]]:
    """Tags to remove after the test (with their containers)."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        subprocess.run(["podman", "rmi", "--force", tag], env=podman_env, capture_output=True, check=False)


class Running:
    """A container started by the test, published on a loopback port the engine picks."""

    def __init__(self, env: dict[str, str], tag: str, *options: str, command: tuple[str, ...] = ()) -> None:
        self.env = env
        self.id = podman(env, "run", "--detach", "--publish", f"127.0.0.1::{container.PORT}", *options, tag, *command)
        published = podman(env, "port", self.id, f"{container.PORT}/tcp")
        self.base = f"http://127.0.0.1:{published.splitlines()[0].rsplit(':', 1)[1]}"

    def wait_ready(self, path: str = container.READY_PATH, timeout: float = 90) -> float:
        """Seconds until ``path`` answers 200 (bounded); fails with the container's log."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if httpx.get(self.base + path, timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"{path} never answered 200:\n{self.logs()}")

    def logs(self) -> str:
        done = subprocess.run(["podman", "logs", self.id], env=self.env, capture_output=True, text=True, check=False)
        return (done.stdout + done.stderr)[-4000:]

    def exec(self, *command: str) -> str:
        return podman(self.env, "exec", self.id, *command)

    def remove(self) -> None:
        subprocess.run(["podman", "rm", "--force", self.id], env=self.env, capture_output=True, check=False)


def v2_body(rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}]}


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory, podman_env: dict[str, str]) -> Iterator[tuple[Settings, str]]:
    """The quickstart model registered (iris@production) and its image, built once for the module."""
    settings = Settings(home=tmp_path_factory.mktemp("quickstart") / "home")
    version = train_and_register(settings, Console(quiet=True))
    assert version.runtime == "onnx"
    tag, output = build(podman_env, settings.home, "iris@production")
    assert f"built {tag}" in output
    yield settings, tag
    subprocess.run(["podman", "rmi", "--force", tag], env=podman_env, capture_output=True, check=False)


def test_quickstart_image_serves_correct_predictions_read_only_as_non_root(
    quickstart: tuple[Settings, str], podman_env: dict[str, str]
) -> None:
    settings, tag = quickstart
    expected = load("iris@production", settings=settings).predict({"input": np.asarray(ROWS, dtype=np.float32)})
    running = Running(podman_env, tag, "--read-only")
    try:
        running.wait_ready()
        assert httpx.get(running.base + "/ping", timeout=5).json() == {"status": "Healthy"}
        answer = httpx.post(f"{running.base}/v2/models/iris/infer", json=v2_body(ROWS), timeout=30)
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
        assert outputs["label"] == list(expected["label"])
        np.testing.assert_allclose(np.reshape(outputs["probabilities"], (3, 3)), expected["probabilities"], atol=1e-6)
        # TF Serving answers from the same baked model
        tf = httpx.post(f"{running.base}/v1/models/iris:predict", json={"instances": ROWS}, timeout=30)
        assert [p["label"] for p in tf.json()["predictions"]] == list(expected["label"])
        assert running.exec("id", "-u") == str(container.USER)
        assert running.exec("id", "-g") == str(container.GROUP)
        # the root filesystem is read-only (/tmp is the tmpfs podman mounts with --read-only)
        refused = subprocess.run(
            ["podman", "exec", running.id, "touch", "/opt/venv/x"], env=podman_env, capture_output=True, check=False
        )
        assert refused.returncode != 0
        # no compilers, no test tools, no pip in the image
        missing = running.exec(
            "/opt/venv/bin/python",
            "-c",
            "import importlib.util, shutil; print([m for m in ('pip', 'pytest', 'setuptools', 'sklearn') "
            "if importlib.util.find_spec(m)], [c for c in ('gcc', 'cc', 'g++', 'make') if shutil.which(c)])",
        )
        assert missing == "[] []"
        # the image's HEALTHCHECK passes (podman runs it on demand where no systemd timer does)
        podman(podman_env, "healthcheck", "run", running.id)
    finally:
        running.remove()


def test_the_image_runs_as_sagemaker_starts_it_with_serve(
    quickstart: tuple[Settings, str], podman_env: dict[str, str]
) -> None:
    _, tag = quickstart
    running = Running(podman_env, tag, "--read-only", "--env", "SAGEMAKER_MODEL_SERVER_WORKERS=2", command=("serve",))
    try:
        running.wait_ready("/ping")
        csv = "".join(",".join(map(str, row)) + "\n" for row in ROWS)
        answer = httpx.post(running.base + "/invocations", content=csv, headers={"Content-Type": "text/csv"})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == len(ROWS)
    finally:
        running.remove()


def test_push_sends_the_image_to_its_registry(
    quickstart: tuple[Settings, str], podman_env: dict[str, str], tmp_path: Path, images: list[str]
) -> None:
    """--push against a real registry (Debian's docker-registry, the CNCF distribution server) on loopback."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (scripts/setup.sh --test installs it, as root)")
    settings, _ = quickstart
    with local_registry(tmp_path) as address:
        conf = tmp_path / "registries.conf"
        conf.write_text(f'[[registry]]\nlocation = "{address}"\ninsecure = true\n')
        env = {**podman_env, "CONTAINERS_REGISTRIES_CONF": str(conf)}
        tag = f"{address}/models/iris:{uuid.uuid4().hex[:8]}"
        images.append(tag)
        _, output = build(env, settings.home, "iris@production", "--push", tag=tag)
        assert f"pushed {tag}" in output
        reference = tag.split("/", 1)[1].rsplit(":", 1)
        tags = httpx.get(f"http://{address}/v2/{reference[0]}/tags/list", timeout=10).json()["tags"]
        assert tags == [reference[1]]
        manifest = httpx.get(
            f"http://{address}/v2/{reference[0]}/manifests/{reference[1]}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            timeout=10,
        ).json()
        config = httpx.get(f"http://{address}/v2/{reference[0]}/blobs/{manifest['config']['digest']}", timeout=10)
        assert config.json()["config"]["Labels"]["io.modelport.models"] == "iris@1"
        assert config.json()["config"]["Healthcheck"]["Test"][0] == "CMD"  # kept: built in docker format


@contextmanager
def local_registry(root: Path) -> Iterator[str]:
    """docker-registry on 127.0.0.1, a port the system picks (read back from /proc); stopped by its PID."""
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'registry-data'}\n"
        "http:\n  addr: 127.0.0.1:0\n"
    )
    with open(root / "registry.log", "wb") as sink:
        process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        ports: set[int] = set()
        while not ports and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
            ports = listening_ports(process.pid)
        assert ports, (root / "registry.log").read_text()
        yield f"127.0.0.1:{min(ports)}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_registry_image_serves_the_alias_from_a_mounted_registry_and_follows_its_moves(
    tmp_path: Path, podman_env: dict[str, str], images: list[str], iris: Any
) -> None:
    """--models registry: no models in the image; MODELPORT_* variables name the registry, and the
    replica switches when the alias moves (here a SQLite registry on a volume; PostgreSQL in production)."""
    from tests.support.serving import register_iris

    home = tmp_path / "home"
    settings = Settings(home=home)
    first, _ = register_iris(settings, iris)
    tag, _ = build(podman_env, home, "iris@production", "--models", "registry")
    images.append(tag)
    for path in [home, *home.rglob("*")]:
        os.chown(path, container.USER, container.GROUP)  # the container's user writes SQLite's journal
    options = (
        "--read-only",
        "--volume",
        f"{home}:/registry:Z",
        "--env",
        "MODELPORT_HOME=/registry",
        "--env",
        "MODELPORT_INSECURE_OPEN=1",
        "--env",
        "MODELPORT_POLL_SECONDS=0.5",
    )
    running = Running(podman_env, tag, *options)
    try:
        running.wait_ready()
        assert httpx.get(running.base + "/v2/models/iris", timeout=5).json()["versions"] == [str(first.version)]
        second, model = register_iris(settings, iris, aliases=(), strength=0.05)
        with Registry.open(settings) as registry:
            registry.set_alias(second.ref, "production")
        deadline = time.monotonic() + 60
        served: list[str] = []
        while time.monotonic() < deadline:
            served = httpx.get(running.base + "/v2/models/iris", timeout=5).json()["versions"]
            if served == [str(second.version)]:
                break
            time.sleep(0.2)
        assert served == [str(second.version)], running.logs()
        answer = httpx.post(f"{running.base}/v2/models/iris/infer", json=v2_body(ROWS), timeout=30)
        outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
        import pandas as pd

        expected = model.predict_proba(pd.DataFrame(ROWS, columns=iris[0].columns))
        np.testing.assert_allclose(np.reshape(outputs["probabilities"], expected.shape), expected, atol=1e-5)
    finally:
        running.remove()


class FakeRuntimeApi:
    """The Lambda Runtime API's invocation loop, as the Lambda service serves it to a runtime client
    (``/2018-06-01/runtime/invocation/next``, ``.../{id}/response``, ``.../{id}/error``, ``init/error``),
    on a loopback port: enough for awslambdaric to fetch events and post results. Not the Lambda
    service, and not AWS's Runtime Interface Emulator (which cannot be downloaded here)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        import http.server
        import queue
        import threading

        self.pending: queue.Queue[tuple[str, bytes]] = queue.Queue()
        for number, event in enumerate(events):
            self.pending.put((f"request-{number}", json.dumps(event).encode()))
        self.results: queue.Queue[tuple[str, str, bytes]] = queue.Queue()  # (kind, request id, body)
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                assert self.path == "/2018-06-01/runtime/invocation/next", self.path
                request_id, body = api.pending.get()  # blocks, as the service does between events
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60_000))
                self.send_header(
                    "Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:f"
                )
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-5e9f0c65-1de4d666d4dd26aced652b6c")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.strip("/").split("/")
                kind = parts[-1]  # response, error (an invocation's) or error (init/error)
                api.results.put((kind if parts[-2] != "init" else "init-error", parts[-2], body))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def result(self, timeout: float) -> tuple[str, str, dict[str, Any]]:
        kind, request_id, body = self.results.get(timeout=timeout)
        return kind, request_id, json.loads(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_lambda_image_answers_api_gateway_events_through_awslambdaric(
    quickstart: tuple[Settings, str], podman_env: dict[str, str], images: list[str]
) -> None:
    """`modelport build --target lambda`: the handler in the image answers a v2 event (run directly), and
    the image's own entrypoint (awslambdaric) serves events fetched from a Runtime API, as Lambda runs it."""
    settings, _ = quickstart  # built first: the lambda build reuses its first install step from podman's cache
    expected = load("iris@production", settings=settings).predict({"input": np.asarray(ROWS, dtype=np.float32)})
    started = time.monotonic()
    tag, output = build(podman_env, settings.home, "iris@production", "--target", "lambda")
    images.append(tag)
    print(f"lambda image built in {time.monotonic() - started:.1f} s")
    assert f"built {tag}" in output
    assert "modelport deploy lambda iris@production" in output
    v2 = json.loads((ROOT / "tests" / "events" / "apigw-v2-request-no-authorizer.json").read_text())
    v2["rawPath"] = v2["requestContext"]["http"]["path"] = "/v2/models/iris/infer"
    v2["requestContext"]["http"]["method"] = "POST"
    v2["body"] = json.dumps(v2_body(ROWS))
    v2["headers"]["content-type"] = "application/json"
    v2["headers"]["content-length"] = str(len(v2["body"]))

    def check(response: dict[str, Any]) -> None:
        assert response["statusCode"] == 200, response
        outputs = {o["name"]: o["data"] for o in json.loads(response["body"])["outputs"]}
        assert outputs["label"] == [str(label) for label in expected["label"]]
        np.testing.assert_allclose(
            np.reshape(outputs["probabilities"], (len(ROWS), 3)), expected["probabilities"], atol=1e-5
        )

    script = (
        "import json, sys, awslambdaric.bootstrap\n"
        "from modelport.serverless import handler\n"
        "print(json.dumps(handler(json.load(sys.stdin), None)))\n"
    )
    run = ["run", "--rm", "--interactive", "--read-only", "--network", "none", "--env", "MODELPORT_INSECURE_OPEN=1"]
    done = subprocess.run(
        ["podman", *run, "--entrypoint", "/opt/venv/bin/python", tag, "-c", script],
        env=podman_env,
        input=json.dumps(v2),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    check(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "awslambdaric" in podman(podman_env, "image", "inspect", "--format", "{{json .Config.Entrypoint}}", tag)

    v1 = json.loads((ROOT / "tests" / "events" / "apigw-request.json").read_text())
    v1["path"], v1["httpMethod"] = "/v2/models/iris/infer", "POST"
    v1["body"] = json.dumps(v2_body(ROWS))
    api = FakeRuntimeApi([v2, v1])
    lambda_env = {
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": "modelport-iris",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/modelport-iris",
        "AWS_LAMBDA_LOG_STREAM_NAME": "test",
        "AWS_REGION": "us-east-1",
        "MODELPORT_INSECURE_OPEN": "1",
    }
    options = [arg for name, value in lambda_env.items() for arg in ("--env", f"{name}={value}")]
    container_id = podman(podman_env, "run", "--detach", "--read-only", "--network", "host", *options, tag)
    try:
        for number in range(2):
            kind, request_id, response = api.result(timeout=90)
            assert (kind, request_id) == ("response", f"request-{number}"), response
            check(response)
    finally:
        logs = subprocess.run(["podman", "logs", container_id], env=podman_env, capture_output=True, text=True)
        subprocess.run(["podman", "rm", "--force", container_id], env=podman_env, capture_output=True, check=False)
        api.close()
    assert "serving iris@" in logs.stdout + logs.stderr  # the modelport logger's own handler, as in Lambda
