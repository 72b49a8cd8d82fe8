"""Exported models: a directory that serves one version without the registry (SageMaker's ``/opt/ml/model``).

``modelport export iris@3 DIR`` writes::

    DIR/modelport.json    the version record: name, version, runtime, framework, signature,
                          environment, notes, trusted_code, batching, capture_rate, device,
                          precision, the artifact key
                          and its file list
    DIR/<artifact files>  exactly as the registry stores them (model.onnx, sklearn.json, ...)
    DIR/model.tar.gz      all of the above at the archive root: what SageMaker wants in S3

:func:`read_export` reads such a directory back, checking every file against the artifact key
(:func:`modelport.serving.modeldirs.read_model_dir` also takes a plain ``model.onnx`` / ``*.skops``).

A *bundle* (what ``modelport build`` bakes into an image serving several models) is a directory
with ``bundle.json`` listing its models in order and one export per model in a subdirectory of
that name; :func:`model_directories` lists the directories to serve either way, the first being
the one SageMaker's ``/invocations`` predicts with.
:class:`~modelport.serving.modeldirs.ExportSource` serves such directories.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import tarfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from modelport.errors import InvalidModel, ModelportError
from modelport.reference import parse_name
from modelport.stores.local import artifact_files, file_digest, manifest_key
from modelport.types import Batching, ModelVersion, Signature, capture_rate_of, device_of, precision_of

log = logging.getLogger("modelport")

RECORD = "modelport.json"
ARCHIVE = "model.tar.gz"
BUNDLE = "bundle.json"
FORMAT = 1


# -- writing ------------------------------------------------------------------------------------


def record_of(version: ModelVersion, files: list[str]) -> dict[str, Any]:
    """The JSON record of ``version`` whose artifact consists of ``files``."""
    return {
        "format": FORMAT,
        "name": version.name,
        "version": version.version,
        "runtime": version.runtime,
        "framework": version.framework,
        "artifact": version.artifact,
        "files": files,
        "signature": version.signature.to_dict(),
        "environment": dict(version.environment),
        "notes": list(version.notes),
        "trusted_code": version.trusted_code,
        "batching": version.batching.to_dict(),
        "capture_rate": version.capture_rate,
        "device": version.device,
        "precision": version.precision,
        "description": version.description,
        "tags": dict(version.tags),
        "metrics": dict(version.metrics),
        "params": dict(version.params),
        "created_at": version.created_at.isoformat(),
    }


def export_version(version: ModelVersion, artifact: Path, directory: Path, *, archive: bool = True) -> Path:
    """Write the export layout of ``version`` (artifact files in ``artifact``) into ``directory``.

    ``directory`` must be new or empty. Returns the path of ``model.tar.gz``, or of the directory
    when ``archive`` is False (an image needs the files, not the archive a second time).
    """
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InvalidModel(f"{directory} is not an empty directory; give a new or empty one to export into")
    files = artifact_files(artifact)
    names = [rel for rel, _ in files]
    clash = [rel for rel in names if rel in (RECORD, ARCHIVE)]
    if clash:
        raise InvalidModel(f"{version.ref}: its artifact has a file named {clash[0]!r}, which the export layout uses")
    directory.mkdir(parents=True, exist_ok=True)
    for rel, path in files:
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)  # store files are read-only; the copy need not be
    (directory / RECORD).write_bytes(orjson.dumps(record_of(version, names), option=orjson.OPT_INDENT_2))
    return write_archive(directory, [RECORD, *names]) if archive else directory


def export_bundle(versions: list[tuple[ModelVersion, Path]], directory: Path) -> None:
    """Export several versions (each with its artifact directory) as a bundle in ``directory``.

    Model names must differ: each is served under its name.
    """
    names = [version.name for version, _ in versions]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidModel(
            f"model {repeated[0]!r} is given more than once; a bundle serves each model under its name, "
            "so give one version of each model"
        )
    for version, artifact in versions:
        export_version(version, artifact, directory / version.name, archive=False)
    (directory / BUNDLE).write_bytes(orjson.dumps({"format": FORMAT, "models": names}, option=orjson.OPT_INDENT_2))


def model_directories(directory: Path) -> list[Path]:
    """The model directories to serve from ``directory``: the bundle's, in order, or ``directory`` itself."""
    bundle = directory / BUNDLE
    if not bundle.is_file():
        return [directory]
    try:
        data = orjson.loads(bundle.read_bytes())
        names = [parse_name(str(name)) for name in data["models"]]
        if data.get("format") != FORMAT or not names:
            raise ValueError(f"format {data.get('format')!r} with {len(names)} models")
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, ModelportError) as exc:
        raise InvalidModel(f"{bundle} is not a valid bundle index ({exc}); build the image again") from None
    return [directory / name for name in names]


def write_archive(directory: Path, names: list[str]) -> Path:
    """``directory/model.tar.gz`` holding ``names`` at the archive root, byte-for-byte reproducible."""
    target = directory / ARCHIVE
    with (
        open(target, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(names):
            path = directory / name
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode = 0o644
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    return target


# -- reading ------------------------------------------------------------------------------------


def version_from_record(data: Mapping[str, Any], where: Path) -> tuple[ModelVersion, list[str]]:
    """The version and artifact file list a ``modelport.json`` describes."""
    try:
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown format {data.get('format')!r} (this modelport reads format {FORMAT})")
        version = ModelVersion(
            name=parse_name(str(data["name"])),
            version=int(data["version"]),
            runtime=str(data["runtime"]),
            framework=str(data["framework"]),
            artifact=str(data["artifact"]),
            signature=Signature.from_dict(data["signature"]),
            created_at=datetime.fromisoformat(str(data["created_at"])),
            environment={str(k): str(v) for k, v in data.get("environment", {}).items()},
            tags={str(k): str(v) for k, v in data.get("tags", {}).items()},
            metrics=dict(data.get("metrics", {})),
            params=dict(data.get("params", {})),
            description=str(data.get("description", "")),
            notes=tuple(str(n) for n in data.get("notes", ())),
            trusted_code=data.get("trusted_code") is True,
            batching=Batching.from_dict(data.get("batching", {})),
            capture_rate=capture_rate_of(data.get("capture_rate")),
            device=device_of(data.get("device")),
            precision=precision_of(data.get("precision")),
        )
        files = [str(f) for f in data["files"]]
    except (KeyError, TypeError, ValueError, ModelportError) as exc:
        raise InvalidModel(
            f"{where} is not a valid modelport export record ({exc}); re-create it with modelport export REF DIR"
        ) from None
    return version, files


def read_export(directory: Path) -> ModelVersion:
    """The version exported into ``directory``, after checking its files against the artifact key."""
    record = directory / RECORD
    try:
        data = orjson.loads(record.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InvalidModel(f"cannot read {record}: {exc}") from None
    version, files = version_from_record(data if isinstance(data, dict) else {}, record)
    root = directory.resolve()
    entries = []
    for rel in files:
        path = (directory / rel).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise InvalidModel(f"{directory}: artifact file {rel!r} listed in {RECORD} is missing or outside it")
        entries.append((rel, file_digest(path)))
    if manifest_key(entries) != version.artifact:
        raise InvalidModel(
            f"{directory}: the artifact files do not match the key {version.artifact} in {RECORD} "
            "(changed or corrupted after export); export the version again"
        )
    return version
