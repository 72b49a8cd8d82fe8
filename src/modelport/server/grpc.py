"""The V2 gRPC endpoint: a ``grpc.aio`` server on the app's event loop, with the same admission as HTTP.

:class:`AdmissionInterceptor` runs before every method: a request id (the caller's
``x-request-id`` metadata or a new one, sent back as trailing metadata), the
:class:`~modelport.server.guard.Gate` on the ``authorization`` / ``x-api-key`` metadata (the REST
policy: ServerLive and ServerReady are open, ServerMetadata needs any valid credentials, the
model methods need a caller allowed to use the model), and one error handler: a domain error
becomes the gRPC status of its HTTP status (the one table in :mod:`modelport.protocols.errors`),
with the same message as REST; anything else is logged and answered INTERNAL.

:func:`grpc_endpoint` serves it for the life of the app, over TLS when ``settings`` give a
certificate (:mod:`modelport.server.tls`), requiring client certificates with a client CA.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc

from modelport.errors import ModelportError
from modelport.protocols.errors import status_of
from modelport.protocols.grpc.proto.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from modelport.protocols.grpc.servicer import InferenceServicer, metadata_of
from modelport.protocols.v2 import GetManager
from modelport.server.admission import REQUEST_ID, request_id
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

# What each method needs, from its request message (the REST policy, method by method).
NEEDS: dict[str, Callable[[Any], Need]] = {
    "ServerLive": lambda request: Need(Access.OPEN),
    "ServerReady": lambda request: Need(Access.OPEN),
    "ServerMetadata": lambda request: Need(Access.ANY),
    "ModelReady": lambda request: Need(Access.INFER, request.name),
    "ModelMetadata": lambda request: Need(Access.INFER, request.name),
    "ModelInfer": lambda request: Need(Access.INFER, request.model_name),
}

Behavior = Callable[[Any, Any], Awaitable[Any]]


def code_of(error: ModelportError) -> grpc.StatusCode:
    """The gRPC status code of a domain error (INTERNAL for a fault on our side)."""
    return _CODES.get(status_of(error), grpc.StatusCode.INTERNAL)


class AdmissionInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    """Admission for every gRPC method (see the module docstring); ``gate`` None: no credential check."""

    def __init__(self, gate: Gate | None) -> None:
        self.gate = gate

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = str(details.method).rpartition("/")[2]
        admitted = self._admitted(handler.unary_unary, NEEDS.get(method, lambda request: Need(Access.ANY)))
        return grpc.unary_unary_rpc_method_handler(
            admitted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _admitted(self, behavior: Behavior, need_of: Callable[[Any], Need]) -> Behavior:
        gate = self.gate

        async def admitted(request: Any, context: Any) -> Any:
            metadata = metadata_of(context)
            rid = request_id(metadata.get(REQUEST_ID, "").encode("latin-1") or None)
            context.set_trailing_metadata(((REQUEST_ID, rid),))
            try:
                need = need_of(request)
                if gate is not None and need.access is not Access.OPEN:
                    gate.admit(need, metadata.get("authorization"), metadata.get("x-api-key"), None)
                return await behavior(request, context)
            except ModelportError as exc:
                await context.abort(code_of(exc), exc.message)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                logger.error("unhandled error in a gRPC call (request %s)", rid, exc_info=exc)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"internal server error: {type(exc).__name__}; see the server log"
                )

        return admitted


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@asynccontextmanager
async def grpc_endpoint(settings: Settings, get_manager: GetManager, gate: Gate | None = None) -> AsyncIterator[int]:
    """Serve gRPC on ``settings.host``:``settings.grpc_port`` while the block runs; yields the bound port.

    ``gate``: the app's (shared with HTTP); None checks no credentials. Several workers share the
    port through SO_REUSEPORT (only when ``settings.workers > 1``, so a single server still fails
    loudly when the port is taken). Messages over ``settings.max_body_bytes`` are refused
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
    server = grpc.aio.server(options=options, interceptors=[AdmissionInterceptor(gate)])
    servicer = InferenceServicer(get_manager, sticky_header=settings.sticky_header)
    add_GRPCInferenceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]  # generated code
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
        await server.stop(GRACE_SECONDS)
