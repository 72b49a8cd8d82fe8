"""modelport is publishable and installs into a project of one's own: ``python -m build`` makes an
sdist and a wheel that ``twine check`` passes, holding every file the package runs from; the
install step ``modelport init-ci`` writes installs it for real in a fresh virtual environment, in
a scratch project, where the workflow's next steps then run on the installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from modelport.shipping.wheel import PACKAGE

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONSTRAINTS = ROOT / ".venv" / "constraints.txt"  # the lock, exported by scripts/setup.sh
WHEEL = "modelport-0.1.0-py3-none-any.whl"

pytestmark = pytest.mark.slow  # builds in a subprocess, installs into a fresh virtual environment

TRAIN = """\
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import modelport

data = load_iris(as_frame=True)
model = LogisticRegression(max_iter=1000).fit(data.data, data.target)
modelport.register(model, name="iris", sample_input=data.data.head(20), alias="production")
"""


def package_files() -> set[str]:
    """What the package runs from: every file under src/modelport but bytecode."""
    return {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    ran = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert ran.returncode == 0, f"{command}:\n{ran.stdout}\n{ran.stderr}"
    return ran.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` of the checkout: dist/ with the sdist and the wheel."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=ROOT)
    return out


def test_build_makes_an_sdist_and_a_wheel_that_twine_check_passes(dist: Path) -> None:
    assert sorted(p.name for p in dist.iterdir()) == [WHEEL, "modelport-0.1.0.tar.gz"]
    checked = run([str(BIN / "twine"), "check", "--strict", *map(str, dist.iterdir())], cwd=dist)
    assert checked.count("PASSED") == 2, checked


def test_the_wheel_and_the_sdist_carry_every_file_the_package_runs_from(dist: Path) -> None:
    files = package_files()
    for data in (
        "modelport/registry/migrations/script.py.mako",  # alembic's template, beside the migrations
        "modelport/protocols/grpc/proto/grpc_predict_v2.proto",
        "modelport/protocols/grpc/proto/grpc_predict_v2_pb2.pyi",
    ):
        assert data in files
    assert any(name.startswith("modelport/registry/migrations/versions/") for name in files)
    with zipfile.ZipFile(dist / WHEEL) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read("modelport-0.1.0.dist-info/entry_points.txt").decode()
        metadata = wheel.read("modelport-0.1.0.dist-info/METADATA").decode()
    assert {name for name in names if not name.startswith("modelport-0.1.0.dist-info/")} == files
    assert "modelport = modelport.cli.main:main" in entry_points
    assert "Provides-Extra: sklearn" in metadata
    assert "Description-Content-Type: text/markdown" in metadata
    with tarfile.open(dist / "modelport-0.1.0.tar.gz") as sdist:
        in_sdist = {name.partition("/")[2] for name in sdist.getnames()}
    assert {f"src/{name}" for name in files} <= in_sdist
    assert {"pyproject.toml", "README.md", "uv.lock"} <= in_sdist


def test_the_generated_install_step_installs_modelport_in_a_fresh_project(dist: Path, tmp_path: Path) -> None:
    """init-ci (defaults) in a scratch project, here where modelport is an editable install, writes
    a wheel of it; the workflow's install step, run by bash with a fresh virtual environment's
    Python first on PATH, installs that wheel with the sklearn extra; then the installed package
    imports, answers --help, and the workflow's train and check steps run on it. The wheel
    `python -m build` made installs over it and runs the same way."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(TRAIN)
    run([str(BIN / "modelport"), "init-ci", "--model", "iris@production"], cwd=project)
    document = yaml.safe_load((project / ".github" / "workflows" / "modelport.yml").read_text())
    assert document["env"]["MODELPORT_SPEC"] == f"./.github/wheels/{WHEEL}[sklearn]"
    with zipfile.ZipFile(project / ".github" / "wheels" / WHEEL) as vendored, zipfile.ZipFile(dist / WHEEL) as built:
        assert set(vendored.namelist()) == set(built.namelist())  # the files `python -m build` packs
    (job,) = document["jobs"].values()
    named = {s.get("name"): s["run"] for s in job["steps"] if "run" in s}

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPORT_", "PYTEST_", "VIRTUAL_ENV"))}
    env.pop("PYTHONPATH", None)
    env |= {**document["env"], "PATH": f"{venv / 'bin'}:{env['PATH']}", "PIP_CONSTRAINT": str(CONSTRAINTS)}

    def step(name: str) -> str:
        return run(["bash", "-e", "-o", "pipefail", "-c", named[name]], cwd=project, env=env)

    def installed_runs() -> None:
        where = run(["python", "-c", "import modelport; print(modelport.__file__)"], cwd=project, env=env)
        assert where.strip().startswith(str(venv)), where  # the installed package, not the checkout
        assert "init-ci" in run(["modelport", "--help"], cwd=project, env={**env, "COLUMNS": "200"})
        assert "production" in step("Check the model is registered")
        # the wheel `modelport build` puts in an image: no source tree here, and not on an index
        wheels = tmp_path / f"image-wheels-{len(list(tmp_path.glob('image-wheels-*')))}"
        wheels.mkdir()
        built = "from pathlib import Path; import sys; from modelport.shipping.image import _modelport_wheel; "
        built += "print(_modelport_wheel(Path(sys.argv[1]), lambda line: None)[0])"
        assert run(["python", "-c", built, str(wheels)], cwd=project, env=env).strip() == "0.1.0"
        assert [p.name for p in wheels.iterdir()] == [WHEEL]

    step("Install modelport and the project's requirements")
    step("Train and register the model")  # the registry's migrations come from the installed files
    installed_runs()

    reinstall = ["python", "-m", "pip", "install", "--no-deps", "--force-reinstall", str(dist / WHEEL)]
    run(reinstall, cwd=project, env=env)
    installed_runs()
