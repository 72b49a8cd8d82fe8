"""What every HTTP request passes on its way in, written once: the admission pipeline.

:class:`HttpAdmission` is plain ASGI in front of everything the app serves (the inference fast
lane and the router alike), so no request skips it:

1. a request id: the caller's ``x-request-id`` when it is a sane token, else a new one; it is
   sent back on the answer and named in the log lines about the request;
2. who may call what: the :class:`~modelport.server.guard.Gate` (404 for absent management
   paths, 401/403, the loopback rule while authentication is off), before any body is read;
3. the body: refused with 413 past ``max_body_bytes`` (declared or read), gzip/deflate decoded
   within the limit (415 for other encodings), then handed on whole: to the fast lane in
   :class:`Admitted`, to the router by replaying ``receive``;
4. one error handler: a domain error raised anywhere downstream, before the answer started,
   becomes its status and ``{"error": ...}`` (the table in :mod:`modelport.protocols.errors`);
   the router's 404/405 become the same JSON; anything else is logged and answered 500.

After admission the app sends the answer itself (the fast lane with :func:`send_payload`, the
router through :meth:`Admitted.sending`), so the request id is on every answer.

5. when the answer is sent: the request is counted in the metrics (its protocol, model, version
   and status class, its duration, its caller) and, when on, written to the access log;
6. when tracing is on (:mod:`modelport.observability.tracing`), a server span from the first
   step to the answer, continuing the caller's ``traceparent`` and sending its own back; a fault
   (an answer of 500) is also reported to Sentry when ``SENTRY_DSN`` is set
   (:mod:`modelport.observability.errors`). Off, each costs one ``is None`` check.

The steps are one transport-neutral object, :class:`Admission` (begin, admit, fail, finish); gRPC's
:class:`modelport.server.grpc.AdmissionInterceptor` calls the same one.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.auth.principal import Principal
from modelport.errors import Forbidden, ModelportError, Unauthenticated
from modelport.protocols.errors import JSON, Payload, error_payload, too_large, unsupported_encoding
from modelport.server.body import BodyTooLarge, ClientGone, UnsupportedEncoding, decode_body, read_body
from modelport.server.guard import Access, Gate, Need, NotLoopback, absent, refused
from modelport.server.logs import AccessLog
from modelport.types import EXCHANGE, Exchange, Marks

if TYPE_CHECKING:
    from modelport.observability.errors import ErrorReports
    from modelport.observability.metrics import Metrics
    from modelport.observability.tracing import Trace, Tracing

logger = logging.getLogger("modelport")

REQUEST_ID = "x-request-id"
_REQUEST_ID = REQUEST_ID.encode("latin-1")
_TRACEPARENT = b"traceparent"
INTERNAL = 500  # the status of a fault on our side: the answers that are reported
_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_JSON = JSON.encode("latin-1")
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
ADMITTED = EXCHANGE  # the scope key of a request's Admitted (protocols note what it was there)
CLOSED = 499  # the status counted for a request whose client left before the answer


class Admitted(Exchange):
    """One request in admission, HTTP or gRPC: when it arrived, its id, its headers by (lower-case)
    name (HTTP's), its whole body, its caller, whether its answer has started (then an error can no
    longer be answered) and with which status, its trace when traced; the
    :class:`~modelport.types.Exchange` fields say what it turned out to be. (A plain class: one is
    made per request, and a dataclass ``__init__`` with keyword-only fields costs twice as much.)"""

    __slots__ = ("begun", "body", "headers", "principal", "started", "status", "trace")

    def __init__(self, request_id: str, headers: dict[bytes, bytes]) -> None:
        self.begun = time.perf_counter()
        self.protocol = "other"
        self.model = ""
        self.version: int | None = None
        self.rows = 0
        self.request_id = request_id
        self.marks: Marks | None = None
        self.headers = headers
        self.body = b""
        self.principal: Principal | None = None
        self.started = False
        self.status = CLOSED
        self.trace: Trace | None = None

    def sending(self, send: Send) -> Send:
        """``send`` for the router: the request id goes on the answer, its start is noted."""

        async def answering(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.started = True
                self.status = message["status"]
                message["headers"] = [*message.get("headers", ()), (_REQUEST_ID, self.request_id.encode("ascii"))]
                if self.trace is not None:
                    message["headers"].append((_TRACEPARENT, self.trace.traceparent.encode("ascii")))
            await send(message)

        return answering

    def receiving(self, receive: Receive) -> Receive:
        """``receive`` for the router: the whole body once, then whatever the server says (a disconnect)."""
        pending: list[Any] = [{"type": "http.request", "body": self.body, "more_body": False}]

        async def replayed() -> Message:
            return pending.pop() if pending else await receive()

        return replayed


_PREFIX = os.urandom(4).hex()  # this process's ids: the prefix and a counter, unique and cheap
_COUNTER = itertools.count()


def request_id(given: bytes | None) -> str:
    """The caller's request id when it is a sane token, else a new one (16 hex digits)."""
    if given is not None and _SANE_ID.fullmatch(given):
        return given.decode("ascii")
    return f"{_PREFIX}{next(_COUNTER) & 0xFFFFFFFF:08x}"


