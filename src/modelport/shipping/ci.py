"""A GitHub Actions workflow for a user's model project (``modelport init-ci``).

Pure: :class:`CiOptions` -> :func:`workflow` (a dict) -> :func:`render` (YAML text). The YAML is
written by PyYAML's safe dumper from that dict, never from a string template, and every option
value reaches the shell through an environment variable (``"$MODEL_REF"``), never spliced into a
script, so a value needs no shell quoting. Only the training and test commands are shell by nature:
they are the user's own command lines, run as given.

The one job, in order: install modelport, train and register (the training command's job, through
``modelport.register`` or ``modelport register``), check the model is registered, the model's
tests, a ``modelport bench --compare`` regression gate against a baseline committed in the
repository (skipped with a notice while there is none), the image (built on every run, pushed only
from the default branch), and the Kubernetes manifests rendered with kustomize and validated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from modelport.errors import InvalidSetting
from modelport.reference import parse_reference
from modelport.shipping.yamlfiles import dump

FILENAME = "modelport.yml"

CHECKOUT = "actions/checkout@v4"
SETUP_PYTHON = "actions/setup-python@v5"
DOCKER_LOGIN = "docker/login-action@v3"
UPLOAD_ARTIFACT = "actions/upload-artifact@v4"

GHCR = "ghcr.io"
BENCH_OUTPUT = "bench-results"
DEPLOY_DIR = "deploy"
RENDERED = "rendered.yaml"

# Only a push to the repository's default branch publishes the image.
ON_DEFAULT_BRANCH = "github.event_name == 'push' && github.ref_name == github.event.repository.default_branch"

# An image repository without tag or digest: [HOST[:PORT]/]PATH, lowercase as registries require.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(rf"(?:[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*")
_PYTHON_RE = re.compile(r"3\.(1[1-9]|[2-9][0-9])")


@dataclass(frozen=True, slots=True)
class CiOptions:
    """What ``modelport init-ci`` was asked for; every field is checked by :func:`workflow`.

    model: the reference the workflow trains, gates, builds and deploys (``NAME`` means the newest
        version, which in CI's fresh registry is the one just trained; ``NAME@ALIAS`` when the
        training script sets an alias).
    train: shell command that trains and registers the model.
    test: shell command that runs the model's tests; empty for no test step.
    baseline: a committed results.json of ``modelport bench``; the gate is skipped while it is absent.
    image: image repository to build and push; None for ``ghcr.io/OWNER/REPO`` of the repository.
    modelport_spec: what ``pip install`` is given for modelport (e.g. ``modelport[sklearn]==1.2``, a git
        URL, or a wheel in the repository); ``modelport init-ci`` gives the running modelport's
        (:mod:`modelport.shipping.wheel`).
    python_version: the Python the job runs on.
    max_regression: allowed drop in req/s or rise in p99 (``modelport bench --max-regression``).
    timeout_minutes: the job's time limit.
    """

    model: str
    train: str = "python train.py"
    test: str = "pytest"
    baseline: str = "benchmarks/baseline.json"
    image: str | None = None
    modelport_spec: str = "modelport"
    python_version: str = "3.11"
    max_regression: str = "10%"
    timeout_minutes: int = 60


def _check(options: CiOptions) -> None:
    for field in fields(options):
        value = getattr(options, field.name)
        if not isinstance(value, str):
            continue
        option = "--" + field.name.replace("_", "-")
        if "\n" in value or "\r" in value:
            raise InvalidSetting(f"{option} must be one line: it goes into the workflow's YAML and shell")
        if "${{" in value:
            raise InvalidSetting(
                f"{option} contains '${{{{', which GitHub would evaluate as an expression: "
                "give a plain value and edit the workflow afterwards if an expression is meant"
            )
    parse_reference(options.model)
    for option, value in (
        ("--train", options.train),
        ("--baseline", options.baseline),
        ("--modelport-spec", options.modelport_spec),
        ("--max-regression", options.max_regression),
    ):
        if not value.strip():
            raise InvalidSetting(f"{option} must not be empty")
    if options.baseline.startswith("/"):
        raise InvalidSetting(f"--baseline must be a path inside the repository, got {options.baseline!r}")
    if options.image is not None and not _IMAGE_RE.fullmatch(options.image):
        raise InvalidSetting(
            f"--image expects an image repository without tag, lowercase, like ghcr.io/owner/repo, "
            f"got {options.image!r} (the workflow tags it with the commit)"
        )
    if not _PYTHON_RE.fullmatch(options.python_version):
        raise InvalidSetting(f"--python expects a version 3.11 or later like 3.12, got {options.python_version!r}")
    if not 1 <= options.timeout_minutes <= 360:
        raise InvalidSetting(f"--timeout-minutes expects 1 to 360 (GitHub's limit), got {options.timeout_minutes}")


def _registry_host(image: str | None) -> str | None:
    """Where the image is pushed: ghcr.io by default, the image's host, or None for Docker Hub."""
    if image is None:
        return GHCR
    first, slash, _ = image.partition("/")
    return first if slash and ("." in first or ":" in first or first == "localhost") else None


def needs_secrets(options: CiOptions) -> tuple[str, ...]:
    """The repository secrets the workflow reads: none for ghcr.io (the job's GITHUB_TOKEN logs in)."""
    return () if _registry_host(options.image) == GHCR else ("REGISTRY_USERNAME", "REGISTRY_PASSWORD")


