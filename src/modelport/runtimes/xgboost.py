"""The native XGBoost runtime: a Booster loaded from the artifact's XGBoost JSON or UBJ model file.

No pickle is involved: ``xgboost.Booster(model_file=...)`` reads XGBoost's own format, which
holds trees and parameters, never code. ``inplace_predict`` scores the NumPy rows directly
(no DMatrix) and is thread-safe for tree boosters, so several requests may predict at once; the
``threads`` given at load become the booster's ``nthread``. See :mod:`modelport.runtimes.boosted`
for the manifest and the outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelport.errors import InvalidModel
from modelport.runtimes.base import Capabilities
from modelport.runtimes.boosted import BoostedRuntime, Manifest

SUFFIXES = (".json", ".ubj")


def open_booster(path: Path, threads: int = 1) -> Any:
    """The Booster stored at ``path`` (XGBoost JSON or UBJ), predicting with ``threads`` threads."""
    import xgboost

    booster = xgboost.Booster(model_file=str(path))
    booster.set_param({"nthread": threads})
    return booster


def scores(booster: Any, x: np.ndarray, missing: float | None = None) -> np.ndarray:
    """The booster's predictions (probabilities for classifiers) on the rows ``x``."""
    return np.asarray(booster.inplace_predict(x, missing=np.nan if missing is None else missing))


class XGBoostRuntime(BoostedRuntime):
    kind: ClassVar[str] = "xgboost"
    # inplace_predict is thread-safe for tree boosters (gblinear is refused at load)
    capabilities: ClassVar[Capabilities] = Capabilities(batch_rows=True, thread_safe=True, runs_code=False)
    library: ClassVar[str] = "xgboost"
    suffixes: ClassVar[tuple[str, ...]] = SUFFIXES

    def _open(self, path: Path, manifest: Manifest, threads: int) -> Any:
        import json

        booster = open_booster(path, threads)
        name = json.loads(booster.save_config())["learner"]["gradient_booster"]["name"]
        if name not in ("gbtree", "dart"):
            raise InvalidModel(f"{path.name} is a {name} booster; the xgboost runtime serves tree boosters")
        return booster

    def _scores(self, booster: Any, x: np.ndarray, manifest: Manifest) -> np.ndarray:
        return scores(booster, x, manifest.missing)
