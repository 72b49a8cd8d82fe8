"""The quickstart image's size and cold start: what docs/shipping.md reports.

.venv/bin/python benchmarks/image.py [--engine podman] [--base-image localhost/py311-base:bookworm] [--runs 5]

In a throwaway MODELPORT_HOME: the quickstart model is trained and registered (iris@production),
``modelport build`` makes its image (timed), then the image is started --runs times, read-only,
publishing a loopback port the engine picks; each time the seconds from ``run`` to the first 200
of /v2/health/ready are measured, and then the first prediction's latency. Prints a Markdown
table (image size, the base image's size, build seconds, cold start median and range).

With podman on the test machines, set CONTAINERS_CONF=tests/containers/containers.conf and make
the base with scripts/base-image.sh (no image can be pulled there).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [[5.1, 3.5, 1.4, 0.2]]}]}


def engine_output(engine: str, *args: str) -> str:
    return subprocess.run([engine, *args], capture_output=True, text=True, check=True, timeout=300).stdout.strip()


def cold_start(engine: str, tag: str) -> tuple[float, float]:
    """Seconds from `run` to ready, and the first prediction's seconds, for one fresh container."""
    started = time.monotonic()
    cid = engine_output(engine, "run", "--detach", "--read-only", "--publish", "127.0.0.1::8080", tag)
    try:
        port = engine_output(engine, "port", cid, "8080/tcp").splitlines()[0].rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}"
        while time.monotonic() - started < 120:
            try:
                if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        else:
            raise SystemExit(f"{tag} was not ready within 120 s")
        ready = time.monotonic() - started
        before = time.monotonic()
        answer = httpx.post(f"{base}/v2/models/iris/infer", json=BODY, timeout=30)
        answer.raise_for_status()
        return ready, time.monotonic() - before
    finally:
        subprocess.run([engine, "rm", "--force", cid], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="podman")
    parser.add_argument("--base-image", default="localhost/py311-base:bookworm")
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    tag = "localhost/modelport-bench-iris:1"
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "MODELPORT_HOME": home}
        subprocess.run(
            [sys.executable, "-c", "from modelport.cli.quickstart import train_and_register as t; "
             "from modelport.settings import Settings; from rich.console import Console; "
             "t(Settings.from_env(), Console(quiet=True))"],
            env=env, check=True,
        )  # fmt: skip
        started = time.monotonic()
        command = ["build", "iris@production", "--tag", tag, "--base-image", options.base_image]
        subprocess.run(
            [sys.executable, "-m", "modelport", *command, "--engine", options.engine],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        build_seconds = time.monotonic() - started
    try:
        size = int(engine_output(options.engine, "image", "inspect", "--format", "{{.Size}}", tag))
        base = int(engine_output(options.engine, "image", "inspect", "--format", "{{.Size}}", options.base_image))
        runs = [cold_start(options.engine, tag) for _ in range(options.runs)]
    finally:
        subprocess.run([options.engine, "rmi", "--force", tag], capture_output=True, check=False)
    ready = [r for r, _ in runs]
    first = [f for _, f in runs]
    print(f"{datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, {os.cpu_count()} cores, {options.engine}")
    print("| measure | value |\n|---|---|")
    print(f"| image size | {size / 1e6:.0f} MB ({(size - base) / 1e6:.0f} MB over the {base / 1e6:.0f} MB base) |")
    print(f"| build (context + {options.engine} build, warm pip cache) | {build_seconds:.0f} s |")
    print(
        f"| cold start, `run` to ready (median of {len(ready)}) | {statistics.median(ready):.2f} s "
        f"(range {min(ready):.2f}-{max(ready):.2f}) |"
    )
    print(f"| first prediction after ready (median) | {statistics.median(first) * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
