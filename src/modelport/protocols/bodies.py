"""JSON Schemas of a model's request and response bodies (Open Inference Protocol V2, TF Serving
REST), generated from its signature for the OpenAPI document (:mod:`modelport.protocols.openapi`).

The request schemas are as strict as the server: what they allow is answered, what they forbid
is refused with 400. Two rules JSON Schema cannot state are given in the descriptions instead
(:data:`SHAPE_RULE`, :data:`ROWS_RULE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelport.types import DATATYPES, Signature, TensorSpec

_FLOAT_MAX = {"FP16": 65504.0, "FP32": float(np.finfo(np.float32).max), "FP64": float(np.finfo(np.float64).max)}
# Float types in order of width, and the smallest magnitude each rounds to infinity (a value cast to
# the type is checked to stay finite; anything below this rounds to a finite value).
_FLOATS = ("FP16", "FP32", "FP64")
_OVERFLOW = {"FP16": 65520.0, "FP32": (2 - 2**-24) * 2.0**127}
_INT_RANGE = {name: (int(np.iinfo(dt).min), int(np.iinfo(dt).max)) for name, dt in DATATYPES.items() if dt.kind in "iu"}
# A V2 tensor may declare another datatype of its input's family; values are range-checked when cast.
_FAMILY = {
    **dict.fromkeys(_FLOAT_MAX, tuple(_FLOAT_MAX)),
    **dict.fromkeys(_INT_RANGE, tuple(_INT_RANGE)),
    "BOOL": ("BOOL",),
    "BYTES": ("BYTES",),
}
SHAPE_RULE = "data holds as many values as shape multiplies to"
ROWS_RULE = "every input of one request has the same number of rows"

# -- values ---------------------------------------------------------------------------------------


def _value(datatype: str, *, allow_nan: bool = False, declared: str | None = None) -> dict[str, Any]:
    """One element of an input of ``datatype`` as JSON; ``declared``: the V2 tensor's own datatype,
    whose range limits the values too."""
    if datatype == "BOOL":
        return {"type": "boolean"}
    if datatype == "BYTES":
        return {"type": "string"}
    if datatype in _FLOAT_MAX:
        # JSON numbers are read as FP64; a V2 tensor declared narrower is range-checked for its own
        # type; a cast to a narrower input type must stay finite.
        given = declared if declared in _FLOATS else "FP64"
        limit, exclusive = _FLOAT_MAX[given], False
        if _FLOATS.index(datatype) < _FLOATS.index(given) and _OVERFLOW[datatype] <= limit:
            limit, exclusive = _OVERFLOW[datatype], True
        bounds = ("exclusiveMinimum", "exclusiveMaximum") if exclusive else ("minimum", "maximum")
        schema: dict[str, Any] = {"type": "number", bounds[0]: -limit, bounds[1]: limit}
        if allow_nan:
            schema["type"] = ["number", "null"]
            schema["description"] = "null: a missing value"
        return schema
    declared = declared or datatype
    low, high = _INT_RANGE.get(datatype, (None, None))
    if declared in _INT_RANGE and low is not None and high is not None:
        low, high = max(low, _INT_RANGE[declared][0]), min(high, _INT_RANGE[declared][1])
    return {"type": "integer", "minimum": low, "maximum": high}


def _row(spec: TensorSpec, value: dict[str, Any]) -> dict[str, Any]:
    """One row of ``spec`` (the tensor without its batch dimension): a value or nested lists."""
    schema = value
    for dim in reversed(spec.shape[1:]):
        schema = {"type": "array", "items": schema}
        if dim >= 0:
            schema.update(minItems=dim, maxItems=dim)
    return schema


_B64 = {"type": "object", "required": ["b64"], "properties": {"b64": {"type": "string"}}}


def _output_value(spec: TensorSpec, *, tf: bool = False) -> dict[str, Any]:
    if spec.datatype in _FLOAT_MAX:
        return {"type": ["number", "null"]}  # a model may answer NaN, which JSON writes as null
    if spec.datatype == "BYTES":  # TF Serving answers bytes that are not text as {"b64": ...}
        return {"anyOf": [{"type": "string"}, _B64]} if tf else {"type": "string"}
    return _value(spec.datatype)


# -- request schemas ------------------------------------------------------------------------------

_TENSOR_PARAMETERS = {
    "description": "tensor parameters; binary_data_size needs the binary tensor data extension, not JSON",
    "not": {
        "type": "object",
        "required": ["binary_data_size"],
        "properties": {"binary_data_size": {"not": {"type": "null"}}},
    },
}


def _shape(spec: TensorSpec) -> dict[str, Any]:
    dims = [{"type": "integer", "minimum": 0} if d == -1 else {"const": d} for d in spec.shape]
    return {"type": "array", "prefixItems": dims, "items": False, "minItems": len(dims)}


def _tensor(name: str, spec: TensorSpec, shape: dict[str, Any], description: str) -> dict[str, Any]:
    """A V2 input tensor named ``name`` that feeds ``spec``: one form per datatype it may declare
    (its own first), each with the values in range for both."""
    declared_types = [spec.datatype, *(d for d in _FAMILY.get(spec.datatype, ()) if d != spec.datatype)]
    forms = []
    for declared in declared_types:
        value = _value(spec.datatype, allow_nan=spec.allow_nan, declared=declared)
        forms.append(
            {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"const": name},
                    "shape": shape,
                    "datatype": {"const": declared},
                    "data": {"type": "array", "items": value, "description": f"values, flat, row-major; {SHAPE_RULE}"},
                    "parameters": _TENSOR_PARAMETERS,
                },
            }
        )
    if len(forms) == 1:
        return {"description": description, **forms[0]}
    others = ", ".join(declared_types[1:])
    return {"description": f"{description} (also declared as {others}, with values in range)", "anyOf": forms}


def spec_text(spec: TensorSpec) -> str:
    shape = "[" + ", ".join("N" if d == -1 else str(d) for d in spec.shape) + "]"
    text = f"{spec.name}: {spec.datatype} {shape}"
    if spec.feature_names:
        text += f"; columns: {', '.join(spec.feature_names)}"
    if spec.allow_nan:
        text += "; missing values (null) accepted"
    return text


def _each_once(named: Sequence[tuple[str, dict[str, Any]]], description: str) -> dict[str, Any]:
    """An array holding each of ``named``'s schemas exactly once, in any order."""
    schemas = [schema for _, schema in named]
    array: dict[str, Any] = {
        "type": "array",
        "description": description,
        "minItems": len(schemas),
        "maxItems": len(schemas),
        "items": schemas[0] if len(schemas) == 1 else {"anyOf": schemas},
    }
    if len(schemas) > 1:
        array["allOf"] = [
            {"contains": {"type": "object", "required": ["name"], "properties": {"name": {"const": name}}}}
            for name, _ in named
        ]
    return array


