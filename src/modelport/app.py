"""The ASGI app: one factory wires settings, registry, manager and protocols together.

``build_app(settings)`` builds the app; its lifespan opens the registry, loads
``settings.models`` and closes everything at shutdown. ``create_app()`` is the same from the
environment, for ``uvicorn --factory modelport.app:create_app`` (each worker process builds one).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi.openapi.docs import get_swagger_ui_html
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.errors import ModelNotReady
from modelport.manager import ModelManager, RegistrySource
from modelport.protocols import openapi, tfserving, v2
from modelport.protocols.codec import dumps
from modelport.protocols.errors import JSON, error_response
from modelport.settings import Settings

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
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = f"{self.max_bytes} bytes"
        if self.max_bytes >= 1024 * 1024:
            limit += f" ({self.max_bytes / (1024 * 1024):g} MiB)"
        response = error_response(
            f"request body is larger than the limit of {limit}; "
            "send smaller batches, or raise MODELPORT_MAX_BODY_MB on the server",
            413,
            {"Connection": "close"},
        )
        await response(scope, receive, send)


class _Holder:
    """The manager the lifespan makes; handlers ask for it on each request."""

    def __init__(self, manager: ModelManager | None) -> None:
        self.manager = manager

    def get(self) -> ModelManager:
        manager = self.manager
        if manager is None:
            raise ModelNotReady("the server is starting: models are still loading; retry shortly")
        return manager


def build_app(settings: Settings, *, manager: ModelManager | None = None) -> Starlette:
    """The modelport ASGI app. Pass ``manager`` to serve one you built (it stays yours to close)."""
    holder = _Holder(manager)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manager is not None:
            if settings.models:
                manager.load(settings.models)
            yield
            return
        from modelport.registry import Registry

        registry = Registry.open(settings)
        threads = settings.compute_threads
        source = RegistrySource(registry, threads=threads, allow_env_mismatch=settings.allow_env_mismatch)
        own = ModelManager(source, threads=threads)
        try:
            own.load(settings.models)
            if not settings.models:
                logger.warning("no models configured to serve; set MODELPORT_MODELS or pass model references")
            holder.manager = own
            yield
        finally:
            holder.manager = None
            own.close()
            registry.close()

    routes = [*v2.routes(holder.get), *tfserving.routes(holder.get), *_doc_routes(holder)]
    # Plain Starlette: the protocols bring their own routes and OpenAPI document, so FastAPI's
    # per-request machinery (dependency solving, exit stacks, telemetry hooks) would only cost time.
    return Starlette(
        routes=routes,
        middleware=[Middleware(BodyLimit, max_bytes=settings.max_body_bytes)],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )


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


def create_app() -> Starlette:
    """``build_app(Settings.from_env())``, for ``uvicorn --factory modelport.app:create_app``."""
    return build_app(Settings.from_env())
