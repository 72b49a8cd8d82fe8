"""TF Serving REST API: model status, metadata and ``:predict`` (row and columnar formats).

Paths look like ``/v1/models/iris[/versions/3|/labels/production][/metadata|:predict]``; the
``:predict`` suffix sits inside the last path segment, so one catch-all route parses them.
Labels are modelport aliases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelport.errors import InvalidInput, NotFound
from modelport.protocols.codec import b64_values, binary_values, dumps, loads
from modelport.protocols.errors import JSON, Payload, WireError
from modelport.protocols.v2 import VERSION_HEADER, GetManager
from modelport.serving.call import infer_call
from modelport.serving.manager import ModelManager, ServingModel, VersionState, VersionStatus
from modelport.signature import to_inputs
from modelport.types import Exchange, InferRequest, InferResult, Signature, TensorSpec

DTYPES = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}
PATH_HELP = "/v1/models/NAME[/versions/N|/labels/LABEL][/metadata|:predict]"
DEFAULT_SIGNATURE = "serving_default"  # the version's registered signature; others only where the runtime has them


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed ``/v1/models/...`` path."""

    name: str
    selector: str | None  # version number or label (alias); None for the model's default version
    by_version: bool  # selector came from /versions/ (else /labels/ or none)
    action: str  # "status", "metadata", "predict", or another verb (refused)


def parse_path(rest: str) -> Target:
    verb = None
    head, sep, tail = rest.rpartition(":")
    if sep and "/" not in tail:
        rest, verb = head, tail
    parts = rest.split("/")
    name, extra = parts[0], parts[1:]
    selector, by_version = None, False
    if len(extra) >= 2 and extra[0] in ("versions", "labels"):
        selector, by_version = extra[1], extra[0] == "versions"
        extra = extra[2:]
    action = "status"
    if extra == ["metadata"] and verb is None:
        action = "metadata"
    elif extra:
        raise NotFound(f"no such endpoint /v1/models/{rest}; paths are {PATH_HELP}")
    if verb is not None:
        action = verb
    if not name:
        raise NotFound(f"no model name in the path; paths are {PATH_HELP}")
    if by_version and selector is not None and not selector.isdigit():
        raise InvalidInput(
            f"invalid version {selector!r} in the URL: versions are numbers; use /labels/{selector} for an alias"
        )
    return Target(name, selector, by_version, action)


# -- status and metadata ------------------------------------------------------------------------


# Manager states -> TF Serving's ModelVersionStatus.State names.
STATES = {
    VersionState.LOADING: "LOADING",
    VersionState.READY: "AVAILABLE",
    VersionState.FAILED: "END",
    VersionState.UNLOADING: "UNLOADING",
    VersionState.UNLOADED: "END",
}


def _version_status(status: VersionStatus) -> dict[str, Any]:
    error = {"error_code": "UNKNOWN", "error_message": status.error} if status.error else None
    return {
        "version": str(status.version),
        "state": STATES[status.state],
        "status": error or {"error_code": "OK", "error_message": ""},
    }


def _statuses(manager: ModelManager, target: Target) -> list[dict[str, Any]]:
    """Every version TF Serving style (failed ones as END with their error), or the one selected."""
    statuses = manager.status(target.name)
    if target.selector is not None:
        selected = target.selector
        number = int(selected) if target.by_version else manager.get(target.name, selected).version.version
        statuses = [s for s in statuses if s.version == number]
        if not statuses:
            manager.get(target.name, target.selector)  # NotFound naming what is served
    return [_version_status(s) for s in statuses]


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    dims = [{"size": str(d), "name": ""} for d in spec.shape]
    return {"dtype": DTYPES[spec.datatype], "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": spec.name}


def _signature_def(signature: Signature) -> dict[str, Any]:
    return {
        "inputs": {spec.name: _tensor_info(spec) for spec in signature.inputs},
        "outputs": {spec.name: _tensor_info(spec) for spec in signature.outputs},
        "method_name": "tensorflow/serving/predict",
    }


def metadata(model: ServingModel) -> dict[str, Any]:
    others: Mapping[str, Signature] = model.multi.signatures if model.multi is not None else {}
    defs = {DEFAULT_SIGNATURE: model.version.signature, **others}
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version.version)},
        "metadata": {
            "signature_def": {"signature_def": {name: _signature_def(signature) for name, signature in defs.items()}}
        },
    }


# -- predict ------------------------------------------------------------------------------------


def decode_predict(body: bytes, model: ServingModel) -> tuple[InferRequest, bool]:
    """Parse a ``:predict`` body; returns the neutral request and whether it was row format."""
    return decode_document(loads(body), model)


