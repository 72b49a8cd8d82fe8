"""The HTTP server modelport runs: uvicorn with httptools, guarded before any request reaches the app.

What a connection may cost is bounded here, before the app (and so before authentication) sees
anything:

- **header size**: a request whose line and headers exceed ``max_header_bytes`` is answered
  431 and closed; the bytes are counted as they arrive and the parser is given none past the
  limit while the headers are unfinished, so a huge header is never buffered, and one header
  or many adding up are refused alike, however the bytes are split into reads. What the client
  still sends is read and dropped for up to ``LINGER_SECONDS`` (and 16 x the limit) before the
  close, so it reads the 431 instead of a connection reset;
- **header-read time**: a connection has ``header_timeout`` seconds from its first byte (or
  from being opened) to finish a request's headers, else it is answered 408 (or, when it sent
  nothing, closed); one sweep per server checks this a few times per timeout, so requests pay
  for no timer;
- **body-read time**: from the end of its headers a request has ``body_timeout`` seconds, plus
  one per ``body_min_rate`` bytes (64 KiB) received, to finish its body (Content-Length or
  chunked), else it is answered 408 and closed (closed only, when an answer has gone out). So a
  trickle of a byte a second is cut after ``body_timeout``, while an upload that keeps up 64 KiB/s
  is never cut, however large. Time the server itself stops reading (the app has not taken the
  body yet, a pipelined request waits) is not counted. The same sweep checks it; keep-alive idle
  time and responses going out are never timed here;
- **connections**: at most ``max_connections`` per worker. At the cap a new connection evicts
  the connection that has waited longest without a request in progress (idle keep-alive or
  still sending headers); when every connection is busy, the new one is answered 503.

On SIGTERM or SIGINT the server drains: it stops accepting, lets requests in progress finish,
serves requests that arrive on already-open keep-alive connections (answered with
``Connection: close``), closes idle connections once nothing is in flight, and exits with
status 0.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import shutil
import signal
import socket
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import httptools
from uvicorn import Config, Server
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelport.settings import DRAIN_SECONDS, Settings

log = logging.getLogger("modelport")

DEFAULT_MAX_CONNECTIONS = 4096
FD_HEADROOM = 256  # descriptors kept free for model files, the database, logs and the thread pool
DRAIN_POLL_SECONDS = 0.05
LINGER_SECONDS = 2.0  # how long a connection answered 431 reads (and drops) what its client still sends
LINGER_BYTES_PER_HEADER_BYTE = 16  # and how much: 16 x the header limit (1 MiB by default)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may cost before the app sees a request (see the module docstring)."""

    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    body_timeout: float = 30.0
    body_min_rate: int = 64 * 1024  # bytes of body that earn one more second

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout=settings.header_timeout,
            max_connections=connection_cap(settings.max_connections),
            body_timeout=settings.body_timeout,
        )


def connection_cap(configured: int) -> int:
    """``configured``, or (0) as many as the process's descriptor limit allows with headroom."""
    if configured > 0:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(16, min(DEFAULT_MAX_CONNECTIONS, soft - FD_HEADROOM))


