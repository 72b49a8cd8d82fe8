"""What ``modelport build`` decides before any engine runs: the Dockerfile (linted by hadolint), the
pinned requirements, the engine, and how an image serves what it was built with (a bundle of baked
models; the registry models MODELPORT_MODELS names). The real builds are in test_container.py."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from modelport.api import register
from modelport.cli.main import app
from modelport.errors import InvalidModel, InvalidSetting
from modelport.registry.export import export_bundle, model_directories
from modelport.registry.registry import Registry
from modelport.server.spawn import start, stop, wait_ready
from modelport.settings import Settings
from modelport.shipping import container
from modelport.shipping.engine import find_engine
from modelport.shipping.image import ImageSpec, dockerfile
from modelport.shipping.requirements import image_requirements, machine
from modelport.types import ModelVersion
from tests.support.sagemaker import sagemaker_serve
from tests.support.serving import fake_version, register_iris

HADOLINT = Path(sys.executable).with_name("hadolint")
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def version_with(tmp_path: Path, runtime: str = "onnx", name: str = "iris", **environment: str) -> ModelVersion:
    version, _ = fake_version(tmp_path, name)
    return replace(version, runtime=runtime, environment=environment)


# -- the Dockerfile ---------------------------------------------------------------------------------


@pytest.mark.parametrize("models", ["baked", "registry"])
def test_dockerfile_passes_hadolint_and_keeps_the_container_contract(tmp_path: Path, models: str) -> None:
    version, artifact = fake_version(tmp_path)
    spec = ImageSpec(versions=[(version, artifact)], refs=["iris@production"], tag="x:1", models=models)
    text = dockerfile(spec)
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    linted = subprocess.run([str(HADOLINT), str(path)], capture_output=True, text=True, check=False)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert f"USER {container.USER}:{container.GROUP}" in text
    assert 'ENTRYPOINT ["/opt/venv/bin/modelport"]' in text
    assert 'CMD ["serve"]' in text
    assert 'com.amazonaws.sagemaker.capabilities.multi-models="true"' in text  # a SageMaker multi-model container
    assert f"EXPOSE {container.PORT}" in text
    assert container.READY_PATH in text
    assert "HEALTHCHECK" in text
    assert "--no-index" in text  # the RUN step installs from the context's wheels only
    assert ("COPY model/ /opt/ml/model/" in text) is (models == "baked")
    assert ('MODELPORT_MODELS="iris@production"' in text) is (models == "registry")


@pytest.mark.parametrize("models", ["baked", "registry"])
def test_lambda_dockerfile_passes_hadolint_and_runs_the_handler_through_awslambdaric(
    tmp_path: Path, models: str
) -> None:
    version, artifact = fake_version(tmp_path)
    spec = ImageSpec(
        versions=[(version, artifact)], refs=["iris@production"], tag="x:1", models=models, target="lambda"
    )
    text = dockerfile(spec)
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    linted = subprocess.run([str(HADOLINT), str(path)], capture_output=True, text=True, check=False)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert 'ENTRYPOINT ["/opt/venv/bin/python", "-m", "awslambdaric"]' in text
    assert 'CMD ["modelport.serverless.handler"]' in text
    assert f"USER {container.USER}:{container.GROUP}" in text
    assert 'MODELPORT_HOME="/tmp/modelport"' in text
    assert "MODELPORT_HOST" not in text
    assert "EXPOSE" not in text
    assert "HEALTHCHECK" not in text
    assert "--find-links /build/lambda/wheels --requirement /build/lambda/requirements.txt" in text
    assert ("COPY model/ /opt/ml/model/" in text) is (models == "baked")
    assert ('MODELPORT_MODELS="iris@production"' in text) is (models == "registry")
    # The first install step is the default target's, line for line, so an engine's cache serves both
    default = dockerfile(replace(spec, target="sagemaker"))
    first_stage = default.split("\n\nFROM ${BASE_IMAGE}\n")[0].split("FROM ${BASE_IMAGE} AS venv\n")[1]
    assert first_stage in text


def test_default_target_is_the_sagemaker_image_unchanged(tmp_path: Path) -> None:
    pair = fake_version(tmp_path)
    plain = ImageSpec(versions=[pair], refs=["iris"], tag="x")
    assert plain.target == "sagemaker"
    named = [ImageSpec(versions=[pair], refs=["iris"], tag="x", target=t) for t in ("default", "sagemaker")]
    assert {dockerfile(spec) for spec in named} == {dockerfile(plain)}
    with pytest.raises(InvalidSetting, match=r"give sagemaker .* or lambda"):
        ImageSpec(versions=[pair], refs=["iris"], tag="x", target="gcp")


def test_image_spec_refuses_an_unknown_mode_and_no_models(tmp_path: Path) -> None:
    pair = fake_version(tmp_path)
    with pytest.raises(InvalidSetting, match="give baked"):
        ImageSpec(versions=[pair], refs=["iris"], tag="x", models="both")
    with pytest.raises(InvalidSetting, match="at least one model"):
        ImageSpec(versions=[], refs=[], tag="x")


# -- pinned requirements ----------------------------------------------------------------------------


def test_requirements_pin_modelport_and_its_whole_dependency_closure_at_installed_versions(tmp_path: Path) -> None:
    requirements = image_requirements([version_with(tmp_path)])
    pins = requirements.pins
    assert pins["modelport"] == metadata.version("modelport")
    for name in ("numpy", "onnxruntime", "uvicorn", "starlette", "anyio", "orjson"):  # direct and transitive
        assert pins[name] == metadata.version(name)
    assert "scikit-learn" not in pins
    assert "pytest" not in pins
    assert "psycopg" not in pins
    assert requirements.notes == []


def test_requirements_follow_what_a_version_recorded_at_registration_and_say_so(tmp_path: Path) -> None:
    requirements = image_requirements([version_with(tmp_path, onnxruntime="1.20.1", pytest="1.0")])
    assert requirements.pins["onnxruntime"] == "1.20.1"
    assert "pytest" not in requirements.pins  # recorded but not needed to serve: not installed
    (note,) = requirements.notes
    assert "onnxruntime==1.20.1, as recorded at registration by iris@1" in note


def test_native_models_bring_their_library_and_registry_images_bring_postgresql(tmp_path: Path) -> None:
    native = image_requirements([version_with(tmp_path, "sklearn")], registry=True)
    for name in ("scikit-learn", "skops", "scipy", "psycopg", "psycopg-binary", "boto3", "botocore"):
        assert native.pins[name] == metadata.version(name)


def test_models_that_need_different_releases_of_their_library_are_refused_together(tmp_path: Path) -> None:
    a = version_with(tmp_path, "sklearn", "a", **{"scikit-learn": "1.5.2"})
    b = version_with(tmp_path, "sklearn", "b", **{"scikit-learn": "1.6.1"})
    with pytest.raises(InvalidSetting, match=r"cannot share one image.*a@1 recorded 1.5.2; b@1 recorded 1.6.1"):
        image_requirements([a, b])


def test_models_that_recorded_different_compatible_releases_share_the_newest(tmp_path: Path) -> None:
    a = version_with(tmp_path, "onnx", "a", onnxruntime="1.19.0")
    b = version_with(tmp_path, "onnx", "b", onnxruntime="1.20.1")
    requirements = image_requirements([a, b])
    assert requirements.pins["onnxruntime"] == "1.20.1"
    assert any("onnxruntime==1.20.1 for every model" in note for note in requirements.notes)


def test_a_distribution_that_is_not_installed_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidSetting, match="no-such-distribution is needed in the image but not installed"):
        image_requirements([version_with(tmp_path)], extra=["no-such-distribution"])


def test_platforms_are_linux_amd64_or_arm64() -> None:
    assert machine("linux/amd64") == "x86_64"
    assert machine("linux/arm64") == "aarch64"
    with pytest.raises(InvalidSetting, match="Linux images"):
        machine("windows/amd64")
    with pytest.raises(InvalidSetting, match="not supported"):
        machine("linux/s390x")


# -- the engine -------------------------------------------------------------------------------------


def test_an_engine_that_is_not_installed_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker, no podman
    with pytest.raises(InvalidSetting, match="docker is not installed; podman is not installed"):
        find_engine()
    with pytest.raises(InvalidSetting, match="give docker or podman"):
        find_engine("buildkit")


@pytest.mark.slow
def test_docker_without_a_daemon_falls_back_to_podman_and_is_refused_by_name() -> None:
    docker = subprocess.run(["docker", "info"], capture_output=True, check=False) if _which("docker") else None
    if docker is None or docker.returncode == 0 or not _which("podman"):
        pytest.skip("needs the docker client without a daemon, and podman (as on the test machines)")
    assert find_engine().name == "podman"
    with pytest.raises(InvalidSetting, match="docker is installed but its daemon does not answer"):
        find_engine("docker")


def _which(name: str) -> bool:
    return any(os.access(os.path.join(p, name), os.X_OK) for p in os.environ.get("PATH", "").split(os.pathsep))


def test_build_with_no_engine_says_so_in_one_line_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(app, ["build", "iris@1"], env={"MODELPORT_HOME": str(tmp_path / "home")})
    assert result.exit_code == 2
    assert "no container engine to build with" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "home").exists()  # nothing was opened or written


def test_build_help_names_every_option() -> None:
    result = CliRunner().invoke(app, ["build", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--tag", "--base-image", "--engine", "--context", "--push", "--platform", "--models", "--with"):
        assert option in result.output
    assert "--target" in result.output
    assert "SageMaker's bring-your-own container contract" in result.output


# -- what an image serves ---------------------------------------------------------------------------


def test_a_bundle_refuses_two_versions_of_one_model(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match="'iris' is given more than once"):
        export_bundle([fake_version(tmp_path, number=1), fake_version(tmp_path, number=2)], tmp_path / "bundle")


def test_a_broken_bundle_index_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bundle.json").write_text('{"format": 1, "models": ["../etc"]}')
    with pytest.raises(InvalidModel, match="not a valid bundle index"):
        model_directories(tmp_path)
    assert model_directories(tmp_path / "plain") == [tmp_path / "plain"]


@pytest.mark.slow
def test_a_bundle_serves_every_model_by_name_and_invocations_with_the_first(tmp_path: Path, iris: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    settings = Settings(home=tmp_path / "home")
    first, model = register_iris(settings, iris)
    frame, labels = iris
    other_model = LogisticRegression(C=0.01, max_iter=500).fit(frame, labels)
    other = register(other_model, name="weak", sample_input=frame.head(20), settings=settings)
    with Registry.open(settings) as registry:
        export_bundle([(v, registry.artifact_path(v)) for v in (first, other)], tmp_path / "model")
    with sagemaker_serve(MODELPORT_SAGEMAKER_MODEL_DIR=str(tmp_path / "model")) as base:
        csv = "".join(",".join(str(v) for v in row) + "\n" for row in ROWS)
        invoked = httpx.post(f"{base}/invocations", content=csv, headers={"Content-Type": "text/csv"}, timeout=30)
        assert invoked.status_code == 200, invoked.text
        probabilities = [row["probabilities"] for row in invoked.json()["predictions"]]
        np.testing.assert_allclose(probabilities, model.predict_proba(_frame(frame, ROWS)), atol=1e-5)
        assert not np.allclose(probabilities, other_model.predict_proba(_frame(frame, ROWS)), atol=1e-2)
        body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]}
        for name, fitted in (("iris", model), ("weak", other_model)):
            answer = httpx.post(f"{base}/v2/models/{name}/infer", json=body, timeout=30)
            assert answer.status_code == 200, answer.text
            found = next(o for o in answer.json()["outputs"] if o["name"] == "probabilities")
            expected = fitted.predict_proba(_frame(frame, ROWS))
            np.testing.assert_allclose(np.reshape(found["data"], expected.shape), expected, atol=1e-5)


def _frame(like: Any, rows: list[list[float]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=like.columns)


@pytest.mark.slow
def test_serve_without_references_serves_what_modelport_models_names(tmp_path: Path, iris: Any) -> None:
    """An image built with --models registry runs `serve` with MODELPORT_MODELS set: registry mode, not SageMaker's."""
    settings = Settings(home=tmp_path / "home")
    _, model = register_iris(settings, iris)
    env = {
        **os.environ,
        "MODELPORT_HOME": str(settings.home),
        "MODELPORT_MODELS": "iris@production",
        "MODELPORT_PORT": "0",
        "NO_COLOR": "1",
    }
    process, output = start(["serve"], env=env)
    try:
        base = f"http://127.0.0.1:{output.port(120)}"
        wait_ready(base, process, output=output)
        body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]}
        answer = httpx.post(f"{base}/v2/models/iris/infer", json=body, timeout=30)
        label = next(o for o in answer.json()["outputs"] if o["name"] == "label")
        assert label["data"] == list(model.predict(_frame(iris[0], ROWS)))
        assert httpx.get(f"{base}/ping", timeout=10).status_code == 404  # not the SageMaker contract
    finally:
        assert stop(process) == 0, output.close()
        output.close()


def test_framework_runtimes_bring_their_library_under_its_installed_distribution_name(tmp_path: Path) -> None:
    """XGBoost is recorded as "xgboost" and installed here as the xgboost-cpu wheel: the pin follows the wheel."""
    version = version_with(tmp_path, "xgboost", xgboost="3.1.0")
    requirements = image_requirements([version])
    assert requirements.pins["xgboost-cpu"] == "3.1.0"
    assert "xgboost" not in requirements.pins
    for runtime, distribution in (("lightgbm", "lightgbm"), ("torch", "torch"), ("tensorflow", "tensorflow-cpu")):
        pins = image_requirements([version_with(tmp_path, runtime)]).pins
        assert pins[distribution] == metadata.version(distribution)
