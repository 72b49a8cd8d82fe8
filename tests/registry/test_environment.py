"""Library versions recorded at registration against those running now."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

import pytest

from modelport.registry.environment import Mismatch, capture, compare

SKLEARN = metadata.version("scikit-learn")
NUMPY = metadata.version("numpy")


def test_capture_records_python_numpy_and_the_framework_libraries() -> None:
    versions = capture("sklearn")
    assert versions["python"] == platform.python_version()
    assert versions["numpy"] == NUMPY
    assert versions["scikit-learn"] == SKLEARN
    assert {"skops", "skl2onnx", "onnx", "onnxruntime"} <= set(versions)
    assert set(capture("onnx")) == {"python", "numpy", "onnx", "onnxruntime"}
    assert set(capture("python")) == {"python", "numpy"}


def test_same_environment_has_no_mismatch() -> None:
    assert compare(capture("sklearn"), runtime="sklearn", pickled=True) == []


def test_other_sklearn_minor_is_an_error_for_the_native_runtime() -> None:
    recorded = {**capture("sklearn"), "scikit-learn": "1.0.2"}
    (mismatch,) = compare(recorded, runtime="sklearn")
    assert mismatch == Mismatch(
        "scikit-learn",
        "1.0.2",
        SKLEARN,
        "error",
        f"scikit-learn 1.0.2 was recorded at registration, {SKLEARN} is running: the model may fail to load or "
        f"give different results; re-register the model with scikit-learn {SKLEARN}, or pin scikit-learn==1.0.2 "
        "in the serving environment",
    )


def test_libraries_the_serving_runtime_does_not_use_are_not_mentioned() -> None:
    recorded = {**capture("sklearn"), "scikit-learn": "1.0.2", "skl2onnx": "1.0", "scipy": "1.0", "skops": "0.1"}
    assert compare(recorded, runtime="onnx") == []
    # an image serving the ONNX graph installs none of them (what its start-up log used to list, 5 lines)
    absent = dict.fromkeys(("scikit-learn", "scipy", "skops", "skl2onnx", "onnx"), "not installed")
    assert compare(recorded, runtime="onnx", running=absent) == []
    (runtime,) = compare({**recorded, "onnxruntime": "1.0.0"}, runtime="onnx")
    assert (runtime.library, runtime.severity) == ("onnxruntime", "info")  # what serves it
    assert [m.library for m in compare(recorded, runtime="sklearn")] == ["scikit-learn", "scipy", "skops"]


def test_a_python_patch_release_is_not_a_difference_but_a_minor_one_warns() -> None:
    major, minor, *_ = platform.python_version_tuple()
    for runtime in ("onnx", "sklearn", "torch", "python"):
        assert compare({"python": f"{major}.{minor}.999"}, runtime=runtime) == []
    (other,) = compare({"python": f"{major}.{int(minor) + 1}.0"}, runtime="sklearn")
    assert other.severity == "warning"


def test_sklearn_patch_difference_is_a_warning() -> None:
    major, minor, *_ = SKLEARN.split(".")
    recorded = {"scikit-learn": f"{major}.{minor}.999"}
    assert [m.severity for m in compare(recorded, runtime="sklearn")] == ["warning"]


def test_numpy_major_difference_is_an_error_only_for_pickles() -> None:
    recorded = {"numpy": "1.26.4"}
    assert [m.severity for m in compare(recorded, runtime="sklearn", pickled=True)] == ["error"]
    assert [m.severity for m in compare(recorded, runtime="sklearn", pickled=False)] == ["warning"]
    assert [m.severity for m in compare(recorded, runtime="python")] == ["warning"]


def test_missing_library_says_what_to_install() -> None:
    (mismatch,) = compare({"not-a-real-lib": "2.0"}, runtime="python")
    assert mismatch.running == "not installed"
    assert mismatch.message.endswith("install not-a-real-lib==2.0 in the serving environment")


def _distribution(site: Path, name: str, version: str) -> None:
    """An installed distribution's metadata, as pip leaves it, for importlib.metadata to find."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_xgboost_and_lightgbm_are_recorded_for_sklearn_models_when_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _distribution(tmp_path, "xgboost", "2.1.3")
    _distribution(tmp_path, "lightgbm", "4.5.0")
    monkeypatch.syspath_prepend(str(tmp_path))
    versions = capture("sklearn")
    assert (versions["xgboost"], versions["lightgbm"]) == ("2.1.3", "4.5.0")
    assert "xgboost" not in capture("onnx")
    older = {**versions, "xgboost": "1.7.6"}
    assert [(m.library, m.severity) for m in compare(older, runtime="sklearn")] == [("xgboost", "warning")]
    assert compare(older, runtime="onnx") == []  # the ONNX graph needs no XGBoost


def test_versions_compare_as_releases_not_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _distribution(tmp_path, "scikit-learn", "1.5.0")  # what importlib.metadata reports as running
    monkeypatch.syspath_prepend(str(tmp_path))
    assert compare({"scikit-learn": "1.5"}, runtime="sklearn") == []  # the same release
    (candidate,) = compare({"scikit-learn": "1.5rc1"}, runtime="sklearn")  # a pre-release of 1.5: same minor
    assert candidate.severity == "warning"
    (older,) = compare({"scikit-learn": "1.4.2"}, runtime="sklearn")
    assert older.severity == "error"
