"""Request bodies as admission reads them: bounded in size, gzip or deflate decoded.

The limit applies to the bytes the app will see, so to the decompressed size, which is never
exceeded in memory.
"""

from __future__ import annotations

import zlib

from starlette.types import Receive

from modelport.errors import InvalidInput


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
    try:
        return _inflate(body, wbits, coding, limit)
    except zlib.error as exc:
        if coding != "deflate" or not body:
            raise InvalidInput(f"the {coding} request body cannot be decompressed: {exc}") from None
    try:  # deflate without the zlib wrapper, which some clients send as "deflate"
        return _inflate(body, -zlib.MAX_WBITS, coding, limit)
    except zlib.error as exc:
        raise InvalidInput(f"the deflate request body cannot be decompressed: {exc}") from None


def _inflate(body: bytes, wbits: int, coding: str, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    data = inflater.decompress(body, limit + 1)
    if len(data) <= limit and not inflater.unconsumed_tail:
        data += inflater.flush(limit + 1 - len(data))
    if len(data) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge
    if not inflater.eof:
        raise InvalidInput(f"the {coding} request body is truncated; send the whole compressed body")
    return data


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
