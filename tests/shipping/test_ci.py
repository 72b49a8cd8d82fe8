"""CI: the repository's own workflow and the one ``modelport init-ci`` writes for a model project.

Both validate against the published GitHub Actions workflow schema (check-jsonschema's vendored
copy, offline); the repository's runs what .ci/run runs; every ``modelport`` command line in a
generated workflow parses against the real command tree; the benchmark gate's script is run by bash.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from modelport.cli.main import app
from modelport.shipping.ci import ON_DEFAULT_BRANCH, CiOptions, render, workflow
from modelport.shipping.wheel import PACKAGE, Origin, pip_spec

ROOT = Path(__file__).resolve().parents[2]
REPO_WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

# Commands other work is adding; until they exist, the test that parses them skips, naming them.

EVERY_OPTION = [
    *("--model", "fraud-detector@staging", "--train", "python -m train --epochs 3 && echo 'done; really'"),
    *("--test", "pytest -q tests/model", "--baseline", "perf/base line.json", "--max-regression", "25%"),
    *("--image", "registry.example.com:5000/team/fraud", "--modelport-spec", "modelport[sklearn,grpc]>=0.1"),
    *("--python", "3.12", "--timeout-minutes", "45"),
]
OPTION_SETS = {"defaults": ["--model", "iris"], "every option": EVERY_OPTION}


def check_workflow_schema(path: Path) -> None:
    assert CHECK_JSONSCHEMA.exists(), "check-jsonschema is a dev dependency: scripts/setup.sh installs it"
    checked = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok -- validation done" in checked.stdout


def init_ci(directory: Path, *args: str) -> Any:
    """``modelport init-ci --out DIRECTORY ...`` run in DIRECTORY (the repository it writes a wheel into)."""
    with contextlib.chdir(directory):
        return CliRunner().invoke(app, ["init-ci", "--out", str(directory), *args], env={"COLUMNS": "200"})


def one_line_error(result: Any, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(params=sorted(OPTION_SETS))
def generated(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    result = init_ci(tmp_path, *OPTION_SETS[request.param])
    assert result.exit_code == 0, result.output
    path = tmp_path / "modelport.yml"
    return path, yaml.safe_load(path.read_text())


def steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    (job,) = document["jobs"].values()
    return list(job["steps"])


def expand(text: str, env: dict[str, str]) -> str:
    """Shell-style $VAR / ${VAR} substitution from ``env`` (a missing variable fails the test)."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], text)


# -- the repository's workflow ----------------------------------------------------------------------


def test_repository_workflow_validates_against_the_github_workflow_schema() -> None:
    check_workflow_schema(REPO_WORKFLOW)


