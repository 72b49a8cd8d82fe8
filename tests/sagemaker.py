"""Helper for SageMaker tests: `python -m modelport serve` started the way SageMaker starts an image."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import free_port, stop, wait_until_ready


@contextmanager
def sagemaker_serve(**variables: str) -> Iterator[str]:
    """Run `python -m modelport serve` (the single argument SageMaker passes) with ``variables`` in its
    environment and a free SAGEMAKER_BIND_TO_PORT; yield the base URL once /ping answers 200."""
    port = free_port()
    env = {
        **os.environ,
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "MODELPORT_HOST": "127.0.0.1",  # tests stay on loopback; SageMaker mode binds 0.0.0.0 by default
        "NO_COLOR": "1",
        **variables,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "modelport", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process, "/ping")
        yield base
    finally:
        output = stop(process)
    assert process.returncode == 0, output
