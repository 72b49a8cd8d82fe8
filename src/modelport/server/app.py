"""The ASGI app: one factory wires settings, registry, manager and protocols together.

``build_app(settings)`` builds the app; its lifespan opens the registry, loads
``settings.models`` and closes everything at shutdown (and starts and stops tracing's exporter
and the Sentry client, when on). ``create_app()`` is the same from the
environment, for ``uvicorn --factory modelport.app:create_app`` (each worker process builds one).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    closing,
    contextmanager,
    nullcontext,
    suppress,
)
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Message, Receive, Scope, Send

from modelport.auth.authenticator import Authenticator
from modelport.errors import InvalidSetting, ModelNotReady, ModelportError
from modelport.observability.capture import Capture
from modelport.observability.drift import DriftGauges
from modelport.observability.errors import ErrorReports
from modelport.observability.metrics import CONTENT_TYPE, Metrics
from modelport.protocols import openapi, sagemaker, tfserving, v2
from modelport.protocols.codec import dumps
from modelport.protocols.errors import JSON
from modelport.server import docs
from modelport.server.admission import ADMITTED, Admitted, HttpAdmission, Watchers
from modelport.server.fastlane import FastLane
from modelport.server.guard import METRICS_PATH, Gate, authentication, is_loopback
from modelport.server.http import listening_addresses
from modelport.server.logs import AccessLog, configure_modelport
from modelport.serving import watcher
from modelport.serving.batching import BatchSettings
from modelport.serving.hooks import Watching
from modelport.serving.manager import LoadFailed, ModelManager, RegistrySource
from modelport.serving.modeldirs import SageMakerEndpoint
from modelport.serving.plans import specs_from
from modelport.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from modelport.observability.tracing import Tracing
    from modelport.registry.registry import Registry

logger = logging.getLogger("modelport")

EXPOSURE_POLLS = 50  # tenths of a second to wait for the server to bind its sockets


class _Holder:
    """What the lifespan runs; handlers ask for it on each request."""

    def __init__(self, manager: ModelManager | None) -> None:
        self.manager = manager
        self.authenticator: Authenticator | None = None  # set by the lifespan; gRPC uses it too
        self.grpc_port: int | None = None  # the bound gRPC port while the app runs
        self.startup_error: ModelportError | None = None  # why the lifespan failed to start

    def get(self) -> ModelManager:
        manager = self.manager
        if manager is None:
            raise ModelNotReady("the server is starting: models are still loading; retry shortly")
        return manager

    @asynccontextmanager
    async def serving(self, models: AbstractAsyncContextManager[ModelManager]) -> AsyncIterator[None]:
        """Requests go to the manager ``models`` yields (once it has loaded) while the block runs."""
        before = self.manager
        async with models as self.manager:
            try:
                yield
            finally:
                self.manager = before


def build_app(
    settings: Settings,
    *,
    manager: ModelManager | None = None,
    authenticator: Authenticator | None = None,
    tracer_provider: TracerProvider | None = None,
) -> ModelportApp:
    """The modelport ASGI app. Pass ``manager`` to serve one you built (it stays yours to close).

    The lifespan builds the authenticator (API keys from the registry, JWT per ``settings``)
    unless one is given, and refuses to start when the startup rules are broken
    (:func:`modelport.auth.authenticator.check_exposure`).

    Tracing is on with ``settings.tracing`` (a provider built from the ``OTEL_*`` variables, shut
    down with the app) or when ``tracer_provider`` is given (it stays yours); the process-wide
    provider is never used. With ``settings.sentry_dsn`` the lifespan starts the app's own Sentry
    client (in each worker process: the SDK's sending thread does not survive a fork) and closes it.
    """
    holder = _Holder(manager)
    tracing = _tracing(settings, tracer_provider)  # None: off
    reports = ErrorReports(settings.sentry_dsn) if settings.sentry_dsn else None  # None: off
    load_failed = reports.load_failed if reports is not None else None
    # Payload capture (writing from its first sample) and drift (computed while the registry is followed)
    capture = Capture(settings.capture_root, rate=settings.capture_rate, redact=settings.capture_redact)
    drift = DriftGauges(settings.capture_root, interval=settings.drift_interval, window=settings.drift_window)
    # The app's own metrics (no process-wide registry); versions are watched even with /metrics off, for capture
    metrics = Metrics(
        directory=settings.metrics_dir, manager=lambda: holder.manager, capture=capture, extras=[drift.samples]
    )
    gate = Gate(settings, lambda: holder.authenticator)  # one policy for HTTP and gRPC
    access = AccessLog(settings.log_format) if settings.access_log else None
    watchers = Watchers(metrics if settings.metrics else None, access, tracing, reports)  # see every request
    # SageMaker mode serves /opt/ml/model (or a multi-model endpoint), not the registry.
    endpoint = SageMakerEndpoint(settings) if settings.sagemaker and manager is None else None
    from_registry = manager is None and endpoint is None

    def models(registry: Registry | None) -> AbstractAsyncContextManager[ModelManager]:
        """The registry's models, SageMaker's, or the manager given."""
        if registry is not None:
            return _following(settings, registry, metrics, load_failed, drift)
        if endpoint is not None:
            return _sagemaker(endpoint, metrics)
        assert manager is not None
        return _given(manager, settings.models, metrics, load_failed)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        try:
            with closing(capture), observing(tracing, reports), _registry(settings, from_registry) as registry:
                async with (
                    metrics.flushing(),
                    authentication(settings, registry, authenticator) as holder.authenticator,
                    holder.serving(models(registry)),
                    _grpc(settings, holder, gate, watchers),
                    exposure_check(settings, holder),
                ):
                    with frozen_heap():
                        yield
        except ModelportError as exc:
            holder.startup_error = exc  # said in one line, not as a traceback
            raise

    router = Router(_routes(settings, holder, metrics, endpoint), lifespan=lifespan)
    lane = FastLane(holder.get, sticky_header=settings.sticky_header)
    return ModelportApp(
        router,
        lane,
        gate,
        holder,
        max_body_bytes=settings.max_body_bytes,
        body_limit_variable=settings.variable_for("max_body_bytes"),
        watchers=watchers,
    )


def _routes(settings: Settings, holder: _Holder, metrics: Metrics, endpoint: SageMakerEndpoint | None) -> list[Route]:
    """Every protocol's routes, for a plain router, not a Starlette app: admission is the one
    middleware and the one error handler, and the protocols bring their own routes and OpenAPI document."""
    return [
        *v2.routes(holder.get, management=settings.enable_management),
        *tfserving.routes(holder.get),
        *_doc_routes(holder),
        *_metrics_routes(metrics, settings),
        *(sagemaker.routes(endpoint) if endpoint is not None else []),
    ]


# -- what the app serves: each yields the manager once its models are loaded -------------------------


@asynccontextmanager
async def _given(
    manager: ModelManager, refs: Sequence[str], watching: Watching, load_failed: LoadFailed | None
) -> AsyncIterator[ModelManager]:
    """A manager the caller built (it stays theirs to close), watched by the app, ``refs`` loaded."""
    manager.watch_with(watching, load_failed)
    if refs:
        await manager.load(refs)
    yield manager


@asynccontextmanager
async def _sagemaker(endpoint: SageMakerEndpoint, watching: Watching) -> AsyncIterator[ModelManager]:
    """The model directories of a SageMaker container (see :mod:`modelport.serving.modeldirs`)."""
    served = await endpoint.start(watching)
    try:
        yield served
    finally:
        endpoint.close()


@asynccontextmanager
async def _following(
    settings: Settings, registry: Registry, watching: Watching, load_failed: LoadFailed | None, drift: DriftGauges
) -> AsyncIterator[ModelManager]:
    """The registry's versions that ``settings`` name (references, an alias for every model, a
    version policy), followed as the registry changes; the served versions' drift computed."""
    threads = settings.compute_threads
    source = RegistrySource(
        registry, threads=threads, allow_env_mismatch=settings.allow_env_mismatch, device=settings.device
    )
    manager = ModelManager(
        source,
        threads=threads,
        batching=BatchSettings.from_settings(settings),
        timeout=settings.request_timeout,
        overload_unready=settings.overload_unready,
        watching=watching,
        load_failed=load_failed,
    )
    try:
        await manager.follow(specs_from(settings.models, settings.serve_alias, settings.version_policy))
        if not (settings.models or settings.serve_alias or settings.version_policy):
            logger.warning("no models configured to serve; pass model references, --alias or --policy")
        async with (
            watcher.watching(manager, registry, settings.poll_seconds),
            drift.running(lambda: [model.version for model in manager.served()], registry.artifact_path),
        ):
            yield manager
    finally:
        manager.close()


