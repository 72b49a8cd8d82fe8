"""OpenTelemetry tracing (the ``tracing`` extra): one server span per request, its steps as children.

The span tree of one inference request (HTTP or gRPC)::

    POST /v2/models/{name}/infer          SERVER  model, version, protocol, status, request id, rows
    ├── decode     pick the version, parse the body, check it against the signature
    ├── queue      wait for the runtime call (the batcher's queue, or a thread of the pool)
    ├── inference  the runtime call (a batch's, when batched: its rows are the batch's)
    └── encode     the answer's body

How it stays out of the way:

- **Off costs one check.** Admission (:mod:`modelport.server.admission`, and the gRPC
  interceptor) holds a :class:`Tracing` or None; with None nothing else happens: no span, no
  context object, no extra coroutine. The per-request objects carry ``marks = None``, and the
  few places that note a step (the fast lane, serving's inference call and batcher) check that.
- **Serving imports no OpenTelemetry.** A traced request carries a :class:`~modelport.types.Marks`
  (plain ``time.time_ns()`` integers) from admission through the protocol to serving, which notes
  when it was submitted, when its runtime call started and ended and when it answered. When the
  request is answered, :meth:`Tracing.finish_http` / :meth:`Tracing.finish_grpc` make the child
  spans after the fact with those times as their start and end. A step that was never reached
  has no span; the step that failed (for an answer of 400 or more) has status ERROR.
- **No process globals.** The tracer comes from the provider the app is given
  (``build_app(settings, tracer_provider=...)``), or one this module builds from the standard
  ``OTEL_*`` variables (:func:`provider_from_environment`), owned and shut down by the app. The
  global provider is neither read nor set, and no span is made "current" (children are given
  their parent explicitly), so nothing is written to context variables.
- **W3C trace context.** A caller's ``traceparent`` (and ``tracestate``) header, or gRPC
  metadata, is continued: the server span is its child. Every traced answer carries the server
  span's ``traceparent`` (gRPC: trailing metadata), so a caller can find the trace.
- **Bounded span names.** The name is the route's template (``POST /v2/models/{name}/infer``,
  ``POST /v1/models/{name}:predict``, the router's template, or only the method for a path no route
  knows), never the caller's text; the model and version are attributes.

Health probes and metrics scrapes (:data:`UNTRACED`) make no spans.
"""

from __future__ import annotations

import importlib.metadata
import time

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from modelport.errors import InvalidSetting
from modelport.types import Exchange, Marks
from modelport.version import __version__

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
UNTRACED = frozenset({"/v2/health/live", "/v2/health/ready", "/ping", "/metrics"})
UNTRACED_GRPC = frozenset({"ServerLive", "ServerReady"})  # probes
EXPORTERS = "opentelemetry_traces_exporter"  # the entry-point group span exporters register in


class Trace:
    """One traced request: its server span, the marks serving notes (None when the sampler left
    the request out: then nothing is noted), the ``traceparent`` its answer carries, and the
    exception that failed it (answered 500), if any."""

    __slots__ = ("error", "marks", "span", "traceparent")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.marks = Marks() if span.is_recording() else None
        context = span.get_span_context()
        self.traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        self.error: BaseException | None = None

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]


