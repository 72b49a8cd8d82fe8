"""The ASGI app: one factory wires settings, registry, manager and protocols together.

``build_app(settings)`` builds the app; its lifespan opens the registry, loads
``settings.models`` and closes everything at shutdown. ``create_app()`` is the same from the
environment, for ``uvicorn --factory modelport.app:create_app`` (each worker process builds one).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from fastapi.openapi.docs import get_swagger_ui_html
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.auth import Authenticator
from modelport.batching import BatchSettings
from modelport.endpoint import SageMakerEndpoint
from modelport.errors import ModelNotReady, ModelportError
from modelport.manager import ModelManager, RegistrySource
from modelport.protocols import openapi, sagemaker, tfserving, v2
from modelport.protocols.auth import AuthGuard, Gate, authentication
from modelport.protocols.codec import dumps
from modelport.protocols.errors import JSON, error_response, too_large
from modelport.protocols.fastlane import BodyTooLarge, ClientGone, FastLane, read_body
from modelport.routing import specs_from
from modelport.settings import Settings
from modelport.watcher import watching

logger = logging.getLogger("modelport")


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413 before reading more of them (plain ASGI)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
                await self.app(scope, receive, send)  # the server holds the body to its declared length
                return
        # No declared length (chunked): read up to the limit, then hand the body on.
        try:
            body = await read_body(receive, self.max_bytes)
        except ClientGone:
            return
        except BodyTooLarge:
            await self._refuse(scope, receive, send)
            return
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await too_large(self.max_bytes).response()(scope, receive, send)


class _Holder:
    """The manager the lifespan makes; handlers ask for it on each request."""

    def __init__(self, manager: ModelManager | None) -> None:
        self.manager = manager
        self.authenticator: Authenticator | None = None  # set by the lifespan; gRPC uses it too

    def get(self) -> ModelManager:
        manager = self.manager
        if manager is None:
            raise ModelNotReady("the server is starting: models are still loading; retry shortly")
        return manager


def build_app(
    settings: Settings, *, manager: ModelManager | None = None, authenticator: Authenticator | None = None
) -> ModelportApp:
    """The modelport ASGI app. Pass ``manager`` to serve one you built (it stays yours to close).

    The lifespan builds the authenticator (API keys from the registry, JWT per ``settings``)
    unless one is given, and refuses to start when the startup rules are broken
    (:func:`modelport.auth.check_exposure`).
    """
    holder = _Holder(manager)
    # SageMaker mode serves /opt/ml/model (or a multi-model endpoint), not the registry.
    endpoint = SageMakerEndpoint(settings) if settings.sagemaker and manager is None else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manager is not None:
            async with authentication(settings, None, authenticator) as auth:
                holder.authenticator = auth
                if settings.models:
                    manager.load(settings.models)
                async with _grpc(settings, holder):
                    with frozen_heap():
                        yield
            return
        if endpoint is not None:
            async with authentication(settings, None, authenticator) as auth:
                holder.authenticator = auth
                holder.manager = endpoint.start()
                try:
                    with frozen_heap():
                        yield
                finally:
                    holder.manager = None
                    endpoint.close()
            return
        from modelport.registry import Registry

        registry = Registry.open(settings)
        threads = settings.compute_threads
        source = RegistrySource(registry, threads=threads, allow_env_mismatch=settings.allow_env_mismatch)
        own = ModelManager(source, threads=threads, batching=BatchSettings.from_settings(settings))
        try:
            async with authentication(settings, registry, authenticator) as auth:
                holder.authenticator = auth
                own.follow(specs_from(settings.models, settings.serve_alias, settings.version_policy))
                if not (settings.models or settings.serve_alias or settings.version_policy):
                    logger.warning("no models configured to serve; pass model references, --alias or --policy")
                holder.manager = own
                async with _grpc(settings, holder), watching(own, registry, settings.poll_seconds):
                    with frozen_heap():
                        yield
        finally:
            holder.manager = None
            own.close()
            registry.close()

    routes = [
        *v2.routes(holder.get, management=settings.enable_management),
        *tfserving.routes(holder.get),
        *_doc_routes(holder),
    ]
    if endpoint is not None:
        routes += sagemaker.routes(endpoint)
    # Plain Starlette: the protocols bring their own routes and OpenAPI document, so FastAPI's
    # per-request machinery (dependency solving, exit stacks, telemetry hooks) would only cost time.
    gate = Gate(settings, lambda: holder.authenticator)
    lane = FastLane(holder.get, gate, sticky_header=settings.sticky_header, max_body_bytes=settings.max_body_bytes)
    return ModelportApp(
        lane,
        routes=routes,
        middleware=[Middleware(AuthGuard, gate=gate), Middleware(BodyLimit, max_bytes=settings.max_body_bytes)],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )


class ModelportApp(Starlette):
    """Starlette, with inference POSTs handed to the :class:`FastLane` before anything else."""

    def __init__(self, lane: FastLane, **options: Any) -> None:
        super().__init__(**options)
        self.lane = lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            target = self.lane.target(scope["path"])
            if target is not None:
                await self.lane.serve(target, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """While the app runs, keep what startup built (modules, loaded models) out of the cyclic GC.

    Python's full collections otherwise walk every object in the process, and with ONNX Runtime,
    NumPy and the registry loaded each one paused the event loop for tens of milliseconds: that
    was the p99 under load. Objects made later (requests, hot-swapped versions) are collected
    as usual; everything is handed back to the collector at shutdown.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@asynccontextmanager
async def _grpc(settings: Settings, holder: _Holder) -> AsyncIterator[None]:
    """The V2 gRPC endpoint on ``settings.grpc_port`` while the app runs (none when it is None)."""
    if settings.grpc_port is None:
        yield
        return
    try:
        from modelport.protocols.grpc import grpc_endpoint
    except ImportError as exc:
        raise ModelportError(
            f"gRPC needs the grpc extra ({exc.name} is not installed): pip install 'modelport[grpc]'"
        ) from None
    async with grpc_endpoint(settings, holder.get, lambda: holder.authenticator):
        yield


def _doc_routes(holder: _Holder) -> list[Route]:
    async def spec(request: Request) -> Response:
        served = holder.manager.served() if holder.manager is not None else []
        return Response(dumps(openapi.build_spec(served)), media_type=JSON)

    async def docs(request: Request) -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="modelport - API")

    return [Route("/openapi.json", spec, methods=["GET"]), Route("/docs", docs, methods=["GET"])]


async def _http_error(request: Request, exc: Any) -> Response:
    assert isinstance(exc, HTTPException)
    message = f"no such endpoint: {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
    return error_response(str(message), exc.status_code, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(f"internal server error: {type(exc).__name__}; see the server log", 500)


def create_app() -> ModelportApp:
    """``build_app(Settings.from_env())``, for ``uvicorn --factory modelport.app:create_app``."""
    return build_app(Settings.from_env())
