"""The hot path as plain ASGI: ``POST .../infer`` (V2) and ``POST ...:predict`` (TF Serving).

Inference requests skip Starlette's router, request and response objects: the path is parsed
with string operations, the body is read straight from ``receive``, the protocol module
decodes it, the manager runs it, and the encoded answer goes out in two ``send`` calls.
Every other request passes through to the app. Authentication and the body-size limit are
middlewares outside this one, so they apply here as everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.errors import ModelportError
from modelport.manager import ModelManager
from modelport.protocols import tfserving, v2
from modelport.protocols.errors import Payload, error_payload

V2_PREFIX = "/v2/models/"
V2_SUFFIX = "/infer"
TF_PREFIX = "/v1/models/"
TF_SUFFIX = ":predict"
_HEADER_LENGTH = v2.HEADER_LENGTH.encode("latin-1")


class ClientGone(Exception):
    """The client disconnected before the whole body arrived."""


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


async def read_body(receive: Receive) -> bytes:
    """The whole request body (the body-size middleware outside has already bounded it)."""
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_payload(send: Send, payload: Payload) -> None:
    headers = [
        (b"content-type", payload.media_type.encode("latin-1")),
        (b"content-length", str(len(payload.body)).encode("latin-1")),
    ]
    if payload.headers:
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in payload.headers.items()]
    start: Message = {"type": "http.response.start", "status": payload.status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": payload.body})


class FastLane:
    """Plain ASGI middleware serving inference POSTs itself; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, get_manager: Callable[[], ModelManager], sticky_header: str) -> None:
        self.app = app
        self.get_manager = get_manager
        self.sticky = sticky_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            v2_at = v2_target(path)
            tf_at = path[len(TF_PREFIX) :] if v2_at is None and path.startswith(TF_PREFIX) else None
            if v2_at is not None or (tf_at is not None and tf_at.endswith(TF_SUFFIX)):
                try:
                    payload = await self._answer(scope, receive, v2_at, tf_at)
                except ClientGone:
                    return
                except ModelportError as exc:
                    payload = error_payload(exc)
                await send_payload(send, payload)
                return
        await self.app(scope, receive, send)

    async def _answer(
        self, scope: Scope, receive: Receive, v2_at: tuple[str, str | None] | None, tf_at: str | None
    ) -> Payload:
        routing_key = header_length = None
        for key, value in scope["headers"]:
            if key == self.sticky:
                routing_key = value.decode("latin-1")
            elif key == _HEADER_LENGTH:
                header_length = value.decode("latin-1")
        manager = self.get_manager()
        if v2_at is not None:
            name, selector = v2_at
            return await v2.infer(manager, name, selector, await read_body(receive), header_length, routing_key)
        assert tf_at is not None
        target = tfserving.parse_path(tf_at)
        return await tfserving.predict(manager, target, await read_body(receive), routing_key)
