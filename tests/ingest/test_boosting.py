"""XGBoost and LightGBM models: registered from the object or the library's model file, stored in the
library's own format (never a pickle), served by ONNX when the conversion verifies and by the native
runtimes otherwise, with the same outputs either way."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from httpx import AsyncClient
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

import modelport
from modelport.cli.main import app as cli
from modelport.errors import ConversionWarning, InvalidModel, UntrustedArtifact
from modelport.ingest import boosting
from modelport.ingest.package import package
from modelport.registry.environment import capture, compare
from modelport.registry.registry import Registry
from modelport.runtimes import create
from modelport.runtimes.conformance import check_runtime
from modelport.server.app import build_app
from modelport.serving.loading import open_version
from modelport.settings import Settings
from modelport.signature import validate_inputs
from modelport.types import Signature
from tests.support.serving import client_for

pytestmark = pytest.mark.slow  # real XGBoost/LightGBM models trained and converted to ONNX (tests/support/budget.py)

Iris = tuple[pd.DataFrame, np.ndarray]
Case = tuple[str, Path, Signature, dict[str, np.ndarray]]

PROBABILITY_ATOL = 1e-5  # float32 ONNX against the library; measured at most 1.2e-07 here
PREDICTION_RTOL = 1e-5  # regression values (diabetes targets ~25-350); measured at most 3.1e-05 absolute


def _encoded(labels: np.ndarray) -> np.ndarray:
    """Iris' string labels as 0, 1, 2 (XGBoost classifiers take integer classes)."""
    return np.unique(labels, return_inverse=True)[1]