def v2_request(signature: Signature) -> dict[str, Any]:
    tensors = [(spec.name, _tensor(spec.name, spec, _shape(spec), spec_text(spec))) for spec in signature.inputs]
    forms = [_each_once(tensors, f"one tensor per input; {ROWS_RULE}")]
    features = signature.feature_names
    if features:
        spec = signature.inputs[0]
        column = {
            "type": "array",
            "prefixItems": [{"type": "integer", "minimum": 0}, {"const": 1}],
            "items": False,
            "minItems": 1,
        }
        by_feature = [(f, _tensor(f, spec, column, f"feature {f}: shape [N] or [N, 1]")) for f in features]
        forms.append(_each_once(by_feature, f"or one tensor per feature, assembled in feature order; {ROWS_RULE}"))
    outputs = [spec.name for spec in signature.outputs]
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"description": "echoed in the response (as a string)"},
            "parameters": {"description": "request parameters; binary_data_output: true answers in binary"},
            "inputs": forms[0] if len(forms) == 1 else {"oneOf": forms},
            "outputs": {
                "type": ["array", "null"],
                "description": "the outputs to answer, all when left out (or null)",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"enum": outputs},
                        "parameters": {"description": "binary_data: true answers this output in binary"},
                    },
                },
            },
        },
    }


def _tf_rows(signature: Signature) -> dict[str, Any]:
    """``instances``: a non-empty list of rows, every row in the same form."""
    inputs = signature.inputs
    by_input = {
        "type": "object",
        "required": [spec.name for spec in inputs],
        "additionalProperties": False,
        "properties": {spec.name: _row(spec, _value(spec.datatype, allow_nan=spec.allow_nan)) for spec in inputs},
    }
    forms = [by_input]
    if len(inputs) == 1:
        (spec,) = inputs
        row = _row(spec, _value(spec.datatype, allow_nan=spec.allow_nan))
        forms.insert(0, row)
        if spec.feature_names:
            value = _value(spec.datatype, allow_nan=spec.allow_nan)
            features = list(spec.feature_names)
            keyed = {"type": "object", "required": features, "additionalProperties": False}
            keyed["properties"] = dict.fromkeys(features, value)
            forms.insert(0, keyed)
    lists = [{"type": "array", "minItems": 1, "items": form} for form in forms]
    return lists[0] if len(lists) == 1 else {"oneOf": lists}