def _registry(settings: Settings, wanted: bool) -> AbstractContextManager[Registry | None]:
    """The registry the app serves from, closed at the end (None when it serves none)."""
    if not wanted:
        return nullcontext()
    from modelport.registry.registry import Registry

    return Registry.open(settings)


class ModelportApp(HttpAdmission):
    """The ASGI app: admission (:class:`~modelport.server.admission.HttpAdmission`, which every
    HTTP request passes), then inference POSTs go to the :class:`FastLane` and everything else to
    the router. The app is the admission rather than wrapping it: one call fewer per request.

    A start-up that fails with a domain error (a model that cannot load, a refused setting) is
    reported to the server as one line, ``cannot start: <reason>``, instead of a traceback.
    """

    def __init__(
        self,
        router: Router,
        lane: FastLane,
        gate: Gate,
        holder: _Holder,
        *,
        max_body_bytes: int,
        body_limit_variable: str = "MODELPORT_MAX_BODY_MB",
        watchers: Watchers | None = None,
    ) -> None:
        super().__init__(
            self._dispatch,
            gate,
            max_body_bytes=max_body_bytes,
            body_limit_variable=body_limit_variable,
            watchers=watchers,
        )
        self.router = router
        self.lane = lane
        self._holder = holder

    @property
    def grpc_port(self) -> int | None:
        """The port the gRPC endpoint is bound to while the app runs (None without gRPC)."""
        return self._holder.grpc_port

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """After admission (HTTP), or for anything else (lifespan)."""
        if scope["type"] != "http":
            lifespan = scope["type"] == "lifespan"
            await self.router(scope, receive, self._lifespan_send(send) if lifespan else send)
            return
        target = self.lane.target(scope["path"])
        if target is not None:
            if scope["method"] != "POST":  # inference paths take POST only (admission answers the JSON 405)
                raise HTTPException(405, headers={"Allow": "POST"})
            await self.lane.serve(target, scope, send)
            return
        admitted: Admitted = scope[ADMITTED]
        scope["app"] = self  # the router then raises its 404/405 for admission to answer as JSON
        await self.router(scope, admitted.receiving(receive), admitted.sending(send))

    def _lifespan_send(self, send: Send) -> Send:
        async def reporting(message: Message) -> None:
            failed = self._holder.startup_error
            if message["type"] == "lifespan.startup.failed" and failed is not None:
                message = {**message, "message": f"cannot start: {failed.message}"}
            await send(message)

        return reporting


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
async def exposure_check(settings: Settings, holder: _Holder) -> AsyncIterator[None]:
    """While the app runs: once the server has bound its sockets, say loudly if one is reachable from
    other machines while no authentication is configured (such requests are refused, 403: see
    :meth:`~modelport.server.guard.Gate.admit`). Catches a bare ``uvicorn --host 0.0.0.0``."""

    async def watch() -> None:
        for _ in range(EXPOSURE_POLLS):
            await asyncio.sleep(0.1)
            authenticator = holder.authenticator
            if settings.insecure_open or (authenticator is not None and authenticator.enabled):
                return
            exposed = [f"{host}:{port}" for host, port in listening_addresses() if not is_loopback(host)]
            if exposed:
                logger.error(
                    "listening on %s WITHOUT authentication: requests that arrive on a non-loopback address are "
                    "refused (403) until an API key or OAuth2 tokens are configured "
                    "(modelport keys create --scope infer), or MODELPORT_INSECURE_OPEN=1 serves them openly",
                    ", ".join(exposed),
                )
                return

    task = asyncio.create_task(watch(), name="modelport-exposure-check")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def _grpc(
    settings: Settings,
    holder: _Holder,
    gate: Gate,
    watchers: Watchers,
) -> AsyncIterator[None]:
    """The V2 gRPC endpoint on ``settings.grpc_port`` while the app runs (none when it is None; port 0:
    one the system picks, in ``ModelportApp.grpc_port``)."""
    if settings.grpc_port is None:
        yield
        return
    try:
        from modelport.server.grpc import grpc_endpoint
    except ImportError as exc:
        raise ModelportError(
            f"gRPC needs the grpc extra ({exc.name} is not installed): pip install 'modelport[grpc]'"
        ) from None
    async with grpc_endpoint(settings, holder.get, gate, watchers) as port:
        holder.grpc_port = port
        try:
            yield
        finally:
            holder.grpc_port = None


