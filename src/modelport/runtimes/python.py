"""The custom Python runtime: a directory whose ``model.py`` defines ``class Model``.

``Model`` has ``load(self, path: Path) -> None`` and ``predict(self, inputs: dict[str, ndarray])
-> dict[str, ndarray] | ndarray`` (a bare array is the output ``prediction``). Loading runs the
owner's code, so such models are registered only with explicit trust.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from modelport.errors import InvalidModel, ModelNotReady, PredictionFailed
from modelport.runtimes.base import Capabilities
from modelport.types import Signature

ENTRYPOINT = "model.py"
DEFAULT_OUTPUT = "prediction"


def import_model_module(artifact: Path) -> ModuleType:
    """Execute ``model.py`` as a fresh module with a unique name, left out of ``sys.modules``."""
    path = Path(artifact) / ENTRYPOINT
    if not path.is_file():
        raise InvalidModel(f"custom Python model {artifact} has no {ENTRYPOINT}")
    name = f"modelport_custom_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidModel(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # while executing only: dataclasses and typing look the module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise InvalidModel(f"{path} raised while importing: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.modules.pop(name, None)
    return module


def as_outputs(result: Any) -> dict[str, np.ndarray]:
    """A custom model's answer as named arrays (strings as BYTES object arrays)."""
    items = result.items() if isinstance(result, Mapping) else [(DEFAULT_OUTPUT, result)]
    out = {}
    for name, value in items:
        arr = np.asarray(value)
        if arr.dtype.kind in "US":  # the values themselves: NumPy's strings drop trailing NUL bytes
            arr = np.array(value, dtype=object) if isinstance(value, list | tuple) else arr.astype(object)
        out[str(name)] = arr
    return out


class PythonRuntime:
    kind: ClassVar[str] = "python"
    capabilities: ClassVar[Capabilities] = Capabilities(
        batch_rows=True, thread_safe=False, runs_code=True, bounded_cost=False
    )

    def __init__(self) -> None:
        self._model: Any = None
        self._outputs: tuple[str, ...] = ()

    def load(self, artifact: Path, signature: Signature, *, threads: int = 1) -> None:
        module = import_model_module(artifact)
        cls = getattr(module, "Model", None)
        if not isinstance(cls, type):
            raise InvalidModel(f"{Path(artifact) / ENTRYPOINT} must define a class named Model")
        for method in ("load", "predict"):
            if not callable(getattr(cls, method, None)):
                raise InvalidModel(f"class Model in {ENTRYPOINT} has no {method}() method")
        try:
            model = cls()
            model.load(Path(artifact))
        except Exception as exc:
            raise InvalidModel(f"Model.load raised: {type(exc).__name__}: {exc}") from exc
        self._outputs = tuple(spec.name for spec in signature.outputs)
        self._model = model

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        model = self._model
        if model is None:
            raise ModelNotReady("the custom Python model is not loaded; call load() first")
        try:
            result = model.predict(dict(inputs))
        except Exception as exc:
            raise PredictionFailed(f"Model.predict raised: {type(exc).__name__}: {exc}") from exc
        outputs = as_outputs(result)
        if not self._outputs:  # registration: the outputs are not known yet
            return outputs
        missing = [name for name in self._outputs if name not in outputs]
        if missing:
            raise PredictionFailed(f"Model.predict returned no output {missing[0]!r} (it gave: {', '.join(outputs)})")
        return {name: outputs[name] for name in self._outputs}

    def unload(self) -> None:
        self._model = None
