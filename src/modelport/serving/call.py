"""One inference request, whatever carried it: the per-request bookkeeping written once.

V2 REST, TF Serving REST, SageMaker's ``/invocations`` and V2 gRPC each decode their wire format
and encode the answer; :func:`infer_call` does everything between, the same way for all of them
(as MLServer's ``DataPlane.infer`` does for its REST and gRPC handlers): it notes the protocol and
the model on the request's :class:`~modelport.types.Exchange`, picks the version (by weight, sticky
by the routing key), has the adapter decode against that version's signature, notes the version
and the rows of the inputs, stamps the request with its id (what capture writes) and its trace
marks, keeps the earlier of the request's own deadline and the transport's (a timeout header, a
gRPC deadline), runs it, and has the adapter encode the result. Knows no wire format.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from modelport.serving.manager import ModelManager, ServingModel
from modelport.signature import count_rows
from modelport.types import Exchange, InferRequest, InferResult

Context = TypeVar("Context")  # what the adapter's decoding tells its encoding (binary outputs, row format...)
Answer = TypeVar("Answer")  # the adapter's encoded answer


async def infer_call(
    manager: ModelManager,
    exchange: Exchange,
    protocol: str,
    name: str,
    selector: str | None,
    decode: Callable[[ServingModel], tuple[InferRequest, Context]],
    encode: Callable[[InferResult, Context], Answer],
    *,
    routing_key: str | None = None,
    timeout: float | None = None,
) -> Answer:
    """Serve one request for ``name`` (``selector``: a version, an alias, or None for the default route).

    ``decode`` turns the body into a request against the picked version (and whatever ``encode``
    needs to know of it); ``timeout``: seconds the transport allows (None: the request's own, or
    the server's). ``exchange`` is told the protocol and the model first (a request refused on the
    way is counted under them), then the version and the rows once decoded.
    """
    exchange.protocol = protocol
    exchange.model = name
    marks = exchange.marks  # None unless traced
    if marks is not None:
        marks.begun = time.time_ns()
    route, model = manager.pick(name, selector, routing_key)
    request, context = decode(model)
    exchange.version = model.version.version
    exchange.rows = count_rows(request.inputs)
    request.request_id = exchange.request_id or None
    request.marks = marks
    if timeout is not None and (request.timeout is None or timeout < request.timeout):
        request.timeout = timeout
    answer = encode(await manager.run(route, model, request), context)
    if marks is not None:
        marks.encoded = time.time_ns()
    return answer