def test_repository_workflow_runs_make_test_as_ci_run_does() -> None:
    ci_run = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    command = shlex.split(ci_run[-1])
    assert command == ["make", "test"]
    document = yaml.safe_load(REPO_WORKFLOW.read_text())
    on = document.get("on", document.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert set(on) == {"push", "pull_request"}
    (job,) = document["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert job["timeout-minutes"] < 90
    python = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
    assert [s["with"]["python-version"] for s in python] == ["3.11"]
    runs = [shlex.split(s["run"]) for s in job["steps"] if "make" in shlex.split(s.get("run", ""))]
    assert len(runs) == 1, runs
    # as root, like the CI machine (setup.sh installs apt packages only as root): sudo, then only
    # variable assignments (the runner's Python and caches), then exactly .ci/run's command
    sudo, preserve, env, *rest = runs[0]
    assert (sudo, preserve, env) == ("sudo", "-E", "env")
    assignments = [token for token in rest if "=" in token]
    assert {a.partition("=")[0] for a in assignments} == {"PATH", "LD_LIBRARY_PATH"}
    assert rest[len(assignments) :] == command


def test_repository_workflow_caches_the_base_image_and_python_downloads_for_the_root_run() -> None:
    document = yaml.safe_load(REPO_WORKFLOW.read_text())
    (job,) = document["jobs"].values()
    caches = {s["with"]["path"].strip(): s["with"]["key"] for s in job["steps"] if s.get("uses") == "actions/cache@v4"}
    assert caches["~/.cache/modelport"].endswith("${{ hashFiles('scripts/base-image.sh') }}")
    assert "hashFiles('pyproject.toml')" in caches["~/.cache/pip\n~/.cache/uv"]
    run = "\n".join(s.get("run", "") for s in job["steps"])
    assert 'XDG_CACHE_HOME=$HOME/.cache" >> "$GITHUB_ENV"' in run  # root writes into the runner's ~/.cache
    assert 'sudo chown -R "$(id -u):$(id -g)" "$XDG_CACHE_HOME"' in run  # and the cache action can save it


# -- the generated workflow -------------------------------------------------------------------------


def test_generated_workflows_validate_against_the_github_workflow_schema(
    generated: tuple[Path, dict[str, Any]],
) -> None:
    check_workflow_schema(generated[0])


def test_generated_workflow_calls_only_real_modelport_commands_with_real_options(
    generated: tuple[Path, dict[str, Any]],
) -> None:
    _, document = generated
    env = {**document["env"], "GITHUB_SHA": "0123abcd", "IMAGE": document["env"].get("IMAGE", "ghcr.io/o/r")}
    root = typer.main.get_command(app)
    called: set[str] = set()
    for step in steps(document):
        for line in step.get("run", "").splitlines():
            words = shlex.split(line)
            if not words or words[0] != "modelport":
                continue
            command, path, args = root, [], [expand(word, env) for word in words[1:]]
            # typer vendors its click: a group is a command with sub-commands
            while hasattr(command, "commands") and args and not args[0].startswith("-"):
                name = args.pop(0)
                path.append(name)
                found = command.commands.get(name)
                if found is None:
                    break
                command = found
            sub = " ".join(path)
            called.add(sub)
            assert command.name == path[-1], f"`modelport {sub}` is not a command"
            with command.make_context(f"modelport {sub}", args) as context:  # raises on an unknown option
                assert context.params
    assert called == {"show", "bench", "build", "deploy k8s"}


def gate(tmp_path: Path, document: dict[str, Any]) -> list[str]:
    """Run the benchmark step's script with bash and a stand-in `modelport` that records its argv."""
    (script,) = [s["run"] for s in steps(document) if s.get("name") == "Benchmark regression gate"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "modelport"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGV_FILE"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, **document["env"], "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env["ARGV_FILE"] = str(tmp_path / "argv")
    ran = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    return [ran.stdout, *(tmp_path / "argv").read_text().splitlines()]


def test_benchmark_gate_is_skipped_with_a_notice_until_a_baseline_is_committed(tmp_path: Path) -> None:
    baseline = "perf/base line $(touch pwned).json"  # spaces and shell syntax arrive as one literal path
    document = workflow(CiOptions(model="iris@production", baseline=baseline, max_regression="15%"))
    stdout, *argv = gate(tmp_path, document)
    assert "::notice title=Benchmark gate skipped::no baseline at perf/base line $(touch pwned).json" in stdout
    assert argv == ["bench", "iris@production", "--output", "bench-results"]

    (tmp_path / "perf").mkdir()
    (tmp_path / "perf" / "base line $(touch pwned).json").write_text("{}")
    stdout, *argv = gate(tmp_path, document)
    assert "notice" not in stdout
    assert argv == [
        *("bench", "iris@production", "--output", "bench-results"),
        *("--compare", baseline, "--max-regression", "15%"),
    ]
    assert not (tmp_path / "pwned").exists()


def test_option_values_reach_the_shell_through_the_environment_only() -> None:
    options = CiOptions(model="iris", modelport_spec="modelport[sklearn]; rm -rf ~", baseline="a b/$(id).json")
    document = workflow(options)
    scripts = "\n".join(s.get("run", "") for s in steps(document))
    assert "rm -rf" not in scripts
    assert "$(id)" not in scripts
    assert yaml.safe_load(render(document))["env"]["MODELPORT_SPEC"] == "modelport[sklearn]; rm -rf ~"
    assert yaml.safe_load(render(document))["env"]["BENCH_BASELINE"] == "a b/$(id).json"


@pytest.mark.parametrize(
    ("image", "registry", "secret"),
    [
        (None, "ghcr.io", "${{ secrets.GITHUB_TOKEN }}"),
        ("ghcr.io/acme/fraud", "ghcr.io", "${{ secrets.GITHUB_TOKEN }}"),
        ("registry.example.com:5000/team/fraud", "registry.example.com:5000", "${{ secrets.REGISTRY_PASSWORD }}"),
        ("acme/fraud", None, "${{ secrets.REGISTRY_PASSWORD }}"),  # Docker Hub: login-action's default
    ],
)
def test_the_image_is_pushed_only_from_the_default_branch_after_a_login(
    image: str | None, registry: str | None, secret: str
) -> None:
    document = workflow(CiOptions(model="iris", image=image))
    assert document["permissions"] == {"contents": "read", "packages": "write"}
    named = {s.get("name"): s for s in steps(document)}
    push = named["Build and push the image"]
    assert push["if"] == ON_DEFAULT_BRANCH
    assert shlex.split(push["run"])[-1] == "--push"
    build = named["Build the image (pushed only from the default branch)"]
    assert build["if"] == f"${{{{ !({ON_DEFAULT_BRANCH}) }}}}"
    assert "--push" not in build["run"]
    login = named["Log in to the image registry"]
    assert login["uses"] == "docker/login-action@v3"
    assert login["if"] == ON_DEFAULT_BRANCH
    assert login["with"].get("registry") == registry
    assert login["with"]["password"] == secret
    order = [s.get("name") for s in steps(document)]
    assert order.index("Log in to the image registry") < order.index("Build and push the image")
    if image is None:
        assert "ghcr.io/${GITHUB_REPOSITORY,,}" in named["Image name: ghcr.io/OWNER/REPO, lowercase"]["run"]
    else:
        assert document["env"]["IMAGE"] == image


def test_actions_are_pinned_to_their_major_versions(generated: tuple[Path, dict[str, Any]]) -> None:
    uses = {s["uses"] for s in steps(generated[1]) if "uses" in s}
    assert uses == {
        "actions/checkout@v4",
        "actions/setup-python@v5",
        "docker/login-action@v3",
        "actions/upload-artifact@v4",
    }


def test_manifests_are_rendered_from_the_prod_overlay_validated_strictly_and_kept(tmp_path: Path) -> None:
    named = {s.get("name"): s for s in steps(workflow(CiOptions(model="iris")))}
    render_lines = named["Render the Kubernetes manifests"]["run"].splitlines()
    assert shlex.split(render_lines[0]) == [
        *("modelport", "deploy", "k8s", "$MODEL_REF", "--out", "deploy", "--image", "$IMAGE:$GITHUB_SHA")
    ]
    assert render_lines[1] == "kubectl kustomize deploy/overlays/prod > rendered.yaml"
    assert named["Validate the manifests"]["run"].splitlines()[-1] == "kubernetes-validate --strict rendered.yaml"
    assert "rendered.yaml" in named["Keep the manifests"]["with"]["path"].splitlines()


def test_an_empty_test_command_leaves_the_test_step_out() -> None:
    names = [s.get("name") for s in steps(workflow(CiOptions(model="iris", test="")))]
    assert "Test the model" not in names
    assert "Test the model" in [s.get("name") for s in steps(workflow(CiOptions(model="iris")))]


# -- the command ------------------------------------------------------------------------------------


def test_init_ci_has_help() -> None:
    result = CliRunner().invoke(app, ["init-ci", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Usage" in result.output
    assert "--model" in result.output


def test_init_ci_writes_into_github_workflows_by_default_and_says_what_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["init-ci", "--model", "iris@production"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    written = tmp_path / ".github" / "workflows" / "modelport.yml"
    assert yaml.safe_load(written.read_text())["env"]["MODEL_REF"] == "iris@production"
    assert "wrote .github/workflows/modelport.yml" in result.output
    for said in ("commit it", "benchmarks/baseline.json", "no secrets needed", "packages: write"):
        assert said in result.output
    # the modelport running here is an editable install: CI gets a wheel of it, committed with the workflow
    wheel = ".github/wheels/modelport-0.1.0-py3-none-any.whl"
    assert yaml.safe_load(written.read_text())["env"]["MODELPORT_SPEC"] == f"./{wheel}[sklearn]"
    assert f"git add .github/workflows/modelport.yml {wheel} && git commit" in result.output


def test_a_modelport_installed_from_a_local_folder_goes_to_ci_as_a_wheel_of_its_files(tmp_path: Path) -> None:
    result = init_ci(tmp_path, "--model", "iris", "--extras", "grpc,postgres")
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((tmp_path / "modelport.yml").read_text())["env"]["MODELPORT_SPEC"]
    assert spec == "./.github/wheels/modelport-0.1.0-py3-none-any.whl[grpc,postgres]"
    wheel = tmp_path / ".github" / "wheels" / "modelport-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        assert archive.testzip() is None
        names = set(archive.namelist())
        entry_points = archive.read("modelport-0.1.0.dist-info/entry_points.txt").decode()
        record = archive.read("modelport-0.1.0.dist-info/RECORD").decode()
    files = {
        p.relative_to(PACKAGE.parent).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert "modelport/registry/migrations/script.py.mako" in files
    assert "modelport/protocols/grpc/proto/grpc_predict_v2.proto" in files
    info = {f"modelport-0.1.0.dist-info/{n}" for n in ("METADATA", "entry_points.txt", "WHEEL", "RECORD")}
    assert names == files | info
    assert "modelport = modelport.cli.main:main" in entry_points
    assert {line.split(",")[0] for line in record.splitlines()} == names
    before = wheel.read_bytes()
    assert init_ci(tmp_path, "--model", "iris", "--extras", "", "--force").exit_code == 0
    assert wheel.read_bytes() == before  # the same files make the same wheel: nothing new to commit
    spec = yaml.safe_load((tmp_path / "modelport.yml").read_text())["env"]["MODELPORT_SPEC"]
    assert spec == "./.github/wheels/modelport-0.1.0-py3-none-any.whl"


@pytest.mark.parametrize(
    ("origin", "spec"),
    [
        (Origin("index", "0.4.1"), "modelport[sklearn]==0.4.1"),
        (
            Origin("vcs", "0.4.1", "git+https://git.example.com/ml/modelport", "0123abc"),
            "modelport[sklearn] @ git+https://git.example.com/ml/modelport@0123abc",
        ),
        (
            Origin("url", "0.4.1", "https://files.example.com/modelport-0.4.1-py3-none-any.whl"),
            "modelport[sklearn] @ https://files.example.com/modelport-0.4.1-py3-none-any.whl",
        ),
        (Origin("local", "0.4.1", "file:///home/me/modelport"), None),
    ],
)
def test_ci_installs_modelport_from_where_it_was_installed_when_ci_can_reach_it(
    origin: Origin, spec: str | None
) -> None:
    assert pip_spec(origin, "[sklearn]") == spec


def test_init_ci_names_the_secrets_a_registry_other_than_ghcr_needs(tmp_path: Path) -> None:
    result = init_ci(tmp_path, "--model", "iris", "--image", "docker.io/acme/iris")
    assert result.exit_code == 0, result.output
    assert "REGISTRY_USERNAME and REGISTRY_PASSWORD" in result.output


def test_init_ci_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    assert init_ci(tmp_path, "--model", "iris").exit_code == 0
    target = tmp_path / "modelport.yml"
    before = target.read_text()
    one_line_error(init_ci(tmp_path, "--model", "wine"), 1, "modelport.yml exists", "--force")
    assert target.read_text() == before
    forced = init_ci(tmp_path, "--model", "wine", "--force")
    assert forced.exit_code == 0, forced.output
    assert yaml.safe_load(target.read_text())["env"]["MODEL_REF"] == "wine"


@pytest.mark.parametrize("option", ["--train", "--test", "--baseline", "--image", "--modelport-spec", "--model"])
def test_init_ci_rejects_a_value_with_a_newline(tmp_path: Path, option: str) -> None:
    args = ["--model", "iris", option, "ghcr.io/a/b\nrm -rf /"]
    if option == "--model":
        args = args[2:]
    one_line_error(init_ci(tmp_path, *args), 2, option, "one line")
    assert not (tmp_path / "modelport.yml").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--model", "iris", "--train", "echo ${{ secrets.TOKEN }}"], "--train contains '${{'"),
        (["--model", "no such model"], "invalid model reference"),
        (["--model", "iris", "--image", "ghcr.io/Acme/Iris:v1"], "--image expects an image repository"),
        (["--model", "iris", "--max-regression", "lots"], "--max-regression expects a percentage"),
        (["--model", "iris", "--python", "3.9"], "--python expects a version 3.11 or later"),
        (["--model", "iris", "--baseline", "/etc/baseline.json"], "--baseline must be a path inside"),
        (["--model", "iris", "--train", " "], "--train must not be empty"),
        (["--model", "iris", "--extras", "sklearn,onnx"], "--extras: modelport has no extra 'onnx'"),
        (["--model", "iris", "--extras", "grpc", "--modelport-spec", "modelport"], "--extras or --modelport-spec"),
    ],
)
def test_init_ci_rejects_unusable_values_in_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    one_line_error(init_ci(tmp_path, *args), 2, fragment)
    assert not (tmp_path / "modelport.yml").exists()


TRAIN = """\
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import modelport

data = load_iris(as_frame=True)
model = LogisticRegression(max_iter=1000).fit(data.data, data.target)
modelport.register(model, name="iris", sample_input=data.data.head(20), alias="production")
"""

MODEL_TEST = """\
import modelport


def test_the_registered_model_loads():
    assert modelport.load("iris@production") is not None
"""


@pytest.mark.slow
def test_generated_steps_run_for_real_in_a_model_project(tmp_path: Path) -> None:
    """Train, check, test, gate (without and with a baseline), render and validate, as the job runs
    them, by bash in a fresh project. Left out: pip install (test_distribution.py runs the install
    step in a fresh virtual environment), the registry login and the image build (network and a
    container engine; test_image.py builds one), and the pip line of the validation."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "train.py").write_text(TRAIN)
    (project / "tests" / "test_model.py").write_text(MODEL_TEST)
    options = CiOptions(model="iris@production", test="python -m pytest -q -p no:cacheprovider tests")
    document = workflow(options)
    named = {s.get("name"): s for s in steps(document)}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPORT_", "PYTEST_"))}
    env |= {**document["env"], "IMAGE": "ghcr.io/acme/iris", "GITHUB_SHA": "0123abcd"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"

    def step(name: str, drop: str = "") -> subprocess.CompletedProcess[str]:
        script = "\n".join(line for line in named[name]["run"].splitlines() if not drop or drop not in line)
        ran = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script], cwd=project, env=env, capture_output=True, text=True
        )
        assert ran.returncode == 0, f"{name}:\n{ran.stdout}\n{ran.stderr}"
        return ran

    step("Train and register the model")
    assert "production" in step("Check the model is registered").stdout
    assert "1 passed" in step("Test the model").stdout
    assert "Benchmark gate skipped" in step("Benchmark regression gate").stdout
    results = project / "bench-results" / "results.json"
    assert results.is_file()
    (project / "benchmarks").mkdir()
    results.replace(project / "benchmarks" / "baseline.json")
    env["BENCH_MAX_REGRESSION"] = "900%"  # a real comparison, not a timing test: any sane run passes
    gated = step("Benchmark regression gate")
    assert "Benchmark gate skipped" not in gated.stdout
    assert "compared with benchmarks/baseline.json" in gated.stdout
    step("Render the Kubernetes manifests")
    rendered = (project / "rendered.yaml").read_text()
    assert "image: ghcr.io/acme/iris:0123abcd" in rendered
    validated = step("Validate the manifests", drop="pip install")
    assert "passed" in validated.stdout
