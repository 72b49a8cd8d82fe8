"""SageMaker container contract: ``GET /ping``, ``POST /invocations`` and the multi-model endpoint API.

Requests: ``application/json`` in the TF Serving shapes (``{"instances": rows}``, ``{"inputs":
columns}``) or a bare JSON array of rows; ``text/csv``: rows of values in feature order (a model
with one 2-D input) or one column per input in the signature's order (inputs of one column each,
as a DataFrame of mixed types registers), after an optional header line that names them in any
order. Answers follow ``Accept``: ``application/json`` (TF Serving's
``{"predictions": ...}``) or ``text/csv``: one line per row holding every output's values for that
row, flattened, in the signature's output order (``label,p0,p1,p2`` for a classifier). A missing
``Accept`` or ``*/*`` means JSON. Multi-model endpoints add ``/models`` (load, list, get, unload)
and ``POST /models/{name}/invoke``, which takes the same formats as ``/invocations``. The
``modelport-timeout`` header (seconds) sets a request's deadline, as on every HTTP protocol; the
rest of a request's bookkeeping is :func:`~modelport.serving.call.infer_call`'s.
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
from modelport.protocols.codec import TIMEOUT_HEADER, binary_values, dumps, loads, timeout_header
from modelport.protocols.errors import JSON, WireError, error_response
from modelport.protocols.tfserving import decode_document, encode_predict
from modelport.protocols.v2 import VERSION_HEADER
from modelport.serving.call import infer_call
from modelport.serving.manager import ServingModel
from modelport.serving.modeldirs import SageMakerEndpoint
from modelport.signature import EXACT_FLOATS, feature_mismatch, to_inputs
from modelport.types import DATATYPES, EXCHANGE, Exchange, InferRequest, InferResult, Signature, TensorSpec

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
    """CSV rows -> the model's inputs: the values of one 2-D input, in feature order, or one
    column per input (each [N] or [N, 1]) in the signature's order. A first line naming the
    features (or inputs) is a header: the columns are then matched by name, in any order."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the CSV body is not UTF-8 text") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if not rows:
        raise InvalidInput("the CSV body has no rows; send one row per line, values in feature order")
    for number, row in enumerate(rows):
        if len(row) != len(rows[0]):
            raise InvalidInput(f"CSV row {number} has {len(row)} values but row 0 has {len(rows[0])}")
    inputs = signature.inputs
    if len(inputs) == 1 and len(inputs[0].shape) == 2:
        return _matrix(text, rows, inputs[0])
    if inputs and all(len(spec.shape) == 1 or spec.shape[1:] == (1,) for spec in inputs):
        names = tuple(spec.name for spec in inputs)
        table = _by_header(rows, names)
        if table is None and len(rows[0]) != len(names):
            raise InvalidInput(
                f"CSV rows have {len(rows[0])} values; this model takes {len(names)}, one per input in this order: "
                f"{', '.join(names)} (or send a header line naming them)"
            )
        cells = rows if table is None else table
        if not cells:
            raise InvalidInput("the CSV body has a header but no rows; send one row per line after it")
        return {spec.name: _column(spec, [row[i] for row in cells], names) for i, spec in enumerate(inputs)}
    shapes = ", ".join(f"{spec.name} {_shape(spec.shape)}" for spec in inputs)
    raise InvalidInput(
        "CSV needs a model with one 2-D input (rows x features) or inputs of one column each ([N] or [N, 1]); "
        f"this model takes {shapes}: send JSON"
    )


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("N" if d == -1 else str(d) for d in shape) + "]"


def _by_header(rows: list[list[str]], names: tuple[str, ...]) -> list[list[str]] | None:
    """The data rows with their cells in the order of ``names`` when the first row is a header
    (one of its cells, not a number, is one of ``names``); None when it is data."""
    header = [cell.strip() for cell in rows[0]]
    if not any(cell in names and not _number(cell) for cell in header):
        return None
    if sorted(header) != sorted(names):
        problem, _ = feature_mismatch(names, header)
        if len(set(header)) != len(header):
            problem = f"a column named twice ({next(c for c in header if header.count(c) > 1)!r})"
        raise InvalidInput(f"CSV header: {problem} (columns: {', '.join(names)}, in any order)")
    order = [header.index(name) for name in names]
    return [[row[i] for i in order] for row in rows[1:]]


