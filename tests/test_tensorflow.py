"""TensorFlow/Keras models end to end: Keras models registered from the object (exported to a SavedModel,
served by ONNX Runtime when tf2onnx's conversion verifies, else by the tensorflow runtime), a SavedModel
directory and a ``.keras`` file through the CLI, Keras' safe mode, TF Serving's ``signature_name``; and
inputs beyond float rows: INT64 token ids, N×H×W×C float images as nested arrays, PNG bytes as TF Serving
``{"b64": ...}`` values, and text (BYTES) for a custom Python model, over V2 and TF Serving REST.

Tolerance: answers over HTTP equal the Keras model's (or TensorFlow's) within |Δ| <= 1e-5 + 1e-4·|y|,
what registration verifies the ONNX graph with (float32 throughout).
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import textwrap
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from httpx import AsyncClient
from PIL import Image
from typer.testing import CliRunner

import modelport
from modelport.cli.main import app as cli
from modelport.errors import UntrustedArtifact
from modelport.packaging.ingest import package
from modelport.registry.environment import capture, compare
from modelport.runtimes import create
from modelport.runtimes.conformance import check_runtime
from modelport.server.app import build_app
from modelport.settings import Settings
from modelport.signature import validate_inputs
from modelport.types import Signature
from tests.serving import client_for

ATOL, RTOL = 1e-5, 1e-4
Iris = tuple[pd.DataFrame, np.ndarray]
Case = tuple[str, Path, Signature, dict[str, np.ndarray]]
TOKENS, VOCAB = 8, 50


def mlp() -> Any:
    """A classifier over 4 float features: class probabilities."""
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [keras.Input((4,), name="features"), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3, "softmax")]
    )


def text_model() -> Any:
    """A text classifier over INT64 token ids: embedding, average pooling, softmax."""
    keras.utils.set_random_seed(2)
    return keras.Sequential(
        [
            keras.Input((TOKENS,), dtype="int64", name="tokens"),
            keras.layers.Embedding(VOCAB, 8),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


def cnn() -> Any:
    """A small CNN over 8×8 RGB images (N×H×W×C float32): logits."""
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((8, 8, 3), name="image"),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )


def data(kind: str, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "mlp":
        return rng.normal(size=(rows, 4)).astype(np.float32)
    if kind == "text":
        return rng.integers(0, VOCAB, size=(rows, TOKENS)).astype(np.int64)
    return rng.random((rows, 8, 8, 3)).astype(np.float32)


class Colors(tf.Module):
    """A SavedModel with two signatures: ``serving_default`` decodes PNG bytes (a BYTES input) and
    scores their mean color; ``mean_color`` takes float images (N×H×W×3) and gives their mean color."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = tf.Variable([[1.0, -1.0], [0.5, 2.0], [-2.0, 0.25]])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="png")])
    def classify(self, png: tf.Tensor) -> dict[str, tf.Tensor]:
        images = tf.map_fn(
            lambda b: tf.cast(tf.io.decode_png(b, channels=3), tf.float32) / 255.0,
            png,
            fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32),
        )
        return {"scores": tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.weights)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels")])
    def mean_color(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"mean": tf.reduce_mean(pixels, axis=[1, 2])}


def save_colors(directory: Path) -> Path:
    module = Colors()
    tf.saved_model.save(
        module, str(directory), signatures={"serving_default": module.classify, "mean_color": module.mean_color}
    )
    return directory


