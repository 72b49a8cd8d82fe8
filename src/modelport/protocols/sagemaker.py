"""SageMaker container contract: ``GET /ping``, ``POST /invocations`` and the multi-model endpoint API.

Requests: ``application/json`` in the TF Serving shapes (``{"instances": rows}``, ``{"inputs":
columns}``) or a bare JSON array of rows; ``text/csv``: rows without a header, values in feature
order (models with one 2-D input). Answers follow ``Accept``: ``application/json`` (TF Serving's
``{"predictions": ...}``) or ``text/csv``: one line per row holding every output's values for that
row, flattened, in the signature's output order (``label,p0,p1,p2`` for a classifier). A missing
``Accept`` or ``*/*`` means JSON. Multi-model endpoints add ``/models`` (load, list, get, unload)
and ``POST /models/{name}/invoke``, which takes the same formats as ``/invocations``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelport.errors import InvalidInput
from modelport.protocols.codec import binary_values, dumps, loads
from modelport.protocols.errors import JSON, WireError, error_response
from modelport.protocols.tfserving import decode_document, encode_predict
from modelport.protocols.v2 import VERSION_HEADER
from modelport.serving.manager import ServingModel
from modelport.serving.sagemaker import SageMakerEndpoint
from modelport.signature import count_rows, to_inputs
from modelport.types import EXCHANGE, Exchange, InferRequest, InferResult, Signature

CSV = "text/csv"
_ACCEPTED = {JSON: JSON, "application/*": JSON, "*/*": JSON, CSV: CSV, "text/*": CSV}

Predict = Callable[[Request, str | None], Awaitable[Response]]
Handler = Callable[[Request], Awaitable[Any]]


# -- content negotiation ------------------------------------------------------------------------


def content_type(header: str | None) -> str:
    """``application/json`` or ``text/csv`` from a Content-Type header (missing means JSON)."""
    media = (header or JSON).split(";")[0].strip().lower()
    if media not in (JSON, CSV):
        raise WireError(f"unsupported Content-Type {media!r}: send {JSON} or {CSV}", 415)
    return media


def accept_type(header: str | None) -> str:
    """The answer's media type: the acceptable one with the highest q, the first listed on a tie."""
    if not header or not header.strip():
        return JSON
    best, best_q = None, 0.0
    for part in header.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        chosen = _ACCEPTED.get(media.lower())
        if chosen is not None and q > best_q:
            best, best_q = chosen, q
    if best is None:
        raise WireError(f"cannot answer in {header!r}: this endpoint answers {JSON} or {CSV}", 406)
    return best


# -- decoding and encoding ----------------------------------------------------------------------


def decode(body: bytes, media: str, model: ServingModel) -> tuple[InferRequest, bool]:
    """The neutral request, and whether it came as rows (TF Serving's row format)."""
    signature = model.version.signature
    if media == CSV:
        return InferRequest(csv_inputs(body, signature)), True
    doc = loads(body)
    if isinstance(doc, list):
        if not doc:
            raise InvalidInput("the request is an empty JSON array; send at least one row")
        return InferRequest(to_inputs(signature, binary_values(doc, signature))), True
    return decode_document(doc, model)


def csv_inputs(body: bytes, signature: Signature) -> dict[str, np.ndarray]:
    """CSV rows without a header -> the model's one 2-D input."""
    if len(signature.inputs) != 1 or len(signature.inputs[0].shape) != 2:
        names = ", ".join(spec.name for spec in signature.inputs)
        raise InvalidInput(
            f"CSV needs a model with one 2-D input (rows x features); this model takes {names}: send JSON"
        )
    spec = signature.inputs[0]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the CSV body is not UTF-8 text") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if not rows:
        raise InvalidInput("the CSV body has no rows; send one row per line, values in feature order, no header")
    for number, row in enumerate(rows):
        if len(row) != len(rows[0]):
            raise InvalidInput(f"CSV row {number} has {len(row)} values but row 0 has {len(rows[0])}")
    if spec.datatype == "BYTES":
        return {spec.name: np.array(rows, dtype=object)}
    try:  # all numbers, no blanks: NumPy's C parser
        return {spec.name: np.loadtxt(io.StringIO(text), delimiter=",", quotechar='"', ndmin=2, dtype=np.float64)}
    except ValueError:
        pass
    try:
        return {spec.name: np.array([[c if c.strip() else "nan" for c in row] for row in rows], dtype=np.float64)}
    except ValueError:
        pass
    features = spec.feature_names
    if features is not None and tuple(c.strip() for c in rows[0]) == features:
        raise InvalidInput("the CSV body starts with a header row; send rows only, values in feature order")
    number, column, cell = next((r, c, v) for r, row in enumerate(rows) for c, v in enumerate(row) if not _number(v))
    order = f" ({', '.join(features)})" if features else ""
    raise InvalidInput(
        f"CSV row {number}, column {column}: {cell!r} is not a number; send values in feature order{order}"
    )