def _rows(signature: Signature, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return validate_inputs(signature, {signature.inputs[0].name: frame.iloc[::15].to_numpy()})


def xgboost_classifier(iris: Iris, tmp: Path) -> Case:
    frame, labels = iris
    model = xgb.XGBClassifier(n_estimators=10, max_depth=3).fit(frame, _encoded(labels))
    packaged = package(model, workdir=tmp, sample_input=frame.iloc[:30], runtime="xgboost")
    assert packaged.runtime == "xgboost"
    return "xgboost", packaged.directory, packaged.signature, _rows(packaged.signature, frame)


def xgboost_ubj_regressor(iris: Iris, tmp: Path) -> Case:
    frame, _ = iris
    booster = xgb.train({"objective": "reg:squarederror"}, xgb.DMatrix(frame.iloc[:, :3], frame.iloc[:, 3]), 10)
    booster.save_model(str(tmp / "petal.ubj"))
    packaged = package(tmp / "petal.ubj", workdir=tmp, sample_input=frame.iloc[:30, :3], runtime="xgboost")
    assert (packaged.directory / "model.ubj").is_file()
    return "xgboost", packaged.directory, packaged.signature, _rows(packaged.signature, frame.iloc[:, :3])


def lightgbm_classifier(iris: Iris, tmp: Path) -> Case:
    frame, labels = iris
    model = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(frame, labels)
    packaged = package(model, workdir=tmp, sample_input=frame.iloc[:30], runtime="lightgbm")
    assert packaged.runtime == "lightgbm"
    return "lightgbm", packaged.directory, packaged.signature, _rows(packaged.signature, frame)


def onnx_xgboost(iris: Iris, tmp: Path) -> Case:
    frame, labels = iris
    model = xgb.XGBClassifier(n_estimators=10, max_depth=3).fit(frame, _encoded(labels))
    packaged = package(model, workdir=tmp, sample_input=frame.iloc[:30])
    assert packaged.runtime == "onnx"
    return "onnx", packaged.directory, packaged.signature, _rows(packaged.signature, frame)


def onnx_lightgbm(iris: Iris, tmp: Path) -> Case:
    frame, labels = iris
    model = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(frame, labels)
    packaged = package(model, workdir=tmp, sample_input=frame.iloc[:30])
    assert packaged.runtime == "onnx"
    return "onnx", packaged.directory, packaged.signature, _rows(packaged.signature, frame)


# The shared conformance list takes these (kind first in each name, as tests/runtimes/test_runtimes.py's CASES).
CONFORMANCE_CASES: dict[str, Callable[[Iris, Path], Case]] = {
    "xgboost-native-json-classifier": xgboost_classifier,
    "xgboost-native-ubj-regressor": xgboost_ubj_regressor,
    "lightgbm-native-text-classifier": lightgbm_classifier,
    "onnx-converted-xgboost": onnx_xgboost,
    "onnx-converted-lightgbm": onnx_lightgbm,
}


@pytest.mark.parametrize("case", CONFORMANCE_CASES)
def test_boosting_runtimes_pass_conformance(case: str, iris: Iris, tmp_path: Path) -> None:
    kind, artifact, signature, sample = CONFORMANCE_CASES[case](iris, tmp_path)
    runtime = create(kind)
    assert runtime.kind == kind
    check_runtime(runtime, artifact, signature, sample)


def test_thread_safety_is_declared_per_library() -> None:
    assert create("xgboost").capabilities.thread_safe  # inplace_predict is thread-safe for tree boosters
    assert not create("lightgbm").capabilities.thread_safe  # LightGBM issue #6142: served one call at a time


# --- end to end: register from the object, serve, predict over V2 and TF Serving REST -------------


@dataclass(frozen=True)
class Kind:
    model: Any  # what is registered
    rows: np.ndarray  # rows sent, none of them in the sample
    expected: dict[str, np.ndarray]  # the original model's answers on them
    runtime: str  # what serves it
    register: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra register() arguments


def _answers(model: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """The original model's own answers (scikit-learn API, or the Booster's predict)."""
    if isinstance(model, xgb.Booster):
        p = model.predict(xgb.DMatrix(x))
        return {"label": (p > 0.5).astype(np.int64), "probabilities": np.vstack((1 - p, p)).T}
    if isinstance(model, lgb.Booster):
        p = np.asarray(model.predict(x))
        return {"label": p.argmax(axis=1), "probabilities": p}
    if hasattr(model, "predict_proba"):
        return {"label": model.predict(x), "probabilities": model.predict_proba(x)}
    return {"prediction": model.predict(x)}


def _kinds() -> dict[str, tuple[Any, np.ndarray, np.ndarray, str, dict[str, Any]]]:
    """name -> (model, sample rows, rows to send, served by, register arguments)"""
    cancer_x, cancer_y = load_breast_cancer(return_X_y=True)
    diabetes_x, diabetes_y = load_diabetes(return_X_y=True)
    from sklearn.datasets import load_iris

    iris_x, iris_y = load_iris(return_X_y=True)
    names = np.asarray(["setosa", "versicolor", "virginica"])
    sample, send = slice(0, 40), slice(300, 310)
    iris_sample, iris_send = slice(0, 150, 3), slice(1, 150, 15)
    return {
        "xgb-classifier": (
            xgb.XGBClassifier(n_estimators=10, max_depth=3).fit(iris_x, iris_y),
            iris_x[iris_sample],
            iris_x[iris_send],
            "onnx",
            {},
        ),
        "xgb-regressor": (
            xgb.XGBRegressor(n_estimators=10).fit(diabetes_x, diabetes_y),
            diabetes_x[sample],
            diabetes_x[send],
            "onnx",
            {},
        ),
        "xgb-booster": (
            xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(cancer_x, cancer_y), 10),
            cancer_x[sample],
            cancer_x[send],
            "onnx",
            {},
        ),
        "lgb-classifier": (
            lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(iris_x, names[iris_y]),
            iris_x[iris_sample],
            iris_x[iris_send],
            "onnx",
            {},
        ),
        "lgb-regressor": (
            lgb.LGBMRegressor(n_estimators=10, verbose=-1).fit(diabetes_x, diabetes_y),
            diabetes_x[sample],
            diabetes_x[send],
            "onnx",
            {},
        ),
        "lgb-booster": (
            lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(iris_x, iris_y), 10),
            iris_x[iris_sample],
            iris_x[iris_send],
            "onnx",
            {},
        ),
        "lgb-pipeline": (
            make_pipeline(StandardScaler(), lgb.LGBMClassifier(n_estimators=10, verbose=-1)).fit(cancer_x, cancer_y),
            cancer_x[sample],
            cancer_x[send],
            "onnx",
            {},
        ),
        # float32 scaling moves rows across XGBoost's float32 split thresholds: the ONNX check fails and
        # the native copy is a skops file naming XGBoost's classes, so it needs trust (see test below)
        "xgb-pipeline": (
            make_pipeline(StandardScaler(), xgb.XGBClassifier(n_estimators=10)).fit(cancer_x, cancer_y),
            cancer_x[sample],
            cancer_x[send],
            "sklearn",
            {"trust_pickle": True},
        ),
        "xgb-native": (
            xgb.XGBClassifier(n_estimators=10).fit(cancer_x, cancer_y),
            cancer_x[sample],
            cancer_x[send],
            "xgboost",
            {"runtime": "xgboost"},
        ),
        "lgb-native": (
            lgb.LGBMRegressor(n_estimators=10, verbose=-1).fit(diabetes_x, diabetes_y),
            diabetes_x[sample],
            diabetes_x[send],
            "lightgbm",
            {"runtime": "lightgbm"},
        ),
    }


