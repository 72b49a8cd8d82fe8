"""Every built-in runtime passes the same conformance check on a real model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from modelport.errors import ConversionWarning, ModelNotReady, NotFound
from modelport.ingest.package import package
from modelport.runtimes import BUILTINS, KINDS, Runtime, create
from modelport.runtimes import sklearn as sklearn_runtime
from modelport.runtimes.base import MultiSignature
from modelport.runtimes.conformance import check_runtime
from modelport.runtimes.fake import FakeRuntime, write_artifact
from modelport.signature import output_specs, validate_inputs
from modelport.types import Signature, TensorSpec
from tests.support.models import write_custom_model

Iris = tuple[pd.DataFrame, np.ndarray]
Case = tuple[str, Path, Signature, dict[str, np.ndarray]]


def _rows(signature: Signature, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return validate_inputs(signature, {signature.inputs[0].name: frame.iloc[::15].to_numpy()})


def onnx_converted(iris: Iris, tmp: Path) -> Case:
    frame, labels = iris
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(frame, labels)
    packaged = package(model, workdir=tmp, sample_input=frame.iloc[:20])
    assert packaged.runtime == "onnx"
    return "onnx", packaged.directory, packaged.signature, _rows(packaged.signature, frame)


def onnx_user_file(iris: Iris, tmp: Path) -> Case:
    from skl2onnx import to_onnx

    frame, labels = iris
    x = frame.to_numpy(np.float32)
    model = LogisticRegression(max_iter=500).fit(x, np.searchsorted(np.unique(labels), labels))
    path = tmp / "user.onnx"
    path.write_bytes(to_onnx(model, x[:1], options={"zipmap": False}).SerializeToString())
    packaged = package(path, workdir=tmp)
    return "onnx", packaged.directory, packaged.signature, _rows(packaged.signature, frame)


def sklearn_skops(iris: Iris, tmp: Path) -> Case:
    frame, labels = iris
    model = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=1000)).fit(frame, labels)
    with pytest.warns(ConversionWarning):
        packaged = package(model, workdir=tmp, sample_input=frame.iloc[:20])
    assert packaged.runtime == "sklearn"
    return "sklearn", packaged.directory, packaged.signature, _rows(packaged.signature, frame)


def sklearn_pickle(iris: Iris, tmp: Path) -> Case:
    frame, labels = iris
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    directory = tmp / "pickled"
    assert sklearn_runtime.save(model, directory, format="pickle").runs_code
    outputs = sklearn_runtime.predict_outputs(model, frame.iloc[:3], ("label", "probabilities"))
    signature = Signature(
        inputs=(TensorSpec("input", "FP64", (-1, 4), feature_names=tuple(frame.columns)),),
        outputs=output_specs(outputs),
    )
    return "sklearn", directory, signature, _rows(signature, frame)


def python_custom(iris: Iris, tmp: Path) -> Case:
    frame, _ = iris
    source = write_custom_model(tmp / "custom", frame)
    packaged = package(source, workdir=tmp, sample_input=frame.iloc[:5], trust_pickle=True)
    return "python", packaged.directory, packaged.signature, _rows(packaged.signature, frame)


def fake(iris: Iris, tmp: Path) -> Case:
    frame, _ = iris
    weights = [[0.5, -0.2, 0.1], [1.0, 0.3, -1.0], [-2.0, 0.1, 1.5], [-1.0, 0.2, 2.0]]
    signature = write_artifact(tmp / "fake", weights, bias=[3.0, 1.0, -4.0], classes=["a", "b", "c"])
    return "fake", tmp / "fake", signature, _rows(signature, frame)


CASES: dict[str, Callable[[Iris, Path], Case]] = {
    "onnx-converted-sklearn": onnx_converted,
    "onnx-user-file": onnx_user_file,
    "sklearn-native-skops": sklearn_skops,
    "sklearn-native-trusted-pickle": sklearn_pickle,
    "python-custom": python_custom,
    "fake": fake,
}


@pytest.mark.parametrize("case", CASES)
def test_builtin_runtime_passes_conformance(case: str, iris: Iris, tmp_path: Path) -> None:
    kind, artifact, signature, sample = CASES[case](iris, tmp_path)
    runtime = create(kind)
    assert runtime.kind == kind
    check_runtime(runtime, artifact, signature, sample)


def test_every_kind_has_a_conformance_case() -> None:
    """The framework kinds' cases live beside their end-to-end tests, which run check_runtime on them."""
    from tests.ingest.test_boosting import CONFORMANCE_CASES as BOOSTING
    from tests.ingest.test_pytorch import CONFORMANCE_CASES as PYTORCH
    from tests.ingest.test_tensorflow import CONFORMANCE_CASES as TENSORFLOW

    frameworks = {"xgboost", "lightgbm", "torch", "tensorflow"}
    assert set(BUILTINS) == {"onnx", "sklearn", "python", *frameworks}  # the test fake is no production kind
    assert set(KINDS) == {*BUILTINS, "fake", "scaled"}  # fake, scaled: tests/plugins
    assert all(isinstance(create(kind), Runtime) for kind in KINDS)
    every = {**CASES, **BOOSTING, **PYTORCH, **TENSORFLOW}
    assert {case.split("-")[0] for case in every} == set(KINDS) - {"scaled"}  # scaled: test_plugins.py


