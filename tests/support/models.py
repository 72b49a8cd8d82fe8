"""Small real models that several test modules share."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer


class ShiftedLogistic(LogisticRegression):  # type: ignore[misc]  # scikit-learn ships no types
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


def code_running_pipeline(canary: Path) -> Pipeline:
    """A fitted Pipeline whose FunctionTransformers chain NumPy and builtins into ``eval`` of
    attacker code: predicting with it (or with its skops file) writes ``canary``."""
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    code = (
        f"__import__('pathlib').Path({str(canary)!r}).write_text('ran') and None or __import__('numpy').zeros((1, 4))"
    )
    steps = [
        ("fill", FunctionTransformer(np.full_like, kw_args={"fill_value": code, "dtype": object})),
        ("flat", FunctionTransformer(np.ravel)),
        ("first", FunctionTransformer(min)),
        ("run", FunctionTransformer(eval)),
        ("clf", LogisticRegression(max_iter=300).fit(x, y)),
    ]
    return Pipeline(steps)


def forge_code_running_export(directory: Path, canary: Path, *, claims_trusted: bool = True) -> None:
    """Turn an export of a native scikit-learn version into what an attacker would upload: the
    skops file replaced by :func:`code_running_pipeline`, the manifest and the record made to
    match it (a valid artifact key), and ``trusted_code`` as the forger chooses."""
    import orjson
    import skops.io as sio

    from modelport.registry.export import RECORD
    from modelport.stores.local import content_key

    record = orjson.loads((directory / RECORD).read_bytes())
    (directory / RECORD).unlink()
    (directory / "model.tar.gz").unlink()
    (directory / "model.skops").write_bytes(sio.dumps(code_running_pipeline(canary)))
    manifest = json.loads((directory / "sklearn.json").read_text())
    manifest["trusted_types"] = sio.get_untrusted_types(file=directory / "model.skops")
    (directory / "sklearn.json").write_text(json.dumps(manifest))
    record.update(artifact=content_key(directory), trusted_code=claims_trusted)
    (directory / RECORD).write_bytes(orjson.dumps(record))


SLEEPY_MODEL = """
import time


class Model:
    def load(self, path):
        pass

    def predict(self, inputs):
        x = inputs["input"]
        if {condition}:
            time.sleep({seconds})
        return {{"total": x.sum(axis=1)}}
"""


def write_sleepy_model(directory: Path, seconds: float, *, over: float | None = None) -> Path:
    """A custom Python model (one 2-D FP64 input, output ``total``) that sleeps ``seconds`` on
    every call, or only when an input value is over ``over``."""
    directory.mkdir(parents=True)
    condition = "True" if over is None else f"float(x.max()) > {over}"
    (directory / "model.py").write_text(SLEEPY_MODEL.format(condition=condition, seconds=seconds))
    return directory


def export_sleepy_model(root: Path, seconds: float, *, over: float | None = None) -> Path:
    """:func:`write_sleepy_model`, registered as ``slow`` (trusted) in ROOT/home and exported to ROOT/out."""
    from modelport.api import register
    from modelport.registry.export import export_version
    from modelport.registry.registry import Registry
    from modelport.settings import Settings

    code = write_sleepy_model(root / "code", seconds, over=over)
    settings = Settings(home=root / "home")
    version = register(code, name="slow", sample_input=np.ones((2, 3)), trust_pickle=True, settings=settings)
    with Registry.open(settings) as registry:
        export_version(version, registry.artifact_path(version), root / "out")
    return root / "out"