def client_of(principal: Principal) -> str:
    """The metrics label of a caller: its API key's id, or ``(token)`` for an OAuth2 token (whose
    subjects are not a bounded set)."""
    subject = principal.subject
    return subject[4:] if subject.startswith("key:") else "(token)"


def refusal(error: ModelportError, bare: bool) -> str:
    """Why a caller was refused, for the metrics: ``missing`` or ``invalid`` credentials (401),
    ``not_loopback`` (403 while authentication is off), or ``forbidden`` (a scope is missing)."""
    if isinstance(error, Unauthenticated):
        return "missing" if bare else "invalid"
    return "not_loopback" if isinstance(error, NotLoopback) else "forbidden"


async def send_payload(send: Send, payload: Payload, request_id: str, trace: Trace | None = None) -> None:
    """A finished answer, with its request id (and its ``traceparent`` when traced), in two ``send`` calls."""
    media_type = _JSON if payload.media_type == JSON else payload.media_type.encode("latin-1")
    headers = [
        (b"content-type", media_type),
        (b"content-length", b"%d" % len(payload.body)),
        (_REQUEST_ID, request_id.encode("ascii")),
    ]
    if trace is not None:
        headers.append((_TRACEPARENT, trace.traceparent.encode("ascii")))
    if payload.headers:
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in payload.headers.items()]
    start: Message = {"type": "http.response.start", "status": payload.status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": payload.body})


@dataclass(frozen=True, slots=True)
class Watchers:
    """What sees every request, on every transport (HTTP admission and the gRPC interceptor share
    one): ``metrics`` count it, ``access_log`` writes its line, ``tracing`` traces it (each
    transport starts and ends its own spans), ``errors`` report its fault. Each None: off."""

    metrics: Metrics | None = None
    access_log: AccessLog | None = None
    tracing: Tracing | None = None
    errors: ErrorReports | None = None

    def refused(self, error: ModelportError, bare: bool) -> None:
        """A caller was refused (``bare``: it sent no credentials at all)."""
        if self.metrics is not None and isinstance(error, Unauthenticated | Forbidden):
            self.metrics.refused(refusal(error, bare))

    def fault(self, error: Exception, exchange: Exchange, *, method: str, path: str, trace: Trace | None) -> None:
        """A request answered 500 (gRPC: INTERNAL): its span records the error, and Sentry hears of it."""
        if trace is not None:
            trace.error = error
        if self.errors is not None:
            trace_id = trace.trace_id if trace is not None else None
            self.errors.request_failed(error, exchange, method=method, path=path, trace_id=trace_id)

    def answered(
        self,
        exchange: Exchange,
        status: int,
        principal: Principal | None,
        seconds: float,
        *,
        client: str,
        method: str,
        path: str,
    ) -> None:
        """Count the answered request and write its access-log line."""
        metrics = self.metrics
        if metrics is not None:
            metrics.request(exchange, status, seconds)
            if principal is not None:
                metrics.client(client_of(principal))
        if self.access_log is not None:
            self.access_log.write(
                request_id=exchange.request_id,
                client=client,
                key=client_of(principal) if principal is not None else None,
                method=method,
                path=path,
                protocol=exchange.protocol,
                model=exchange.model,
                version=exchange.version,
                status=status,
                seconds=seconds,
                rows=exchange.rows,
            )


class Admission:
    """The admission steps, written once for every transport: :meth:`begin` (the request id, the
    clock, the trace), :meth:`admit` (the gate: who may call what), :meth:`fail` (an error's status,
    a fault logged and reported), :meth:`finish` (counted, and written to the access log).
    :class:`HttpAdmission` and the gRPC interceptor (:class:`modelport.server.grpc.AdmissionInterceptor`)
    call them in that order and only translate: headers or metadata in, answers or status codes out.
    ``gate`` None: no credential check (a gRPC server built without one)."""

    def __init__(self, gate: Gate | None, watchers: Watchers | None = None) -> None:
        self.gate = gate
        self.watchers = watchers if watchers is not None else Watchers()

    @staticmethod
    def begin(given_id: bytes | None, headers: dict[bytes, bytes], trace: Trace | None) -> Admitted:
        """A request arrived (``given_id``: the caller's request id, used when sane; ``trace``: the
        transport's server span, None when not traced): its :class:`Admitted`, its clock started."""
        admitted = Admitted(request_id(given_id), headers)
        if trace is not None:
            admitted.trace = trace
            admitted.marks = trace.marks  # None when sampled out: serving then notes nothing
        return admitted

    def admit(
        self,
        admitted: Admitted,
        need: Need,
        authorization: str | None,
        api_key: str | None,
        *,
        server: tuple[str, int] | None,
        method: str,
        path: str,
        client: str,
    ) -> None:
        """Raise when the caller may not make this request (the refusal logged and counted); note
        the principal. ``server``: the address the request reached (the loopback rule), if known."""
        if self.gate is None or need.access is Access.OPEN:
            return
        try:
            principal = self.gate.admit(need, authorization, api_key, server)
        except ModelportError as exc:
            refused(method, path, client, admitted.request_id, exc)
            self.watchers.refused(exc, authorization is None and api_key is None)
            raise
        admitted.principal = principal

    def fail(self, admitted: Admitted, error: Exception, status: int, *, method: str, path: str) -> None:
        """The request ends in ``error``, answered ``status``: a fault of ours (500) is logged when it
        is not a domain error, recorded on the span and reported to Sentry. (An answer already started
        keeps the status it started with.)"""
        if not admitted.started:
            admitted.status = status
        if status != INTERNAL:
            return
        if not isinstance(error, ModelportError):
            logger.error("unhandled error on %s %s (request %s)", method, path, admitted.request_id, exc_info=error)
        self.watchers.fault(error, admitted, method=method, path=path, trace=admitted.trace)

    def finish(self, admitted: Admitted, *, client: str, method: str, path: str) -> float:
        """The request was answered (``admitted.status``): count it and write its access-log line;
        returns its seconds."""
        seconds = time.perf_counter() - admitted.begun
        self.watchers.answered(
            admitted, admitted.status, admitted.principal, seconds, client=client, method=method, path=path
        )
        return seconds


class HttpAdmission:
    """Plain ASGI: admit every HTTP request (see the module docstring), then call ``app``;
    ``watchers`` see each one."""

    def __init__(
        self,
        app: ASGIApp,
        gate: Gate,
        *,
        max_body_bytes: int,
        body_limit_variable: str = "MODELPORT_MAX_BODY_MB",
        watchers: Watchers | None = None,
    ) -> None:
        self.app = app
        self.gate = gate
        self.max_body = max_body_bytes
        self.body_limit_variable = body_limit_variable  # named in the 413's advice
        self.admission = Admission(gate, watchers)
        self.watchers = self.admission.watchers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        tracing = self.watchers.tracing
        trace = None if tracing is None else tracing.start_http(scope["method"], scope["path"], headers)
        admitted = scope[ADMITTED] = self.admission.begin(headers.get(_REQUEST_ID), headers, trace)
        try:
            self._check(scope, admitted)
            if scope["method"] in _WITH_BODY:  # read here, not in a helper: one coroutine fewer per request
                length = headers.get(b"content-length")
                if length is not None and (not length.isdigit() or int(length) > self.max_body):
                    raise BodyTooLarge
                body = await read_body(receive, self.max_body)
                encoding = headers.get(b"content-encoding")
                if encoding is not None:
                    body = decode_body(body, encoding.decode("latin-1"), self.max_body)
                admitted.body = body
            await self.app(scope, receive, send)
        except Exception as exc:
            payload = self._error(scope, exc)
            if payload is None:
                return  # the client left
            self.admission.fail(admitted, exc, payload.status, method=scope["method"], path=scope["path"])
            if admitted.started:
                raise
            await send_payload(send, payload, admitted.request_id, admitted.trace)
        finally:
            self._answered(scope, admitted)

    def _answered(self, scope: Scope, admitted: Admitted) -> None:
        client = scope.get("client")
        host = client[0] if client else "-"
        method, path = scope["method"], scope["path"]
        self.admission.finish(admitted, client=host, method=method, path=path)
        tracing = self.watchers.tracing
        if tracing is not None and admitted.trace is not None:
            route = scope.get("route")
            tracing.finish_http(
                admitted.trace,
                admitted,
                method=method,
                path=path,
                route=getattr(route, "path", None),
                status=admitted.status,
                client=client[0] if client else None,
            )

    def _check(self, scope: Scope, admitted: Admitted) -> None:
        """The gate: raise when the caller may not make this request; note the principal."""
        need = self.gate.need(scope["path"])
        if need.access is Access.OPEN:
            return
        if need.access is Access.ABSENT:
            raise absent(scope)
        headers = admitted.headers
        authorization = headers.get(b"authorization")
        api_key = headers.get(b"x-api-key")
        client = scope.get("client")
        self.admission.admit(
            admitted,
            need,
            authorization.decode("latin-1") if authorization is not None else None,
            api_key.decode("latin-1") if api_key is not None else None,
            server=scope.get("server"),
            method=scope["method"],
            path=scope["path"],
            client=client[0] if client else "-",
        )
        if admitted.principal is not None:
            scope.setdefault("state", {})["principal"] = admitted.principal

    def _error(self, scope: Scope, exc: Exception) -> Payload | None:
        """The answer to an exception from admission or the app (None: nobody to answer)."""
        if isinstance(exc, ModelportError):
            return error_payload(exc)
        if isinstance(exc, BodyTooLarge):
            return too_large(self.max_body, self.body_limit_variable)
        if isinstance(exc, UnsupportedEncoding):
            return unsupported_encoding(str(exc))
        if isinstance(exc, ClientGone):
            return None
        if isinstance(exc, HTTPException):
            status = exc.status_code
            text = f"no such endpoint: {scope['method']} {scope['path']}" if status in (404, 405) else exc.detail
            headers = dict(exc.headers or {})
            return Payload(status, orjson.dumps({"error": str(text)}), JSON, headers or None)
        return error_payload(ModelportError(f"internal server error: {type(exc).__name__}; see the server log"))
