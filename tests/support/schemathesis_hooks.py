"""Schemathesis hooks for the OpenAPI conformance test: the rules JSON Schema cannot state.

The OpenAPI document is as strict as the server except where JSON Schema has no words for a
rule; its descriptions state those instead. Schema-valid (positive) requests are made to follow
them before they are sent, and nothing else is changed; schema-violating (negative) requests are
sent as generated:

- a V2 tensor's ``data`` holds as many values as its ``shape`` multiplies to: the batch dimension
  is set from the data (JSON Schema cannot relate two fields' values);
- the inputs of one request have the same number of rows (V2 tensors, TF Serving columns): the
  longer ones are cut to the shortest;
- a V2 ``shape`` is a list of integers: JSON Schema counts ``3.0`` as an integer, the server
  (rightly) does not, so such dimensions are written as integers.

One kind of finding is dropped: a schema-valid request refused (400) because the model itself
cannot take a value, as ONNX Runtime answers a token id past an embedding table's end ("the
model cannot take this input: Gather: ... idx=100 must be within the inclusive range [-50,49]").
What values a model's graph takes at run time is not in its signature; the 400 is documented.
"""

from __future__ import annotations

import math
from typing import Any

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

MODEL_REFUSED = "the model cannot take this input: "  # modelport.runtimes.onnx's InvalidInput


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return case
    if case.path.endswith("/infer"):
        _same_rows_v2(case.body.get("inputs"))
    elif case.path.endswith(":predict"):
        _same_rows_columns(case.body.get("inputs"))
    return case


def _same_rows_v2(tensors: Any) -> None:
    if not isinstance(tensors, list):
        return
    usable = [t for t in tensors if isinstance(t, dict) and isinstance(t.get("shape"), list) and t["shape"]]
    usable = [t for t in usable if isinstance(t.get("data"), list)]
    for tensor in usable:
        tensor["shape"] = [int(d) if isinstance(d, float) and d.is_integer() else d for d in tensor["shape"]]
    widths = [math.prod(t["shape"][1:]) for t in usable]
    if not usable or not all(isinstance(w, int) and w > 0 for w in widths):
        return
    rows = min(len(t["data"]) // w for t, w in zip(usable, widths, strict=True))
    for tensor, width in zip(usable, widths, strict=True):
        tensor["shape"][0] = rows
        tensor["data"] = tensor["data"][: rows * width]


def _same_rows_columns(columns: Any) -> None:
    if isinstance(columns, dict) and columns and all(isinstance(v, list) for v in columns.values()):
        rows = min(len(v) for v in columns.values())
        for name, values in columns.items():
            columns[name] = values[:rows]


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    return not (isinstance(failure, RejectedPositiveData) and _refused_by_the_model(response))


def _refused_by_the_model(response: Any) -> bool:
    try:
        error = response.json().get("error", "")
    except Exception:
        return False
    return response.status_code == 400 and isinstance(error, str) and error.startswith(MODEL_REFUSED)
