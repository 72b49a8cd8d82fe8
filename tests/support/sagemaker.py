"""Helper for SageMaker tests: `python -m modelport serve` started the way SageMaker starts an image."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from modelport.server.spawn import start, stop, wait_ready


@contextmanager
def sagemaker_serve(**variables: str) -> Iterator[str]:
    """Run `python -m modelport serve` (the single argument SageMaker passes) with ``variables`` in its
    environment, on a port the system picks (MODELPORT_PORT=0, read back from the server's log);
    yield the base URL once /ping answers 200. The server must exit with status 0 when stopped."""
    env = {
        **os.environ,
        "MODELPORT_PORT": "0",
        "MODELPORT_HOST": "127.0.0.1",  # tests stay on loopback; SageMaker mode binds 0.0.0.0 by default
        "NO_COLOR": "1",
        **variables,
    }
    env.pop("SAGEMAKER_BIND_TO_PORT", None)
    process, output = start(["serve"], env=env)
    try:
        base = f"http://127.0.0.1:{output.port(120)}"
        wait_ready(base, process, path="/ping", timeout_s=120, output=output)
        yield base
    finally:
        code = stop(process)
        text = output.close()
    assert code == 0, text
