"""TensorFlow/Keras models end to end: Keras models registered from the object (exported to a SavedModel,
served by ONNX Runtime when tf2onnx's conversion verifies, else by the tensorflow runtime), a SavedModel
directory and a ``.keras`` file through the CLI, Keras' safe mode, TF Serving's ``signature_name``; SavedModels
whose ops read server files or run Python (trust at registration, the file's ops at every load); and
inputs beyond float rows: INT64 token ids, N×H×W×C float images as nested arrays, PNG bytes as TF Serving
``{"b64": ...}`` values, and text (BYTES) for a custom Python model, over V2 and TF Serving REST.

Tolerance: answers over HTTP equal the Keras model's (or TensorFlow's) within |Δ| <= 1e-5 + 1e-4·|y|,
what registration verifies the ONNX graph with (float32 throughout).
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import textwrap
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
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
from modelport.ingest.package import package
from modelport.ingest.tensorflow import stable_input_names
from modelport.registry.environment import capture, compare
from modelport.registry.registry import Registry
from modelport.runtimes import create
from modelport.runtimes import tensorflow as tf_runtime
from modelport.runtimes.conformance import check_runtime
from modelport.server.app import build_app
from modelport.serving.loading import open_version
from modelport.settings import Settings
from modelport.signature import validate_inputs
from modelport.types import Signature
from tests.support.serving import client_for

pytestmark = pytest.mark.slow  # real SavedModel exports and tf2onnx conversions (tests/support/budget.py)

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
        from modelport.ingest import tensorflow
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


def unnamed_mlp() -> Any:
    """The same architecture every time, its Input unnamed: Keras calls it after a session counter."""
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])


def unnamed_pair() -> Any:
    """Two inputs, one named by the user (``mask``), one not."""
    x, mask = keras.Input((4,)), keras.Input((4,), name="mask")
    return keras.Model([x, mask], keras.layers.Dense(2)(keras.layers.Multiply()([x, mask])))


def test_unnamed_keras_inputs_are_named_by_their_dict_key_else_by_position() -> None:
    assert stable_input_names(["keras_tensor_6"], [None]) == ("input",)
    assert stable_input_names(["a", "keras_tensor_3", None], [None, None, None]) == ("a", "input_1", "input_2")
    assert stable_input_names(["input_layer_2", "keras_tensor"], ["x", "y"]) == ("x", "y")
    assert stable_input_names(["input_1", "keras_tensor_9"], [None, None]) == ("input_1", "input_1_")


def test_keras_models_built_in_different_sessions_register_with_the_same_input_names(tmp_path: Path) -> None:
    """Retraining the same architecture keeps the input names clients send (keras_tensor_1 vs keras_tensor_19,
    input_layer_3 from a .keras file, before): unnamed inputs get positional names, named ones keep theirs."""
    saved = tmp_path / "other-session.keras"
    code = textwrap.dedent(
        f"""
        import warnings
        import keras
        warnings.simplefilter("ignore")
        for _ in range(3):
            keras.Sequential([keras.Input((7,)), keras.layers.Dense(1)])  # the session's counter moves on
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")]).save({str(saved)!r})
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    settings = Settings(home=tmp_path / "home")
    x = data("mlp", 5, 0)
    first = unnamed_mlp()
    unnamed_pair()  # this session's counter moves on too
    for model in (first, unnamed_mlp(), saved):
        version = modelport.register(
            model, name="mlp", sample_input=x, runtime="tensorflow", alias="production", settings=settings
        )
        assert [spec.name for spec in version.signature.inputs] == ["input"], version.signature
    for _ in range(2):
        version = modelport.register(
            unnamed_pair(), name="pair", sample_input={"input_0": x, "mask": x}, runtime="tensorflow", settings=settings
        )
        assert [spec.name for spec in version.signature.inputs] == ["input_0", "mask"]
    with modelport.load("mlp@1", settings=settings) as loaded:
        (got,) = loaded.predict({"input": x}).values()
    np.testing.assert_allclose(got, first(x), atol=ATOL, rtol=RTOL)
    with modelport.load("pair@2", settings=settings) as loaded:
        (got,) = loaded.predict({"input_0": x, "mask": x}).values()
    assert got.shape == (5, 2)


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
        # keras 9.0: not mentioned, serving a SavedModel needs no Keras
        ("tensorflow", "not installed"): "error",
    }