def png(seed: int) -> bytes:
    pixels = (np.random.default_rng(seed).random((4, 5, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def colors_scores(images: list[bytes]) -> np.ndarray:
    """What the Colors model answers, computed without it."""
    means = np.stack(
        [np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), np.float32).mean(axis=(0, 1)) / 255 for b in images]
    )
    weights = np.array([[1.0, -1.0], [0.5, 2.0], [-2.0, 0.25]], np.float32)
    return means @ weights


SENTIMENT = textwrap.dedent(
    """
    import json

    import numpy as np


    class Model:
        def load(self, path):
            self.weights = json.loads((path / "words.json").read_text())

        def predict(self, inputs):
            texts = inputs["text"].ravel()  # str values: the input is text (BYTES)
            scores = np.array([sum(self.weights.get(w, 0.0) for w in t.lower().split()) for t in texts])
            labels = np.array(["positive" if s > 0 else "negative" for s in scores], dtype=object)
            return {"label": labels, "score": scores}
    """
)
WORDS = {"great": 2.0, "good": 1.0, "love": 1.5, "bad": -1.5, "awful": -2.0, "boring": -1.0}


def sentiment(texts: list[str]) -> tuple[list[str], list[float]]:
    scores = [sum(WORDS.get(w, 0.0) for w in t.lower().split()) for t in texts]
    return ["positive" if s > 0 else "negative" for s in scores], scores


def write_sentiment(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "model.py").write_text(SENTIMENT)
    (directory / "words.json").write_text(json.dumps(WORDS))
    return directory


# --- conformance -------------------------------------------------------------------------------


def _case(model: Any, kind: str, tmp: Path, runtime: str | None) -> Case:
    packaged = package(model, workdir=tmp, sample_input=data(kind, 6, 0), runtime=runtime)
    name = packaged.signature.inputs[0].name
    return (
        packaged.runtime,
        packaged.directory,
        packaged.signature,
        validate_inputs(packaged.signature, {name: data(kind, 5, 9)}),
    )


def tensorflow_native_keras(iris: Iris, tmp: Path) -> Case:
    frame, _ = iris
    packaged = package(mlp(), workdir=tmp, sample_input=frame.to_numpy()[:10], runtime="tensorflow")
    assert packaged.runtime == "tensorflow"
    return "tensorflow", packaged.directory, packaged.signature, {"features": frame.to_numpy(np.float32)[::15]}


def tensorflow_native_strings(iris: Iris, tmp: Path) -> Case:
    packaged = package(save_colors(tmp / "colors"), workdir=tmp, sample_input={"png": [png(0), png(1)]})
    assert packaged.runtime == "tensorflow"
    images = np.empty(4, dtype=object)
    images[:] = [png(seed) for seed in range(4)]
    return "tensorflow", packaged.directory, packaged.signature, {"png": images}


def onnx_converted_keras(iris: Iris, tmp: Path) -> Case:
    case = _case(cnn(), "cnn", tmp, None)
    assert case[0] == "onnx"
    return case


CONFORMANCE_CASES: dict[str, Callable[[Iris, Path], Case]] = {
    "tensorflow-native-keras": tensorflow_native_keras,
    "tensorflow-native-savedmodel-png-bytes": tensorflow_native_strings,
    "onnx-converted-keras-cnn": onnx_converted_keras,
}


@pytest.mark.parametrize("case", CONFORMANCE_CASES)
def test_tensorflow_runtimes_pass_conformance(case: str, iris: Iris, tmp_path: Path) -> None:
    kind, artifact, signature, sample = CONFORMANCE_CASES[case](iris, tmp_path)
    check_runtime(create(kind), artifact, signature, sample)


def test_claims_imports_no_tensorflow_for_other_models(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text("class Model: ...\n")
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from modelport.packaging import tensorflow
        others = [np.zeros(3), {str(tmp_path)!r}, "model.onnx", "x.keras", object()]
        assert not any(tensorflow.claims(other) for other in others)
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "claims imported TensorFlow"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- served end to end -------------------------------------------------------------------------


MODELS = {"mlp": mlp, "text": text_model, "cnn": cnn}
INPUTS = {"mlp": ("features", "FP32"), "text": ("tokens", "INT64"), "cnn": ("image", "FP32")}


@dataclass(frozen=True)
class Served:
    settings: Settings
    keras: dict[str, Any]
    notes: dict[str, tuple[str, ...]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    tmp = tmp_path_factory.mktemp("tensorflow")
    settings = Settings(home=tmp / "home")
    models = {kind: build() for kind, build in MODELS.items()}
    notes = {}
    for kind, model in models.items():
        version = modelport.register(model, name=kind, sample_input=data(kind, 6, 0), settings=settings)
        notes[kind] = version.notes
    native = modelport.register(
        models["mlp"], name="mlp", sample_input=data("mlp", 6, 0), runtime="tensorflow", settings=settings
    )
    notes["mlp@2"] = native.notes
    colors = modelport.register(
        save_colors(tmp / "colors"), name="colors", sample_input={"png": [png(0), png(1)]}, settings=settings
    )
    notes["colors"] = colors.notes
    text = modelport.register(
        write_sentiment(tmp / "sentiment"),
        name="sentiment",
        sample_input={"text": ["a great film", "boring and bad"]},
        trust_pickle=True,
        settings=settings,
    )
    notes["sentiment"] = text.notes
    return Served(settings, models, notes)


@pytest.fixture
async def client(served: Served) -> AsyncIterator[AsyncClient]:
    refs = ("mlp@1", "mlp@2", "text", "cnn", "colors", "sentiment")
    async with client_for(build_app(served.settings.with_(models=refs))) as client:
        yield client


def test_keras_models_are_stored_as_savedmodels_and_served_by_onnx_when_verified(served: Served) -> None:
    for kind in MODELS:
        assert any("exported to a SavedModel" in note for note in served.notes[kind])
        assert any("converted to ONNX with tf2onnx" in note and "serving ONNX" in note for note in served.notes[kind])
    assert any("native tensorflow runtime requested" in note for note in served.notes["mlp@2"])
    assert any("other signatures (mean_color)" in note for note in served.notes["colors"])


@pytest.mark.parametrize("kind", MODELS)
async def test_keras_model_answers_over_v2_and_tf_serving_as_keras_does(
    client: AsyncClient, served: Served, kind: str
) -> None:
    x = data(kind, 4, 42)  # rows not in the registration sample
    want = np.asarray(served.keras[kind](x, training=False))
    name, datatype = INPUTS[kind]
    meta = (await client.get(f"/v2/models/{kind}")).json()
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [(name, datatype, [-1, *x.shape[1:]])]
    assert meta["platform"] == "onnxruntime_onnx"
    v2 = {"inputs": [{"name": name, "datatype": datatype, "shape": list(x.shape), "data": x.tolist()}]}
    response = await client.post(f"/v2/models/{kind}/infer", json=v2)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    np.testing.assert_allclose(np.reshape(output["data"], output["shape"]), want, atol=ATOL, rtol=RTOL)
    for body in ({"instances": x.tolist()}, {"inputs": {name: x.tolist()}}):
        response = await client.post(f"/v1/models/{kind}:predict", json=body)
        assert response.status_code == 200, response.text
        got = response.json()["predictions" if "instances" in body else "outputs"]
        np.testing.assert_allclose(np.asarray(got), want, atol=ATOL, rtol=RTOL)


async def test_native_tensorflow_runtime_answers_as_keras_does(client: AsyncClient, served: Served) -> None:
    x = data("mlp", 5, 7)
    meta = (await client.get("/v2/models/mlp/versions/2")).json()
    assert meta["platform"] == "tensorflow_savedmodel"
    response = await client.post("/v1/models/mlp/versions/2:predict", json={"instances": x.tolist()})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], served.keras["mlp"](x), atol=ATOL, rtol=RTOL)


async def test_png_bytes_as_tf_serving_b64_values_reach_a_savedmodel_that_decodes_them(client: AsyncClient) -> None:
    images = [png(10), png(11), png(12)]
    b64 = [{"b64": base64.b64encode(image).decode("ascii")} for image in images]
    meta = (await client.get("/v1/models/colors/metadata")).json()
    inputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["png"]["dtype"] == "DT_STRING"
    for body in ({"instances": b64}, {"inputs": {"png": b64}}):
        response = await client.post("/v1/models/colors:predict", json=body)
        assert response.status_code == 200, response.text
        got = response.json()["predictions" if "instances" in body else "outputs"]
        np.testing.assert_allclose(np.asarray(got), colors_scores(images), atol=1e-5)
    response = await client.post("/v1/models/colors:predict", json={"instances": [{"b64": "not base64!"}]})
    assert response.status_code == 400
    assert "not valid base64" in response.json()["error"]


async def test_signature_name_selects_another_signature_of_a_savedmodel(client: AsyncClient) -> None:
    images = data("cnn", 2, 5)  # nested arrays, N×H×W×C
    body = {"signature_name": "mean_color", "instances": images.tolist()}
    response = await client.post("/v1/models/colors:predict", json=body)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], images.mean(axis=(1, 2)), atol=1e-6)
    columnar = {"signature_name": "mean_color", "inputs": {"pixels": images.tolist()}}
    response = await client.post("/v1/models/colors:predict", json=columnar)
    np.testing.assert_allclose(response.json()["outputs"], images.mean(axis=(1, 2)), atol=1e-6)
    defs = (await client.get("/v1/models/colors/metadata")).json()["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serving_default", "mean_color"}
    assert defs["mean_color"]["inputs"]["pixels"]["tensor_shape"]["dim"][1:] == [{"size": "-1", "name": ""}] * 2 + [
        {"size": "3", "name": ""}
    ]
    response = await client.post("/v1/models/colors:predict", json={"signature_name": "nope", "instances": [[1]]})
    assert response.status_code == 400
    assert "unknown signature_name 'nope'; this model has 'serving_default', 'mean_color'" in response.json()["error"]
    wrong = {"signature_name": "mean_color", "instances": [[1.0, 2.0, 3.0]]}  # checked against mean_color's shape
    assert (await client.post("/v1/models/colors:predict", json=wrong)).status_code == 400


