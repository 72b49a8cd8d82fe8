"""`modelport export`: the self-contained model directory, its model.tar.gz, and reading both back."""

from __future__ import annotations

import shutil
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from typer.testing import CliRunner

from modelport.api import register
from modelport.cli.main import app
from modelport.errors import ConversionWarning, InvalidModel, NotFound, UntrustedArtifact
from modelport.reference import Reference
from modelport.registry.export import (
    ARCHIVE,
    RECORD,
    export_version,
    read_export,
    record_of,
    version_from_record,
)
from modelport.registry.registry import Registry
from modelport.serving.modeldirs import ExportSource, read_model_dir
from modelport.settings import Settings
from modelport.types import Batching, ModelVersion
from tests.support.models import ShiftedLogistic, forge_code_running_export
from tests.support.serving import register_iris

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def export_iris(settings: Settings, iris: Any, directory: Path) -> tuple[ModelVersion, Any]:
    version, model = register_iris(settings, iris)
    with Registry.open(settings) as registry:
        export_version(version, registry.artifact_path(version), directory)
    return version, model


def test_export_writes_the_artifact_a_record_and_an_archive_with_files_at_its_root(
    settings: Settings, iris: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    version, _ = export_iris(settings, iris, out)
    record = orjson.loads((out / RECORD).read_bytes())
    assert {k: record[k] for k in ("name", "version", "runtime", "framework", "artifact", "trusted_code")} == {
        "name": "iris",
        "version": version.version,
        "runtime": "onnx",
        "framework": "sklearn",
        "artifact": version.artifact,
        "trusted_code": False,
    }
    assert record["signature"] == version.signature.to_dict()
    assert record["environment"] == dict(version.environment)
    assert record["notes"] == list(version.notes)
    with tarfile.open(out / ARCHIVE) as tar:
        names = sorted(tar.getnames())
    assert names == sorted([RECORD, *record["files"]])
    assert "model.onnx" in names
    assert all("/" not in name for name in names)


def test_archive_is_byte_for_byte_reproducible(settings: Settings, iris: Any, tmp_path: Path) -> None:
    version, _ = register_iris(settings, iris)
    with Registry.open(settings) as registry:
        first = export_version(version, registry.artifact_path(version), tmp_path / "a").read_bytes()
        second = export_version(version, registry.artifact_path(version), tmp_path / "b").read_bytes()
    assert first == second


def test_extracted_archive_reads_back_as_the_same_version(settings: Settings, iris: Any, tmp_path: Path) -> None:
    version, model = export_iris(settings, iris, tmp_path / "out")
    extracted = tmp_path / "extracted"
    with tarfile.open(tmp_path / "out" / ARCHIVE) as tar:
        tar.extractall(extracted, filter="data")
    again = read_export(extracted)
    assert (again.name, again.version, again.artifact, again.signature) == (
        version.name,
        version.version,
        version.artifact,
        version.signature,
    )
    source = ExportSource()
    source.add(extracted)
    runtime = source.open(source.resolve(Reference("iris")))
    try:
        got = runtime.predict({"input": np.asarray(ROWS, dtype=np.float32)})
    finally:
        runtime.unload()
        source.close()
    frame = pd.DataFrame(ROWS, columns=iris[0].columns)
    assert list(got["label"]) == list(model.predict(frame))


def test_the_record_carries_the_version_s_batching_settings(settings: Settings, iris: Any) -> None:
    version, _ = register_iris(settings, iris)
    tuned = replace(version, batching=Batching(enabled=True, max_batch_size=8))
    again, files = version_from_record(orjson.loads(orjson.dumps(record_of(tuned, ["model.onnx"]))), Path("x"))
    assert again.batching == Batching(enabled=True, max_batch_size=8)
    assert files == ["model.onnx"]


def test_the_record_carries_the_version_s_capture_rate(settings: Settings, iris: Any) -> None:
    version, _ = register_iris(settings, iris)
    record = record_of(replace(version, capture_rate=0.05), ["model.onnx"])
    again, _ = version_from_record(orjson.loads(orjson.dumps(record)), Path("x"))
    assert again.capture_rate == 0.05
    assert version_from_record(record_of(version, ["model.onnx"]), Path("x"))[0].capture_rate is None
    older = {key: value for key, value in record.items() if key != "capture_rate"}  # exported before the field
    assert version_from_record(older, Path("x"))[0].capture_rate is None
    with pytest.raises(InvalidModel, match="capture_rate is the share of requests captured"):
        version_from_record({**record, "capture_rate": 2}, Path("x"))


def test_an_exported_directory_keeps_the_capture_rate(settings: Settings, iris: Any, tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    frame, labels = iris
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    version = register(model, name="iris", sample_input=frame.head(20), capture_rate=0.2, settings=settings)
    assert version.capture_rate == 0.2
    with Registry.open(settings) as registry:
        export_version(version, registry.artifact_path(version), tmp_path / "out")
    assert read_export(tmp_path / "out").capture_rate == 0.2


def test_changed_artifact_file_is_refused_with_its_reason(settings: Settings, iris: Any, tmp_path: Path) -> None:
    export_iris(settings, iris, tmp_path / "out")
    (tmp_path / "out" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(InvalidModel, match="do not match the key"):
        read_export(tmp_path / "out")


def test_export_refuses_a_directory_that_is_not_empty(settings: Settings, iris: Any, tmp_path: Path) -> None:
    version, _ = register_iris(settings, iris)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with Registry.open(settings) as registry, pytest.raises(InvalidModel, match="not an empty directory"):
        export_version(version, registry.artifact_path(version), tmp_path / "busy")


def test_pickle_export_loads_only_when_the_server_trusts_exported_code(iris: Any, tmp_path: Path) -> None:
    frame, labels = iris
    estimator = ShiftedLogistic(max_iter=500).fit(frame, labels)  # no ONNX converter: served natively
    settings = Settings(home=tmp_path / "home")
    with pytest.warns(ConversionWarning):
        version = register(estimator, name="shifted", sample_input=frame.head(20), trust_pickle=True, settings=settings)
    with Registry.open(settings) as registry:
        export_version(version, registry.artifact_path(version), tmp_path / "out")
    assert version.trusted_code
    with pytest.raises(UntrustedArtifact, match="MODELPORT_TRUST_EXPORTED_CODE=1"):
        ExportSource().add(tmp_path / "out")  # the record's own word is not enough
    trusting = ExportSource(trust_code=True)
    trusting.add(tmp_path / "out")
    trusting.open(trusting.resolve(Reference("shifted"))).unload()
    record = orjson.loads((tmp_path / "out" / RECORD).read_bytes())
    (tmp_path / "out" / RECORD).write_bytes(orjson.dumps({**record, "trusted_code": False}))
    trusting.add(tmp_path / "out")
    with pytest.raises(UntrustedArtifact, match="not registered as trusted"):
        trusting.open(trusting.resolve(Reference("shifted")))
    trusting.close()


@pytest.mark.parametrize("claims_trusted", [True, False])
def test_forged_export_that_runs_code_is_never_loaded(claims_trusted: bool, iris: Any, tmp_path: Path) -> None:
    frame, labels = iris
    native = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=1000)).fit(frame, labels)
    settings = Settings(home=tmp_path / "home")
    with pytest.warns(ConversionWarning):
        version = register(native, name="native", sample_input=frame.head(10), settings=settings)
    assert (version.runtime, version.trusted_code) == ("sklearn", False)
    with Registry.open(settings) as registry:
        export_version(version, registry.artifact_path(version), tmp_path / "out")
    canary = tmp_path / "canary"
    forge_code_running_export(tmp_path / "out", canary, claims_trusted=claims_trusted)
    source = ExportSource()

    def add_and_open() -> None:
        source.add(tmp_path / "out")
        source.open(source.resolve(Reference("native")))

    with pytest.raises(UntrustedArtifact):
        add_and_open()
    source.close()
    assert not canary.exists()


def test_plain_onnx_file_is_packaged_with_the_graph_signature(settings: Settings, iris: Any, tmp_path: Path) -> None:
    export_iris(settings, iris, tmp_path / "out")
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copyfile(tmp_path / "out" / "model.onnx", plain / "model.onnx")
    version, artifact = read_model_dir(plain, tmp_path / "work")
    assert (version.name, version.runtime, version.trusted_code) == ("model", "onnx", False)
    assert version.signature.inputs[0].shape == (-1, 4)
    assert artifact.is_relative_to(tmp_path / "work")


def test_plain_skops_file_needs_a_sample_beside_it(iris: Any, tmp_path: Path) -> None:
    frame, labels = iris
    plain = tmp_path / "plain"
    plain.mkdir()
    sio.dump(LogisticRegression(max_iter=500).fit(frame, labels), plain / "iris.skops")
    with pytest.raises(InvalidModel, match=r"sample\.json .* or sample\.csv"):
        read_model_dir(plain, tmp_path / "work")
    frame.head(20).to_csv(plain / "sample.csv", index=False)
    version, _ = read_model_dir(plain, tmp_path / "work")
    assert version.name == "iris"
    assert version.signature.inputs[0].feature_names == tuple(frame.columns)


def test_pickle_file_alone_is_never_loaded(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "model.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(InvalidModel, match=r"no model files .*model\.pkl"):
        read_model_dir(plain, tmp_path / "work")


def test_missing_model_directory_says_what_to_put_there(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="modelport export REF DIR"):
        read_model_dir(tmp_path / "absent", tmp_path / "work")


def test_cli_export_writes_the_layout(settings: Settings, iris: Any, tmp_path: Path) -> None:
    register_iris(settings, iris)
    env = {"MODELPORT_HOME": str(settings.home), "COLUMNS": "200", "NO_COLOR": "1"}
    result = CliRunner().invoke(app, ["export", "iris@production", str(tmp_path / "out")], env=env)
    assert result.exit_code == 0, result.output
    assert "exported iris@1 (onnx runtime)" in result.output
    assert (tmp_path / "out" / ARCHIVE).is_file()
    assert read_export(tmp_path / "out").ref == "iris@1"
    again = CliRunner().invoke(app, ["export", "iris@production", str(tmp_path / "out")], env=env)
    assert again.exit_code == 1
    assert "not an empty directory" in again.output