def raise_descriptor_limit() -> None:
    """Raise the soft open-files limit to the hard one, as servers do (Debian's default soft limit is 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listening_addresses() -> list[tuple[str, int]]:
    """The TCP addresses this process listens on (read from ``/proc/self/fd``; none where that is missing)."""
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return []
    found = []
    for name in descriptors:
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except (OSError, ValueError):
            continue
        with sock:
            try:
                if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                    continue
                if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    continue
                host, port = sock.getsockname()[:2]
            except OSError:
                continue
        found.append((str(host), int(port)))
    return found


def _status(code: int, reason: str, message: str) -> bytes:
    body = ('{"error": "' + message + '"}').encode()
    head = f"HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"connection: close\r\n\r\n" + body


TOO_LARGE = _status(
    431,
    "Request Header Fields Too Large",
    "the request line and headers are larger than this server accepts (MODELPORT_MAX_HEADER_KB)",
)
TIMED_OUT = _status(
    408, "Request Timeout", "the request headers did not arrive in time (MODELPORT_HEADER_TIMEOUT seconds)"
)
BODY_TIMED_OUT = _status(
    408,
    "Request Timeout",
    "the request body did not arrive in time (MODELPORT_BODY_TIMEOUT seconds, plus one per 64 KiB received)",
)
FULL = _status(503, "Service Unavailable", "the server has as many connections as it accepts; retry shortly").replace(
    b"connection: close\r\n", b"retry-after: 1\r\nconnection: close\r\n"
)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`Limits` and a keep-alive-friendly drain."""

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: Limits = getattr(config, "modelport_limits", None) or Limits()
        self._reading_headers = False  # between a request's first byte (or the connection) and its headers
        self._header_bytes = 0
        self._received = False  # any byte at all on this connection
        self._since = 0.0  # when the connection last became idle or started a request's headers
        self._reading_body = False  # between a request's headers and the end of its body
        self._body_since = 0.0  # when the body started, moved on by the time the server did not read
        self._body_checked = 0.0  # the last sweep that looked at the body
        self._body_bytes = 0
        self._draining = False
        self._refused = False  # answered 431: lingering until the client stops sending
        self._discarded = 0

    # -- connections ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections and not self._evict_one():
            transport.write(FULL)
            transport.close()
            return
        super().connection_made(transport)
        self._start_headers()
        _watch_headers(self.loop, self.server_state, self.limits)

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest without a request in progress."""
        waiting = [c for c in self.connections if isinstance(c, GuardedProtocol) and c.evictable]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c._since)
        oldest._close()
        return True

    @property
    def evictable(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:  # refused in connection_made
            return
        super().connection_lost(exc)

    def _close(self) -> None:
        self._reading_headers = False
        self._reading_body = False
        self.connections.discard(self)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- headers: size and time -----------------------------------------------------------------

    def _start_headers(self) -> None:
        """From now the headers must arrive within ``header_timeout`` (the server's sweep checks)."""
        self._reading_headers = True
        self._header_bytes = 0
        self._since = self.loop.time()

    def _headers_timed_out(self) -> None:
        if not self._reading_headers or self.transport.is_closing():
            return
        if self._received:
            self.transport.write(TIMED_OUT)
        self._close()

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered 431: what the client still sends is read and dropped
            self._discard(len(data))
            return
        self._received = True
        if (
            not self._reading_headers
            and not self._reading_body  # the rest of a body answered early is no header
            and (self.cycle is None or self.cycle.response_complete)
        ):
            self._start_headers()  # the next request on a keep-alive connection
        self._unset_keepalive_if_required()
        if self._reading_headers:
            room = self.limits.max_header_bytes - self._header_bytes
            self._header_bytes += len(data)
            if len(data) > room:  # the parser sees no byte past the limit while headers are unfinished
                if not self._feed(data[:room]):
                    return
                if self._reading_headers:
                    self._refuse_headers()
                    return
                data = data[room:]  # the headers ended within the limit: the rest is body or the next request
        self._feed(data)

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; False when it was invalid (answered 400)."""
        if not data:
            return True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.send_400_response("Upgrades are not supported.")
            return False
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return False
        return not self.transport.is_closing()

    def _refuse_headers(self) -> None:
        """Answer 431, then read and drop what the client still sends for a while (a lingering
        close): closing a socket with unread bytes resets the connection, and a client still
        sending its headers would see the reset rather than the answer."""
        self._reading_headers = False
        self._refused = True
        self.transport.write(TOO_LARGE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self._close)

    def _discard(self, size: int) -> None:
        self._discarded += size
        if self._discarded > LINGER_BYTES_PER_HEADER_BYTE * self.limits.max_header_bytes:
            self._close()

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answered with Connection: close
        self._reading_body = True  # until on_message_complete, at once for a request without a body
        self._body_since = self._body_checked = self.loop.time()
        self._body_bytes = 0

    # -- the body: time ---------------------------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading_body = False
        super().on_message_complete()

    def _check_body(self, now: float) -> None:
        """Called by the sweep: has the body taken longer than its allowance (see the module docstring)?"""
        if self.flow.read_paused:  # the server is not reading: not the client's time
            self._body_since += now - self._body_checked
        self._body_checked = now
        allowed = self.limits.body_timeout + self._body_bytes / self.limits.body_min_rate
        if now - self._body_since >= allowed:
            self._body_timed_out()

    def _body_timed_out(self) -> None:
        if not self._reading_body or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle.response_started and not cycle.response_complete:
            return  # an answer is going out: it is never cut; the next sweep looks again
        if not cycle.response_started and not self.pipeline:
            self.transport.write(BODY_TIMED_OUT)
        self._close()

    def on_response_complete(self) -> None:
        self._since = self.loop.time()
        super().on_response_complete()

    # -- draining -------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Keep serving what this connection sends while the server drains; close it when idle."""
        self._draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            return
        self.loop.call_later(DRAIN_POLL_SECONDS, self._close_when_drained)

    def _close_when_drained(self) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request arrived: its response closes the connection
        if self.tasks or (self._reading_headers and self._header_bytes):
            self.loop.call_later(DRAIN_POLL_SECONDS, self._close_when_drained)
            return
        self._close()


def _watch_headers(loop: asyncio.AbstractEventLoop, state: Any, limits: Limits) -> None:
    """Start the server's header- and body-time sweep unless it runs: one timer per server, not
    one per request, checks every connection still sending headers or a body a few times per
    timeout."""
    if getattr(state, "modelport_sweeping", False):
        return
    state.modelport_sweeping = True
    interval = min(1.0, limits.header_timeout / 4, limits.body_timeout / 4)

    def sweep() -> None:
        now = loop.time()
        for connection in list(state.connections):
            if not isinstance(connection, GuardedProtocol):
                continue
            if connection._reading_headers and now - connection._since >= limits.header_timeout:
                connection._headers_timed_out()
            elif connection._reading_body:
                connection._check_body(now)
        if state.connections:
            loop.call_later(interval, sweep)
        else:
            state.modelport_sweeping = False

    loop.call_later(interval, sweep)


class ModelportServer(Server):
    """uvicorn's server, exiting normally (status 0) after a clean drain on SIGTERM or SIGINT.

    uvicorn records the signal and raises it again once it has shut down, so a drained server
    died "of SIGTERM" (status 143), which supervisors report as a crash. Here a second SIGINT
    still forces the exit; nothing is re-raised.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up; on sockets bound beforehand (:func:`bind`), listening is checked and
        the "running on" line said, as uvicorn does for the sockets it binds itself."""
        port = sockets[0].getsockname()[1] if sockets else 0  # before the event loop takes them
        try:
            await super().startup(sockets=sockets)
        except OSError as exc:  # asyncio's listen() failed
            await self._not_listening(str(exc))
        if sockets is None or not self.started:
            return
        if any(sock is None for server in self.servers for sock in server.sockets):
            # uvloop drops a socket it cannot listen on without a word: a server that also sets
            # SO_REUSEADDR bound the port while the models loaded, and listened first
            taken = f"port {port} on {self.config.host} is in use: another server took it while the models loaded"
            await self._not_listening(f"[Errno {errno.EADDRINUSE}] {taken}")
        _log_running(self.config, port)

    async def _not_listening(self, message: str) -> NoReturn:
        """Stop a start-up that cannot listen as uvicorn stops one that cannot bind."""
        from uvicorn.config import STARTUP_FAILURE

        logging.getLogger("uvicorn.error").error(message)
        for server in getattr(self, "servers", []):
            server.close()
        await self.lifespan.shutdown()
        raise SystemExit(STARTUP_FAILURE)


def bind(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Sockets bound to ``host``:``port`` now and not listening yet, for :func:`run` to serve on.

    Bound before any model loads, a port in use is the first thing said (not after minutes of
    loading), and the port stays bound while they load; connections are refused until the server
    listens, once started (a server that also sets SO_REUSEADDR, as uvicorn does, can still bind
    it meanwhile: the first to listen has it). Every address ``host`` resolves to is bound, as
    asyncio binds a host: SO_REUSEADDR, IPv6 sockets IPv6-only, a family this machine lacks
    skipped; with port 0 every address gets the port the system picked for the first.
    ``reuse_port`` sets SO_REUSEPORT too, as gRPC workers that share a port bind it. Raises the
    OSError of the bind.
    """
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    infos = list(dict.fromkeys(found))  # once each (a resolver may repeat an address)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if sockets and port == 0:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRNOTAVAIL and len(infos) > 1:  # that family is off here
                    continue
                raise
            sockets.append(sock)
        if not sockets:
            raise OSError(errno.EADDRNOTAVAIL, f"no address of {host!r} can be bound on this machine")
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    for sock in sockets:
        sock.set_inheritable(True)  # the worker processes serve them
    return sockets


def _log_running(config: Config, port: int) -> None:
    """uvicorn's "running on" line (which :mod:`modelport.server.spawn` reads the port from)."""
    host = config.host
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if config.is_ssl else "http"
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s://%s:%d (Press CTRL+C to quit)", scheme, shown, port)


@contextmanager
def metrics_directory(settings: Settings) -> Iterator[Settings]:
    """For a server of several workers: the directory where they exchange metrics (see
    :mod:`modelport.observability.metrics`), made for this run (or ``settings.metrics_dir``,
    emptied of an earlier run's files) and removed at the end."""
    if not settings.metrics:
        yield settings
        return
    given = settings.metrics_dir
    directory = Path(tempfile.mkdtemp(prefix="modelport-metrics-")) if given is None else Path(given)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [*directory.glob("*.json"), *directory.glob(".*.tmp")]:
        stale.unlink(missing_ok=True)
    try:
        yield settings.with_(metrics_dir=directory)
    finally:
        if given is None:
            shutil.rmtree(directory, ignore_errors=True)


def run(
    app: Any,
    settings: Settings,
    *,
    factory: bool = False,
    sockets: list[socket.socket] | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` on ``settings.host``:``settings.port`` until SIGTERM/SIGINT, then drain and return.

    ``app`` is an ASGI app, or with ``settings.workers > 1`` an import string (each worker
    process builds its own; ``factory`` says it names a factory). ``sockets`` are those
    :func:`bind` bound for that address beforehand (None: bound here, first). ``options`` go to
    uvicorn's ``Config`` (TLS files, keep-alive timeout). Exits with uvicorn's start-up failure
    status when the app or the socket cannot start.
    """
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from modelport.server.logs import logging_config

    raise_descriptor_limit()
    config = Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=GuardedProtocol,
        ws="none",  # no WebSocket routes: an upgrade request is answered as plain HTTP
        workers=settings.workers,
        factory=factory,
        log_config=logging_config(settings.log_level, settings.log_format),
        log_level=settings.log_level,
        access_log=False,  # modelport's own (settings.access_log), written by admission
        timeout_graceful_shutdown=DRAIN_SECONDS,
        # modelport reads no X-Forwarded-* header, and the Server header only advertises versions
        proxy_headers=False,
        server_header=False,
        **options,
    )
    config.modelport_limits = Limits.from_settings(settings)  # type: ignore[attr-defined]  # read by GuardedProtocol
    if sockets is None:
        try:
            sockets = bind(settings.host, settings.port)
        except OSError as exc:
            logging.getLogger("uvicorn.error").error(exc)
            raise SystemExit(STARTUP_FAILURE) from None
    if settings.workers > 1:
        _log_running(config, sockets[0].getsockname()[1])  # bound: each worker listens once it is ready
        Multiprocess(config, sockets=sockets).run()
        return
    server = ModelportServer(config)
    server.run(sockets=sockets)
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
