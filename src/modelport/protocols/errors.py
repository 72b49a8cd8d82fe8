"""Domain errors -> HTTP status codes and the ``{"error": "<message>"}`` body both REST protocols use.

Open Inference Protocol and TF Serving REST both answer errors as a JSON object with one
``error`` string, so one mapping serves both.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import NamedTuple

import orjson
from starlette.responses import Response

from modelport.errors import (
    Conflict,
    DeadlineExceeded,
    EnvironmentMismatch,
    Forbidden,
    InsufficientResources,
    InvalidInput,
    InvalidModel,
    InvalidReference,
    InvalidScope,
    ModelNotReady,
    ModelportError,
    NotFound,
    Overloaded,
    PredictionFailed,
    Unauthenticated,
    UntrustedArtifact,
)

logger = logging.getLogger("modelport")

# Most specific first: UntrustedArtifact is an InvalidModel, so subclasses fall through isinstance.
_STATUS: tuple[tuple[type[ModelportError], int], ...] = (
    (InvalidInput, 400),
    (InvalidReference, 400),
    (InvalidScope, 400),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (UntrustedArtifact, 403),  # the server's policy refuses code it was not told to trust
    (NotFound, 404),
    (Conflict, 409),
    (ModelNotReady, 503),
    (Overloaded, 503),
    (DeadlineExceeded, 504),
    (PredictionFailed, 500),
    (InvalidModel, 500),
    (EnvironmentMismatch, 500),
    (InsufficientResources, 507),
)

JSON = "application/json"


class WireError(ModelportError):
    """A request a protocol cannot take as sent, with the HTTP status that says so (405, 406, 415)
    and the headers that go with it (a 405's ``Allow``)."""

    def __init__(self, message: str, status: int, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


def status_of(error: ModelportError) -> int:
    """The HTTP status for a domain error (500 for anything not listed: a fault on our side)."""
    if isinstance(error, WireError):
        return error.status
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


class Payload(NamedTuple):
    """A finished HTTP answer, independent of the framework that sends it."""

    status: int
    body: bytes
    media_type: str = JSON
    headers: Mapping[str, str] | None = None

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type=self.media_type, headers=self.headers)


def error_payload(error: ModelportError) -> Payload:
    """The ``{"error": ...}`` answer for a domain error, with Retry-After / WWW-Authenticate."""
    status = status_of(error)
    headers = {"Retry-After": str(max(1, math.ceil(getattr(error, "retry_after", 1))))} if status == 503 else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="modelport"'}
    if isinstance(error, WireError) and error.headers:
        headers = {**(headers or {}), **error.headers}
    return Payload(status, orjson.dumps({"error": error.message}), JSON, headers)


def too_large(max_bytes: int, variable: str = "MODELPORT_MAX_BODY_MB") -> Payload:
    """413 for a body over the server's limit; the connection is closed (the rest is not read).
    ``variable``: the setting that raises the limit on this server (SageMaker's in SageMaker mode)."""
    limit = f"{max_bytes} bytes"
    if max_bytes >= 1024 * 1024:
        limit += f" ({max_bytes / (1024 * 1024):g} MiB)"
    message = (
        f"request body is larger than the limit of {limit}; send smaller batches, or raise {variable} on the server"
    )
    return Payload(413, orjson.dumps({"error": message}), JSON, {"Connection": "close"})


def unsupported_encoding(message: str) -> Payload:
    """415 for a ``Content-Encoding`` the server does not decode; the rest of the body is not read."""
    return Payload(
        415, orjson.dumps({"error": message}), JSON, {"Accept-Encoding": "gzip, deflate", "Connection": "close"}
    )


def error_response(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type=JSON, headers=headers)