async def test_signature_name_other_than_serving_default_is_refused_for_other_runtimes(client: AsyncClient) -> None:
    x = data("mlp", 1, 0).tolist()
    for name, status in (("serving_default", 200), ("", 200), ("serve", 400)):
        response = await client.post("/v1/models/mlp/versions/1:predict", json={"signature_name": name, "instances": x})
        assert response.status_code == status, response.text
    assert "this model has only 'serving_default'" in response.json()["error"]


async def test_text_model_takes_strings_over_v2_and_tf_serving(client: AsyncClient) -> None:
    texts = ["I love it, great", "awful", "good but boring and bad", "naïve ünïcode — great"]
    labels, scores = sentiment(texts)
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
    response = await client.post("/v2/models/sentiment/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES"
    assert outputs["label"]["data"] == labels
    np.testing.assert_allclose(outputs["score"]["data"], scores)
    response = await client.post("/v1/models/sentiment:predict", json={"instances": texts})
    assert response.json()["predictions"] == [{"label": lab, "score": s} for lab, s in zip(labels, scores, strict=True)]
    response = await client.post("/v1/models/sentiment:predict", json={"inputs": {"text": texts}})
    assert response.json()["outputs"] == {"label": labels, "score": scores}


# --- files and the CLI -------------------------------------------------------------------------


def test_savedmodel_directory_and_keras_file_register_from_the_cli(tmp_path: Path) -> None:
    env = {"MODELPORT_HOME": str(tmp_path / "home"), "COLUMNS": "200", "NO_COLOR": "1"}
    model = cnn()
    model.export(str(tmp_path / "exported"), verbose=False)
    sample = tmp_path / "images.json"
    sample.write_text(json.dumps(data("cnn", 3, 0).tolist()))
    runner = CliRunner()
    result = runner.invoke(
        cli, ["register", str(tmp_path / "exported"), "--name", "cnn", "--sample", str(sample)], env=env
    )
    assert result.exit_code == 0, result.output
    classifier = mlp()
    with warnings.catch_warnings():  # Keras' own np.array(copy=False) call while saving: not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        classifier.save(tmp_path / "mlp.keras")
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(data("mlp", 4, 0).tolist()))
    result = runner.invoke(
        cli, ["register", str(tmp_path / "mlp.keras"), "--name", "mlp", "--sample", str(rows)], env=env
    )
    assert result.exit_code == 0, result.output
    settings = Settings(home=tmp_path / "home")
    for name, original, x in (("cnn", model, data("cnn", 3, 8)), ("mlp", classifier, data("mlp", 5, 8))):
        with modelport.load(name, settings=settings) as loaded:
            assert (loaded.version.framework, loaded.version.runtime) == ("tensorflow", "onnx")
            (got,) = loaded.predict(x).values()
            np.testing.assert_allclose(got, original(x), atol=ATOL, rtol=RTOL)