def decode_document(doc: Any, model: ServingModel) -> tuple[InferRequest, bool]:
    """:func:`decode_predict` on an already parsed JSON document."""
    if not isinstance(doc, dict):
        raise InvalidInput(
            f"the request must be a JSON object with 'instances' (rows) or 'inputs' (columns), got {type(doc).__name__}"
        )
    signature_name = doc.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature_name, str):
        raise InvalidInput(f"signature_name must be a string, got {type(signature_name).__name__}")
    signature_name = signature_name or DEFAULT_SIGNATURE
    signature = model.version.signature if signature_name == DEFAULT_SIGNATURE else _other(model, signature_name)
    if ("instances" in doc) == ("inputs" in doc):
        raise InvalidInput("give exactly one of 'instances' (a list of rows) or 'inputs' (columns)")
    row_format = "instances" in doc
    data = doc["instances"] if row_format else doc["inputs"]
    if row_format and (not isinstance(data, list) or not data):
        raise InvalidInput("'instances' must be a non-empty list of rows")
    if data is None or isinstance(data, str | int | float):
        raise InvalidInput("'inputs' must be a tensor (a list) or an object of named tensors")
    other = signature_name if signature_name != DEFAULT_SIGNATURE else None
    return InferRequest(to_inputs(signature, binary_values(data, signature)), signature_name=other), row_format


def _other(model: ServingModel, name: Any) -> Signature:
    """Another of the model's signatures, for a runtime that has several (a SavedModel's)."""
    others: Mapping[str, Signature] = model.multi.signatures if model.multi is not None else {}
    if not isinstance(name, str) or name not in others:
        names = ", ".join(repr(n) for n in (DEFAULT_SIGNATURE, *others))
        raise InvalidInput(f"unknown signature_name {name!r}; this model has {'only ' if not others else ''}{names}")
    return others[name]


def encode_predict(result: InferResult, row_format: bool) -> Payload:
    outputs = result.outputs
    body: dict[str, Any]
    if len(outputs) == 1:
        (arr,) = outputs.values()
        body = {"predictions" if row_format else "outputs": _json_ready(arr)}
    elif row_format:
        names = list(outputs)
        columns = [_rows(arr) for arr in outputs.values()]
        body = {"predictions": [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]}
    else:
        body = {"outputs": {name: _json_ready(arr) for name, arr in outputs.items()}}
    return Payload(200, dumps(body), JSON, {VERSION_HEADER: str(result.model_version)})


async def predict(
    manager: ModelManager,
    exchange: Exchange,
    target: Target,
    body: bytes,
    routing_key: str | None,
    timeout: float | None = None,
) -> Payload:
    """``POST /v1/models/...:predict``: decode against the picked version, encode the result; the
    rest is :func:`~modelport.serving.call.infer_call`'s. ``timeout``: seconds from the
    ``modelport-timeout`` header."""

    def decode(model: ServingModel) -> tuple[InferRequest, bool]:
        return decode_predict(body, model)

    return await infer_call(
        manager,
        exchange,
        "tfserving",
        target.name,
        target.selector,
        decode,
        encode_predict,
        routing_key=routing_key,
        timeout=timeout,
    )


def _json_ready(arr: np.ndarray) -> Any:
    if arr.dtype.kind == "O":
        return b64_values(arr.tolist())  # bytes as {"b64": ...}, as TF Serving answers binary strings
    return arr if arr.flags.c_contiguous else arr.tolist()


def _rows(arr: np.ndarray) -> list[Any]:
    if arr.dtype.kind == "O":
        values = _json_ready(arr)
        return values if arr.ndim else [values]
    return list(arr) if arr.ndim else [arr]  # per-row views and NumPy scalars: orjson writes them as they are


# -- routes -------------------------------------------------------------------------------------


_EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


def routes(get_manager: GetManager) -> list[Route]:
    """Status and metadata; ``:predict`` is served by the fast lane (:mod:`modelport.server.fastlane`)."""

    async def endpoint(request: Request) -> Response:
        target = parse_path(request.path_params["rest"])
        manager = get_manager()
        reading = request.method in ("GET", "HEAD")
        if reading and target.action == "status":
            return Response(dumps({"model_version_status": _statuses(manager, target)}), media_type=JSON)
        model = manager.get(target.name, target.selector)
        if reading and target.action == "metadata":
            return Response(dumps(metadata(model)), media_type=JSON)
        if target.action not in ("status", "metadata", "predict"):
            raise NotFound(f"':{target.action}' is not supported; modelport serves ':predict' ({PATH_HELP})")
        raise WireError(
            f"{request.method} is not supported on this path; use GET for status and /metadata, "
            f"POST for :predict ({PATH_HELP})",
            405,
            {"Allow": "GET, HEAD"},  # status and metadata (:predict takes POST, on the fast lane)
        )

    # Every method reaches the endpoint, which answers 405 with the Allow of the path it names
    # (the router's Allow would list POST for status and metadata too).
    return [Route("/v1/models/{rest:path}", endpoint, methods=_EVERY_METHOD)]
