"""Helpers for rollout tests: real registries holding small real models (fake-runtime linear
classifiers and custom Python models), a manager following the registry, and polling."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelport.registry.registry import Registry
from modelport.runtimes.fake import write_artifact
from modelport.serving.manager import ModelManager, RegistrySource
from modelport.serving.routes import Chance
from modelport.types import ModelVersion, Signature, TensorSpec
from tests.support.serving import BIAS, CLASSES, FEATURES, WEIGHTS

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
EXAMPLE = {"input": ROWS.tolist()}
FLIPPED = [row[::-1] for row in WEIGHTS]


def register_fake(
    registry: Registry,
    workdir: Path,
    name: str = "iris",
    *,
    weights: Sequence[Sequence[float]] = WEIGHTS,
    aliases: Sequence[str] = (),
) -> ModelVersion:
    """Register a fake-runtime linear classifier (a real runtime that needs no conversion)."""
    directory = workdir / f"fake-{time.monotonic_ns()}"
    signature = write_artifact(directory, weights, bias=BIAS, classes=CLASSES, feature_names=FEATURES)
    signature = Signature(signature.inputs, signature.outputs, example=EXAMPLE)
    return registry.register(name, directory, runtime="fake", framework="fake", signature=signature, aliases=aliases)


# A custom Python model: iris-shaped, labels "setosa"/"virginica" by the first feature; it sleeps
# `delay` seconds per call, and its load() raises while the file named by `broken_if` exists.
PYTHON_MODEL = textwrap.dedent(
    """
    import json
    import time
    from pathlib import Path

    import numpy as np


    class Model:
        def load(self, path):
            params = json.loads((path / "params.json").read_text())
            marker = params.get("broken_if")
            if marker and Path(marker).exists():
                raise RuntimeError("weights file is corrupt (checksum mismatch)")
            self.delay = params.get("delay", 0.0)
            self.cut = params.get("cut", 6.0)

        def predict(self, inputs):
            if self.delay:
                time.sleep(self.delay)
            x = np.asarray(inputs["input"], dtype=np.float64)
            labels = np.where(x[:, 0] < self.cut, "setosa", "virginica").astype(object)
            return {"label": labels, "score": x.sum(axis=1)}
    """
)


def register_python(
    registry: Registry,
    workdir: Path,
    name: str = "iris",
    *,
    aliases: Sequence[str] = (),
    **params: Any,
) -> ModelVersion:
    """Register a trusted custom Python model (see ``PYTHON_MODEL``) with ``params``."""
    directory = workdir / f"python-{time.monotonic_ns()}"
    directory.mkdir(parents=True)
    (directory / "model.py").write_text(PYTHON_MODEL)
    (directory / "params.json").write_text(json.dumps(params))
    signature = Signature(
        inputs=(TensorSpec("input", "FP32", (-1, 4), FEATURES),),
        outputs=(TensorSpec("label", "BYTES", (-1,)), TensorSpec("score", "FP64", (-1,))),
        example=EXAMPLE,
    )
    return registry.register(
        name, directory, runtime="python", framework="python", signature=signature, aliases=aliases, trusted_code=True
    )


def following(registry: Registry, chance: Chance | None = None) -> ModelManager:
    return ModelManager(RegistrySource(registry), chance=chance)


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