@dataclass(frozen=True)
class Served:
    settings: Settings
    kinds: dict[str, Kind]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    settings = Settings(home=tmp_path_factory.mktemp("boosting") / "home")
    kinds = {}
    for name, (model, sample, send, runtime, extra) in _kinds().items():
        with warnings.catch_warnings():  # xgb-pipeline is served natively, saying why
            warnings.simplefilter("ignore", ConversionWarning)
            version = modelport.register(model, name=name, sample_input=sample, settings=settings, **extra)
        assert version.runtime == runtime, (name, version.notes)
        kinds[name] = Kind(model, send, _answers(model, send), runtime, extra)
    return Served(settings, kinds)


@pytest.fixture
async def client(served: Served) -> AsyncIterator[AsyncClient]:
    async with client_for(build_app(served.settings.with_(models=tuple(served.kinds)))) as client:
        yield client


def _assert_answers(got: dict[str, Any], kind: Kind) -> None:
    rows = len(kind.rows)
    for name, want in kind.expected.items():
        actual = np.asarray(got[name])
        if name == "label":
            assert actual.tolist() == want.tolist()
        elif name == "probabilities":
            np.testing.assert_allclose(actual.reshape(rows, -1), want, rtol=0, atol=PROBABILITY_ATOL)
        else:
            np.testing.assert_allclose(actual.reshape(rows), want, rtol=PREDICTION_RTOL, atol=1e-4)


KINDS = (
    "xgb-classifier",
    "xgb-regressor",
    "xgb-booster",
    "lgb-classifier",
    "lgb-regressor",
    "lgb-booster",
    "lgb-pipeline",
    "xgb-pipeline",
    "xgb-native",
    "lgb-native",
)


@pytest.mark.parametrize("name", KINDS)
async def test_registered_model_answers_as_the_original_over_v2(client: AsyncClient, served: Served, name: str) -> None:
    kind = served.kinds[name]
    meta = (await client.get(f"/v2/models/{name}")).json()
    (spec,) = meta["inputs"]
    assert spec["datatype"] == ("FP32" if kind.runtime == "onnx" else "FP64")
    body = {
        "inputs": [
            {
                "name": spec["name"],
                "shape": list(kind.rows.shape),
                "datatype": spec["datatype"],
                "data": kind.rows.ravel().tolist(),
            }
        ]
    }
    response = await client.post(f"/v2/models/{name}/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert set(outputs) == set(kind.expected)
    _assert_answers(outputs, kind)


@pytest.mark.parametrize("name", KINDS)
async def test_registered_model_answers_as_the_original_over_tf_serving(
    client: AsyncClient, served: Served, name: str
) -> None:
    kind = served.kinds[name]
    response = await client.post(f"/v1/models/{name}:predict", json={"instances": kind.rows.tolist()})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    if isinstance(predictions[0], dict):
        got = {key: [p[key] for p in predictions] for key in predictions[0]}
    else:
        got = {"prediction": predictions}
    assert set(got) == set(kind.expected)
    _assert_answers(got, kind)


def test_notes_say_what_serves_each_version_and_why(served: Served) -> None:
    registry = Registry.open(served.settings)
    try:
        notes = {name: registry.get(name).notes for name in served.kinds}
        artifacts = {
            name: sorted(p.name for p in registry.artifact_path(registry.get(name)).iterdir()) for name in served.kinds
        }
    finally:
        registry.close()
    assert notes["xgb-classifier"][0].startswith(
        "converted to ONNX with onnxmltools (opset 15); verified on 50 sample rows"
    )
    assert notes["xgb-classifier"][0].endswith("labels agree on 50 of 50 rows")
    assert notes["xgb-classifier"][1] == "native XGBoost copy stored as XGBoost JSON (model.json) (fallback)"
    assert {"boosted.json", "model.json", "model.onnx"} <= set(artifacts["xgb-classifier"])
    assert notes["lgb-regressor"][1] == "native LightGBM copy stored as a LightGBM text model (model.txt) (fallback)"
    assert notes["xgb-native"][:2] == (
        "native XGBoost runtime requested; ONNX conversion skipped",
        "stored as XGBoost JSON (model.json)",
    )
    assert "model.onnx" not in artifacts["xgb-native"]
    assert {"boosted.json", "model.json"} <= set(artifacts["xgb-native"])
    assert {"boosted.json", "model.txt"} <= set(artifacts["lgb-native"])
    assert notes["lgb-native"][0] == "native LightGBM runtime requested; ONNX conversion skipped"
    assert notes["lgb-pipeline"][0].startswith("converted to ONNX (opset")
    assert notes["xgb-pipeline"][0].startswith(
        "ONNX output disagrees with scikit-learn on the sample (probabilities: max |Δ| = "
    )
    assert notes["xgb-pipeline"][1].startswith(
        "stored with skops (trusted types: xgboost.core.Booster, xgboost.sklearn.XGBClassifier"
    )
    for name in served.kinds:  # XGBoost and LightGBM route NaN down their default branches; the ONNX graphs agree
        assert any(note.startswith("accepts missing values (NaN) in input") for note in notes[name]), name
    assert not any(p.endswith((".pkl", ".pickle")) for files in artifacts.values() for p in files)


def test_pipeline_with_xgboost_needs_trust_when_served_natively(tmp_path: Path) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), xgb.XGBClassifier(n_estimators=5)).fit(x, y)
    with pytest.raises(UntrustedArtifact, match=r"skops file names .*xgboost\.sklearn\.XGBClassifier.*--trust-pickle"):
        package(pipeline, workdir=tmp_path, sample_input=x[:40])