def test_keras_file_with_a_lambda_layer_needs_trust(tmp_path: Path) -> None:
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [keras.Input((4,), name="features"), keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Dense(2)]
    )
    path = tmp_path / "lambda.keras"
    with warnings.catch_warnings():  # Keras' own np.array(copy=False) call while saving: not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save(path)
    x = data("mlp", 3, 0)
    with pytest.raises(UntrustedArtifact, match=r"lambda.keras holds Python code \(a Lambda layer's function\)"):
        package(path, workdir=tmp_path / "work", sample_input=x)
    packaged = package(path, workdir=tmp_path / "work", sample_input=x, trust_pickle=True)
    assert any("safe mode off (trusted)" in note for note in packaged.notes)
    assert not packaged.trusted_code  # what is stored is a SavedModel: loading it runs no Python


def test_environment_records_tensorflow_from_the_cpu_wheel_and_rates_differences() -> None:
    recorded = capture("tensorflow")
    assert recorded["tensorflow"] == tf.__version__  # the tensorflow-cpu distribution, recorded as tensorflow
    assert {"keras", "tf2onnx", "onnx", "onnxruntime"} <= set(recorded)
    severity = {
        (m.library, m.running): m.severity
        for running in ({"tensorflow": "2.99.0", "keras": "9.0"}, {"tensorflow": "not installed"})
        for m in compare(recorded, runtime="tensorflow", running=running)
    }
    assert severity == {
        ("tensorflow", "2.99.0"): "warning",  # a SavedModel loads across releases
        ("keras", "9.0"): "info",  # serving a SavedModel needs no Keras
        ("tensorflow", "not installed"): "error",
    }