def test_the_runtimes_with_several_signatures_declare_them() -> None:
    """A runtime whose artifact can hold other signatures (a SavedModel) declares MultiSignature, which
    TF Serving's signature_name needs; the others do not, so their requests for one are refused."""
    several = {kind for kind in KINDS if isinstance(create(kind), MultiSignature)}
    assert several == {"tensorflow"}
    runtime = create("tensorflow")
    assert isinstance(runtime, MultiSignature)
    assert runtime.signatures == {}, "before load, no other signature"


def test_unknown_runtime_kind_lists_the_kinds() -> None:
    with pytest.raises(NotFound, match=r"unknown runtime kind 'caffe'; the kinds are: lightgbm, onnx, python, "):
        create("caffe")


def test_fake_runtime_computes_softmax_of_a_linear_map(tmp_path: Path) -> None:
    signature = write_artifact(tmp_path, [[1.0, 0.0], [0.0, 2.0]], classes=[7, 9])
    runtime = FakeRuntime()
    runtime.load(tmp_path, signature)
    out = runtime.predict({"input": np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)})
    np.testing.assert_array_equal(out["label"], [7, 9])
    np.testing.assert_allclose(out["probabilities"][0], [np.e / (np.e + 1), 1 / (np.e + 1)], rtol=1e-6)
    np.testing.assert_allclose(out["probabilities"][1], [1 / (1 + np.e**2), np.e**2 / (1 + np.e**2)], rtol=1e-6)


class _KeepsModelAfterUnload(FakeRuntime):
    def unload(self) -> None:
        pass


class _ReturnsFloat64(FakeRuntime):
    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().predict(inputs)
        return {**out, "probabilities": out["probabilities"].astype(np.float64)}


class _BatchDependent(FakeRuntime):
    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        (x,) = inputs.values()
        return super().predict({"input": x - x.mean(axis=0)})


class _ReturnsLists(FakeRuntime):
    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return {name: arr.tolist() for name, arr in super().predict(inputs).items()}


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (_KeepsModelAfterUnload, "predict after unload"),
        (_ReturnsFloat64, "datatype FP64, the signature declares FP32"),
        (_BatchDependent, "rows one by one"),
        (_ReturnsLists, "not a plain numpy.ndarray"),
    ],
)
def test_conformance_check_rejects_a_broken_runtime(
    broken: type[FakeRuntime], problem: str, iris: Iris, tmp_path: Path
) -> None:
    _, artifact, signature, sample = fake(iris, tmp_path)
    with pytest.raises(AssertionError, match=problem):
        check_runtime(broken(), artifact, signature, sample)


def test_runtimes_refuse_to_predict_before_load() -> None:
    for kind in KINDS:
        with pytest.raises(ModelNotReady):
            create(kind).predict({"input": np.zeros((1, 4), dtype=np.float32)})


def test_runtime_returns_only_the_outputs_its_signature_declares(iris: Iris, tmp_path: Path) -> None:
    for make in (fake, python_custom):
        kind, artifact, signature, sample = make(iris, tmp_path / make.__name__)
        narrowed = Signature(signature.inputs, signature.outputs[1:], signature.example)
        runtime = create(kind)
        runtime.load(artifact, narrowed)
        assert list(runtime.predict(sample)) == [signature.outputs[1].name]
