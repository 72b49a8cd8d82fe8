"""Opening a registered version: trust, environment checks, load failures."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from modelport.errors import ConversionWarning, EnvironmentMismatch, InvalidModel, ModelNotReady, UntrustedArtifact
from modelport.ingest.package import package
from modelport.ingest.packaged import Packaged
from modelport.serving.loading import open_version
from modelport.types import ModelVersion
from tests.support.models import ShiftedLogistic, code_running_pipeline, write_custom_model

Iris = tuple[pd.DataFrame, np.ndarray]


def version_of(packaged: Packaged, **changes: object) -> ModelVersion:
    fields: dict[str, object] = {
        "name": "iris",
        "version": 3,
        "runtime": packaged.runtime,
        "framework": packaged.framework,
        "artifact": "sha256:" + "0" * 64,
        "signature": packaged.signature,
        "created_at": datetime.now(UTC),
        "environment": packaged.environment,
        "notes": packaged.notes,
        "trusted_code": packaged.trusted_code,
    }
    fields.update(changes)
    return ModelVersion(**fields)  # type: ignore[arg-type]


@pytest.fixture
def native(iris: Iris, tmp_path: Path) -> Packaged:
    frame, labels = iris
    model = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=1000)).fit(frame, labels)
    with pytest.warns(ConversionWarning):
        packaged = package(model, workdir=tmp_path, sample_input=frame.iloc[:10])
    assert packaged.runtime == "sklearn"
    return packaged


def test_open_version_loads_a_converted_model_ready_to_predict(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    packaged = package(model, workdir=tmp_path, sample_input=frame.iloc[:10])
    runtime = open_version(version_of(packaged), packaged.directory, threads=2)
    out = runtime.predict({"input": frame.to_numpy(np.float32)})
    np.testing.assert_array_equal(out["label"], model.predict(frame))
    runtime.unload()
    with pytest.raises(ModelNotReady):
        runtime.predict({"input": frame.to_numpy(np.float32)})


def test_native_model_from_another_sklearn_minor_is_refused(native: Packaged, caplog: pytest.LogCaptureFixture) -> None:
    version = version_of(native, environment={**native.environment, "scikit-learn": "1.0.2"})
    with caplog.at_level(logging.WARNING, logger="modelport"), pytest.raises(EnvironmentMismatch) as caught:
        open_version(version, native.directory)
    running = native.environment["scikit-learn"]
    assert f"iris@3 cannot be served safely here: scikit-learn 1.0.2 was recorded at registration, {running}" in str(
        caught.value
    )
    assert "pin scikit-learn==1.0.2" in caplog.text
    runtime = open_version(version, native.directory, allow_env_mismatch=True)
    assert set(runtime.predict({"input": np.ones((2, 4))})) == {"label", "probabilities"}


def test_onnx_model_from_another_sklearn_version_loads(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    packaged = package(LogisticRegression(max_iter=500).fit(frame, labels), workdir=tmp_path, sample_input=frame)
    version = version_of(packaged, environment={**packaged.environment, "scikit-learn": "1.0.2"})
    assert open_version(version, packaged.directory).predict({"input": np.ones((1, 4), np.float32)})["label"].shape == (
        1,
    )


def test_code_running_artifact_not_registered_as_trusted_is_refused(iris: Iris, tmp_path: Path) -> None:
    frame, labels = iris
    user_class = ShiftedLogistic(max_iter=500).fit(frame, labels)
    with pytest.warns(ConversionWarning):
        packaged = package(user_class, workdir=tmp_path / "a", sample_input=frame.iloc[:5], trust_pickle=True)
    with pytest.raises(UntrustedArtifact, match="iris@3 runs code when loaded"):
        open_version(version_of(packaged, trusted_code=False), packaged.directory)
    assert open_version(version_of(packaged), packaged.directory).predict({"input": np.ones((1, 4))})
    custom = package(
        write_custom_model(tmp_path / "custom", frame),
        workdir=tmp_path / "b",
        sample_input=frame.iloc[:3],
        trust_pickle=True,
    )
    with pytest.raises(UntrustedArtifact, match=r"python runtime\) but was not registered as trusted"):
        open_version(version_of(custom, trusted_code=False), custom.directory)


def test_corrupt_artifact_is_an_invalid_model_naming_the_version(native: Packaged) -> None:
    (native.directory / "model.skops").write_bytes(b"garbage")
    with pytest.raises(InvalidModel, match=r"cannot load iris@3: cannot read scikit-learn model .*model.skops"):
        open_version(version_of(native), native.directory)


def test_unknown_runtime_kind_is_an_invalid_model(native: Packaged) -> None:
    with pytest.raises(InvalidModel, match="iris@3 needs the 'caffe' runtime, which this server does not have"):
        open_version(version_of(native, runtime="caffe"), native.directory)


@pytest.mark.parametrize("manifest_lists_them", [True, False], ids=["manifest-forged", "manifest-stale"])
def test_skops_file_that_runs_code_is_refused_whatever_its_manifest_says(
    manifest_lists_them: bool, native: Packaged, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    model_file = native.directory / "model.skops"
    model_file.write_bytes(sio.dumps(code_running_pipeline(canary)))
    if manifest_lists_them:
        manifest = json.loads((native.directory / "sklearn.json").read_text())
        manifest["trusted_types"] = sio.get_untrusted_types(file=model_file)
        (native.directory / "sklearn.json").write_text(json.dumps(manifest))
    with pytest.raises(UntrustedArtifact, match="iris@3 runs code when loaded"):
        open_version(version_of(native, trusted_code=False), native.directory)
    assert not canary.exists()