def _linear_tree_lightgbm() -> Any:
    return lgb.LGBMRegressor(n_estimators=5, linear_tree=True, verbose=-1)  # onnxmltools drops the linear leaves


def _two_quantile_xgboost() -> Any:
    return xgb.XGBRegressor(n_estimators=5, objective="reg:quantileerror", quantile_alpha=np.array([0.2, 0.8]))


@pytest.mark.parametrize(
    ("make", "library", "name"),
    [(_linear_tree_lightgbm, "lightgbm", "LightGBM"), (_two_quantile_xgboost, "xgboost", "XGBoost")],
)
def test_model_the_onnx_graph_answers_differently_is_served_natively(
    tmp_path: Path, make: Callable[[], Any], library: str, name: str
) -> None:
    x, y = load_diabetes(return_X_y=True)
    model = make().fit(x, y)
    packaged = package(model, workdir=tmp_path, sample_input=x[:40])
    assert packaged.runtime == library
    assert packaged.notes[0].startswith(f"ONNX output disagrees with {name} on the sample (prediction: max |Δ| = ")
    assert packaged.notes[0].endswith(f"; serving with the native {name} runtime")
    assert packaged.notes[1].startswith("stored as ")
    assert not (packaged.directory / "model.onnx").exists()
    runtime = create(library)
    runtime.load(packaged.directory, packaged.signature)
    got = runtime.predict({"input": x[300:340]})
    np.testing.assert_allclose(got["prediction"], model.predict(x[300:340]), rtol=1e-6)
    with pytest.raises(InvalidModel, match=f"the ONNX runtime was requested but ONNX output disagrees with {name}"):
        package(model, workdir=tmp_path, sample_input=x[:40], runtime="onnx")


def test_early_stopped_xgboost_serves_the_trees_predict_uses(tmp_path: Path) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    model = xgb.XGBClassifier(n_estimators=20, early_stopping_rounds=2, learning_rate=1.0)
    model.fit(x[:400], y[:400], eval_set=[(x[400:], y[400:])], verbose=False)
    assert model.best_iteration < 19  # stopped early: predict() uses fewer trees than the booster holds
    for runtime in (None, "xgboost"):
        packaged = package(model, workdir=tmp_path, sample_input=x[:40], runtime=runtime)
        served = create(packaged.runtime)
        served.load(packaged.directory, packaged.signature)
        got = served.predict({"input": x[450:].astype(np.float32 if packaged.runtime == "onnx" else np.float64)})
        np.testing.assert_array_equal(got["label"], model.predict(x[450:]))
        np.testing.assert_allclose(got["probabilities"], model.predict_proba(x[450:]), rtol=0, atol=PROBABILITY_ATOL)


def test_gblinear_booster_is_refused_with_a_reason(tmp_path: Path) -> None:
    x, y = load_diabetes(return_X_y=True)
    booster = xgb.train({"booster": "gblinear"}, xgb.DMatrix(x, y), 5)
    with pytest.raises(InvalidModel, match=r"the model raised on the sample input: .*Inplace predict is not supported"):
        package(booster, workdir=tmp_path, sample_input=x[:20])


