"""A small HTTP client for served models, used by ``modelport predict URL`` and the quickstart."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from modelport.errors import InvalidInput, ModelportError
from modelport.types import dtype_of


def _rows(data: Any) -> Any:
    if type(data).__name__ == "DataFrame":
        return data.to_dict(orient="records")
    if isinstance(data, np.ndarray):
        return data.tolist()
    return data


def _request(client: httpx.Client, method: str, url: str, body: Any = None) -> Any:
    """The JSON answer; :class:`ModelportError` with one clear line for anything else."""
    try:
        response = client.request(method, url, json=body)
    except httpx.ConnectError:
        raise ModelportError(f"cannot connect to {url}: is the server running there?") from None
    except httpx.TimeoutException:
        raise ModelportError(f"{url} did not answer in time") from None
    except httpx.HTTPError as exc:
        raise ModelportError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
    try:
        payload = response.json()
    except ValueError:
        payload = {"error": response.text.strip()[:500]}
    if response.status_code >= 400:
        message = payload.get("error", response.text) if isinstance(payload, dict) else response.text
        hints = {
            401: " (give an API key: --api-key or MODELPORT_API_KEY)",
            403: " (give a key with the infer scope, or infer:MODEL: --api-key or MODELPORT_API_KEY)",
        }
        hint = hints.get(response.status_code, "")
        raise ModelportError(f"{url} answered {response.status_code}: {message}{hint}")
    return payload


def _post(client: httpx.Client, url: str, body: Any) -> Any:
    return _request(client, "POST", url, body)


def _input_metadata(client: httpx.Client, model_url: str) -> list[dict[str, Any]]:
    meta = _request(client, "GET", model_url)
    specs = meta.get("inputs") if isinstance(meta, dict) else None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise ModelportError(f"{model_url} is not an Open Inference Protocol model URL (its answer has no 'inputs')")
    return specs


def _declared_datatypes(specs: list[dict[str, Any]]) -> dict[str, str]:
    """Input name -> its datatype, and each feature name -> its input's (the server checks them)."""
    datatypes = {}
    for spec in specs:
        datatypes[spec["name"]] = spec["datatype"]
        for feature in (spec.get("parameters") or {}).get("feature_names") or ():
            datatypes.setdefault(feature, spec["datatype"])
    return datatypes


def predict_v2(client: httpx.Client, model_url: str, data: Any, outputs: Sequence[str] | None) -> dict[str, np.ndarray]:
    """Infer over the Open Inference Protocol at ``.../v2/models/NAME[/versions/V]``."""
    body: dict[str, Any]
    if isinstance(data, dict) and "inputs" in data:
        body = data
    else:
        rows = _rows(data)
        specs = _input_metadata(client, model_url)
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            declared = _declared_datatypes(specs)
            inputs = [
                {
                    "name": key,
                    "shape": [len(rows)],
                    "datatype": declared.get(key) or _json_datatype([r[key] for r in rows]),
                    "data": [r[key] for r in rows],
                }
                for key in rows[0]
            ]
        else:
            if len(specs) != 1:
                raise InvalidInput(f"the model takes {len(specs)} inputs; give a V2 request body with 'inputs'")
            array = np.asarray(rows)
            inputs = [
                {
                    "name": specs[0]["name"],
                    "shape": list(array.shape),
                    "datatype": specs[0]["datatype"],
                    "data": array.ravel().tolist(),
                }
            ]
        body = {"inputs": inputs}
    if outputs:
        body["outputs"] = [{"name": name} for name in outputs]
    answer = _post(client, model_url.rstrip("/") + "/infer", body)
    return {o["name"]: _v2_output(o) for o in answer["outputs"]}


def _v2_output(output: dict[str, Any]) -> np.ndarray:
    data = output["data"]
    if output["datatype"] != "BYTES":
        return np.asarray(data, dtype=dtype_of(output["datatype"])).reshape(output["shape"])
    if (output.get("parameters") or {}).get("content_type") == "base64":  # binary values
        data = [base64.b64decode(value) for value in data]
    arr = np.empty(len(data), dtype=object)
    arr[:] = data
    return arr.reshape(output["shape"])


def _json_datatype(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def predict_tfserving(
    client: httpx.Client, model_url: str, data: Any, outputs: Sequence[str] | None
) -> dict[str, np.ndarray]:
    """Predict over TF Serving REST at ``.../v1/models/NAME[/versions/V|/labels/L]``."""
    body = data if isinstance(data, dict) and ("instances" in data or "inputs" in data) else {"instances": _rows(data)}
    answer = _post(client, model_url.rstrip("/") + ":predict", body)
    predictions = answer.get("predictions", answer.get("outputs"))
    predictions = _from_b64(predictions)
    if isinstance(predictions, list) and predictions and isinstance(predictions[0], dict):
        result = {key: _values([row[key] for row in predictions]) for key in predictions[0]}
    elif isinstance(predictions, dict):
        result = {key: _values(value) for key, value in predictions.items()}
    else:
        result = {"predictions": _values(predictions)}
    return {k: v for k, v in result.items() if not outputs or k in outputs}


def _from_b64(value: Any) -> Any:
    """TF Serving's binary values (``{"b64": "<base64>"}``) as bytes."""
    if isinstance(value, list):
        return [_from_b64(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("b64"), str):
            return base64.b64decode(value["b64"])
        return {k: _from_b64(v) for k, v in value.items()}
    return value


def _values(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    return np.array(value, dtype=object) if arr.dtype.kind == "S" else arr  # bytes as they are (NUL bytes kept)


def predict_url(
    url: str,
    data: Any,
    *,
    outputs: Sequence[str] | None = None,
    timeout: float = 30.0,
    api_key: str | None = None,
) -> dict[str, np.ndarray]:
    """Predict with the model a URL names; the path tells the protocol (/v2/... or /v1/...).

    ``api_key`` (a modelport key or an OAuth2 token) is sent as ``Authorization: Bearer``."""
    headers = {"Authorization": f"Bearer {api_key.strip()}"} if api_key else None
    with httpx.Client(timeout=timeout, headers=headers) as client:
        if "/v2/models/" in url:
            return predict_v2(client, url, data, outputs)
        if "/v1/models/" in url:
            return predict_tfserving(client, url, data, outputs)
    raise InvalidInput(
        f"cannot tell the protocol from {url!r}: use http://HOST:PORT/v2/models/NAME or http://HOST:PORT/v1/models/NAME"
    )