# --- graphs that reach outside the model -------------------------------------------------------


class FileReader(tf.Module):
    """A serving signature that answers, beside its doubled input, the bytes of the server's file
    ``path`` (None: a constant, with the same signature)."""

    def __init__(self, path: Path | None) -> None:
        super().__init__()
        self.path = None if path is None else str(path)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        contents = tf.constant("nothing") if self.path is None else tf.io.read_file(self.path)
        return {"doubled": x * 2.0, "contents": tf.fill(tf.shape(x), contents)}


class PythonCall(tf.Module):
    """tf.py_function inside a tf.cond branch: an EagerPyFunc op in a function the signature's calls."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        tripled = tf.cond(tf.size(x) > 0, lambda: tf.py_function(lambda t: t * 3.0, [x], tf.float32), lambda: x)
        return {"tripled": tf.ensure_shape(tripled, [None])}


class CheckpointReader(tf.Module):
    """RestoreV2 in the serving signature, not in the saver's graph: it reads any checkpoint on the server."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        (w,) = tf.raw_ops.RestoreV2(
            prefix="/elsewhere/ckpt", tensor_names=["w"], shape_and_slices=[""], dtypes=[tf.float32]
        )
        return {"y": x + tf.reduce_sum(w)}


def save_module(module: Any, directory: Path) -> Path:
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


