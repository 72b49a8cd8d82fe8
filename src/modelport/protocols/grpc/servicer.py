"""Open Inference Protocol (KServe V2) over gRPC: ``inference.GRPCInferenceService`` on its own port.

The servicer translates, nothing else: proto message -> neutral request (``grpc_codec``), one
call to the app's :class:`~modelport.serving.manager.ModelManager`, neutral result -> proto message.
Domain errors become gRPC status codes through the one table that gives their HTTP statuses
(``protocols.errors.status_of``), with the same messages as REST. Credentials come from the
``authorization`` / ``x-api-key`` metadata and follow the REST policy: ServerLive and
ServerReady are open; everything else needs a caller allowed to use the model once auth is on.

:func:`grpc_endpoint` runs a ``grpc.aio`` server on the app's event loop for the life of the
app (started and stopped by the app's lifespan), over TLS when ``settings`` give a certificate
(:mod:`modelport.server.tls`), requiring client certificates when they give a client CA.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import grpc

from modelport import __version__
from modelport.auth.authenticator import CREDENTIALS_HELP, Authenticator
from modelport.errors import ModelNotReady, ModelportError, Unauthenticated
from modelport.protocols.codec import earliest, timeout_parameter
from modelport.protocols.errors import status_of
from modelport.protocols.grpc.codec import decode_infer_request, encode_infer_result
from modelport.protocols.grpc.proto import grpc_predict_v2_pb2 as pb
from modelport.protocols.grpc.proto.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from modelport.protocols.v2 import EXTENSIONS, VERSION_HEADER, GetManager, model_metadata
from modelport.server.guard import Access, Need, check
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

GetAuthenticator = Callable[[], Authenticator | None]


def code_of(error: ModelportError) -> grpc.StatusCode:
    """The gRPC status code of a domain error (INTERNAL for a fault on our side)."""
    return _CODES.get(status_of(error), grpc.StatusCode.INTERNAL)


async def _abort(context: Any, error: ModelportError) -> NoReturn:
    await context.abort(code_of(error), error.message)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


async def _internal(context: Any, exc: Exception) -> NoReturn:
    """A fault on our side: logged with its traceback, answered INTERNAL without the details (as REST's 500)."""
    logger.error("unhandled error in a gRPC call", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal server error: {type(exc).__name__}; see the server log")
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def _metadata(context: Any) -> dict[str, str]:
    """The call's text metadata (keys arrive lower-case; binary ``-bin`` entries are left out)."""
    return {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}


class InferenceServicer:
    """``inference.GRPCInferenceService`` over the app's manager (methods named as the proto's rpcs)."""

    def __init__(
        self,
        get_manager: GetManager,
        get_authenticator: GetAuthenticator | None = None,
        *,
        sticky_header: str,
    ) -> None:
        self._get_manager = get_manager
        self._get_authenticator = get_authenticator
        self._sticky_header = sticky_header  # metadata whose value pins a caller to one version of a split

    def _authorize(self, context: Any, need: Need) -> None:
        """The REST policy (``protocols.auth``) on gRPC metadata: UNAUTHENTICATED without valid
        credentials, PERMISSION_DENIED without the scope, nothing to check while auth is off."""
        authenticator = self._get_authenticator() if self._get_authenticator is not None else None
        if authenticator is None:
            if self._get_authenticator is None:
                return
            raise ModelNotReady("the server is starting; retry shortly")
        if not authenticator.enabled:
            return
        metadata = _metadata(context)
        principal = authenticator.authenticate(metadata.get("authorization"), metadata.get("x-api-key"))
        if principal is None:
            raise Unauthenticated(f"this endpoint needs credentials: {CREDENTIALS_HELP}")
        check(principal, need)

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        try:
            ready = self._get_manager().ready()
        except ModelportError:
            ready = False
        return pb.ServerReadyResponse(ready=ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        try:
            self._authorize(context, Need(Access.ANY))
        except ModelportError as exc:
            await _abort(context, exc)
        except Exception as exc:
            await _internal(context, exc)
        return pb.ServerMetadataResponse(name="modelport", version=__version__, extensions=list(EXTENSIONS))

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            self._authorize(context, Need(Access.INFER, request.name))
            model = self._get_manager().get(request.name, request.version or None)
        except ModelportError as exc:
            if status_of(exc) == 404:  # as Triton: an unknown model, version or alias is not ready
                return pb.ModelReadyResponse(ready=False)
            await _abort(context, exc)
        except Exception as exc:
            await _internal(context, exc)
        return pb.ModelReadyResponse(ready=model.ready)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        try:
            self._authorize(context, Need(Access.INFER, request.name))
            manager = self._get_manager()
            model = manager.get(request.name, request.version or None)
            meta = model_metadata(model, manager.versions(request.name) if not request.version else [model])
        except ModelportError as exc:
            await _abort(context, exc)
        except Exception as exc:
            await _internal(context, exc)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        name, selector = request.model_name, request.model_version or None
        try:
            self._authorize(context, Need(Access.INFER, name))
            manager = self._get_manager()
            route, model = manager.pick(name, selector, _metadata(context).get(self._sticky_header))
            infer_request = decode_infer_request(request, model.version.signature)
            # the client's gRPC deadline, and Triton's "timeout" request parameter (microseconds)
            infer_request.timeout = earliest(timeout_parameter(infer_request.parameters), context.time_remaining())
            result = await manager.run(route, model, infer_request)
            response = encode_infer_result(result, raw=bool(request.raw_input_contents))
        except ModelportError as exc:
            await _abort(context, exc)
        except Exception as exc:
            await _internal(context, exc)
        await context.send_initial_metadata(((VERSION_HEADER, response.model_version),))
        return response


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@asynccontextmanager
async def grpc_endpoint(
    settings: Settings, get_manager: GetManager, get_authenticator: GetAuthenticator | None = None
) -> AsyncIterator[int]:
    """Serve gRPC on ``settings.host``:``settings.grpc_port`` while the block runs; yields the bound port.

    Several workers share the port through SO_REUSEPORT (only when ``settings.workers > 1``, so a
    single server still fails loudly when the port is taken). Messages over
    ``settings.max_body_bytes`` are refused (RESOURCE_EXHAUSTED), as REST refuses such bodies.
    With ``settings.tls_certfile``/``tls_keyfile`` the port speaks TLS only (checked before it
    binds: :class:`~modelport.errors.InvalidSetting`), and with ``tls_client_ca`` a client
    without a certificate signed by that CA cannot connect.
    """
    assert settings.grpc_port is not None
    tls = server_tls(settings)
    options = [
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ("grpc.max_receive_message_length", settings.max_body_bytes),
    ]
    server = grpc.aio.server(options=options)
    servicer = InferenceServicer(get_manager, get_authenticator, sticky_header=settings.sticky_header)
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
