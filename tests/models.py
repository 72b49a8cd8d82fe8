"""Small real models that several test modules share."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression


class ShiftedLogistic(LogisticRegression):
    """A user's own estimator class: skl2onnx has no converter and skops must import it."""


CUSTOM_MODEL = textwrap.dedent(
    """
    import json
    from pathlib import Path

    import numpy as np


    class Model:
        def load(self, path: Path) -> None:
            params = json.loads((path / "params.json").read_text())
            self.mean = np.asarray(params["mean"])
            self.scale = np.asarray(params["scale"])

        def predict(self, inputs):
            z = (inputs["input"] - self.mean) / self.scale
            return {"score": z.sum(axis=1), "zscores": z.astype(np.float32)}
    """
)


def write_custom_model(directory: Path, frame: pd.DataFrame) -> Path:
    directory.mkdir(parents=True)
    (directory / "model.py").write_text(CUSTOM_MODEL)
    params = {"mean": frame.mean().tolist(), "scale": frame.std().tolist()}
    (directory / "params.json").write_text(json.dumps(params))
    return directory