def _matrix(text: str, rows: list[list[str]], spec: TensorSpec) -> dict[str, np.ndarray]:
    """The values of a 2-D input: rows of feature values, in feature order or under a header."""
    features = spec.feature_names
    table = _by_header(rows, features) if features else None
    if table is not None:
        if not table:
            raise InvalidInput("the CSV body has a header but no rows; send one row per line after it")
        rows = table
    if spec.datatype == "BYTES":
        return {spec.name: np.array(rows, dtype=object)}
    if table is None:
        try:  # all numbers, no blanks: NumPy's C parser
            return {spec.name: np.loadtxt(io.StringIO(text), delimiter=",", quotechar='"', ndmin=2, dtype=np.float64)}
        except ValueError:
            pass
    try:
        return {spec.name: np.array([[c if c.strip() else "nan" for c in row] for row in rows], dtype=np.float64)}
    except ValueError:
        pass
    number, column, cell = next((r, c, v) for r, row in enumerate(rows) for c, v in enumerate(row) if not _number(v))
    order = f" ({', '.join(features)}), or a header line naming them" if features else ""
    raise InvalidInput(
        f"CSV row {number}, column {column}: {cell!r} is not a number; send values in feature order{order}"
    )


def _column(spec: TensorSpec, cells: list[str], names: tuple[str, ...]) -> np.ndarray:
    """One input's CSV column as an array of its datatype's kind (range and NaN are checked with
    the signature, as for every protocol)."""
    kind = DATATYPES[spec.datatype].kind
    arr: np.ndarray
    if spec.datatype == "BYTES":
        arr = np.empty(len(cells), dtype=object)
        arr[:] = cells
    elif kind == "f":
        try:
            arr = np.array([c if c.strip() else "nan" for c in cells], dtype=np.float64)
        except ValueError:
            raise _bad_cell(spec, cells, names, "a number", lambda c: _number(c)) from None
    elif kind == "b":
        flags = {"true": True, "1": True, "false": False, "0": False}
        if not all(c.strip().lower() in flags for c in cells):
            raise _bad_cell(spec, cells, names, "true or false", lambda c: c.strip().lower() in flags)
        arr = np.array([flags[c.strip().lower()] for c in cells], dtype=np.bool_)
    else:
        values = [_integer(c) for c in cells]
        if any(v is None for v in values):
            raise _bad_cell(spec, cells, names, "a whole number", lambda c: _integer(c) is not None)
        info = np.iinfo(DATATYPES[spec.datatype])
        if not all(info.min <= v <= info.max for v in values if v is not None):
            raise InvalidInput(f"input {spec.name!r}: values out of range for {spec.datatype}", input_name=spec.name)
        arr = np.array(values, dtype=DATATYPES[spec.datatype])
    return arr.reshape(-1, 1) if len(spec.shape) == 2 else arr


def _integer(text: str) -> int | None:
    """A CSV cell as an integer: digits, or a float with nothing after the point (``3.0``, as a
    column with blanks is written); None otherwise."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and abs(value) < EXACT_FLOATS else None


def _bad_cell(
    spec: TensorSpec, cells: list[str], names: tuple[str, ...], wanted: str, good: Callable[[str], bool]
) -> InvalidInput:
    number, cell = next((r, c) for r, c in enumerate(cells) if not good(c))
    return InvalidInput(
        f"CSV row {number}, column {spec.name!r}: {cell!r} is not {wanted} ({spec.datatype}); send values in "
        f"input order ({', '.join(names)}), or a header line naming them",
        input_name=spec.name,
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
        timeout = timeout_header(request.headers.get(TIMEOUT_HEADER))
        body = await request.body()

        def decode_body(model: ServingModel) -> tuple[InferRequest, bool]:
            return decode(body, media, model)

        def encode_result(result: InferResult, row_format: bool) -> Response:
            return encode(result, answer, row_format)

        exchange: Exchange = request.scope.get(EXCHANGE) or Exchange()
        name = endpoint.model_name if name is None else name
        return await infer_call(
            endpoint.manager, exchange, "sagemaker", name, None, decode_body, encode_result, timeout=timeout
        )

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
