"""A third-party runtime, as a user's package would ship one: outputs the input times a factor
read from the artifact's ``scale.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelport.errors import ModelNotReady
from modelport.runtimes import Capabilities
from modelport.types import Signature


class ScaledRuntime:
    kind: ClassVar[str] = "scaled"
    capabilities: ClassVar[Capabilities] = Capabilities(batch_rows=True, thread_safe=True, runs_code=False)

    def __init__(self) -> None:
        self._factor: float | None = None

    def load(self, artifact: Path, signature: Signature, *, threads: int = 1) -> None:
        self._factor = float(json.loads((Path(artifact) / "scale.json").read_text())["factor"])

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        if self._factor is None:
            raise ModelNotReady("the scaled model is not loaded")
        (x,) = inputs.values()
        return {"scaled": np.asarray(x, dtype=np.float64) * self._factor}

    def unload(self) -> None:
        self._factor = None
