"""The build context of a modelport image: Dockerfile, pinned requirements, wheels, models.

``modelport build`` writes::

    CONTEXT/Dockerfile        two stages: a virtual environment installed from wheels/ with no
                              network, then the base image with that environment, the models,
                              a non-root user, a HEALTHCHECK and ``ENTRYPOINT ["modelport"]``
    CONTEXT/.dockerignore     only what the Dockerfile copies reaches the engine
    CONTEXT/requirements.txt  every distribution installed, pinned (see requirements.py)
    CONTEXT/wheels/           their wheels for the image's platform, and modelport's own
    CONTEXT/model/            the baked models (an export, or a bundle of exports); absent with
                              ``--models registry``
    CONTEXT/lambda/           ``--target lambda`` only: what the Lambda handler adds (mangum,
                              awslambdaric and what they need beyond the above), pinned, and its
                              wheels, installed in a second step so the first is the default
                              target's, step for step (an engine reuses it from its cache)

The ``sagemaker`` target (the default) keeps the contract in :mod:`modelport.shipping.container`,
which is also SageMaker's bring-your-own container contract. The ``lambda`` target is the same
environment and models with AWS Lambda's runtime interface client as its entrypoint, running
:func:`modelport.serverless.handler`.
"""

from __future__ import annotations

import email.parser
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from modelport.errors import InvalidSetting, ModelportError
from modelport.registry.export import export_bundle, export_version
from modelport.shipping import container
from modelport.shipping.requirements import Requirements, image_requirements, machine
from modelport.shipping.wheel import origin, write_wheel
from modelport.types import ModelVersion

log = logging.getLogger("modelport")

DEFAULT_BASE_IMAGE = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
MODES = ("baked", "registry")
TARGETS = ("sagemaker", "lambda")  # "default" is another name for sagemaker
# What each target installs beyond the server's own closure
TARGET_LIBRARIES: dict[str, tuple[str, ...]] = {"sagemaker": (), "lambda": ("mangum", "awslambdaric")}
LAMBDA_HANDLER = "modelport.serverless.handler"
# manylinux tags pip may take for each architecture, newest first
PLATFORM_TAGS = {
    arch: [f"manylinux_2_{minor}_{arch}" for minor in (28, 27, 24, 17)] + [f"manylinux2014_{arch}"]
    for arch in ("x86_64", "aarch64")
}
Progress = Callable[[str], None]


class BuildFailed(ModelportError):
    """A step of making the image failed (downloading wheels, the engine's build, a push)."""


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """What to build: the versions (with their artifact directories) and how."""

    versions: list[tuple[ModelVersion, Path]]
    refs: list[str]  # as the user gave them: an image without models serves these from the registry
    tag: str
    models: str = "baked"
    base_image: str = DEFAULT_BASE_IMAGE
    platform: str | None = None  # linux/amd64 style; None: this machine's
    extra: list[str] = field(default_factory=list)  # more distributions to install, by name
    target: str = "sagemaker"

    def __post_init__(self) -> None:
        if self.target == "default":
            object.__setattr__(self, "target", "sagemaker")
        if self.target not in TARGETS:
            raise InvalidSetting(
                f"--target {self.target!r}: give sagemaker (the default: the server image, which SageMaker runs "
                "unchanged) or lambda (an AWS Lambda image)"
            )
        if self.models not in MODES:
            raise InvalidSetting(f"--models {self.models!r}: give baked (models in the image) or registry")
        if not self.versions:
            raise InvalidSetting("give at least one model reference to build an image for")


