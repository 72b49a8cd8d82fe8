"""A tiny real runtime for tests of the seam and of protocols: a linear classifier from JSON.

The artifact directory holds ``fake.json``::

    {"weights": [[...], ...],   # n_features x n_classes
     "bias": [...],             # n_classes (optional, zeros by default)
     "classes": [...]}          # n_classes labels, ints or strings (optional, 0..n-1 by default)

``predict`` takes one FP32/FP64 input of shape [rows, n_features] (whatever its name) and returns
``label`` (the class with the largest score) and ``probabilities`` (softmax of the scores), or
those of the two that the signature declares.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelport.errors import InvalidModel, ModelNotReady
from modelport.runtimes.base import Capabilities
from modelport.types import Signature, TensorSpec

FILENAME = "fake.json"


class FakeRuntime:
    kind: ClassVar[str] = "fake"
    capabilities: ClassVar[Capabilities] = Capabilities(batch_rows=True, thread_safe=True, runs_code=False)

    def __init__(self) -> None:
        self._weights: np.ndarray | None = None
        self._bias: np.ndarray | None = None
        self._classes: np.ndarray | None = None
        self._outputs: tuple[str, ...] = ()

    def load(self, artifact: Path, signature: Signature, *, threads: int = 1) -> None:
        path = Path(artifact) / FILENAME
        outputs = tuple(spec.name for spec in signature.outputs)
        unknown = [name for name in outputs if name not in ("label", "probabilities")]
        if unknown:
            raise InvalidModel(f"the fake runtime gives 'label' and 'probabilities', not {unknown[0]!r}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            weights = np.asarray(data["weights"], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidModel(f"cannot read fake model {path}: {exc}") from exc
        if weights.ndim != 2 or weights.shape[1] < 1:
            raise InvalidModel(f"{path}: 'weights' must be a non-empty n_features x n_classes matrix")
        n_classes = weights.shape[1]
        bias = np.asarray(data.get("bias", [0.0] * n_classes), dtype=np.float64)
        classes = np.asarray(data.get("classes", list(range(n_classes))))
        if bias.shape != (n_classes,) or classes.shape != (n_classes,):
            raise InvalidModel(f"{path}: 'bias' and 'classes' must have one entry per class ({n_classes})")
        self._weights, self._bias, self._outputs = weights, bias, outputs
        self._classes = classes.astype(object) if classes.dtype.kind in "US" else classes.astype(np.int64)

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        weights, bias, classes = self._weights, self._bias, self._classes
        if weights is None or bias is None or classes is None:
            raise ModelNotReady("the fake model is not loaded; call load() first")
        (x,) = inputs.values()
        scores = np.asarray(x, dtype=np.float64) @ weights + bias
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        probabilities = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        out = {"label": classes[np.argmax(scores, axis=1)], "probabilities": probabilities}
        return {name: out[name] for name in self._outputs}

    def unload(self) -> None:
        self._weights = self._bias = self._classes = None


def write_artifact(
    directory: Path,
    weights: Sequence[Sequence[float]],
    *,
    bias: Sequence[float] | None = None,
    classes: Sequence[int] | Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
) -> Signature:
    """Write a fake model into ``directory`` and return its signature (input "input", FP32)."""
    matrix = np.asarray(weights, dtype=np.float64)
    n_features, n_classes = matrix.shape
    data: dict[str, Any] = {"weights": matrix.tolist()}
    if bias is not None:
        data["bias"] = list(bias)
    if classes is not None:
        data["classes"] = list(classes)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / FILENAME).write_text(json.dumps(data), encoding="utf-8")
    string_classes = classes is not None and any(isinstance(c, str) for c in classes)
    names = tuple(feature_names) if feature_names is not None else None
    example = {"input": [[0.0] * n_features]}
    return Signature(
        inputs=(TensorSpec("input", "FP32", (-1, n_features), feature_names=names),),
        outputs=(
            TensorSpec("label", "BYTES" if string_classes else "INT64", (-1,)),
            TensorSpec("probabilities", "FP32", (-1, n_classes)),
        ),
        example=example,
    )