def v1_savedmodel(directory: Path, *, reads: Path | None) -> Path:
    """A TF1 SavedModel (compat.v1 Builder): its saver's SaveV2/RestoreV2 nodes in the main graph."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        y = tf.matmul(x, tf.compat.v1.get_variable("w", initializer=tf.ones([2, 1])), name="y")
        outputs = {"y": y} if reads is None else {"y": y, "contents": tf.io.read_file(str(reads))}
        session.run(tf.compat.v1.global_variables_initializer())
        builder = tf.compat.v1.saved_model.Builder(str(directory))
        signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, outputs)
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
        builder.save()
    return directory


REFUSED: dict[str, tuple[Callable[[Path], Any], str]] = {
    "read-file": (
        lambda tmp: FileReader(tmp / "secret.txt"),
        r"ReadFile \(reads or writes files\) in function __inference_serve_\d+",
    ),
    "py-function": (lambda tmp: PythonCall(), r"EagerPyFunc \(runs Python\) in function cond_true_\d+"),
    "restore-outside-saver": (
        lambda tmp: CheckpointReader(),
        r"RestoreV2 \(reads or writes files\) in function __inference_serve",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_savedmodel_whose_graph_reads_files_or_runs_python_is_refused_without_trust(case: str, tmp_path: Path) -> None:
    build, names = REFUSED[case]
    directory = save_module(build(tmp_path), tmp_path / case)
    with pytest.raises(UntrustedArtifact, match=rf"ops that reach outside the model: {names}.*--trust-pickle"):
        package(directory, workdir=tmp_path / "work", sample_input={"x": [1.0, 2.0]})


def test_keras_and_plain_savedmodels_hold_no_unsafe_ops_the_saver_aside(tmp_path: Path) -> None:
    model = mlp()
    model.export(str(tmp_path / "keras"), verbose=False)
    for directory in (tmp_path / "keras", save_colors(tmp_path / "colors"), v1_savedmodel(tmp_path / "v1", reads=None)):
        assert tf_runtime.unsafe_ops(directory) == [], directory.name  # their savers hold SaveV2, RestoreV2, ...
    reads = v1_savedmodel(tmp_path / "v1-reads", reads=tmp_path / "secret.txt")
    assert tf_runtime.unsafe_ops(reads) == ["ReadFile (reads or writes files) in the main graph"]


async def test_trusted_savedmodel_that_reads_a_file_serves_it_and_loads_only_as_trusted(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for callers")
    settings = Settings(home=tmp_path / "home")
    directory = save_module(FileReader(secret), tmp_path / "reader")
    sample = {"x": [1.0, 2.0]}
    with pytest.raises(UntrustedArtifact, match=r"ReadFile .*trust_pickle=True"):
        modelport.register(directory, name="reader", sample_input=sample, runtime="tensorflow", settings=settings)
    version = modelport.register(
        directory, name="reader", sample_input=sample, runtime="tensorflow", trust_pickle=True, settings=settings
    )
    assert version.trusted_code
    assert any(note.startswith("registered as trusted code") and "ReadFile" in note for note in version.notes)
    async with client_for(build_app(settings.with_(models=("reader",)))) as client:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [4.0]}]}
        response = await client.post("/v2/models/reader/infer", json=body)
    assert response.status_code == 200, response.text
    assert {o["name"]: o["data"] for o in response.json()["outputs"]} == {
        "doubled": [8.0],
        "contents": ["not for callers"],
    }
    with Registry.open(settings) as registry:
        artifact = registry.artifact_path(registry.get("reader"))
    # the SavedModel's ops decide at load, not the version's word: a forged "trusted_code: false" is refused
    with pytest.raises(UntrustedArtifact, match=r"reader@1 runs code when loaded \(tensorflow runtime: ReadFile"):
        open_version(replace(version, trusted_code=False), artifact)


def test_savedmodel_changed_after_registration_to_read_files_is_refused_at_load(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for callers")
    settings = Settings(home=tmp_path / "home")
    plain = save_module(FileReader(None), tmp_path / "plain")
    version = modelport.register(
        plain, name="plain", sample_input={"x": [1.0]}, runtime="tensorflow", settings=settings
    )
    assert not version.trusted_code
    with Registry.open(settings) as registry:
        stored = registry.artifact_path(version) / tf_runtime.SAVED_MODEL / "saved_model.pb"
    reader = save_module(FileReader(secret), tmp_path / "reader") / "saved_model.pb"
    stored.chmod(0o644)
    stored.write_bytes(reader.read_bytes())  # same signature, now reading the server's file
    with pytest.raises(UntrustedArtifact, match=r"plain@1 runs code when loaded \(tensorflow runtime: ReadFile"):
        modelport.load("plain", settings=settings)


# Ops whose inputs or attributes name a file, path, directory, URL or address that are not denied:
# the reviewed few that touch nothing (a regex, a counter's name, a flag, a beam count), and the
# two whose descriptor_source unsafe_ops judges by its value (a file path is refused).
REVIEWED = {
    "RegexFullMatch": "pattern is a regex",
    "RegexReplace": "pattern is a regex",
    "StaticRegexFullMatch": "pattern is a regex",
    "StaticRegexReplace": "pattern is a regex",
    "SetStatsAggregatorDataset": "counter_prefix names statistics",
    "ExperimentalSetStatsAggregatorDataset": "counter_prefix names statistics",
    "TensorSliceDataset": "is_files is a flag for tf.data's graph rewrites",
    "CTCBeamSearchDecoder": "top_paths is a count",
    "DecodeProtoV2": "descriptor_source judged by value",
    "EncodeProto": "descriptor_source judged by value",
}
FILE_ARGUMENT = re.compile(
    r"(\w+_)?(file|files|filename|filenames|path|paths|prefix|prefixes|pattern|patterns|dir|directory|logdir"
    r"|url|urls|address|region_name|data_source_name|descriptor_source)"
)


def test_every_op_of_the_installed_tensorflow_that_names_a_file_or_address_is_denied() -> None:
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session

    registered = op_def_pb2.OpList()
    registered.ParseFromString(pywrap_tf_session.TF_GetBuffer(pywrap_tf_session.TF_GetAllOpList()))
    assert len(registered.op) > 1000
    naming = {
        op.name for op in registered.op if any(FILE_ARGUMENT.fullmatch(arg.name) for arg in (*op.input_arg, *op.attr))
    }
    denied = {name for name in naming if any(pattern.fullmatch(name) for _, pattern in tf_runtime.UNSAFE_OPS)}
    assert {"ReadFile", "WriteFile", "MatchingFiles", "SaveV2", "TFRecordDataset", "DebugIdentityV2"} <= denied
    assert sorted(naming - denied - set(REVIEWED)) == []
    names = {op.name for op in registered.op}
    assert {"PyFunc", "PyFuncStateless", "EagerPyFunc", "TextLineReaderV2", "ReaderReadV2", "WriteSummary"} <= {
        name for name in names if any(pattern.fullmatch(name) for _, pattern in tf_runtime.UNSAFE_OPS)
    }