def write_context(spec: ImageSpec, directory: Path, progress: Progress = log.info) -> Requirements:
    """Write the build context of ``spec`` into ``directory`` (new or empty); returns the requirements."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InvalidSetting(f"{directory} is not an empty directory; give a new or empty one for the build context")
    registry = spec.models == "registry"
    arch = machine(spec.platform)
    directory.mkdir(parents=True, exist_ok=True)
    wheels = directory / "wheels"
    wheels.mkdir()
    own = _modelport_wheel(wheels, progress)
    versions = [version for version, _ in spec.versions]
    requirements = image_requirements(versions, own=own, registry=registry, extra=spec.extra, arch=arch)
    for note in requirements.notes:
        progress(f"note: {note}")
    added = _target_requirements(spec, versions, requirements, own, arch)
    if not registry:
        progress(f"exporting {', '.join(v.ref for v, _ in spec.versions)} into the context")
        if len(spec.versions) == 1:
            version, artifact = spec.versions[0]
            export_version(version, artifact, directory / "model", archive=False)
        else:
            export_bundle(spec.versions, directory / "model")
    (directory / "requirements.txt").write_text(
        "# Installed in the image, pinned (modelport build): the versions recorded at registration where\n"
        "# the models recorded them, the versions installed where modelport build ran otherwise.\n"
        + "\n".join(requirements.lines())
        + "\n"
    )
    _download_wheels(requirements, wheels, arch, progress)
    ignore = "*\n!Dockerfile\n!requirements.txt\n!wheels/\n!model/\n"
    if added is not None:
        (directory / "lambda" / "wheels").mkdir(parents=True)
        (directory / "lambda" / "requirements.txt").write_text(
            f"# What {LAMBDA_HANDLER} needs beyond the server, pinned as installed where modelport build ran.\n"
            + "\n".join(added.lines())
            + "\n"
        )
        _download_wheels(added, directory / "lambda" / "wheels", arch, progress)
        ignore += "!lambda/\n"
        requirements = Requirements({**requirements.pins, **added.pins}, requirements.notes)
    (directory / ".dockerignore").write_text(ignore)
    (directory / "Dockerfile").write_text(dockerfile(spec))
    return requirements


def _target_requirements(
    spec: ImageSpec, versions: list[ModelVersion], base: Requirements, own: tuple[str, list[str]], arch: str
) -> Requirements | None:
    """What ``spec.target`` installs beyond ``base`` (None: nothing), pinned as installed here."""
    libraries = TARGET_LIBRARIES[spec.target]
    if not libraries:
        return None
    missing = [name for name in libraries if not _installed(name)]
    if missing:
        raise InvalidSetting(
            f"--target {spec.target} installs {', '.join(libraries)} in the image at the versions installed here, and "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: pip install 'modelport[aws]'"
        )
    full = image_requirements(
        versions, own=own, registry=spec.models == "registry", extra=[*spec.extra, *libraries], arch=arch
    )
    return Requirements({name: pin for name, pin in full.pins.items() if base.pins.get(name) != pin})


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def dockerfile(spec: ImageSpec) -> str:
    """The Dockerfile of ``spec`` (its ``BASE_IMAGE`` build argument defaults to ``spec.base_image``).

    The server image (``sagemaker``, the default target) listens on the contract's port with a
    HEALTHCHECK and ``modelport serve``. ``--target lambda`` installs ``lambda/requirements.txt``
    over the same environment, in a second step so that the first is the server image's (an
    engine reuses it from its cache), and runs the Lambda runtime interface client instead: no
    port, no HEALTHCHECK (Lambda sends events, not HTTP, and checks no health). Both keep the
    non-root user (Lambda runs its own and ignores USER) and write only under ``/tmp``.
    """
    venv = container.VENV
    pip = f"{venv}/bin/python -m pip"
    models = ", ".join(version.ref for version, _ in spec.versions)
    source = "from the registry the MODELPORT_* variables name" if spec.models == "registry" else "baked in"
    lambda_ = spec.target == "lambda"
    env = {
        "PATH": f"{venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/tmp",
        "MODELPORT_HOME": container.HOME,
    }
    if not lambda_:
        env |= {"MODELPORT_HOST": "0.0.0.0", "MODELPORT_PORT": str(container.PORT)}
    if spec.models == "registry":
        env["MODELPORT_MODELS"] = ",".join(spec.refs)

    def install(requirements: str, wheels: str) -> list[str]:
        return [
            f"    && {pip} install --no-index --no-cache-dir --disable-pip-version-check \\",
            f"       --find-links {wheels} --requirement {requirements} \\",
            f"    && {pip} uninstall --yes --quiet pip setuptools",
        ]

    if lambda_:
        what = f"AWS Lambda image serving {models}"
        header = [f"# ({source}), through {LAMBDA_HANDLER}."]
        extra_step = [
            "COPY lambda/ /build/lambda/",
            f"RUN {venv}/bin/python -m ensurepip --default-pip > /dev/null \\",
            *install("/build/lambda/requirements.txt", "/build/lambda/wheels"),
        ]
        labels = [
            "LABEL org.opencontainers.image.title=" + json.dumps(f"modelport on AWS Lambda: {models}"),
            f"LABEL io.modelport.models={json.dumps(models)} io.modelport.mode={json.dumps(spec.models)} "
            'io.modelport.target="lambda"',
        ]
        run = [
            f"ENTRYPOINT {json.dumps([f'{venv}/bin/python', '-m', 'awslambdaric'])}",
            f"CMD {json.dumps([LAMBDA_HANDLER])}",
        ]
    else:
        what = f"image serving {models}"
        header = [f"# ({source})."]
        extra_step = []
        labels = [
            "LABEL org.opencontainers.image.title=" + json.dumps(f"modelport: {models}"),
            f"LABEL io.modelport.models={json.dumps(models)} io.modelport.mode={json.dumps(spec.models)}",
            # SageMaker: the container serves multi-model endpoints (SAGEMAKER_MULTI_MODEL=true) and
            # listens where SAGEMAKER_BIND_TO_PORT says
            'LABEL com.amazonaws.sagemaker.capabilities.multi-models="true" '
            'com.amazonaws.sagemaker.capabilities.accept-bind-to-port="true"',
        ]
        healthcheck = (
            "import os, urllib.request; "
            "port = os.environ.get('SAGEMAKER_BIND_TO_PORT') or os.environ.get('MODELPORT_PORT') or "
            f"'{container.PORT}'; "
            f"urllib.request.urlopen('http://127.0.0.1:' + port + '{container.READY_PATH}', timeout=4)"
        )
        run = [
            f"EXPOSE {container.PORT}",
            "HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \\",
            f"    CMD {json.dumps([f'{venv}/bin/python', '-c', healthcheck])}",
            f"ENTRYPOINT {json.dumps(list(container.ENTRYPOINT))}",
            f"CMD {json.dumps(list(container.COMMAND))}",
        ]
    lines = [
        "# syntax=docker/dockerfile:1",
        f"# modelport {metadata.version('modelport')} {what}",
        *header,
        "# Written by modelport build; the build needs no network: everything is installed from wheels/.",
        f"ARG BASE_IMAGE={spec.base_image}",
        "",
        "FROM ${BASE_IMAGE} AS venv",
        "COPY requirements.txt /build/requirements.txt",
        "COPY wheels/ /build/wheels/",
        f"RUN python3 -m venv {venv} \\",
        *install("/build/requirements.txt", "/build/wheels"),
        *extra_step,
        "",
        "FROM ${BASE_IMAGE}",
        *labels,
        "ENV " + " \\\n    ".join(f"{key}={json.dumps(value)}" for key, value in env.items()),
        f"COPY --from=venv {venv} {venv}",
        *([f"COPY model/ {container.MODEL_DIR}/"] if spec.models == "baked" else []),
        f"USER {container.USER}:{container.GROUP}",
        "WORKDIR /tmp",
        *run,
        "",
    ]
    return "\n".join(lines)


def _modelport_wheel(wheels: Path, progress: Progress) -> tuple[str, list[str]]:
    """modelport's own wheel, built from the source tree it runs from, downloaded at the installed
    version when it came from a package index, else packed from the installed files (a wheel file,
    a git URL); returns the wheel's version and ``Requires-Dist`` lines."""
    source = _source_tree()
    if source is not None:
        progress(f"building the modelport wheel from {source}")
        _pip(["wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(source)], "build the modelport wheel")
    elif origin().kind != "index":
        progress("packing the installed modelport into a wheel")
        write_wheel(wheels)
    else:
        version = metadata.version("modelport")
        progress(f"downloading modelport {version}")
        _pip(["download", "--no-deps", "--quiet", "--dest", str(wheels), f"modelport=={version}"], "download modelport")
    (wheel,) = wheels.glob("modelport-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        fields = email.parser.BytesParser().parsebytes(archive.read(name))
    return str(fields["Version"]), [str(line) for line in fields.get_all("Requires-Dist") or []]


def _source_tree() -> Path | None:
    """The directory modelport was installed from (an editable or local-directory install), if any."""
    try:
        text = metadata.distribution("modelport").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    url = json.loads(text).get("url", "")
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return None
    path = Path(unquote(parsed.path))
    return path if (path / "pyproject.toml").is_file() else None


def _download_wheels(requirements: Requirements, wheels: Path, arch: str, progress: Progress) -> None:
    pins = [line for line in requirements.lines() if not line.startswith("modelport==")]
    progress(
        f"downloading {len(pins)} wheels for linux/{arch}, Python {sys.version_info.major}.{sys.version_info.minor}"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(pins) + "\n")
    try:
        platforms = [arg for tag in PLATFORM_TAGS[arch] for arg in ("--platform", tag)]
        _pip(
            [
                "download",
                "--quiet",
                "--only-binary=:all:",
                "--python-version",
                f"{sys.version_info.major}.{sys.version_info.minor}",
                "--implementation",
                "cp",
                *platforms,
                "--dest",
                str(wheels),
                "--requirement",
                handle.name,
            ],
            "download the wheels the image installs",
        )
    finally:
        os.unlink(handle.name)


def _pip(arguments: list[str], what: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *arguments]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    except FileNotFoundError:
        raise BuildFailed(f"cannot {what}: {sys.executable} is gone") from None
    except subprocess.TimeoutExpired:
        raise BuildFailed(f"cannot {what}: pip took longer than 30 minutes") from None
    if done.returncode != 0:
        if "No module named pip" in done.stderr:
            raise BuildFailed(f"cannot {what}: pip is not installed in {sys.prefix}; run {sys.executable} -m ensurepip")
        last = [line for line in done.stderr.splitlines() if line.strip()][-3:]
        raise BuildFailed(f"cannot {what} (pip exited {done.returncode}): " + " | ".join(last))
