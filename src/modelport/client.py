"""A small HTTP client for served models, used by ``modelport predict URL`` and the quickstart."""

from __future__ import annotations

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


def _post(client: httpx.Client, url: str, body: Any) -> Any:
    try:
        response = client.post(url, json=body)
    except httpx.HTTPError as exc:
        raise ModelportError(f"cannot reach {url}: {exc}") from None
    try:
        payload = response.json()
    except ValueError:
        payload = {"error": response.text}
    if response.status_code >= 400:
        message = payload.get("error", response.text) if isinstance(payload, dict) else response.text
        raise ModelportError(f"{url} answered {response.status_code}: {message}")
    return payload


def predict_v2(client: httpx.Client, model_url: str, data: Any, outputs: Sequence[str] | None) -> dict[str, np.ndarray]:
    """Infer over the Open Inference Protocol at ``.../v2/models/NAME[/versions/V]``."""
    body: dict[str, Any]
    if isinstance(data, dict) and "inputs" in data:
        body = data
    else:
        rows = _rows(data)
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            inputs = [
                {
                    "name": key,
                    "shape": [len(rows)],
                    "datatype": _json_datatype([r[key] for r in rows]),
                    "data": [r[key] for r in rows],
                }
                for key in rows[0]
            ]
        else:
            meta = client.get(model_url)
            if meta.status_code >= 400:
                raise ModelportError(f"{model_url} answered {meta.status_code}: {meta.text}")
            specs = meta.json()["inputs"]
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
    return {
        o["name"]: np.asarray(o["data"], dtype=dtype_of(o["datatype"])).reshape(o["shape"]) for o in answer["outputs"]
    }


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
    if isinstance(predictions, list) and predictions and isinstance(predictions[0], dict):
        result = {key: np.asarray([row[key] for row in predictions]) for key in predictions[0]}
    elif isinstance(predictions, dict):
        result = {key: np.asarray(value) for key, value in predictions.items()}
    else:
        result = {"predictions": np.asarray(predictions)}
    return {k: v for k, v in result.items() if not outputs or k in outputs}


def predict_url(
    url: str, data: Any, *, outputs: Sequence[str] | None = None, timeout: float = 30.0
) -> dict[str, np.ndarray]:
    """Predict with the model a URL names; the path tells the protocol (/v2/... or /v1/...)."""
    with httpx.Client(timeout=timeout) as client:
        if "/v2/models/" in url:
            return predict_v2(client, url, data, outputs)
        if "/v1/models/" in url:
            return predict_tfserving(client, url, data, outputs)
    raise InvalidInput(
        f"cannot tell the protocol from {url!r}: use http://HOST:PORT/v2/models/NAME or http://HOST:PORT/v1/models/NAME"
    )
