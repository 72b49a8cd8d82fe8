"""The V2 gRPC endpoint: a ``grpc.aio`` server on the app's event loop, with the same admission as HTTP.

Beside ``inference.GRPCInferenceService`` it serves ``grpc.health.v1.Health`` (Kubernetes' gRPC
probes; :mod:`modelport.protocols.grpc.health`) and server reflection, v1 and v1alpha (grpcurl;
:mod:`modelport.protocols.grpc.reflection`).

:class:`AdmissionInterceptor` runs before every method, streaming ones too, the steps of
:class:`~modelport.server.admission.Admission` (HTTP's): a request id (the caller's
``x-request-id`` metadata or a new one, sent back as trailing metadata), the
:class:`~modelport.server.guard.Gate` on the ``authorization`` / ``x-api-key`` metadata (the REST
policy: ServerLive, ServerReady and the server's health (service ``""``) are open, ServerMetadata,
health's List and reflection need any valid credentials, the model methods and a model's health
need a caller allowed to use the model), and one error handler: a domain error
becomes the gRPC status of its HTTP status (the one table in :mod:`modelport.protocols.errors`),
with the same message as REST; anything else is logged and answered INTERNAL. A refusal is logged
and counted as HTTP's. ModelInfer is given the call's exchange (its
:class:`~modelport.server.admission.Admitted`), which the one per-request call fills in
(:func:`~modelport.serving.call.infer_call`: the request id capture writes, the version, the rows,
the trace marks). When on, it traces the call as HTTP requests are traced (a ``traceparent`` in the
metadata is continued, the span's is sent back in the trailing metadata) and reports an INTERNAL
answer to Sentry.

:func:`grpc_endpoint` serves it for the life of the app, over TLS when ``settings`` give a
certificate (:mod:`modelport.server.tls`), requiring client certificates with a client CA.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc

from modelport.errors import ModelportError
from modelport.protocols.errors import status_of
from modelport.protocols.grpc import reflection
from modelport.protocols.grpc.health import SERVER, HealthServicer
from modelport.protocols.grpc.proto.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from modelport.protocols.grpc.proto.health_pb2_grpc import add_HealthServicer_to_server
from modelport.protocols.grpc.servicer import InferenceServicer, metadata_of
from modelport.protocols.v2 import GetManager
from modelport.server.admission import REQUEST_ID, Admission, Admitted, Watchers
from modelport.server.guard import Access, Gate, Need
from modelport.server.tls import server_tls
from modelport.settings import Settings

logger = logging.getLogger("modelport")

GRACE_SECONDS = 10.0  # in-flight calls get this long to finish at shutdown

# HTTP status of a domain error (one table for every protocol) -> gRPC status code.
_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _health(request: Any) -> Need:
    """The server's health is open (as /v2/health/ready); a model's needs a caller allowed to use it."""
    return Need(Access.OPEN) if request.service in SERVER else Need(Access.INFER, request.service)


# What each method needs, from its request message (the REST policy, method by method; None for
# a streamed request).
NEEDS: dict[str, Callable[[Any], Need]] = {
    "ServerLive": lambda request: Need(Access.OPEN),
    "ServerReady": lambda request: Need(Access.OPEN),
    "ServerMetadata": lambda request: Need(Access.ANY),
    "ModelReady": lambda request: Need(Access.INFER, request.name),
    "ModelMetadata": lambda request: Need(Access.INFER, request.name),
    "ModelInfer": lambda request: Need(Access.INFER, request.model_name),
    "Check": _health,
    "Watch": _health,
    "List": lambda request: Need(Access.ANY),
    "ServerReflectionInfo": lambda requests: Need(Access.ANY),
}

Behavior = Callable[..., Awaitable[Any]]  # (request, context), ModelInfer also (request, context, exchange)


def code_of(error: ModelportError) -> grpc.StatusCode:
    """The gRPC status code of a domain error (INTERNAL for a fault on our side)."""
    return _CODES.get(status_of(error), grpc.StatusCode.INTERNAL)


class AdmissionInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    """Admission for every gRPC method (see the module docstring): the steps of
    :class:`~modelport.server.admission.Admission`, the one HTTP admission takes too, translated to
    metadata and status codes; ``gate`` None: no credential check. ``watchers`` (the app's, shared
    with HTTP) see every call as REST requests are seen: a model inference is protocol ``grpc``, its
    status class the HTTP one of its outcome."""

    def __init__(self, gate: Gate | None, watchers: Watchers | None = None) -> None:
        self.admission = Admission(gate, watchers)
        self.watchers = self.admission.watchers

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return handler
        path = str(details.method)
        need_of = NEEDS.get(path.rpartition("/")[2], lambda request: Need(Access.ANY))
        codecs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._admitted(handler.unary_unary, need_of, path), **codecs)
        if handler.unary_stream is not None:
            admitted = self._admitted_stream(handler.unary_stream, need_of, path, streamed=False)
            return grpc.unary_stream_rpc_method_handler(admitted, **codecs)
        if handler.stream_stream is not None:
            admitted = self._admitted_stream(handler.stream_stream, need_of, path, streamed=True)
            return grpc.stream_stream_rpc_method_handler(admitted, **codecs)
        return handler  # no client-streaming methods are served

    def _begin(self, context: Any, path: str, traced: bool) -> tuple[Admitted, dict[str, str], str]:
        """Admission's first step for a call: its Admitted (the request id, the trace when ``traced``
        and tracing is on) sent back in the trailing metadata; the call's metadata and client."""
        metadata = metadata_of(context)
        tracing = self.watchers.tracing
        trace = tracing.start_grpc(path, metadata) if tracing is not None and traced else None
        call = self.admission.begin(metadata.get(REQUEST_ID, "").encode("latin-1") or None, {}, trace)
        trailing: tuple[tuple[str, str], ...] = ((REQUEST_ID, call.request_id),)
        if trace is not None:
            trailing += (("traceparent", trace.traceparent),)
        context.set_trailing_metadata(trailing)
        return call, metadata, _peer(context)

    def _admit(self, call: Admitted, need: Need, metadata: dict[str, str], path: str, client: str) -> None:
        self.admission.admit(
            call,
            need,
            metadata.get("authorization"),
            metadata.get("x-api-key"),
            server=None,
            method="gRPC",
            path=path,
            client=client,
        )

    async def _abort(self, error: Exception, context: Any, call: Admitted, path: str) -> None:
        """End the call with the gRPC status of ``error`` (admission's fail step first): the one error
        mapping for unary and streaming methods."""
        status = status_of(error) if isinstance(error, ModelportError) else 500
        self.admission.fail(call, error, status, method="gRPC", path=path)
        if isinstance(error, ModelportError):
            await context.abort(code_of(error), error.message)
        await context.abort(
            grpc.StatusCode.INTERNAL, f"internal server error: {type(error).__name__}; see the server log"
        )

    def _admitted(self, behavior: Behavior, need_of: Callable[[Any], Need], path: str) -> Behavior:
        inference = path.endswith("/ModelInfer")

        async def admitted(request: Any, context: Any) -> Any:
            call, metadata, client = self._begin(context, path, traced=True)
            if inference:
                call.protocol, call.model = "grpc", request.model_name  # known before admission
            try:
                self._admit(call, need_of(request), metadata, path, client)
                response = await (behavior(request, context, call) if inference else behavior(request, context))
                call.status = 200
                return response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._abort(exc, context, call, path)
            finally:
                self.admission.finish(call, client=client, method="gRPC", path=path)
                tracing, trace = self.watchers.tracing, call.trace
                if trace is not None and tracing is not None:
                    code = (
                        grpc.StatusCode.OK if call.status == 200 else _CODES.get(call.status, grpc.StatusCode.INTERNAL)
                    )
                    tracing.finish_grpc(trace, call, path=path, status=call.status, code=code.value[0])

        return admitted

    def _admitted_stream(
        self, behavior: Callable[..., AsyncIterator[Any]], need_of: Callable[[Any], Need], path: str, *, streamed: bool
    ) -> Callable[..., AsyncIterator[Any]]:
        """Admission for a method that answers with a stream (health's Watch; reflection, whose
        requests are a stream too: ``streamed``): the same steps, one access-log line and metrics
        entry when the stream ends (the client leaving ends it well); not traced."""

        async def admitted(request: Any, context: Any) -> AsyncIterator[Any]:
            call, metadata, client = self._begin(context, path, traced=False)
            try:
                self._admit(call, need_of(None if streamed else request), metadata, path, client)
                async for response in behavior(request, context):
                    yield response
                call.status = 200
            except asyncio.CancelledError:  # the client hung up: how a Watch ends
                call.status = 200
                raise
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._abort(exc, context, call, path)
            finally:
                self.admission.finish(call, client=client, method="gRPC", path=path)

        return admitted


