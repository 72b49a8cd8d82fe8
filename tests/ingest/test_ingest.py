"""What users have (estimators, files, custom code) becomes an artifact with a signature."""

from __future__ import annotations

import json
import pickle
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from skl2onnx import to_onnx
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from modelport.errors import ConversionWarning, InvalidInput, InvalidModel, UntrustedArtifact
from modelport.ingest.package import package
from modelport.ingest.packaged import Packaged
from modelport.ingest.verification import TOLERANCE, disagreement
from modelport.runtimes import create
from modelport.signature import to_inputs, validate_inputs
from modelport.types import Signature, TensorSpec
from tests.support.models import ShiftedLogistic, code_running_pipeline, write_custom_model
from tests.support.tabular import mixed_frame, mixed_pipeline, nan_frame

Iris = tuple[pd.DataFrame, np.ndarray]


def predict(packaged_dir: Path, runtime: str, signature: Signature, rows: np.ndarray) -> dict[str, np.ndarray]:
    model = create(runtime)
    model.load(packaged_dir, signature)
    try:
        return model.predict(validate_inputs(signature, {signature.inputs[0].name: rows}))
    finally:
        model.unload()


@pytest.mark.parametrize("pipeline", [False, True], ids=["logistic", "scaler-logistic-pipeline"])
def test_classifier_from_dataframe_is_converted_to_verified_onnx(pipeline: bool, iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    classifier = LogisticRegression(max_iter=500)
    model = (make_pipeline(StandardScaler(), classifier) if pipeline else classifier).fit(frame, labels)
    packaged = package(model, workdir=tmp_path, sample_input=frame.iloc[::10])
    assert (packaged.runtime, packaged.framework, packaged.trusted_code) == ("onnx", "sklearn", False)
    assert packaged.directory.parent == tmp_path
    assert packaged.signature.inputs == (TensorSpec("input", "FP32", (-1, 4), feature_names=tuple(frame.columns)),)
    assert packaged.signature.outputs == (
        TensorSpec("label", "BYTES", (-1,)),
        TensorSpec("probabilities", "FP32", (-1, 3)),
    )
    assert re.fullmatch(
        r"converted to ONNX \(opset \d+\); verified on 15 sample rows, max \|Δp\| = .+", packaged.notes[0]
    )
    assert packaged.signature.example == {"input": frame.iloc[::10].iloc[:3].to_numpy().tolist()}
    assert {"python", "numpy", "scikit-learn", "skl2onnx", "onnxruntime", "skops"} <= set(packaged.environment)
    out = predict(packaged.directory, "onnx", packaged.signature, frame.to_numpy())
    np.testing.assert_array_equal(out["label"], model.predict(frame))
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(frame), atol=1e-5)
    assert (packaged.directory / "model.skops").is_file(), "a native copy is kept for a later fallback"


def test_regressor_is_converted_to_onnx_with_a_flat_prediction(iris: Iris, tmp_path: Path) -> None:
    frame, _ = iris
    target = frame["petal_width"].to_numpy()
    features = frame.drop(columns="petal_width")
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(features, target)
    packaged = package(model, workdir=tmp_path, sample_input=features.iloc[:30])
    assert packaged.runtime == "onnx"
    assert packaged.signature.outputs == (TensorSpec("prediction", "FP32", (-1,)),)
    out = predict(packaged.directory, "onnx", packaged.signature, features.to_numpy())
    np.testing.assert_allclose(out["prediction"], model.predict(features), rtol=1e-5, atol=1e-5)


def test_unconvertible_model_falls_back_to_native_skops_with_a_note(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    model = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=1000)).fit(frame, labels)
    with pytest.warns(ConversionWarning, match="FunctionTransformer is not supported") as caught:
        packaged = package(model, workdir=tmp_path, sample_input=frame.iloc[:10])
    assert [str(w.message) for w in caught] == [packaged.notes[0]]
    assert (packaged.runtime, packaged.trusted_code) == ("sklearn", False)
    assert packaged.notes[0].startswith("ONNX conversion failed: RuntimeError: FunctionTransformer is not supported")
    assert packaged.notes[0].endswith("; serving with the native scikit-learn runtime")
    assert packaged.signature.inputs[0].datatype == "FP64"
    assert not (packaged.directory / "model.onnx").exists()
    out = predict(packaged.directory, "sklearn", packaged.signature, frame.to_numpy())
    np.testing.assert_array_equal(out["label"], model.predict(frame))