def _csv_text(name: str, value: Any) -> str:
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(
            f"output {name!r} holds binary data, which CSV cannot carry; ask for {JSON} (Accept), "
            'where binary values come as {"b64": "<base64>"}',
            406,
        ) from None


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return not text.strip()
    return True


def encode(result: InferResult, media: str, row_format: bool) -> Response:
    if media == JSON:
        return encode_predict(result, row_format).response()
    columns = [_csv_cells(name, arr) for name, arr in result.outputs.items()]
    body = "".join(",".join(cells) + "\n" for cells in zip(*columns, strict=True))
    return Response(body, media_type=CSV, headers={VERSION_HEADER: str(result.model_version)})


def _csv_cells(name: str, arr: np.ndarray) -> list[str]:
    """One CSV fragment per row: the output's values for that row, flattened, comma-separated."""
    rows = arr.shape[0] if arr.ndim else 1
    table = np.ascontiguousarray(arr.reshape(rows, -1))
    if table.dtype.kind in "fiu" and table.shape[1]:
        # orjson writes each number's shortest round-trip text (float32 included) far faster than str()
        return dumps(table).decode()[2:-2].split("],[")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")  # quotes text holding commas, quotes or line breaks
    cells = []
    for row in table.tolist():
        writer.writerow([_csv_text(name, value) for value in row])
        cells.append(buffer.getvalue()[:-1])
        buffer.seek(0)
        buffer.truncate()
    return cells


# -- routes -------------------------------------------------------------------------------------


def routes(endpoint: SageMakerEndpoint) -> list[Route]:
    async def predict(request: Request, name: str | None) -> Response:
        answer = accept_type(request.headers.get("accept"))
        media = content_type(request.headers.get("content-type"))
        manager = endpoint.manager
        name = endpoint.model_name if name is None else name
        exchange: Exchange | None = request.scope.get(EXCHANGE)
        if exchange is not None:
            exchange.protocol, exchange.model = "sagemaker", name
        infer_request, row_format = decode(await request.body(), media, manager.get(name))
        if exchange is not None:
            infer_request.request_id = exchange.request_id
        result = await manager.infer(name, None, infer_request)
        if exchange is not None:
            exchange.version, exchange.rows = result.model_version, count_rows(infer_request.inputs)
        return encode(result, answer, row_format)

    async def ping(request: Request) -> Response:
        if endpoint.healthy():
            return Response(dumps({"status": "Healthy"}), media_type=JSON)
        return error_response("not ready: the model is loading, or failed to load (see the log)", 503)

    async def invocations(request: Request) -> Response:
        return await predict(request, None)

    result = [Route("/ping", ping, methods=["GET"]), Route("/invocations", invocations, methods=["POST"])]
    return result + (_multi_model_routes(endpoint, predict) if endpoint.multi_model else [])


def _multi_model_routes(endpoint: SageMakerEndpoint, predict: Predict) -> list[Route]:
    def handled(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def wrapper(request: Request) -> Response:
            return Response(dumps(await handler(request)), media_type=JSON)

        return wrapper

    async def load(request: Request) -> Any:
        doc = loads(await request.body())
        if not isinstance(doc, dict) or not all(isinstance(doc.get(key), str) for key in ("model_name", "url")):
            raise InvalidInput('send a JSON object {"model_name": NAME, "url": MODEL_DIRECTORY}')
        await endpoint.load(doc["model_name"], doc["url"])
        return {"status": f"model {doc['model_name']!r} loaded"}

    async def listing(request: Request) -> Any:
        models = endpoint.loaded()
        try:
            start = int(request.query_params.get("next_page_token") or 0)
            limit = int(request.query_params.get("page_size") or len(models) or 1)
        except ValueError:
            raise InvalidInput("next_page_token and page_size must be whole numbers") from None
        page = models[start : start + max(1, limit)]
        body: dict[str, Any] = {"models": [{"modelName": name, "modelUrl": url} for name, url in page]}
        if start + len(page) < len(models):
            body["nextPageToken"] = str(start + len(page))
        return body

    async def describe(request: Request) -> Any:
        name = request.path_params["name"]
        return {"modelName": name, "modelUrl": endpoint.url_of(name)}

    async def unload(request: Request) -> Any:
        name = request.path_params["name"]
        await endpoint.unload(name)
        return {"status": f"model {name!r} unloaded"}

    async def invoke(request: Request) -> Response:
        return await predict(request, request.path_params["name"])

    return [
        Route("/models", handled(load), methods=["POST"]),
        Route("/models", handled(listing), methods=["GET"]),
        Route("/models/{name}", handled(describe), methods=["GET"]),
        Route("/models/{name}", handled(unload), methods=["DELETE"]),
        Route("/models/{name}/invoke", invoke, methods=["POST"]),
    ]