def test_sample_with_other_columns_than_the_model_was_fitted_on_is_refused(tmp_path: Path, iris: Iris) -> None:
    frame, labels = iris
    model = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(frame, labels)
    with pytest.raises(InvalidModel, match="the sample's columns"):
        package(model, workdir=tmp_path, sample_input=frame.iloc[:20, ::-1])
    with pytest.raises(InvalidModel, match="needs a sample input"):
        package(model, workdir=tmp_path)


def test_claims_imports_neither_library_for_other_models(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"weights": [1, 2]}')
    (tmp_path / "notes.txt").write_text("not a model\n")
    code = (
        "import sys; from pathlib import Path; from sklearn.linear_model import LogisticRegression\n"
        "from modelport.ingest import boosting\n"
        f"root = Path({str(tmp_path)!r})\n"
        "assert not boosting.claims(LogisticRegression())\n"
        "assert not boosting.claims(root / 'other.json') and not boosting.claims(root / 'notes.txt')\n"
        "assert not boosting.claims(root / 'missing.json') and not boosting.claims(root / 'model.onnx')\n"
        "assert not {'xgboost', 'lightgbm', 'onnxmltools'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)
    booster = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(np.eye(30), np.arange(30.0)), 2)
    booster.save_model(str(tmp_path / "model.txt"))
    assert boosting.claims(tmp_path / "model.txt")
    assert boosting.claims(booster)


# --- library versions ----------------------------------------------------------------------------


def test_xgboost_version_is_recorded_under_its_import_name_whatever_wheel_provides_it() -> None:
    versions = capture("xgboost")
    assert versions["xgboost"] == xgb.__version__  # installed as the xgboost-cpu distribution
    assert {"scikit-learn", "onnxmltools", "onnx", "onnxruntime"} <= set(versions)
    assert capture("lightgbm")["lightgbm"] == lgb.__version__
    assert compare(capture("xgboost"), runtime="xgboost") == []


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_native_model_file_is_format_stable_so_a_version_difference_warns(library: str) -> None:
    recorded = {**capture(library), library: "1.0.0", "onnxmltools": "1.0"}
    assert {m.library: m.severity for m in compare(recorded, runtime=library)} == {library: "warning"}
    assert compare(recorded, runtime="onnx") == []  # ONNX Runtime serves it: neither library is used
    (missing,) = compare({library: "1.0.0"}, runtime=library, running={library: "not installed"})
    assert missing.severity == "error"
    assert missing.message.endswith(f"install {library}==1.0.0 in the serving environment")


def test_environment_mismatch_at_load_is_a_warning(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry.open(served.settings)
    try:
        version = registry.get("xgb-native")
        artifact = registry.artifact_path(version)
        older = dataclasses.replace(version, environment={**version.environment, "xgboost": "2.0.3"})
        with caplog.at_level(logging.WARNING, logger="modelport"):
            runtime = open_version(older, artifact)  # loads: a warning, not a refusal
        runtime.unload()
    finally:
        registry.close()
    (record,) = [r for r in caplog.records if "xgboost 2.0.3" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "results may differ slightly" in record.getMessage()


# --- model files from the CLI --------------------------------------------------------------------


@pytest.mark.parametrize(("library", "filename"), [("xgboost", "model.json"), ("lightgbm", "model.txt")])
def test_cli_registers_a_model_file_with_a_csv_sample(tmp_path: Path, iris: Iris, library: str, filename: str) -> None:
    frame, labels = iris
    x, y = frame.to_numpy(), _encoded(labels)
    if library == "xgboost":
        xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(x, y), 10).save_model(
            str(tmp_path / filename)
        )
    else:
        params = {"objective": "multiclass", "num_class": 3, "verbose": -1}
        lgb.train(params, lgb.Dataset(x, y), 10).save_model(str(tmp_path / filename))
    frame.iloc[::5].to_csv(tmp_path / "sample.csv", index=False)
    env = {"MODELPORT_HOME": str(tmp_path / "home"), "COLUMNS": "200", "NO_COLOR": "1"}
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["register", str(tmp_path / filename), "--name", "flowers", "--sample", str(tmp_path / "sample.csv")],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "served by the onnx runtime" in result.output
    assert f"loaded from {filename}" in result.output
    shown = runner.invoke(cli, ["show", "flowers"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "converted to ONNX with onnxmltools" in shown.output
    version = modelport.load("flowers", settings=Settings(home=tmp_path / "home"))
    got = version.predict(frame.iloc[1::10])
    assert np.asarray(got["label"]).tolist() == y[1::10].tolist()
