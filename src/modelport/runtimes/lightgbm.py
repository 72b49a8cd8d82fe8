"""The native LightGBM runtime: a Booster loaded from the artifact's LightGBM text model.

No pickle is involved: ``lightgbm.Booster(model_file=...)`` parses LightGBM's text format (trees
and parameters, never code). The ``threads`` given at load are passed as ``num_threads`` to every
predict. One booster is not declared thread-safe: LightGBM sets up a predictor on the shared
booster at every call and that set-up writes shared state (LightGBM issue #6142, open), so the
server gives this runtime one call at a time (batching merges the rows of concurrent requests).
See :mod:`modelport.runtimes.boosted` for the manifest and the outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelport.runtimes.base import Capabilities
from modelport.runtimes.boosted import BoostedRuntime, Manifest

SUFFIXES = (".txt",)


def open_booster(path: Path) -> Any:
    """The Booster stored at ``path`` (LightGBM text model)."""
    import lightgbm

    return lightgbm.Booster(model_file=str(path))


def scores(booster: Any, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """The booster's predictions (probabilities for classifiers) on the rows ``x``."""
    return np.asarray(booster.predict(x, num_threads=threads))


class LightGBMRuntime(BoostedRuntime):
    kind: ClassVar[str] = "lightgbm"
    capabilities: ClassVar[Capabilities] = Capabilities(batch_rows=True, thread_safe=False, runs_code=False)
    library: ClassVar[str] = "lightgbm"
    suffixes: ClassVar[tuple[str, ...]] = SUFFIXES

    def _open(self, path: Path, manifest: Manifest, threads: int) -> Any:
        return open_booster(path)

    def _scores(self, booster: Any, x: np.ndarray, manifest: Manifest) -> np.ndarray:
        return scores(booster, x, self._threads)