def _tf_columns(signature: Signature) -> dict[str, Any]:
    """``inputs``: named tensors (a list of rows each), a feature model's columns, or rows as ``instances``."""
    inputs = signature.inputs
    # An empty list is read as zero float values: zero rows of a 1-D float input, nothing else.
    least = 0 if all(len(spec.shape) == 1 and spec.datatype in _FLOATS for spec in inputs) else 1
    named = {
        "type": "object",
        "description": f"one list of rows per input; {ROWS_RULE}",
        "required": [spec.name for spec in inputs],
        "additionalProperties": False,
        "properties": {
            spec.name: {
                "type": "array",
                "minItems": least,
                "items": _row(spec, _value(spec.datatype, allow_nan=spec.allow_nan)),
            }
            for spec in inputs
        },
    }
    forms: list[dict[str, Any]] = [named]
    features = signature.feature_names
    if features:
        spec = inputs[0]
        value = _value(spec.datatype, allow_nan=spec.allow_nan)
        forms.append(
            {
                "type": "object",
                "description": f"one list of values per feature; {ROWS_RULE}",
                "required": list(features),
                "additionalProperties": False,
                "properties": {feature: {"type": "array", "items": value} for feature in features},
            }
        )
    rows = _tf_rows(signature)
    forms.extend(rows.get("oneOf", [rows]))
    if len(inputs) == 1 and len(inputs[0].shape) == 1 and inputs[0].datatype in _FLOATS:  # no rows
        forms.append({"type": "array", "maxItems": 0})
    return {"oneOf": forms}


def tf_request(signature: Signature) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "give 'instances' (a list of rows) or 'inputs' (columns: named tensors)",
        "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
        "properties": {
            "signature_name": {"enum": ["serving_default", ""]},
            "instances": _tf_rows(signature),
            "inputs": _tf_columns(signature),
        },
    }


# -- response schemas -----------------------------------------------------------------------------


def v2_response(signature: Signature) -> dict[str, Any]:
    outputs = [
        {
            "type": "object",
            "description": spec_text(spec),
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"const": spec.name},
                "datatype": {"const": spec.datatype},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "data": {"type": "array", "items": _output_value(spec)},
                "parameters": {"type": "object"},
            },
        }
        for spec in signature.outputs
    ]
    return {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": {"anyOf": outputs} if outputs else {}},
        },
    }


def tf_response(signature: Signature) -> dict[str, Any]:
    specs = signature.outputs
    rows = {spec.name: _row(spec, _output_value(spec, tf=True)) for spec in specs}
    if len(specs) == 1:
        (row,) = rows.values()
        predictions: dict[str, Any] = {"type": "array", "items": row}
        outputs: dict[str, Any] = {"type": "array", "items": row}
    else:
        predictions = {"type": "array", "items": {"type": "object", "properties": rows}}
        outputs = {
            "type": "object",
            "properties": {name: {"type": "array", "items": row} for name, row in rows.items()},
        }
    return {
        "type": "object",
        "description": (
            "'predictions' answers 'instances' (an object per row for several outputs); 'outputs' answers 'inputs'"
        ),
        "oneOf": [{"required": ["predictions"]}, {"required": ["outputs"]}],
        "properties": {"predictions": predictions, "outputs": outputs},
    }


_V2_METADATA = {
    "type": "object",
    "required": ["name", "versions", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2TensorMetadata"}},
        "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2TensorMetadata"}},
    },
}
COMMON_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "V2TensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "parameters": {"type": "object"},
        },
    },
    "V2ModelMetadata": _V2_METADATA,
    "V2ModelReady": {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {"name": {"type": "string"}, "ready": {"const": True}},
    },
    "TFModelStatus": {
        "type": "object",
        "required": ["model_version_status"],
        "properties": {
            "model_version_status": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["version", "state", "status"],
                    "properties": {
                        "version": {"type": "string"},
                        "state": {"type": "string"},
                        "status": {"type": "object"},
                    },
                },
            }
        },
    },
    "TFModelMetadata": {
        "type": "object",
        "required": ["model_spec", "metadata"],
        "properties": {"model_spec": {"type": "object"}, "metadata": {"type": "object"}},
    },
}
