"""The hot path as plain ASGI: ``POST .../infer`` (V2) and ``POST ...:predict`` (TF Serving).

The app (:class:`modelport.server.app.ModelportApp`) hands admitted inference POSTs to the lane
instead of the router: no routing, no request or response objects. Admission
(:mod:`modelport.server.admission`) has already checked the caller, read and decoded the body
and parsed the headers; the lane hands the body to the protocol module (which decodes and encodes
around :func:`~modelport.serving.call.infer_call`, the one per-request call of every transport)
and sends the encoded answer in two ``send`` calls. Errors are admission's to answer.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Scope, Send

from modelport.protocols import tfserving, v2
from modelport.protocols.codec import TIMEOUT_HEADER, timeout_header
from modelport.server.admission import ADMITTED, Admitted, send_payload
from modelport.serving.manager import ModelManager

V2_PREFIX = "/v2/models/"
V2_SUFFIX = "/infer"
TF_PREFIX = "/v1/models/"
TF_SUFFIX = ":predict"
_HEADER_LENGTH = v2.HEADER_LENGTH.encode("latin-1")
_TIMEOUT = TIMEOUT_HEADER.encode("latin-1")

Target = tuple[str, str | None] | str  # V2 (name, selector), or the TF Serving path after /v1/models/


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


class FastLane:
    """Serves inference POSTs itself, past admission; :meth:`target` says which requests are its own."""

    def __init__(self, get_manager: Callable[[], ModelManager], *, sticky_header: str) -> None:
        self.get_manager = get_manager
        self.sticky = sticky_header.lower().encode("latin-1")

    @staticmethod
    def target(path: str) -> Target | None:
        """What an inference POST to ``path`` names, or None when the path is not the lane's."""
        at = v2_target(path)
        if at is not None:
            return at
        if path.startswith(TF_PREFIX) and path.endswith(TF_SUFFIX):
            return path[len(TF_PREFIX) :]
        return None

    async def serve(self, target: Target, scope: Scope, send: Send) -> None:
        """Answer one admitted request (:class:`~modelport.server.admission.Admitted` in the scope);
        domain errors go to admission's one error handler."""
        admitted: Admitted = scope[ADMITTED]
        headers = admitted.headers
        routing_key = headers.get(self.sticky)
        timeout = headers.get(_TIMEOUT)
        seconds = None if timeout is None else timeout_header(timeout.decode("latin-1"))
        key = None if routing_key is None else routing_key.decode("latin-1")
        if isinstance(target, tuple):
            name, selector = target
            length = headers.get(_HEADER_LENGTH)
            header_length = None if length is None else length.decode("latin-1")
            payload = await v2.infer(
                self.get_manager(), admitted, name, selector, admitted.body, header_length, key, seconds
            )
        else:
            path = tfserving.parse_path(target)
            payload = await tfserving.predict(self.get_manager(), admitted, path, admitted.body, key, seconds)
        admitted.started = True
        admitted.status = payload.status
        await send_payload(send, payload, admitted.request_id, admitted.trace)
