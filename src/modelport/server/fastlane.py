"""The hot path as plain ASGI: ``POST .../infer`` (V2) and ``POST ...:predict`` (TF Serving).

The app (:class:`modelport.server.app.ModelportApp`) hands inference POSTs to the lane before Starlette
sees them: no router, no middleware stack, no request or response objects. The lane reads the
headers once, applies the same :class:`~modelport.server.guard.Gate` and body-size limit as
the middlewares do for every other request, reads the body straight from ``receive``, lets the
protocol module decode it and the manager run it, and sends the encoded answer in two ``send``
calls. An unexpected exception is logged and answered with a JSON 500, as elsewhere.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable

from starlette.types import Message, Receive, Scope, Send

from modelport.errors import InvalidInput, ModelportError
from modelport.protocols import tfserving, v2
from modelport.protocols.codec import TIMEOUT_HEADER, timeout_header
from modelport.protocols.errors import JSON, Payload, error_payload, too_large, unsupported_encoding
from modelport.server.guard import Gate, refused
from modelport.serving.manager import ModelManager

logger = logging.getLogger("modelport")

V2_PREFIX = "/v2/models/"
V2_SUFFIX = "/infer"
TF_PREFIX = "/v1/models/"
TF_SUFFIX = ":predict"
_HEADER_LENGTH = v2.HEADER_LENGTH.encode("latin-1")
_TIMEOUT = TIMEOUT_HEADER.encode("latin-1")
_JSON = JSON.encode("latin-1")

Target = tuple[str, str | None] | str  # V2 (name, selector), or the TF Serving path after /v1/models/


class ClientGone(Exception):
    """The client disconnected before the whole body arrived."""


class BodyTooLarge(Exception):
    """A body (without a declared length, or once decompressed) grew past the limit."""


class UnsupportedEncoding(Exception):
    """A ``Content-Encoding`` this server does not decode (415)."""


ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_body(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` as it was before its ``Content-Encoding`` (gzip or deflate), at most ``limit`` bytes.

    The limit applies to the decompressed size, which is never exceeded in memory: a small body
    that would inflate past it raises :class:`BodyTooLarge` after ``limit`` bytes.
    """
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    wbits = ENCODINGS.get(coding)
    if wbits is None:
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding[:40]!r} is not supported; send the body uncompressed, or gzip or deflate"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
        if len(data) <= limit and not inflater.unconsumed_tail:
            data += inflater.flush(limit + 1 - len(data))
    except zlib.error as exc:
        if (coding == "deflate" and not body[:1]) or coding != "deflate":
            raise InvalidInput(f"the {coding} request body cannot be decompressed: {exc}") from None
        return _raw_deflate(body, limit)
    if len(data) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge
    if not inflater.eof:
        raise InvalidInput(f"the {coding} request body is truncated; send the whole compressed body")
    return data


def _raw_deflate(body: bytes, limit: int) -> bytes:
    """Deflate without the zlib wrapper, which some clients send as ``deflate``."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the deflate request body cannot be decompressed: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge
    if not inflater.eof:
        raise InvalidInput("the deflate request body is truncated; send the whole compressed body")
    return data


def v2_target(path: str) -> tuple[str, str | None] | None:
    """(name, selector) of ``/v2/models/{name}[/versions/{selector}]/infer``, else None."""
    if not (path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX)):
        return None
    parts = path[len(V2_PREFIX) : -len(V2_SUFFIX)].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
        return parts[0], parts[2]
    return None


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; :class:`BodyTooLarge` past ``limit`` bytes, :class:`ClientGone`."""
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise BodyTooLarge
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_payload(send: Send, payload: Payload) -> None:
    media_type = _JSON if payload.media_type == JSON else payload.media_type.encode("latin-1")
    headers = [(b"content-type", media_type), (b"content-length", b"%d" % len(payload.body))]
    if payload.headers:
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in payload.headers.items()]
    start: Message = {"type": "http.response.start", "status": payload.status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": payload.body})


class FastLane:
    """Serves inference POSTs itself; :meth:`target` says which requests are its own."""

    def __init__(
        self, get_manager: Callable[[], ModelManager], gate: Gate, *, sticky_header: str, max_body_bytes: int
    ) -> None:
        self.get_manager = get_manager
        self.gate = gate
        self.sticky = sticky_header.lower().encode("latin-1")
        self.max_body = max_body_bytes

    @staticmethod
    def target(path: str) -> Target | None:
        """What an inference POST to ``path`` names, or None when the path is not the lane's."""
        at = v2_target(path)
        if at is not None:
            return at
        if path.startswith(TF_PREFIX) and path.endswith(TF_SUFFIX):
            return path[len(TF_PREFIX) :]
        return None

    async def serve(self, target: Target, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            payload = await self._answer(target, scope, receive)
        except ClientGone:
            return
        except BodyTooLarge:
            payload = too_large(self.max_body)
        except UnsupportedEncoding as exc:
            payload = unsupported_encoding(str(exc))
        except ModelportError as exc:
            payload = error_payload(exc)
        except Exception as exc:
            logger.error("unhandled error on POST %s", scope["path"], exc_info=exc)
            payload = error_payload(ModelportError(f"internal server error: {type(exc).__name__}; see the server log"))
        await send_payload(send, payload)

    async def _answer(self, target: Target, scope: Scope, receive: Receive) -> Payload:
        routing_key = header_length = authorization = api_key = encoding = timeout = None
        length = -1
        for key, value in scope["headers"]:
            if key == b"content-length":
                length = int(value) if value.isdigit() else self.max_body + 1
            elif key == self.sticky:
                routing_key = value.decode("latin-1")
            elif key == _HEADER_LENGTH:
                header_length = value.decode("latin-1")
            elif key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"x-api-key":
                api_key = value.decode("latin-1")
            elif key == b"content-encoding":
                encoding = value.decode("latin-1")
            elif key == _TIMEOUT:
                timeout = value.decode("latin-1")
        if length > self.max_body:
            return too_large(self.max_body)
        try:
            self.gate.admit(self.gate.need(scope["path"]), authorization, api_key, scope.get("server"))
        except ModelportError as exc:
            refused(scope, exc)
            raise
        manager = self.get_manager()
        body = await read_body(receive, self.max_body)
        if encoding is not None:
            body = decode_body(body, encoding, self.max_body)
        seconds = None if timeout is None else timeout_header(timeout)
        if isinstance(target, tuple):
            name, selector = target
            return await v2.infer(manager, name, selector, body, header_length, routing_key, seconds)
        return await tfserving.predict(manager, tfserving.parse_path(target), body, routing_key, seconds)
