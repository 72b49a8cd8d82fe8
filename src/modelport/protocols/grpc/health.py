"""gRPC health checking, ``grpc.health.v1.Health``: what Kubernetes' gRPC probes and
grpc_health_probe call.

Service ``""`` (and ``inference.GRPCInferenceService``) is the server: SERVING exactly when
``/v2/health/ready`` answers 200 (every configured model loaded and routed, not shutting down,
not shedding load with ``overload_unready``). A model's name is that model: SERVING when its
default version is ready. Anything else is unknown: Check answers NOT_FOUND, Watch
SERVICE_UNKNOWN (and keeps watching). Watch sends the status at once, then each change (looked
at every ``poll_seconds``), and ends with NOT_SERVING when the server stops.

Translation only, as :mod:`.servicer`: admission is the server's interceptor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from modelport.errors import InvalidReference, ModelNotReady, NotFound
from modelport.protocols.grpc.proto import health_pb2 as pb
from modelport.protocols.v2 import GetManager

V2_SERVICE = "inference.GRPCInferenceService"
SERVER = frozenset({"", V2_SERVICE})  # the services that are the server as a whole
LISTED = 100  # the most services List answers (the protocol's limit)
Status = pb.HealthCheckResponse.ServingStatus
SERVING = pb.HealthCheckResponse.SERVING
NOT_SERVING = pb.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = pb.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer:
    """``grpc.health.v1.Health`` over the app's manager (see the module docstring)."""

    def __init__(self, get_manager: GetManager, *, poll_seconds: float = 1.0) -> None:
        self._get_manager = get_manager
        self._poll_seconds = poll_seconds
        self._stopping = asyncio.Event()

    def close(self) -> None:
        """The server is stopping: every Watch sends NOT_SERVING and ends (so none holds up the stop)."""
        self._stopping.set()

    def status(self, service: str) -> Status | None:
        """The service's serving status now; None when it is not known."""
        if self._stopping.is_set():
            return NOT_SERVING
        try:
            manager = self._get_manager()
        except ModelNotReady:  # still starting: the server is not ready, no model is known yet
            return NOT_SERVING if service in SERVER else None
        if service in SERVER:
            return SERVING if manager.not_ready() is None else NOT_SERVING
        try:
            return SERVING if manager.get(service).ready else NOT_SERVING
        except ModelNotReady:  # configured but not served: failed to load, or not loaded yet
            return NOT_SERVING
        except (NotFound, InvalidReference):
            return None

    async def Check(self, request: pb.HealthCheckRequest, context: Any) -> pb.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            raise NotFound(f"unknown service {request.service!r}: give '' (the server) or a served model's name")
        return pb.HealthCheckResponse(status=status)

    async def List(self, request: pb.HealthListRequest, context: Any) -> pb.HealthListResponse:
        names: list[str] = []
        with contextlib.suppress(ModelNotReady):  # still starting: the server alone
            names = sorted(self._get_manager().names())[: LISTED - len(SERVER)]
        statuses = {
            service: pb.HealthCheckResponse(status=self.status(service) or SERVICE_UNKNOWN)
            for service in (*SERVER, *names)
        }
        return pb.HealthListResponse(statuses=statuses)

    async def Watch(self, request: pb.HealthCheckRequest, context: Any) -> AsyncIterator[pb.HealthCheckResponse]:
        last: Status | None = None
        while True:
            status = self.status(request.service)
            status = SERVICE_UNKNOWN if status is None else status
            if status != last:
                yield pb.HealthCheckResponse(status=status)
                last = status
            if self._stopping.is_set():
                if last != NOT_SERVING:
                    yield pb.HealthCheckResponse(status=NOT_SERVING)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._poll_seconds)
