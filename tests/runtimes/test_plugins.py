"""The seams open to users: a third-party runtime from an entry point and a store chosen by URL,
registered and served for real (tests/plugins is an installed distribution as far as Python's
entry points go; see its README)."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from modelport.api import register
from modelport.cli.main import app as cli
from modelport.errors import InvalidModel, InvalidSetting, UntrustedArtifact
from modelport.registry.registry import Registry
from modelport.runtimes import Kinds
from modelport.server.spawn import serving
from modelport.settings import Settings
from modelport.stores import open_store
from modelport.stores.local import LocalStore
from modelport.testing import check_artifact_store
from tests.conftest import PLUGINS

ROWS = [[1.0, 2.0], [3.0, 4.0]]


def scaled_model(directory: Path, factor: float) -> Path:
    directory.mkdir(parents=True)
    (directory / "scale.json").write_text(json.dumps({"factor": factor}))
    return directory


def env_with_plugins(**variables: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(PLUGINS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "NO_COLOR": "1", **variables}


def infer(base: str, name: str) -> list[float]:
    body = {
        "inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP64", "data": [v for row in ROWS for v in row]}]
    }
    response = httpx.post(f"{base}/v2/models/{name}/infer", json=body)
    assert response.status_code == 200, response.text
    return list(response.json()["outputs"][0]["data"])


@pytest.mark.slow
def test_a_runtime_from_an_entry_point_is_registered_and_served(tmp_path: Path) -> None:
    home = tmp_path / "home"
    version = register(
        scaled_model(tmp_path / "model", 2.5),
        name="scaled",
        runtime="scaled",
        sample_input=np.asarray(ROWS),
        settings=Settings(home=home),
    )
    assert (version.runtime, version.trusted_code) == ("scaled", False)
    assert version.notes[0] == "served by the scaled runtime plugin (scaled_runtime:ScaledRuntime)"
    assert [spec.name for spec in version.signature.outputs] == ["scaled"]
    with serving(["scaled@1"], env=env_with_plugins(MODELPORT_HOME=str(home))) as server:
        assert infer(server.base, "scaled") == [2.5, 5.0, 7.5, 10.0]


@pytest.mark.slow
def test_a_store_chosen_by_url_holds_what_is_registered_and_served(tmp_path: Path) -> None:
    store = tmp_path / "mirrored"
    env = env_with_plugins(MODELPORT_HOME=str(tmp_path / "home"), MODELPORT_ARTIFACTS=f"mirror://{store}")
    model = scaled_model(tmp_path / "model", 4.0)
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps(ROWS))
    command = [sys.executable, "-m", "modelport", "register", str(model), "--name", "m", "--runtime", "scaled"]
    registered = subprocess.run([*command, "--sample", str(sample)], env=env, capture_output=True, text=True)
    assert registered.returncode == 0, registered.stdout + registered.stderr
    assert list((store / "sha256").rglob("scale.json")), "the artifact went to the mirror store's folder"
    with serving(["m"], env=env) as server:
        assert infer(server.base, "m") == [4.0, 8.0, 12.0, 16.0]


def test_a_store_plugin_passes_the_store_checks(tmp_path: Path) -> None:
    fresh = itertools.count()
    check_artifact_store(lambda: open_store(f"mirror://{tmp_path / str(next(fresh))}"))


def test_folders_and_file_urls_are_the_local_store(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path / "a")), LocalStore)
    local = open_store(f"file://{tmp_path / 'b'}")
    assert isinstance(local, LocalStore)
    assert local.root == tmp_path / "b"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://bucket/models", "no AWS credentials found; set AWS_ACCESS_KEY_ID"),
        ("ftp://host/models", "no installed store serves ftp:// URLs"),
        ("file://otherhost/models", "a file:// URL names a local folder"),
        ("mirror://host/models", "a mirror store URL is mirror:///absolute/folder"),
    ],
)
def test_unknown_store_urls_are_clear_errors_and_create_nothing(
    url: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance credentials to look for
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with pytest.raises(InvalidSetting, match=re.escape(message)):
        Registry.open(Settings(home=tmp_path / "home", artifacts=url))
    result = CliRunner().invoke(
        cli, ["models"], env={"MODELPORT_HOME": str(tmp_path / "home"), "MODELPORT_ARTIFACTS": url}
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "s3:").exists()
    assert not (tmp_path / "ftp:").exists()


def test_a_plugin_that_is_not_a_runtime_is_refused_by_name(tmp_path: Path) -> None:
    kinds = Kinds({"not-a-runtime": "json:loads"})
    with pytest.raises(InvalidModel, match=r"the 'not-a-runtime' runtime \(json:loads\) is not a modelport runtime"):
        kinds["not-a-runtime"]
    broken = Kinds({"missing": "no_such_module:Thing"})
    with pytest.raises(InvalidModel, match=r"the 'missing' runtime \(no_such_module:Thing\) cannot be imported"):
        broken["missing"]
    failing = Kinds({"boom": "broken_runtime:Boom"})  # its module raises while imported
    with pytest.raises(
        InvalidModel, match=r"the 'boom' runtime .* cannot be imported: RuntimeError: this plugin is broken"
    ):
        failing["boom"]


def test_a_plugin_that_runs_code_needs_trust(tmp_path: Path) -> None:
    model = tmp_path / "custom"
    model.mkdir()
    (model / "model.py").write_text("class Model:\n    def load(self, p): pass\n    def predict(self, x): return x\n")
    with pytest.raises(UntrustedArtifact, match="custom Python model"):
        register(model, name="custom", runtime="python", sample_input=np.ones((1, 2)), settings=Settings(home=tmp_path))


def test_the_test_fake_is_not_served_without_the_test_plugins(tmp_path: Path) -> None:
    code = "from modelport.runtimes import create\ncreate('fake')"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0
    kinds = "lightgbm, onnx, python, sklearn, tensorflow, torch, xgboost"
    assert f"unknown runtime kind 'fake'; the kinds are: {kinds}" in result.stderr