def _tracing(settings: Settings, provider: TracerProvider | None) -> Tracing | None:
    """Tracing with ``provider``, or with one built from the ``OTEL_*`` variables when
    ``settings.tracing`` is on (None: off); a clear error when the extra is not installed."""
    if provider is None and not settings.tracing:
        return None
    try:
        from modelport.observability.tracing import Tracing, provider_from_environment
    except ImportError as exc:
        raise InvalidSetting(
            f"MODELPORT_TRACING is on but the tracing extra is not installed ({exc.name} is missing): "
            "pip install 'modelport[tracing]'"
        ) from None
    if provider is not None:
        return Tracing(provider)
    return Tracing(provider_from_environment(settings.tracing_exporter), owned=True)


@contextmanager
def observing(tracing: Tracing | None, reports: ErrorReports | None) -> Iterator[None]:
    """While the app runs: the Sentry client (made here, in the worker process; a clear error
    when the extra is missing); at shutdown, queued reports and spans are sent."""
    if reports is not None:
        reports.start()
    try:
        yield
    finally:
        if reports is not None:
            reports.close()
        if tracing is not None:
            tracing.shutdown()


def _doc_routes(holder: _Holder) -> list[Route]:
    async def spec(request: Request) -> Response:
        served = holder.manager.served() if holder.manager is not None else []
        # Only the models the caller may call (the auth guard put its principal there; none: auth is off)
        principal = request.scope.get("state", {}).get("principal")
        visible = principal.may_infer if principal is not None else None
        secured = holder.authenticator is not None and holder.authenticator.enabled
        document = openapi.build_spec(served, visible=visible, secured=secured)
        return Response(dumps(document), media_type=JSON)

    return [Route("/openapi.json", spec, methods=["GET"]), *docs.routes()]


def _metrics_routes(metrics: Metrics, settings: Settings) -> list[Route]:
    """``GET /metrics`` (admission refuses it, 404, when metrics are off)."""

    async def scrape(request: Request) -> Response:
        if metrics.directory is None:
            return Response(metrics.exposition(), media_type=CONTENT_TYPE)
        own = metrics.snapshot()  # on the loop: it reads the serving state
        text = await asyncio.to_thread(metrics.exposition, own)  # the other workers' files, off the loop
        return Response(text, media_type=CONTENT_TYPE)

    return [Route(METRICS_PATH, scrape, methods=["GET"])] if settings.metrics else []


def create_app() -> ModelportApp:
    """``build_app(Settings.from_env())``, for ``uvicorn --factory modelport.app:create_app``
    (and each worker of ``modelport serve --workers N``); the ``modelport`` logger gets a handler
    if the server did not give it one."""
    settings = Settings.from_env()
    configure_modelport(settings.log_level, settings.log_format)
    return build_app(settings)