def _login(image: str | None) -> dict[str, Any]:
    """The registry login, on the default branch only: ghcr.io with GITHUB_TOKEN, others with two secrets."""
    host = _registry_host(image)
    if host == GHCR:
        credentials = {"username": "${{ github.actor }}", "password": "${{ secrets.GITHUB_TOKEN }}"}
    else:
        credentials = {"username": "${{ secrets.REGISTRY_USERNAME }}", "password": "${{ secrets.REGISTRY_PASSWORD }}"}
    with_ = credentials if host is None else {"registry": host, **credentials}  # no registry: Docker Hub
    return {"name": "Log in to the image registry", "if": ON_DEFAULT_BRANCH, "uses": DOCKER_LOGIN, "with": with_}


def _bench_script() -> str:
    bench = f'modelport bench "$MODEL_REF" --output {BENCH_OUTPUT}'
    return (
        'if [ -f "$BENCH_BASELINE" ]; then\n'
        f'  {bench} --compare "$BENCH_BASELINE" --max-regression "$BENCH_MAX_REGRESSION"\n'
        "else\n"
        "  echo \"::notice title=Benchmark gate skipped::no baseline at $BENCH_BASELINE: commit this run's "
        f'{BENCH_OUTPUT}/results.json (the {BENCH_OUTPUT} artifact) there to turn the regression gate on"\n'
        f"  {bench}\n"
        "fi\n"
    )


def workflow(options: CiOptions) -> dict[str, Any]:
    """The workflow as a dict, ready for :func:`render`; raises InvalidSetting on a bad option."""
    _check(options)
    env: dict[str, str] = {
        "MODEL_REF": options.model.strip(),
        "MODELPORT_SPEC": options.modelport_spec,
        "BENCH_BASELINE": options.baseline,
        "BENCH_MAX_REGRESSION": options.max_regression,
    }
    steps: list[dict[str, Any]] = [
        {"uses": CHECKOUT},
        {"uses": SETUP_PYTHON, "with": {"python-version": options.python_version}},
        {
            "name": "Install modelport and the project's requirements",
            "run": (
                'python -m pip install "$MODELPORT_SPEC"\n'
                "if [ -f requirements.txt ]; then python -m pip install -r requirements.txt; fi\n"
            ),
        },
        {"name": "Train and register the model", "run": options.train},
        {"name": "Check the model is registered", "run": 'modelport show "$MODEL_REF"'},
    ]
    if options.test.strip():
        steps.append({"name": "Test the model", "run": options.test})
    steps += [
        {"name": "Benchmark regression gate", "run": _bench_script()},
        {
            "name": "Keep the benchmark results",
            "if": "${{ !cancelled() }}",
            "uses": UPLOAD_ARTIFACT,
            "with": {"name": BENCH_OUTPUT, "path": BENCH_OUTPUT, "if-no-files-found": "warn"},
        },
    ]
    if options.image is None:
        steps.append(
            {
                "name": "Image name: ghcr.io/OWNER/REPO, lowercase",
                "run": 'echo "IMAGE=ghcr.io/${GITHUB_REPOSITORY,,}" >> "$GITHUB_ENV"\n',
            }
        )
    else:
        env["IMAGE"] = options.image
    build = 'modelport build "$MODEL_REF" --tag "$IMAGE:$GITHUB_SHA"'
    steps += [
        {
            "name": "Build the image (pushed only from the default branch)",
            "if": f"${{{{ !({ON_DEFAULT_BRANCH}) }}}}",
            "run": build,
        },
        _login(options.image),
        {"name": "Build and push the image", "if": ON_DEFAULT_BRANCH, "run": f"{build} --push"},
        {
            "name": "Render the Kubernetes manifests",
            "run": (
                f'modelport deploy k8s "$MODEL_REF" --out {DEPLOY_DIR} --image "$IMAGE:$GITHUB_SHA"\n'
                f"kubectl kustomize {DEPLOY_DIR}/overlays/prod > {RENDERED}\n"
            ),
        },
        {
            "name": "Validate the manifests",
            "run": f"python -m pip install kubernetes-validate\nkubernetes-validate --strict {RENDERED}\n",
        },
        {
            "name": "Keep the manifests",
            "if": "${{ !cancelled() }}",
            "uses": UPLOAD_ARTIFACT,
            "with": {"name": "manifests", "path": f"{RENDERED}\n{DEPLOY_DIR}/\n", "if-no-files-found": "warn"},
        },
    ]
    return {
        "name": "modelport",
        "on": {"push": None, "pull_request": None},
        "permissions": {"contents": "read", "packages": "write"},
        "concurrency": {"group": "modelport-${{ github.ref }}", "cancel-in-progress": True},
        "env": env,
        "defaults": {"run": {"shell": "bash"}},
        "jobs": {
            "model": {
                "name": "train, test, gate, build, deploy files",
                "runs-on": "ubuntu-latest",
                "timeout-minutes": options.timeout_minutes,
                "steps": steps,
            }
        },
    }


HEADER = (
    "# Written by `modelport init-ci`: train and register, test, benchmark gate, image, Kubernetes manifests.\n"
    "# Edit freely; docs/ci.md in modelport's repository explains each step.\n"
)


def render(document: dict[str, Any]) -> str:
    """YAML text of a workflow dict, keys in the order given, the run scripts as literal blocks."""
    return HEADER + dump(document, empty_null=True, width=1000)  # `push:` rather than `push: null`
