"""Open Inference Protocol (KServe V2) REST, with Triton's binary tensor data extension.

Handlers translate: JSON (+ binary tensor data) -> :class:`InferRequest`, one call to the
manager, :class:`InferResult` -> JSON (+ binary outputs when asked). Nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelport.errors import InvalidInput, ModelNotReady
from modelport.protocols.codec import (
    array_from_bytes,
    array_to_bytes,
    check_datatype,
    check_shape,
    dumps,
    flat,
    json_strings,
    loads,
    tensor_from_json,
    timeout_parameter,
)
from modelport.protocols.errors import JSON, Payload, error_response
from modelport.reference import parse_name, parse_reference, parse_selector
from modelport.serving.call import infer_call
from modelport.serving.manager import ModelManager, ServingModel, VersionState, VersionStatus
from modelport.signature import to_inputs, validate_inputs
from modelport.types import Exchange, InferRequest, InferResult, Signature, TensorSpec, datatype_of
from modelport.version import __version__

HEADER_LENGTH = "inference-header-content-length"
VERSION_HEADER = "modelport-model-version"
REPOSITORY_PREFIX = "/v2/repository/"  # management endpoints: the auth guard asks for the manage scope
EXTENSIONS = ("binary_tensor_data",)
# Triton's platform names where it has them (model metadata's "platform")
PLATFORMS = {
    "onnx": "onnxruntime_onnx",
    "sklearn": "sklearn",
    "python": "python",
    "torch": "pytorch_libtorch",
    "tensorflow": "tensorflow_savedmodel",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
}

GetManager = Callable[[], ModelManager]


def platform_of(runtime: str) -> str:
    return PLATFORMS.get(runtime, runtime)


# -- decoding -----------------------------------------------------------------------------------


BinaryOutputs = dict[str, bool] | bool


def decode_request(body: bytes, header_length: str | None, signature: Signature) -> tuple[InferRequest, BinaryOutputs]:
    """Parse a V2 inference request (JSON, or JSON header + binary tensor data).

    Returns the neutral request and which outputs to send as binary data (all, none, or by name).
    """
    binary: memoryview | None = None
    if header_length is not None:
        try:
            header_size = int(header_length)
        except ValueError:
            header_size = -1
        if not 0 <= header_size <= len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {header_length!r} but the body has {len(body)} bytes"
            )
        view = memoryview(body)
        doc = loads(view[:header_size], what="inference request header")
        binary = view[header_size:]
    else:
        doc = loads(body)
    if not isinstance(doc, dict):
        raise InvalidInput(
            f"the request must be a JSON object with 'inputs', got {type(doc).__name__}; "
            'e.g. {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}'
        )
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("the request needs 'inputs': a non-empty list of tensors {name, shape, datatype, data}")
    arrays: dict[str, np.ndarray] = {}
    finite: list[str] = []  # inputs decoded from JSON numbers: no NaN scan needed
    offset = 0
    for position, item in enumerate(raw_inputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"inputs[{position}] must be an object with a string 'name'")
        name: str = item["name"]
        if name in arrays:
            raise InvalidInput(f"input {name!r} is given twice", input_name=name)
        if "datatype" not in item or "shape" not in item:
            raise InvalidInput(f"input {name!r} needs 'shape' and 'datatype'", input_name=name)
        shape = check_shape(name, item["shape"])
        params = item.get("parameters")
        size: Any = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if binary is None:
                raise InvalidInput(
                    f"input {name!r} has binary_data_size but the request has no Inference-Header-Content-Length"
                )
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(f"input {name!r}: binary_data_size {size!r} runs past the end of the body")
            arrays[name] = array_from_bytes(name, item["datatype"], shape, binary[offset : offset + size])
            offset += size
        elif "data" in item:
            arrays[name], plain = tensor_from_json(name, item["datatype"], item["data"], shape)
            if plain:
                finite.append(name)
        else:
            raise InvalidInput(f"input {name!r} has no 'data'", input_name=name)
        check_datatype(signature, name, item["datatype"])
    if binary is not None and offset != len(binary):
        raise InvalidInput(f"the body has {len(binary) - offset} bytes of binary data that no input claims")
    features = signature.feature_names
    if features and signature.inputs[0].name not in arrays and not arrays.keys().isdisjoint(features):
        arrays, finite = to_inputs(signature, arrays), []  # one tensor per feature -> the model's 2-D input
    arrays = validate_inputs(signature, arrays, finite=finite)
    request_params = doc.get("parameters")
    if type(request_params) is not dict:
        request_params = {}
    binary_default = bool(request_params.get("binary_data_output", False))
    requested: tuple[str, ...] | None = None
    binary_outputs: BinaryOutputs = binary_default
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        requested, binary_outputs = _outputs(raw_outputs, binary_default)
    request_id = doc.get("id")
    return InferRequest(
        arrays,
        outputs=requested,
        id=str(request_id) if request_id is not None else None,
        parameters=request_params,
        checked=signature,
        timeout=timeout_parameter(request_params),
    ), binary_outputs


def _outputs(raw: Any, binary_default: bool) -> tuple[tuple[str, ...], BinaryOutputs]:
    if not isinstance(raw, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in raw):
        raise InvalidInput("'outputs' must be a list of objects {name, parameters}")
    binary: dict[str, bool] = {}
    for out in raw:
        params = out.get("parameters")
        value = params.get("binary_data") if isinstance(params, dict) else None
        binary[out["name"]] = binary_default if value is None else bool(value)
    return tuple(out["name"] for out in raw), binary


# -- encoding -----------------------------------------------------------------------------------


def encode_result(result: InferResult, binary: BinaryOutputs) -> Payload:
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    datatypes = {spec.name: spec.datatype for spec in result.signature.outputs}
    for name, arr in result.outputs.items():
        datatype = datatypes.get(name) or datatype_of(arr.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary is True or (binary is not False and binary.get(name, False)):
            raw = array_to_bytes(arr, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif datatype == "BYTES":
            entry["data"], encoded = json_strings(arr.ravel().tolist())
            if encoded:  # base64: binary values that JSON strings cannot hold (MLServer's convention)
                entry["parameters"] = {"content_type": "base64"}
        else:
            entry["data"] = flat(arr, datatype)
        outputs.append(entry)
    version = str(result.model_version)
    doc: dict[str, Any] = {"model_name": result.model_name, "model_version": version}
    if result.id is not None:
        doc["id"] = result.id
    doc["outputs"] = outputs
    header = dumps(doc)
    if not chunks:
        return Payload(200, header, JSON, {VERSION_HEADER: version})
    return Payload(
        200,
        header + b"".join(chunks),
        "application/octet-stream",
        {VERSION_HEADER: version, HEADER_LENGTH: str(len(header))},
    )


async def infer(
    manager: ModelManager,
    exchange: Exchange,
    name: str,
    selector: str | None,
    body: bytes,
    header_length: str | None,
    routing_key: str | None,
    timeout: float | None = None,
) -> Payload:
    """``POST /v2/models/{name}[/versions/{selector}]/infer``: decode against the picked version,
    encode the result; the rest is :func:`~modelport.serving.call.infer_call`'s. ``timeout``:
    seconds from the ``modelport-timeout`` header (the earlier of it and ``parameters.timeout`` wins)."""

    def decode(model: ServingModel) -> tuple[InferRequest, BinaryOutputs]:
        return decode_request(body, header_length, model.version.signature)

    return await infer_call(
        manager, exchange, "v2", name, selector, decode, encode_result, routing_key=routing_key, timeout=timeout
    )


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    data: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}
    if spec.feature_names:
        data["parameters"] = {"feature_names": list(spec.feature_names)}
    return data


def model_metadata(model: ServingModel, versions: list[ServingModel]) -> dict[str, Any]:
    signature = model.version.signature
    return {
        "name": model.name,
        "versions": [str(m.version.version) for m in versions],
        "platform": platform_of(model.version.runtime),
        "inputs": [_tensor_metadata(spec) for spec in signature.inputs],
        "outputs": [_tensor_metadata(spec) for spec in signature.outputs],
    }


# -- routes -------------------------------------------------------------------------------------


def routes(get_manager: GetManager, *, management: bool = False) -> list[Route]:
    """The V2 REST endpoints other than inference (the fast lane serves ``.../infer``, see
    :mod:`modelport.server.fastlane`), bound to the manager the app holds.

    ``management`` adds the repository extension (index, load, unload) under
    ``/v2/repository/`` (the auth guard requires the ``manage`` scope there).
    """

    async def live(request: Request) -> Response:
        try:
            why = get_manager().not_live()
        except ModelNotReady:  # still starting: alive
            why = None
        if why is None:
            return Response(b'{"live":true}', media_type=JSON)
        return error_response(f"not live: {why}; restart the server to recycle it", 503)

    async def ready(request: Request) -> Response:
        try:
            why = get_manager().not_ready()
        except ModelNotReady as exc:  # the server is still starting
            why = exc.message
        if why is None:
            return Response(b'{"ready":true}', media_type=JSON)
        return error_response(f"not ready: {why}", 503, {"Retry-After": "1"})

    async def server_metadata(request: Request) -> Response:
        return Response(
            dumps({"name": "modelport", "version": __version__, "extensions": list(EXTENSIONS)}), media_type=JSON
        )

    async def metadata(request: Request) -> Response:
        name, selector = request.path_params["name"], request.path_params.get("version")
        manager = get_manager()
        model = manager.get(name, selector)
        versions = manager.versions(name) if selector is None else [model]
        return Response(dumps(model_metadata(model, versions)), media_type=JSON)

    async def model_ready(request: Request) -> Response:
        name, selector = request.path_params["name"], request.path_params.get("version")
        model = get_manager().get(name, selector)
        if model.ready:
            return Response(dumps({"name": name, "ready": True}), media_type=JSON)
        return error_response(f"model {model.version.ref} is {model.state.value}", 503, {"Retry-After": "1"})

    async def shadow(request: Request) -> Response:
        report = get_manager().shadow_report(request.path_params["name"], request.path_params["alias"])
        return Response(dumps(report), media_type=JSON)

    extra = repository_routes(get_manager) if management else []
    return [
        Route("/v2/models/{name}/versions/{alias}/shadow", shadow, methods=["GET"]),
        *extra,
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/{name}", metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
    ]


# -- repository extension -----------------------------------------------------------------------

# Manager states -> the repository extension's (Triton's) state names.
REPOSITORY_STATES = {
    VersionState.LOADING: "LOADING",
    VersionState.READY: "READY",
    VersionState.FAILED: "UNAVAILABLE",
    VersionState.UNLOADING: "UNLOADING",
    VersionState.UNLOADED: "UNAVAILABLE",
}


def repository_index(statuses: list[VersionStatus], ready_only: bool = False) -> list[dict[str, str]]:
    index = []
    for status in statuses:
        if ready_only and status.state is not VersionState.READY:
            continue
        reason = status.error or ("unloaded" if status.state is VersionState.UNLOADED else "")
        state = REPOSITORY_STATES[status.state]
        index.append({"name": status.name, "version": str(status.version), "state": state, "reason": reason})
    return index


def repository_routes(get_manager: GetManager) -> list[Route]:
    """``POST /v2/repository/index``, ``.../models/{name}/load`` and ``.../models/{name}/unload``."""

    async def index(request: Request) -> Response:
        body = await request.body()
        doc = loads(body) if body.strip() else {}
        ready_only = bool(doc.get("ready", False)) if isinstance(doc, dict) else False
        return Response(dumps(repository_index(get_manager().status(), ready_only)), media_type=JSON)

    async def load(request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        doc = loads(body) if body.strip() else {}
        params = doc.get("parameters") if isinstance(doc, dict) else None
        selector = params.get("version") if isinstance(params, dict) else None
        ref = parse_reference(name) if selector is None else parse_selector(parse_name(name), str(selector))
        await get_manager().load_model(ref)
        return Response(dumps({"name": name, "loaded": True}), media_type=JSON)

    async def unload(request: Request) -> Response:
        name = request.path_params["name"]
        await get_manager().unload_model(name)
        return Response(dumps({"name": name, "unloaded": True}), media_type=JSON)

    return [
        Route(REPOSITORY_PREFIX + "index", index, methods=["POST"]),
        Route(REPOSITORY_PREFIX + "models/{name}/load", load, methods=["POST"]),
        Route(REPOSITORY_PREFIX + "models/{name}/unload", unload, methods=["POST"]),
    ]