def test_native_fallback_with_a_user_class_needs_trust(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    model = ShiftedLogistic(max_iter=500).fit(frame, labels)
    with pytest.raises(UntrustedArtifact, match=r"modelport does not allow: tests\.support\.models\.Shifted"):
        package(model, workdir=tmp_path, sample_input=frame.iloc[:10])
    with pytest.warns(ConversionWarning, match="ONNX conversion failed"):
        packaged = package(model, workdir=tmp_path, sample_input=frame.iloc[:10], trust_pickle=True)
    assert (packaged.runtime, packaged.trusted_code) == ("sklearn", True)
    assert packaged.notes[0].startswith("ONNX conversion failed")
    out = predict(packaged.directory, "sklearn", packaged.signature, frame.to_numpy())
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(frame), atol=1e-7)


def test_skops_file_chaining_builtins_into_eval_is_refused_without_trust_and_never_runs(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    path = tmp_path / "model.skops"
    sio.dump(code_running_pipeline(canary), path)
    with pytest.raises(UntrustedArtifact) as caught:
        package(path, workdir=tmp_path / "work", sample_input=[[5.1, 3.5, 1.4, 0.2]])
    for name in ("builtins.eval", "builtins.min", "numpy.full_like", "numpy.ravel"):
        assert name in str(caught.value)
    assert "--trust-pickle" in str(caught.value)
    assert not canary.exists()


def test_function_transformer_of_a_plain_function_needs_trust_to_be_stored(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    clip = FunctionTransformer(np.clip, kw_args={"a_min": 0, "a_max": 9})
    model = make_pipeline(clip, LogisticRegression(max_iter=1000)).fit(frame, labels)
    with pytest.raises(UntrustedArtifact, match=r"modelport does not allow: numpy\.clip"):
        package(model, workdir=tmp_path, sample_input=frame.iloc[:10])
    with pytest.warns(ConversionWarning):
        packaged = package(model, workdir=tmp_path, sample_input=frame.iloc[:10], trust_pickle=True)
    assert (packaged.runtime, packaged.trusted_code) == ("sklearn", True)


def test_custom_model_directory_with_a_symlink_leaving_it_is_refused(iris: Iris, tmp_path: Path) -> None:
    frame, _ = iris
    directory = write_custom_model(tmp_path / "custom", frame)
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host data")
    (directory / "leak.txt").symlink_to(secret)
    with pytest.raises(InvalidModel, match=r"'leak.txt' is a symlink to .*outside"):
        package(directory, workdir=tmp_path / "work", sample_input=frame.iloc[:3], trust_pickle=True)
    (directory / "leak.txt").unlink()
    (directory / "etc").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(InvalidModel, match=r"'etc' is a symlink to"):
        package(directory, workdir=tmp_path / "work", sample_input=frame.iloc[:3], trust_pickle=True)
    (directory / "etc").unlink()
    (directory / "params-link.json").symlink_to(directory / "params.json")  # inside: copied as a file
    packaged = package(directory, workdir=tmp_path / "work", sample_input=frame.iloc[:3], trust_pickle=True)
    copied = packaged.directory / "params-link.json"
    assert not copied.is_symlink()
    assert copied.read_text() == (directory / "params.json").read_text()


def test_sklearn_model_without_a_sample_is_refused(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    with pytest.raises(InvalidModel, match="needs a sample input"):
        package(model, workdir=tmp_path)


@pytest.mark.parametrize("name", ["model.pkl", "model.joblib"])
def test_pickle_is_refused_without_trust_with_the_exact_hint(name: str, iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    path = tmp_path / name
    joblib.dump(LogisticRegression(max_iter=500).fit(frame, labels), path)
    message = (
        f"{name} is a pickle file: loading it runs arbitrary code. Register it only if you trust its source, "
        "with --trust-pickle (CLI) or trust_pickle=True (Python); better, save it with skops (skops.io.dump) "
        "or export it to ONNX."
    )
    with pytest.raises(UntrustedArtifact) as caught:
        package(path, workdir=tmp_path, sample_input=frame.iloc[:5])
    assert str(caught.value) == message


def test_trusted_pickle_is_converted_like_an_estimator(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    path = tmp_path / "model.pickle"
    path.write_bytes(pickle.dumps(LogisticRegression(max_iter=500).fit(frame, labels)))
    packaged = package(path, workdir=tmp_path, sample_input=frame.iloc[:5], trust_pickle=True)
    assert (packaged.runtime, packaged.trusted_code) == ("onnx", False)
    assert packaged.notes[0] == "loaded from trusted pickle model.pickle"
    assert packaged.notes[1].startswith("converted to ONNX")


def test_skops_file_of_sklearn_types_needs_no_trust(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    path = tmp_path / "model.skops"
    sio.dump(make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, labels), path)
    packaged = package(path, workdir=tmp_path, sample_input=frame.iloc[:5])
    assert packaged.runtime == "onnx"
    assert packaged.notes[0] == "loaded from model.skops"


def test_onnx_file_is_registered_as_is_with_signature_from_graph(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    x = frame.to_numpy(np.float32)
    codes = np.searchsorted(np.unique(labels), labels)
    onx = to_onnx(LogisticRegression(max_iter=500).fit(x, codes), x[:1], options={"zipmap": False})
    path = tmp_path / "iris.onnx"
    path.write_bytes(onx.SerializeToString())
    packaged = package(path, workdir=tmp_path)
    assert (packaged.runtime, packaged.framework, packaged.trusted_code) == ("onnx", "onnx", False)
    assert packaged.signature == Signature(
        inputs=(TensorSpec("X", "FP32", (-1, 4)),),
        outputs=(TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 3))),
    )
    assert (packaged.directory / "model.onnx").read_bytes() == path.read_bytes()
    assert set(packaged.environment) == {"python", "numpy", "onnx", "onnxruntime"}


def test_zipmap_onnx_file_is_registered_with_plain_tensor_outputs(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    x = frame.to_numpy(np.float32)
    model = LogisticRegression(max_iter=500).fit(x, labels)
    path = tmp_path / "zipmap.onnx"
    path.write_bytes(to_onnx(model, x[:1]).SerializeToString())  # skl2onnx's default ends in a ZipMap
    packaged = package(path, workdir=tmp_path, sample_input=frame.iloc[:5])
    assert "removed the ZipMap on output 'output_probability': it now returns the plain tensor 'probabilities'" in (
        packaged.notes
    )
    assert [(s.name, s.datatype, s.shape) for s in packaged.signature.outputs] == [
        ("output_label", "BYTES", (-1,)),
        ("probabilities", "FP32", (-1, 3)),
    ]
    assert packaged.signature.inputs[0].feature_names == tuple(frame.columns)
    out = predict(packaged.directory, "onnx", packaged.signature, x)
    np.testing.assert_array_equal(out["output_label"], model.predict(x))
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(x), atol=1e-5)


def test_corrupt_onnx_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a protobuf at all")
    with pytest.raises(InvalidModel, match=r"broken\.onnx is not a valid ONNX model"):
        package(path, workdir=tmp_path)


def test_custom_python_model_needs_trust_and_gets_inferred_outputs(iris: Iris, tmp_path: Path) -> None:
    frame, _ = iris
    source = write_custom_model(tmp_path / "my_model", frame)
    with pytest.raises(UntrustedArtifact, match="my_model is a custom Python model: loading it runs the code"):
        package(source, workdir=tmp_path / "work", sample_input=frame.iloc[:5])
    modules_before = set(sys.modules)
    packaged = package(source, workdir=tmp_path / "work", sample_input=frame.iloc[:5], trust_pickle=True)
    assert set(sys.modules) == modules_before
    assert (packaged.runtime, packaged.framework, packaged.trusted_code) == ("python", "python", True)
    assert packaged.signature.inputs == (TensorSpec("input", "FP64", (-1, 4), feature_names=tuple(frame.columns)),)
    assert packaged.signature.outputs == (
        TensorSpec("score", "FP64", (-1,)),
        TensorSpec("zscores", "FP32", (-1, 4)),
    )
    assert sorted(p.name for p in packaged.directory.iterdir()) == ["model.py", "params.json"]


def test_unsupported_inputs_are_refused_with_what_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "model.h5").write_bytes(b"\x89HDF")
    with pytest.raises(InvalidModel, match=r"unsupported file type '\.h5'; give a scikit-learn estimator"):
        package(tmp_path / "model.h5", workdir=tmp_path)
    with pytest.raises(InvalidModel, match="does not exist"):
        package(tmp_path / "missing.onnx", workdir=tmp_path)
    with pytest.raises(InvalidModel, match=r"cannot register a builtins\.dict"):
        package({"weights": [1, 2]}, workdir=tmp_path)


def test_native_runtime_can_be_requested_for_a_convertible_model(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    packaged = package(model, workdir=tmp_path, sample_input=frame.iloc[:20], runtime="sklearn")
    assert packaged.runtime == "sklearn"
    assert "native scikit-learn runtime requested; ONNX conversion skipped" in packaged.notes
    assert not (packaged.directory / "model.onnx").exists()
    out = predict(packaged.directory, "sklearn", packaged.signature, frame.to_numpy())
    np.testing.assert_array_equal(out["label"], model.predict(frame))


def test_requiring_onnx_for_an_unconvertible_model_is_an_error(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    model = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=1000)).fit(frame, labels)
    with pytest.raises(InvalidModel, match="the ONNX runtime was requested but ONNX conversion failed"):
        package(model, workdir=tmp_path, sample_input=frame.iloc[:20], runtime="onnx")


def test_runtime_choice_is_checked_against_the_model_kind(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    onnx_file = tmp_path / "m.onnx"
    x = frame.to_numpy(np.float32)
    onnx_file.write_bytes(to_onnx(LogisticRegression(max_iter=500).fit(x, labels), x[:1]).SerializeToString())
    with pytest.raises(InvalidModel, match=r"m\.onnx is served by the onnx runtime; runtime='sklearn' does not apply"):
        package(onnx_file, workdir=tmp_path, runtime="sklearn")
    with pytest.raises(InvalidModel, match="unknown runtime 'torch'"):
        package(LogisticRegression(max_iter=500).fit(x, labels), workdir=tmp_path, runtime="torch")


# -- mixed DataFrames and missing values ------------------------------------------------------------


def test_mixed_dataframe_pipeline_is_converted_with_one_onnx_input_per_column(tmp_path: Path) -> None:
    import onnx

    frame, labels = mixed_frame()
    model = mixed_pipeline(frame, labels)
    packaged = package(model, workdir=tmp_path, sample_input=frame.head(20))
    assert packaged.runtime == "onnx"
    assert packaged.notes[0].startswith("converted to ONNX")
    assert packaged.signature.inputs == (
        TensorSpec("color", "BYTES", (-1,)),
        TensorSpec("size", "FP32", (-1,)),
        TensorSpec("count", "INT64", (-1,)),
    )
    assert packaged.signature.example == {name: frame[name].head(3).tolist() for name in frame.columns}
    graph = onnx.load(str(packaged.directory / "model.onnx")).graph
    assert [(i.name, len(i.type.tensor_type.shape.dim)) for i in graph.input] == [
        ("color", 1),
        ("size", 1),
        ("count", 1),
    ]
    rows = frame.iloc[100:]
    out = predict_columns(packaged, rows)
    np.testing.assert_array_equal(out["label"], model.predict(rows))
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(rows), atol=1e-5)


def test_mixed_dataframe_served_natively_rebuilds_the_frame_with_its_column_dtypes(tmp_path: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    frame, labels = mixed_frame()
    frame["color"] = frame["color"].astype("category")  # used as categorical because of its dtype
    frame["count"] = frame["count"].astype(np.int32)
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(frame, labels)
    with pytest.warns(ConversionWarning, match="at most 1 input"):
        packaged = package(model, workdir=tmp_path, sample_input=frame.head(20), trust_pickle=True)
    assert packaged.runtime == "sklearn"  # skl2onnx cannot convert categorical features given as columns
    assert [(s.name, s.datatype) for s in packaged.signature.inputs] == [
        ("color", "BYTES"),
        ("size", "FP64"),
        ("count", "INT32"),
    ]
    manifest = json.loads((packaged.directory / "sklearn.json").read_text())
    assert manifest["columns"] == [
        {"name": "color", "dtype": "category", "categories": ["blue", "green", "red"], "ordered": False},
        {"name": "size", "dtype": "float64"},
        {"name": "count", "dtype": "int32"},
    ]
    rows = frame.iloc[100:]
    out = predict_columns(packaged, rows)
    np.testing.assert_array_equal(out["label"], model.predict(rows))
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(rows), atol=1e-6)


def test_native_runtime_answers_zero_rows_with_zero_row_outputs(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    model = LogisticRegression(max_iter=500).fit(frame, labels)  # scikit-learn itself refuses zero rows
    packaged = package(model, workdir=tmp_path, sample_input=frame.iloc[:20], runtime="sklearn")
    out = predict(packaged.directory, "sklearn", packaged.signature, np.empty((0, 4)))
    assert (out["label"].shape, out["probabilities"].shape) == ((0,), (0, 3))
    assert (out["label"].dtype, out["probabilities"].dtype) == (np.dtype(object), np.dtype(np.float32))


@pytest.mark.parametrize(
    ("make", "accepts"),
    [
        (lambda: HistGradientBoostingClassifier(max_iter=20, random_state=0), True),
        (lambda: make_pipeline(SimpleImputer(), LogisticRegression()), True),
        (lambda: make_pipeline(StandardScaler(), LogisticRegression()), False),  # the scaler passes NaN on
        (lambda: LogisticRegression(), False),
    ],
    ids=["hist-gradient-boosting", "imputer-pipeline", "scaler-pipeline", "logistic"],
)
def test_whether_nan_is_accepted_is_decided_by_the_model_not_the_sample(
    make: Callable[[], Any], accepts: bool, tmp_path: Path
) -> None:
    frame, labels = nan_frame()
    model = make().fit(frame, labels)
    assert not frame.isna().to_numpy().any()
    packaged = package(model, workdir=tmp_path, sample_input=frame.head(20))
    assert packaged.runtime == "onnx"
    (spec,) = packaged.signature.inputs
    assert spec.allow_nan is accepts
    if not accepts:
        assert "refuses missing values (NaN): ValueError: Input X contains NaN" in packaged.notes
        with pytest.raises(InvalidInput, match="contains NaN or infinity, which this model does not accept; fill in"):
            validate_inputs(packaged.signature, {"input": np.array([[np.nan, 0.0, 0.0, 0.0]])})
        return
    assert "accepts missing values (NaN) in input: checked with NaN put in the sample" in packaged.notes
    rows = frame.iloc[20:30].copy()
    rows.iloc[0, 0] = rows.iloc[1, 2] = np.nan
    rows.iloc[2, :] = np.nan
    out = predict(packaged.directory, "onnx", packaged.signature, rows.to_numpy())
    np.testing.assert_array_equal(out["label"], model.predict(rows))
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(rows), atol=1e-5)


def test_onnx_graph_that_answers_nan_differently_keeps_onnx_and_refuses_nan(tmp_path: Path) -> None:
    from sklearn.tree import DecisionTreeClassifier

    frame, labels = nan_frame()
    model = DecisionTreeClassifier(max_depth=4, random_state=0).fit(frame, labels)  # takes NaN since 1.3
    packaged = package(model, workdir=tmp_path, sample_input=frame.head(20))
    assert (packaged.runtime, packaged.signature.inputs[0].allow_nan) == ("onnx", False)
    assert any(
        note.startswith("the ONNX graph answers missing values in 'input' differently from scikit-learn")
        and "runtime='sklearn'" in note
        for note in packaged.notes
    )
    with_nan = frame.head(20).copy()
    with_nan.iloc[3, 1] = np.nan  # NaN in the sample: the model is served natively, and takes NaN
    with pytest.warns(ConversionWarning, match="ONNX output disagrees with scikit-learn on the sample"):
        packaged = package(model, workdir=tmp_path, sample_input=with_nan)
    assert (packaged.runtime, packaged.signature.inputs[0].allow_nan) == ("sklearn", True)
    rows = frame.iloc[30:34].copy()
    rows.iloc[0, 0] = np.nan
    out = predict(packaged.directory, "sklearn", packaged.signature, rows.to_numpy())
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(rows), atol=1e-6)


def predict_columns(packaged: Packaged, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    model = create(packaged.runtime)
    model.load(packaged.directory, packaged.signature)
    try:
        return model.predict(validate_inputs(packaged.signature, to_inputs(packaged.signature, rows)))
    finally:
        model.unload()


def test_disagreement_names_what_differs_beyond_the_tolerance() -> None:
    label = np.array([1], dtype=np.int64)
    want: dict[str, np.ndarray] = {"p": np.array([[0.5, np.nan]], dtype=np.float32), "label": label}
    close: dict[str, np.ndarray] = {"p": np.array([[0.50001, np.nan]], dtype=np.float32), "label": label}
    assert disagreement(close, want, atol=1e-4, rtol=0.0)[0] == ""  # NaN where the original has NaN
    far, diff = disagreement(close, want, atol=1e-6, rtol=0.0)
    assert far == "p: max |Δ| = 1e-05"
    assert 9e-6 < diff < 2e-5
    wrong: dict[str, np.ndarray] = {"p": np.zeros((2, 2), dtype=np.float64), "label": np.array([0], dtype=np.int64)}
    problem, _ = disagreement(wrong, want, atol=1e-4, rtol=0.0)
    assert problem == "p: FP64 [2, 2] instead of FP32 [1, 2]; label: 1 of 1 values differ"
    lost: dict[str, np.ndarray] = {"p": np.array([[np.nan, np.nan]], dtype=np.float32), "label": want["label"]}
    assert disagreement(lost, want, atol=1.0, rtol=0.0)[0] == "p: NaN in 1 of 2 places where the other has a number"


def test_disagreement_has_one_tolerance_rule_for_every_output() -> None:
    want: dict[str, np.ndarray] = {
        "prediction": np.array([1e5, 0.5]),
        "probabilities": np.array([[0.0, 1.0]], dtype=np.float32),
    }
    # |Δ| <= TOLERANCE + TOLERANCE·|want|, whatever the output is called
    near = {
        "prediction": want["prediction"] + [0.9, 1.4e-5],
        "probabilities": want["probabilities"] + np.array([[0.8e-5, 1.8e-5]], dtype=np.float32),
    }
    problem, diff = disagreement(near, want)
    assert problem == ""
    assert diff == pytest.approx(0.9)
    far = {
        "prediction": want["prediction"] + [1.1, 0.0],
        "probabilities": want["probabilities"] + np.array([[0.0, 2.5e-5]], dtype=np.float32),
    }
    assert disagreement(far, want)[0] == "prediction: max |Δ| = 1.1; probabilities: max |Δ| = 2.5e-05"
    assert TOLERANCE == 1e-5


def nan_for_the_first_row_of_a_batch(y: Any) -> Any:
    """An inverse target transform that makes the first answer of any batch of several rows NaN."""
    values = np.array(y, dtype=np.float64)
    if len(values) > 1:
        values[0] = np.nan
    return values


def unchanged(y: Any) -> Any:
    return np.asarray(y, dtype=np.float64)


def test_a_model_that_answers_nan_for_a_row_in_the_stored_form_too_is_registered(tmp_path: Path) -> None:
    # IsotonicRegression(out_of_bounds="nan") answers NaN for inputs outside what it was fitted on; the
    # stored and served forms answer NaN for the same rows, which is agreement (issue 20: it was refused,
    # as "the model answers sample row 2 alone differently ... (max |Δ| = nan)").
    x = np.linspace(0.0, 10.0, 40)
    model = IsotonicRegression(out_of_bounds="nan").fit(x, np.sqrt(x))
    sample = np.array([[1.0], [2.5], [11.0], [4.0], [-1.0]])
    packaged = package(model, workdir=tmp_path, sample_input=sample, trust_pickle=True, runtime="sklearn")
    assert packaged.runtime == "sklearn"
    assert packaged.notes[-1] == (
        "checked as served by the sklearn runtime: the 5 sample rows together and each of the 5 rows alone "
        "answer as the model does"
    )
    served = predict(packaged.directory, "sklearn", packaged.signature, sample)["prediction"]
    np.testing.assert_array_equal(np.isnan(served), [False, False, True, False, True])
    np.testing.assert_allclose(served, model.predict(sample))


def test_a_model_that_answers_nan_on_one_side_only_is_refused(iris: Iris, tmp_path: Path) -> None:
    frame, _ = iris
    model = TransformedTargetRegressor(
        LinearRegression(), func=unchanged, inverse_func=nan_for_the_first_row_of_a_batch, check_inverse=False
    ).fit(frame, frame.sum(axis=1))
    with pytest.raises(
        InvalidModel,
        match=r"the model answers sample row 0 alone differently from the same row among the 10 sample rows "
        r"\(prediction: NaN in 1 of 1 places where the other has a number\)",
    ):
        package(model, workdir=tmp_path, sample_input=frame.iloc[:10], trust_pickle=True)


def centred_on_the_batch(x: Any) -> Any:
    """A transform that depends on the rows predicted together: each row's answer changes with the batch."""
    values = np.asarray(x, dtype=np.float64)
    return values - values.mean(axis=0)


def test_a_model_whose_answer_for_a_row_depends_on_the_other_rows_is_refused(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    model = make_pipeline(FunctionTransformer(centred_on_the_batch), LogisticRegression(max_iter=500))
    model.fit(frame, labels)
    sample = frame.iloc[::8].head(12)
    with pytest.raises(
        InvalidModel,
        match=r"the model answers sample row 0 alone differently from the same row among the 12 sample rows "
        r"\(.+\): a server batches requests together",
    ):
        package(model, workdir=tmp_path, sample_input=sample, trust_pickle=True)


def test_the_served_model_is_checked_on_each_sample_row_alone_and_all_together(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    for runtime in ("onnx", "sklearn"):
        packaged = package(model, workdir=tmp_path, sample_input=frame.iloc[::10], runtime=runtime)
        assert packaged.notes[-1] == (
            f"checked as served by the {runtime} runtime: the 15 sample rows together and each of the 15 rows "
            "alone answer as the model does"
        )
        assert packaged.sample is not None
        assert packaged.sample["input"].shape == (15, 4)


def test_register_says_when_onnx_is_not_used_with_the_whole_reason_in_python_and_on_the_command_line(
    iris: Iris, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    import modelport
    from modelport.cli.main import app
    from modelport.settings import Settings

    frame, labels = iris
    model = ShiftedLogistic(max_iter=500).fit(frame, labels)
    settings = Settings(home=tmp_path / "home")
    with pytest.warns(ConversionWarning) as caught:
        version = modelport.register(
            model, name="shifted", sample_input=frame.iloc[:10], trust_pickle=True, settings=settings
        )
    (warning,) = caught
    message = str(warning.message)
    assert message == version.notes[0]  # the note, whole
    assert message.startswith("ONNX conversion failed: MissingShapeCalculator: Unable to find a shape calculator")
    assert "It usually means the pipeline being converted contains a transformer" in message  # skl2onnx's 2nd line
    assert message.endswith("; serving with the native scikit-learn runtime")
    assert warning.filename == __file__  # it points at the register() call
    joblib.dump(model, tmp_path / "shifted.joblib")
    frame.iloc[:10].to_csv(tmp_path / "sample.csv", index=False)
    command = [
        "register",
        str(tmp_path / "shifted.joblib"),
        "--name",
        "shifted",
        "--sample",
        str(tmp_path / "sample.csv"),
    ]
    result = CliRunner().invoke(app, [*command, "--trust-pickle"], env={"MODELPORT_HOME": str(settings.home)})
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [f"warning: {message}"]
    assert "registered shifted@2, served by the sklearn runtime" in result.stdout