class Tracing:
    """Makes the spans of requests with the tracer of ``provider``; ``owned``: the app built the
    provider and shuts it down (:meth:`shutdown`), else it stays the caller's."""

    def __init__(self, provider: TracerProvider, *, owned: bool = False) -> None:
        self.provider = provider
        self.owned = owned
        self.tracer = provider.get_tracer("modelport", __version__)
        self._propagator = TraceContextTextMapPropagator()

    # -- starting ----------------------------------------------------------------------------

    def start(self, name: str, traceparent: str | None, tracestate: str | None) -> Trace:
        """A server span named ``name`` (renamed when it ends), continuing the caller's trace when
        ``traceparent`` is a valid one."""
        parent = None
        if traceparent is not None:
            carrier = {TRACEPARENT: traceparent}
            if tracestate is not None:
                carrier[TRACESTATE] = tracestate
            parent = self._propagator.extract(carrier)
        return Trace(self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER))

    def start_http(self, method: str, path: str, headers: dict[bytes, bytes]) -> Trace | None:
        """The trace of an HTTP request (None for a probe or a scrape)."""
        if path in UNTRACED:
            return None
        parent = headers.get(b"traceparent")
        state = headers.get(b"tracestate")
        return self.start(
            method,
            parent.decode("latin-1") if parent is not None else None,
            state.decode("latin-1") if state is not None else None,
        )

    def start_grpc(self, path: str, metadata: dict[str, str]) -> Trace | None:
        """The trace of a gRPC call to ``path`` (None for a probe), from its metadata."""
        if path.rpartition("/")[2] in UNTRACED_GRPC:
            return None
        return self.start(path.lstrip("/"), metadata.get(TRACEPARENT), metadata.get(TRACESTATE))

    # -- finishing ---------------------------------------------------------------------------

    def finish_http(
        self,
        trace_: Trace,
        exchange: Exchange,
        *,
        method: str,
        path: str,
        route: str | None,
        status: int,
        client: str | None,
    ) -> None:
        """End the request's span and make its steps' spans (``route``: the router's template, if
        a route matched)."""
        span = trace_.span
        end = time.time_ns()
        if not span.is_recording():  # sampled out: nothing more to say
            span.end(end)
            return
        template = http_route(exchange.protocol, path, route)
        span.update_name(f"{method} {template}" if template else method)
        attributes: dict[str, AttributeValue] = {"http.request.method": method, "url.path": path}
        if template:
            attributes["http.route"] = template
        if client:
            attributes["client.address"] = client
        attributes["http.response.status_code"] = status
        self._finish(trace_, exchange, status, attributes, end)

    def finish_grpc(self, trace_: Trace, exchange: Exchange, *, path: str, status: int, code: int) -> None:
        """End a gRPC call's span: ``path`` is ``/package.Service/Method``, ``status`` the HTTP
        status of its outcome (the one table), ``code`` the gRPC status code's number."""
        span = trace_.span
        end = time.time_ns()
        if not span.is_recording():
            span.end(end)
            return
        service, _, method = path.lstrip("/").rpartition("/")
        span.update_name(f"{service}/{method}")
        attributes: dict[str, AttributeValue] = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": method,
            "rpc.grpc.status_code": code,
        }
        self._finish(trace_, exchange, status, attributes, end)

    def _finish(
        self, trace_: Trace, exchange: Exchange, status: int, attributes: dict[str, AttributeValue], end: int
    ) -> None:
        span = trace_.span
        attributes["modelport.protocol"] = exchange.protocol
        attributes["modelport.request_id"] = exchange.request_id
        if exchange.model:
            attributes["modelport.model"] = exchange.model
        if exchange.version is not None:
            attributes["modelport.version"] = exchange.version
        if exchange.rows:
            attributes["modelport.rows"] = exchange.rows
        error = trace_.error
        if status >= 400:
            attributes["error.type"] = type(error).__qualname__ if error is not None else str(status)
        span.set_attributes(attributes)
        if error is not None:
            span.record_exception(error)
        if status >= 500:  # a server's fault (4xx: the caller's, left unset as OpenTelemetry says)
            span.set_status(Status(StatusCode.ERROR, f"answered {status}"))
        self._steps(trace_, end, failed=status >= 400)
        span.end(end)

    def _steps(self, trace_: Trace, end: int, *, failed: bool) -> None:
        """The children, from the marks: each step reached, until the one that failed."""
        marks = trace_.marks
        if marks is None or not marks.begun:
            return
        parent = trace.set_span_in_context(trace_.span)
        self._step("decode", parent, marks.begun, marks.submitted or end, failed and not marks.submitted)
        if not marks.submitted:
            return
        self._step("queue", parent, marks.submitted, marks.started or end, failed and not marks.started)
        if not marks.started:
            return
        rows: dict[str, AttributeValue] = {"modelport.batch_rows": marks.rows}
        self._step("inference", parent, marks.started, marks.ended or end, failed and not marks.answered, rows)
        if not marks.answered:
            return
        self._step("encode", parent, marks.answered, marks.encoded or end, failed and not marks.encoded)

    def _step(
        self,
        name: str,
        parent: Context,
        start: int,
        end: int,
        failed: bool,
        attributes: dict[str, AttributeValue] | None = None,
    ) -> None:
        span = self.tracer.start_span(name, context=parent, start_time=start, attributes=attributes)
        if failed:
            span.set_status(Status(StatusCode.ERROR))
        span.end(max(start, end))

    def shutdown(self) -> None:
        """Flush and stop the provider when the app built it (a given one stays its owner's)."""
        if self.owned:
            shutdown = getattr(self.provider, "shutdown", None)
            if shutdown is not None:
                shutdown()


def http_route(protocol: str, path: str, route: str | None) -> str | None:
    """The template of an HTTP request's path: the fast lane's inference paths by protocol (the
    lane sets it), else the router's (None: no route matched; the span is named by its method)."""
    if protocol == "v2":
        return "/v2/models/{name}/versions/{version}/infer" if "/versions/" in path else "/v2/models/{name}/infer"
    if protocol == "tfserving" and path.endswith(":predict"):
        if "/versions/" in path:
            return "/v1/models/{name}/versions/{version}:predict"
        if "/labels/" in path:
            return "/v1/models/{name}/labels/{label}:predict"
        return "/v1/models/{name}:predict"
    return route


def provider_from_environment(exporters: str) -> TracerProvider:
    """An SDK tracer provider as the standard ``OTEL_*`` variables describe it: the resource
    (``OTEL_SERVICE_NAME``, default ``modelport``; ``OTEL_RESOURCE_ATTRIBUTES``), the sampler
    (``OTEL_TRACES_SAMPLER``), batching (``OTEL_BSP_*``), and one batch processor per exporter named
    in ``exporters`` (``OTEL_TRACES_EXPORTER``: ``otlp``, the default, needs
    ``opentelemetry-exporter-otlp``; ``console`` is built in; ``none``: no export), found by
    entry point as OpenTelemetry's own auto-configuration finds them."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "modelport"}))
    provider = SdkTracerProvider(resource=resource, shutdown_on_exit=False)  # the app shuts it down
    for name in (n.strip() for n in exporters.split(",")):
        if not name or name == "none":
            continue
        found = importlib.metadata.entry_points(group=EXPORTERS, name=name)
        if not found:
            hint = "pip install opentelemetry-exporter-otlp" if name.startswith("otlp") else "install its package"
            raise InvalidSetting(
                f"OTEL_TRACES_EXPORTER={name}: no such span exporter is installed ({hint}; 'console' is built in, "
                "'none' exports nothing)"
            )
        exporter = next(iter(found)).load()
        provider.add_span_processor(BatchSpanProcessor(exporter()))
    return provider
