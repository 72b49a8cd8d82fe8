"""OpenAPI 3.1 document generated from the served models' signatures.

Each served model gets concrete paths (``/v2/models/iris/infer``, ``/v1/models/iris:predict``, and
the ``versions/{version}`` forms) whose request schemas (:mod:`modelport.protocols.bodies`, as
strict as the server) list its real input and feature names, and whose examples come from the
registered example input, so Swagger UI's "Try it out" works; the response examples are what the
served version answered to that example when it was warmed (real labels and probabilities, not
values made up from the schema).

Each model's part is built on its own: a model whose part cannot be built is logged and left out,
and the rest are still documented. A caller sees only the models it may call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from modelport.protocols import bodies, tfserving, v2
from modelport.serving.manager import ServingModel
from modelport.signature import EXAMPLE_ROWS
from modelport.types import InferResult, Signature
from modelport.version import __version__

log = logging.getLogger("modelport")

_JSON = "application/json"
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
Visible = Callable[[str], bool]


# -- examples -------------------------------------------------------------------------------------


def _example_arrays(signature: Signature) -> dict[str, np.ndarray]:
    """The registered example as arrays (each input a list of rows), or one row of zeros."""
    arrays = {}
    example = signature.example or {}
    filler = {"BOOL": False, "BYTES": ""}
    for spec in signature.inputs:
        rows = example.get(spec.name)
        if not isinstance(rows, list) or not rows:
            shape = tuple(1 if d == -1 else d for d in spec.shape)
            rows = np.full(shape, filler.get(spec.datatype, 0), dtype=object).tolist()
        arrays[spec.name] = _rows_of(rows)
    count = min((len(arr) for arr in arrays.values()), default=0)
    return {name: arr[: min(count, EXAMPLE_ROWS)] for name, arr in arrays.items()}


def _rows_of(rows: Any) -> np.ndarray:
    """A list of rows as an object array whose first dimension is the rows (values stay Python's)."""
    arr = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        arr[i] = row
    return arr


def v2_example(signature: Signature) -> dict[str, Any]:
    inputs = []
    arrays = _example_arrays(signature)
    for spec in signature.inputs:
        rows = arrays[spec.name].tolist()
        data = np.asarray(rows, dtype=object) if rows else np.empty((0, *(max(d, 0) for d in spec.shape[1:])))
        shape = [len(rows), *data.shape[1:]]
        inputs.append({"name": spec.name, "shape": shape, "datatype": spec.datatype, "data": data.ravel().tolist()})
    return {"inputs": inputs}


def tf_example(signature: Signature) -> dict[str, Any]:
    arrays = _example_arrays(signature)
    features = signature.feature_names
    if features:
        (rows,) = arrays.values()
        return {"instances": [dict(zip(features, row, strict=True)) for row in rows.tolist()]}
    if len(arrays) == 1:
        (rows,) = arrays.values()
        return {"instances": rows.tolist()}
    count = min(len(arr) for arr in arrays.values())
    return {"instances": [{name: arr[i] for name, arr in arrays.items()} for i in range(count)]}


def response_examples(model: ServingModel, rows: int) -> tuple[Any, Any] | None:
    """The V2 and TF Serving (rows) answers to the request examples: what the served version
    answered to the registered example when it was warmed, its first ``rows`` rows, encoded as
    the server encodes every answer. None when it was warmed without an example."""
    outputs = model.example_outputs
    if not outputs:
        return None
    version = model.version
    taken = {name: arr[:rows] if arr.ndim else arr for name, arr in outputs.items()}
    result = InferResult(version.name, version.version, taken, version.signature)
    return orjson.loads(v2.encode_result(result, False).body), orjson.loads(tfserving.encode_predict(result, True).body)


# -- paths ----------------------------------------------------------------------------------------

_REASONS = {
    400: "bad request: the message says what to fix",
    401: "credentials missing or invalid",
    403: "these credentials may not call this model",
    404: "unknown model, version, alias or endpoint",
    413: "body too large",
    500: "the model failed on valid input",
    503: "not ready yet, or overloaded: retry after Retry-After",
    504: "the request's deadline passed",
}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": _REASONS[c], "content": {_JSON: {"schema": _ERROR_REF}}} for c in codes}


@dataclass
class _Part:
    """One model's paths and component schemas."""

    paths: dict[str, Any] = field(default_factory=dict)
    schemas: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Doc:
    secured: bool  # authentication is on: document 401/403 and the credentials

    def get(self, summary: str, tag: str, op: str, params: list[dict[str, Any]], schema: str, *codes: int) -> Any:
        ok = {"description": "OK", "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}
        responses = {"200": ok, **_errors(*codes, *self._auth())}
        return {
            "get": {
                "summary": summary,
                "tags": [tag],
                "operationId": op,
                "parameters": params,
                **self._security(),
                "responses": responses,
            }
        }

    def post(
        self, summary: str, tag: str, op: str, params: list[dict[str, Any]], schema: str, example: Any, answer: Any
    ) -> Any:
        binary = {"schema": {"type": "string", "format": "binary"}}
        answered = {"schema": {"$ref": f"#/components/schemas/{schema}Response"}}
        if answer is not None:
            answered["example"] = answer
        return {
            "post": {
                "summary": summary,
                "tags": [tag],
                "operationId": op,
                "parameters": params,
                **self._security(),
                "requestBody": {
                    "required": True,
                    "content": {
                        _JSON: {"schema": {"$ref": f"#/components/schemas/{schema}Request"}, "example": example}
                    },
                },
                "responses": {
                    "200": {
                        "description": "predictions",
                        "headers": {"modelport-model-version": {"schema": {"type": "string"}}},
                        "content": {
                            _JSON: answered,
                            **({"application/octet-stream": binary} if ".V2" in schema else {}),
                        },
                    },
                    **_errors(400, *self._auth(), 404, 413, 500, 503, 504),
                },
            }
        }

    def _auth(self) -> tuple[int, ...]:
        return (401, 403) if self.secured else ()

    def _security(self) -> dict[str, Any]:
        return {"security": [{"bearer": []}, {"apiKey": []}]} if self.secured else {}


def _path_param(name: str, values: list[str], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "enum": values},
        "example": values[0],
    }


def _model_part(name: str, models: list[ServingModel], doc: _Doc) -> _Part:
    part = _Part()
    signature = models[0].version.signature
    numbers = [str(m.version.version) for m in models]
    aliases = sorted({a for m in models for a in m.version.aliases})
    version = _path_param("version", [*numbers, *aliases, "latest"], "version number, alias or 'latest'")
    tf_version = _path_param("version", numbers, "version number")
    label = _path_param("label", aliases, "label (alias)") if aliases else None
    v2_key, tf_key = f"{name}.V2", f"{name}.TF"
    part.schemas[f"{v2_key}Request"] = bodies.v2_request(signature)
    part.schemas[f"{v2_key}Response"] = bodies.v2_response(signature)
    part.schemas[f"{tf_key}Request"] = bodies.tf_request(signature)
    part.schemas[f"{tf_key}Response"] = bodies.tf_response(signature)
    v2_body, tf_body = v2_example(signature), tf_example(signature)
    rows = len(tf_body["instances"])
    v2_answer, tf_answer = response_examples(models[0], rows) or (None, None)
    tag_v2, tag_tf = f"{name} (Open Inference Protocol V2)", f"{name} (TF Serving REST)"
    paths = part.paths
    for prefix, params, suffix in (
        (f"/v2/models/{name}", [], ""),
        (f"/v2/models/{name}/versions/{{version}}", [version], "_version"),
    ):
        paths[prefix] = doc.get(
            f"metadata of {name}", tag_v2, f"v2_metadata_{name}{suffix}", params, "V2ModelMetadata", 400, 404
        )
        paths[f"{prefix}/ready"] = doc.get(
            f"is {name} ready", tag_v2, f"v2_ready_{name}{suffix}", params, "V2ModelReady", 400, 404, 503
        )
        paths[f"{prefix}/infer"] = doc.post(
            f"predict with {name}", tag_v2, f"v2_infer_{name}{suffix}", params, v2_key, v2_body, v2_answer
        )
    forms = [(f"/v1/models/{name}", [], ""), (f"/v1/models/{name}/versions/{{version}}", [tf_version], "_version")]
    if label is not None:
        forms.append((f"/v1/models/{name}/labels/{{label}}", [label], "_label"))
    for prefix, params, suffix in forms:
        paths[prefix] = doc.get(
            f"status of {name}", tag_tf, f"tf_status_{name}{suffix}", params, "TFModelStatus", 400, 404
        )
        paths[f"{prefix}/metadata"] = doc.get(
            f"metadata of {name}", tag_tf, f"tf_metadata_{name}{suffix}", params, "TFModelMetadata", 400, 404
        )
        paths[f"{prefix}:predict"] = doc.post(
            f"predict with {name}", tag_tf, f"tf_predict_{name}{suffix}", params, tf_key, tf_body, tf_answer
        )
    return part


def build_spec(
    models: Sequence[ServingModel],
    *,
    title: str = "modelport",
    visible: Visible | None = None,
    secured: bool = False,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a server serving ``models``.

    ``visible`` (a model name -> whether the caller may call it) leaves out the others; None shows
    every model. ``secured`` documents the credentials and the 401/403 answers.
    """
    doc = _Doc(secured)
    paths: dict[str, Any] = {
        "/v2/health/live": _Doc(False).get("server is live", "health", "v2_live", [], "Live"),
        "/v2/health/ready": _Doc(False).get("all configured models are loaded", "health", "v2_ready", [], "Ready", 503),
        "/v2": doc.get("server metadata", "health", "v2_server_metadata", [], "V2ServerMetadata"),
    }
    schemas: dict[str, Any] = {
        **bodies.COMMON_SCHEMAS,
        "Live": {"type": "object", "required": ["live"], "properties": {"live": {"const": True}}},
        "Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"const": True}}},
        "V2ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
    }
    by_name: dict[str, list[ServingModel]] = {}
    for model in models:
        if visible is None or visible(model.name):
            by_name.setdefault(model.name, []).append(model)
    documented, left_out = [], []
    for name, group in by_name.items():
        try:
            part = _model_part(name, group, doc)
        except Exception:  # one model's signature must not take the document down for the others
            log.exception("OpenAPI: model %s is left out of the document: its schema could not be built", name)
            left_out.append(name)
            continue
        paths.update(part.paths)
        schemas.update(part.schemas)
        documented.extend(group)
    served = ", ".join(f"{m.version.ref} ({m.version.runtime})" for m in documented) or "none"
    description = f"Models served: {served}. Open Inference Protocol V2 and TF Serving REST."
    if left_out:
        description += f" Left out (see the server log): {', '.join(left_out)}."
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__, "description": description},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if secured:
        spec["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an API key (mp_...) or an OAuth2 token"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    return spec