def _peer(context: Any) -> str:
    """The client's address from gRPC's peer text (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``)."""
    peer = str(context.peer() or "-")
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0].strip("[]")
    return peer


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@asynccontextmanager
async def grpc_endpoint(
    settings: Settings,
    get_manager: GetManager,
    gate: Gate | None = None,
    watchers: Watchers | None = None,
) -> AsyncIterator[int]:
    """Serve gRPC on ``settings.host``:``settings.grpc_port`` while the block runs; yields the bound port.

    ``gate`` and ``watchers``: the app's (shared with HTTP); a None gate checks no credentials.
    Several workers share the port through SO_REUSEPORT (only when ``settings.workers > 1``, so a
    single server still fails loudly when the port is taken). Messages over ``settings.max_body_bytes`` are refused
    (RESOURCE_EXHAUSTED), as REST refuses such bodies. With ``settings.tls_certfile``/
    ``tls_keyfile`` the port speaks TLS only (checked before it binds:
    :class:`~modelport.errors.InvalidSetting`), and with ``tls_client_ca`` a client without a
    certificate signed by that CA cannot connect.
    """
    assert settings.grpc_port is not None
    tls = server_tls(settings)
    options = [
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ("grpc.max_receive_message_length", settings.max_body_bytes),
    ]
    interceptor = AdmissionInterceptor(gate, watchers)
    server = grpc.aio.server(options=options, interceptors=[interceptor])
    servicer = InferenceServicer(get_manager, sticky_header=settings.sticky_header)
    add_GRPCInferenceServiceServicer_to_server(servicer, server)
    health = HealthServicer(get_manager)
    add_HealthServicer_to_server(health, server)
    for generated, reflecting in reflection.servicers():
        generated.add_ServerReflectionServicer_to_server(reflecting, server)
    address = _address(settings.host, settings.grpc_port)
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.private_key, tls.certificate_chain)],
                root_certificates=tls.client_ca_pem,
                require_client_auth=tls.client_ca_pem is not None,
            )
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise OSError(
            f"cannot serve gRPC on {address}: {exc}; is the port in use? choose another --grpc-port"
        ) from None
    await server.start()
    security = f" ({tls.description})" if tls is not None else ""
    logger.info("serving the Open Inference Protocol over gRPC on %s%s", _address(settings.host, port), security)
    try:
        yield port
    finally:
        health.close()  # every Watch says NOT_SERVING and ends, so none holds the grace period
        await server.stop(GRACE_SECONDS)
