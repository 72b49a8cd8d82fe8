"""Helpers for tests that use real sockets. Servers that can bind port 0 and say which port they
got (modelport serve, uvicorn, gRPC) do that: see :mod:`modelport.server.spawn` and tests/support/serving.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def reserved_port() -> Iterator[int]:
    """A loopback port held (bound with SO_REUSEPORT, never listening) for the block, so that
    servers binding it with SO_REUSEPORT (modelport's gRPC workers) get it and nobody else can."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
