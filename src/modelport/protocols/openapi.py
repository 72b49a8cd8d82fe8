"""OpenAPI 3 document generated from the served models' signatures.

Each served model gets concrete paths (``/v2/models/iris/infer``, ``/v1/models/iris:predict``, and
the ``versions/{version}`` forms) whose request schemas list its real input and feature names and
whose examples come from the registered example input, so Swagger UI's "Try it out" works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelport import __version__
from modelport.manager import ServingModel
from modelport.signature import EXAMPLE_ROWS
from modelport.types import Signature, TensorSpec

_JSON = "application/json"
_VALUE_TYPES: dict[str, dict[str, Any]] = {
    "BOOL": {"type": "boolean"},
    "FP16": {"type": "number"},
    "FP32": {"type": "number", "format": "float"},
    "FP64": {"type": "number", "format": "double"},
    "BYTES": {"type": "string"},
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _value(datatype: str) -> dict[str, Any]:
    return dict(_VALUE_TYPES.get(datatype, {"type": "integer"}))


def _example_arrays(signature: Signature) -> dict[str, np.ndarray]:
    """The registered example as arrays, or zero rows of the right shape when there is none."""
    if signature.example is not None:
        return {name: np.asarray(rows, dtype=object) for name, rows in signature.example.items()}
    filler = {"BOOL": False, "BYTES": ""}
    arrays = {}
    for spec in signature.inputs:
        shape = tuple(1 if d == -1 else d for d in spec.shape)
        arrays[spec.name] = np.full(shape, filler.get(spec.datatype, 0), dtype=object)
    return arrays


def v2_example(signature: Signature) -> dict[str, Any]:
    arrays = _example_arrays(signature)
    inputs = []
    for spec in signature.inputs:
        arr = arrays[spec.name][:EXAMPLE_ROWS]
        inputs.append(
            {"name": spec.name, "shape": list(arr.shape), "datatype": spec.datatype, "data": arr.ravel().tolist()}
        )
    return {"inputs": inputs}


def tf_example(signature: Signature) -> dict[str, Any]:
    arrays = {name: arr[:EXAMPLE_ROWS] for name, arr in _example_arrays(signature).items()}
    features = signature.feature_names
    if features:
        (rows,) = arrays.values()
        return {"instances": [dict(zip(features, row, strict=True)) for row in rows.tolist()]}
    if len(arrays) == 1:
        (rows,) = arrays.values()
        return {"instances": rows.tolist()}
    count = min(len(arr) for arr in arrays.values())
    return {"instances": [{name: arr[i].tolist() for name, arr in arrays.items()} for i in range(count)]}


# -- schemas ------------------------------------------------------------------------------------


def _tensor_schema(name: str | list[str], datatype: str, description: str) -> dict[str, Any]:
    names = name if isinstance(name, list) else [name]
    return {
        "type": "object",
        "description": description,
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string", "enum": names},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": [datatype] if datatype != "FP32" else ["FP32", "FP64"]},
            "data": {"type": "array", "description": "values, flat in row-major order (nested also accepted)"},
            "parameters": {"type": "object"},
        },
    }


def _spec_text(spec: TensorSpec) -> str:
    shape = "[" + ", ".join("N" if d == -1 else str(d) for d in spec.shape) + "]"
    text = f"{spec.name}: {spec.datatype} {shape}"
    if spec.feature_names:
        text += f"; columns: {', '.join(spec.feature_names)}"
    return text


def _v2_request_schema(signature: Signature) -> dict[str, Any]:
    tensors = [_tensor_schema(spec.name, spec.datatype, _spec_text(spec)) for spec in signature.inputs]
    features = signature.feature_names
    if features:
        datatype = signature.inputs[0].datatype
        tensors.append(_tensor_schema(list(features), datatype, "one tensor per feature, shape [N] or [N, 1]"))
    outputs = [spec.name for spec in signature.outputs]
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "minItems": 1, "items": {"anyOf": tensors}},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string", "enum": outputs}, "parameters": {"type": "object"}},
                },
            },
        },
    }


def _v2_response_schema(signature: Signature) -> dict[str, Any]:
    outputs = [
        {
            "type": "object",
            "description": _spec_text(spec),
            "properties": {
                "name": {"type": "string", "enum": [spec.name]},
                "datatype": {"type": "string", "enum": [spec.datatype]},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "data": {"type": "array", "items": _value(spec.datatype)},
            },
        }
        for spec in signature.outputs
    ]
    return {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": {"anyOf": outputs}},
        },
    }


def _tf_request_schema(signature: Signature) -> dict[str, Any]:
    features = signature.feature_names
    row: dict[str, Any]
    if features:
        value = _value(signature.inputs[0].datatype)
        row = {"type": "object", "required": list(features), "properties": dict.fromkeys(features, value)}
    elif len(signature.inputs) == 1:
        row = {"type": "array", "description": _spec_text(signature.inputs[0])}
    else:
        row = {
            "type": "object",
            "required": [spec.name for spec in signature.inputs],
            "properties": {spec.name: {"description": _spec_text(spec)} for spec in signature.inputs},
        }
    return {
        "type": "object",
        "description": "give 'instances' (a list of rows) or 'inputs' (columns: a tensor or named tensors)",
        "properties": {
            "signature_name": {"type": "string", "enum": ["serving_default"]},
            "instances": {"type": "array", "minItems": 1, "items": row},
            "inputs": {"oneOf": [{"type": "array"}, {"type": "object"}]},
        },
    }


# -- paths --------------------------------------------------------------------------------------


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {400: "bad request", 404: "not found", 413: "body too large", 503: "not ready", 500: "model failed"}
    return {str(c): {"description": reasons[c], "content": {_JSON: {"schema": _ERROR_REF}}} for c in codes}


def _get(summary: str, tag: str, op: str, params: list[dict[str, Any]], *codes: int) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", "content": {_JSON: {"schema": {"type": "object"}}}}}
    responses.update(_errors(*codes))
    return {"get": {"summary": summary, "tags": [tag], "operationId": op, "parameters": params, "responses": responses}}


def _post(summary: str, tag: str, op: str, params: list[dict[str, Any]], schema: str, example: Any) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "tags": [tag],
            "operationId": op,
            "parameters": params,
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}Request"}, "example": example}},
            },
            "responses": {
                "200": {
                    "description": "predictions",
                    "headers": {"modelport-model-version": {"schema": {"type": "string"}}},
                    "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}Response"}}},
                },
                **_errors(400, 404, 413, 500, 503),
            },
        }
    }


def _path_param(name: str, values: list[str], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "enum": values},
        "example": values[0],
    }


def _model_paths(name: str, models: list[ServingModel], paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    default = models[0]
    signature = default.version.signature
    numbers = [str(m.version.version) for m in models]
    aliases = sorted({a for m in models for a in m.version.aliases})
    version = _path_param("version", [*numbers, *aliases, "latest"], "version number, alias or 'latest'")
    tf_version = _path_param("version", numbers, "version number")
    label = _path_param("label", aliases, "label (alias)") if aliases else None
    key = f"{name}.V2"
    schemas[f"{key}Request"] = _v2_request_schema(signature)
    schemas[f"{key}Response"] = _v2_response_schema(signature)
    schemas[f"{name}.TFRequest"] = _tf_request_schema(signature)
    schemas[f"{name}.TFResponse"] = {
        "type": "object",
        "properties": {"predictions": {"type": "array"}, "outputs": {"oneOf": [{"type": "array"}, {"type": "object"}]}},
    }
    v2, tf = v2_example(signature), tf_example(signature)
    tag_v2, tag_tf = f"{name} (Open Inference Protocol V2)", f"{name} (TF Serving REST)"
    for prefix, params, suffix in (
        (f"/v2/models/{name}", [], ""),
        (f"/v2/models/{name}/versions/{{version}}", [version], "_version"),
    ):
        paths[prefix] = _get(f"metadata of {name}", tag_v2, f"v2_metadata_{name}{suffix}", params, 400, 404)
        paths[f"{prefix}/ready"] = _get(f"is {name} ready", tag_v2, f"v2_ready_{name}{suffix}", params, 400, 404, 503)
        paths[f"{prefix}/infer"] = _post(f"predict with {name}", tag_v2, f"v2_infer_{name}{suffix}", params, key, v2)
    forms = [(f"/v1/models/{name}", [], ""), (f"/v1/models/{name}/versions/{{version}}", [tf_version], "_version")]
    if label is not None:
        forms.append((f"/v1/models/{name}/labels/{{label}}", [label], "_label"))
    for prefix, params, suffix in forms:
        paths[prefix] = _get(f"status of {name}", tag_tf, f"tf_status_{name}{suffix}", params, 400, 404)
        paths[f"{prefix}/metadata"] = _get(
            f"metadata of {name}", tag_tf, f"tf_metadata_{name}{suffix}", params, 400, 404
        )
        paths[f"{prefix}:predict"] = _post(
            f"predict with {name}", tag_tf, f"tf_predict_{name}{suffix}", params, f"{name}.TF", tf
        )


def build_spec(models: Sequence[ServingModel], *, title: str = "modelport") -> dict[str, Any]:
    """The OpenAPI 3.1 document for a server serving ``models``."""
    paths: dict[str, Any] = {
        "/v2/health/live": _get("server is live", "health", "v2_live", []),
        "/v2/health/ready": _get("all configured models are loaded", "health", "v2_ready", [], 503),
        "/v2": _get("server metadata", "health", "v2_server_metadata", []),
    }
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
    }
    by_name: dict[str, list[ServingModel]] = {}
    for model in models:
        by_name.setdefault(model.name, []).append(model)
    for name, group in by_name.items():
        _model_paths(name, group, paths, schemas)
    served = ", ".join(f"{m.version.ref} ({m.version.runtime})" for m in models) or "none"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": __version__,
            "description": f"Models served: {served}. Open Inference Protocol V2 and TF Serving REST.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
