"""What a SageMaker container serves, without the wire format.

Single-model mode serves the one model in ``settings.sagemaker_model_dir`` (``/opt/ml/model``), or
the models of a bundle there (an image built with several models): ``/invocations`` predicts with
the first, and every one answers on the V2 and TF Serving routes by name.
Multi-model mode (``SAGEMAKER_MULTI_MODEL=true``) starts empty and loads and unloads models from
directories under ``settings.sagemaker_models_dir`` (``/opt/ml/models``) by the name SageMaker
gives each; a load that would run the machine out of memory is refused. A load's file work
(checking the files against the export's key, packaging a plain file, opening the runtime) runs
in worker threads, so the server answers ``/ping`` and other models' requests meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import tempfile
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from modelport.errors import (
    Conflict,
    EnvironmentMismatch,
    InsufficientResources,
    InvalidInput,
    InvalidModel,
    ModelNotReady,
    ModelportError,
    NotFound,
    UntrustedArtifact,
)
from modelport.reference import NAME_PATTERN, Reference, parse_name
from modelport.registry.export import RECORD, model_directories, read_export
from modelport.runtimes.base import Runtime
from modelport.serving.batching import BatchSettings
from modelport.serving.hooks import UNWATCHED, Watching
from modelport.serving.loading import open_version
from modelport.serving.manager import ModelManager
from modelport.settings import ENVIRONMENT, MIB, Settings
from modelport.stores.local import artifact_files, file_digest, manifest_key
from modelport.types import ModelVersion

log = logging.getLogger("modelport")

MEMINFO = Path("/proc/meminfo")


def available_memory(meminfo: Path = MEMINFO) -> int | None:
    """Bytes of memory available to new work (``MemAvailable``), or None where the system does not say."""
    try:
        for line in meminfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "MemAvailable":
                return int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def directory_size(directory: Path) -> int:
    """Bytes in the regular files under ``directory`` (symlinks are not followed)."""
    total = 0
    for current, _, names in os.walk(directory):
        for name in names:
            info = os.lstat(os.path.join(current, name))
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


# -- serving ------------------------------------------------------------------------------------


TRUST_VARIABLE = ENVIRONMENT["trust_exported_code"][0]


class ExportSource:
    """A :class:`~modelport.serving.manager.ModelSource` over model directories, by served name.

    ``add`` reads a directory (see :func:`read_model_dir`) and serves it under ``name`` (default:
    the exported model's name): ``read`` (file work, safe in any thread) then ``keep``; ``remove``
    forgets it. Plain files are packaged into a temporary directory that ``close`` deletes.

    A model directory is data anyone with write access to it (or to the S3 object SageMaker
    copies into it) can forge, ``modelport.json`` included: its ``trusted_code`` flag is
    honoured only when the server opts in with ``trust_code`` (``MODELPORT_TRUST_EXPORTED_CODE``).
    """

    def __init__(
        self,
        *,
        threads: int = 1,
        allow_env_mismatch: bool = False,
        trust_code: bool = False,
        device: str | None = None,
    ) -> None:
        self.threads = threads
        self.device = device
        self.allow_env_mismatch = allow_env_mismatch
        self.trust_code = trust_code
        self._models: dict[str, tuple[ModelVersion, Path]] = {}  # name -> version, artifact directory
        self._workdir: Path | None = None
        self._workdir_lock = threading.Lock()  # reads run in worker threads, several at once

    def add(self, directory: Path, name: str | None = None) -> ModelVersion:
        return self.keep(*self.read(directory, name))

    def read(self, directory: Path, name: str | None = None) -> tuple[ModelVersion, Path]:
        """The version in ``directory`` (named ``name``) and its artifact directory, not yet served."""
        with self._workdir_lock:
            if self._workdir is None:
                self._workdir = Path(tempfile.mkdtemp(prefix="modelport-sagemaker-"))
            workdir = self._workdir
        version, artifact = read_model_dir(directory, workdir)
        if version.trusted_code and not self.trust_code:
            raise UntrustedArtifact(
                f"{directory}: {version.ref} runs code when loaded (a pickle or custom Python code), and this "
                f"server loads code from model directories only when told to: set {TRUST_VARIABLE}=1 if you "
                "trust whoever can write this directory (or the S3 object it comes from)"
            )
        if name is not None and name != version.name:
            version = replace(version, name=name)
        log.info("model %s from %s (%s runtime)", version.name, directory, version.runtime)
        return version, artifact

    def keep(self, version: ModelVersion, artifact: Path) -> ModelVersion:
        """Serve ``version`` (read by :meth:`read`) from ``artifact``."""
        self._models[version.name] = (version, artifact)
        return version

    def remove(self, name: str) -> None:
        found = self._models.pop(name, None)
        if found is not None and self._workdir is not None and found[1].is_relative_to(self._workdir):
            shutil.rmtree(found[1], ignore_errors=True)  # a plain file packaged at load

    def resolve(self, ref: Reference) -> ModelVersion:
        found = self._models.get(ref.name)
        if found is None:
            raise NotFound(f"model {ref.name!r} is not in this endpoint (models: {', '.join(self._models) or 'none'})")
        version = found[0]
        if ref.alias is not None or (ref.version is not None and ref.version != version.version):
            raise NotFound(f"{ref} is not here: this endpoint serves {version.name} version {version.version} only")
        return version

    def open(self, version: ModelVersion) -> Runtime:
        _, artifact = self._models[version.name]
        return open_version(
            version, artifact, threads=self.threads, allow_env_mismatch=self.allow_env_mismatch, device=self.device
        )

    def close(self) -> None:
        self._models.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


class SageMakerEndpoint:
    """The models of a SageMaker endpoint: one fixed model, or a multi-model endpoint's set."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.multi_model = settings.sagemaker_multi_model
        self.source = ExportSource(
            threads=settings.compute_threads,
            allow_env_mismatch=settings.allow_env_mismatch,
            trust_code=settings.trust_exported_code,
            device=settings.device,
        )
        self._manager: ModelManager | None = None
        self._model: str | None = None  # single-model mode: the served name
        self._urls: dict[str, str] = {}  # multi-model mode: name -> url as SageMaker gave it, in load order
        self._loading: set[str] = set()  # multi-model mode: names in _urls whose load has not finished

    async def start(self, watching: Watching = UNWATCHED) -> ModelManager:
        """Make the manager (its versions watched by ``watching``); in single-model mode load and
        warm the model first."""
        manager = ModelManager(
            self.source,
            threads=self.settings.compute_threads,
            batching=BatchSettings.from_settings(self.settings),
            timeout=self.settings.request_timeout,
            overload_unready=self.settings.overload_unready,
            watching=watching,
        )
        try:
            if not self.multi_model:
                directories = model_directories(self.settings.sagemaker_model_dir)
                names = [self.source.add(directory).name for directory in directories]
                await manager.load([Reference(name) for name in names])
                self._model = names[0]
        except BaseException:
            manager.close()
            self.source.close()
            raise
        self._manager = manager
        return manager

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None
        self.source.close()

    @property
    def manager(self) -> ModelManager:
        if self._manager is None:
            raise ModelNotReady("the server is starting: the model is still loading; retry shortly")
        return self._manager

    def healthy(self) -> bool:
        """Single model: loaded and warm. Multi-model: the server is up (models come and go)."""
        if self._manager is None:
            return False
        return True if self.multi_model else self._manager.not_ready(overload=False) is None

    @property
    def model_name(self) -> str:
        """The single model's served name (what ``/invocations`` predicts with; a bundle's first)."""
        if self.multi_model:
            raise NotFound(
                "this is a multi-model endpoint: invoke a loaded model with POST /models/{model_name}/invoke"
            )
        if self._model is None:
            raise ModelNotReady("the server is starting: the model is still loading; retry shortly")
        return self._model

    # -- multi-model endpoint ----------------------------------------------------------------

    def _check_name(self, name: str) -> str:
        try:
            return parse_name(name)
        except Exception:
            raise InvalidInput(f"invalid model_name {name!r}: names match {NAME_PATTERN}") from None

    def _inside_root(self, url: str) -> Path:
        root = self.settings.sagemaker_models_dir.resolve()
        if not url.strip() or "\x00" in url:
            raise InvalidInput(f"url {url!r} is not a directory path; give the model's directory under {root}")
        path = Path(url)
        try:
            resolved = path.resolve() if path.is_absolute() else (root / path).resolve()
            inside = resolved.is_relative_to(root)
            is_dir = inside and resolved.is_dir()
        except (OSError, ValueError) as exc:  # a name too long, a loop of links, characters the OS refuses
            raise InvalidInput(f"url {url!r} is not a usable directory path ({exc})") from None
        if not inside:
            raise InvalidInput(
                f"url {url!r} is outside the models root {root}; this endpoint loads models only from "
                "directories under MODELPORT_SAGEMAKER_MODELS_DIR"
            )
        if not is_dir:
            raise NotFound(f"url {url!r}: no model directory there")
        return resolved

    def _check_memory(self, directory: Path) -> None:
        available = available_memory()
        if available is None:
            return
        needed = int(directory_size(directory) * self.settings.sagemaker_memory_factor)
        headroom = self.settings.sagemaker_memory_headroom
        if needed + headroom > available:
            raise InsufficientResources(
                f"not enough memory to load this model: it needs about {needed / MIB:.1f} MiB plus "
                f"{headroom / MIB:.0f} MiB headroom, and {available / MIB:.0f} MiB are available; "
                "unload a model first (MODELPORT_SAGEMAKER_MEMORY_FACTOR and _HEADROOM_MB tune the estimate)"
            )

    def _read(self, directory: Path, name: str) -> tuple[ModelVersion, Path]:
        self._check_memory(directory)
        return self.source.read(directory, name)

    async def load(self, name: str, url: str) -> None:
        """Load the model directory ``url`` (under the models root) as ``name``.

        The file work (resolving ``url``, sizing, hashing and packaging the directory, opening the
        runtime) runs in worker threads, never on the event loop. The name is reserved first: until
        the load finishes, a second load or an unload of it gets 409, and listings leave it out.
        """
        manager = self.manager
        self._check_name(name)
        directory = await asyncio.to_thread(self._inside_root, url)
        if name in self._urls:
            raise Conflict(f"model {name!r} is already loaded or being loaded; unload it first (DELETE /models/{name})")
        self._urls[name] = url  # reserved: a concurrent load of the same name gets 409
        self._loading.add(name)
        try:
            self.source.keep(*await asyncio.to_thread(self._read, directory, name))
            await manager.load_model(Reference(name))
        except (InvalidModel, EnvironmentMismatch) as exc:
            self.source.remove(name)
            del self._urls[name]
            if isinstance(exc, UntrustedArtifact):
                raise
            # What the caller pointed at is not a model this endpoint can serve: their input, not our fault.
            raise InvalidInput(f"url {url!r} holds no model this endpoint can serve: {exc}") from exc
        except BaseException:
            self.source.remove(name)
            del self._urls[name]
            raise
        finally:
            self._loading.discard(name)
        log.info("multi-model endpoint: loaded %s from %s", name, directory)

    async def unload(self, name: str) -> None:
        if name in self._loading:
            raise Conflict(f"model {name!r} is still loading; unload it once its load has answered")
        self._url_of(name)
        try:
            await self.manager.unload_model(name)
        finally:
            self.source.remove(name)
            self._urls.pop(name, None)
        log.info("multi-model endpoint: unloaded %s", name)

    def loaded(self) -> list[tuple[str, str]]:
        """(name, url) of every loaded model, in load order (not those still loading)."""
        return [(name, url) for name, url in self._urls.items() if name not in self._loading]

    def url_of(self, name: str) -> str:
        if name in self._loading:
            raise NotFound(f"model {name!r} is not loaded yet: its load is still running")
        return self._url_of(name)

    def _url_of(self, name: str) -> str:
        if name not in self._urls:
            loaded = ", ".join(other for other, _ in self.loaded()) or "none"
            raise NotFound(f"model {name!r} is not loaded (loaded: {loaded})")
        return self._urls[name]


PLAIN_SUFFIXES = (".onnx", ".skops")
SAMPLES = ("sample.json", "sample.csv")


def read_model_dir(directory: Path, workdir: Path) -> tuple[ModelVersion, Path]:
    """The version in a SageMaker model directory and the directory its runtime loads.

    An export (``modelport.json``) is served as is. Otherwise one plain ``.onnx`` or ``.skops``
    file is packaged into ``workdir`` (a ``.skops`` needs ``sample.json`` or ``sample.csv``
    beside it, with the training columns, to build its signature). Pickles are never loaded here.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise NotFound(
            f"no model directory at {directory}: put a modelport export (modelport export REF DIR) or a "
            "model.onnx / .skops file there, or set MODELPORT_SAGEMAKER_MODEL_DIR"
        )
    if (directory / RECORD).is_file():
        return read_export(directory), directory
    return _package_plain(directory, workdir)


def _package_plain(directory: Path, workdir: Path) -> tuple[ModelVersion, Path]:
    from modelport.ingest.package import package  # registration-time work, loaded only for a plain file

    root = directory.resolve()
    candidates = sorted(
        p
        for p in directory.iterdir()
        if p.suffix.lower() in PLAIN_SUFFIXES and p.is_file() and p.resolve().is_relative_to(root)
    )
    if len(candidates) != 1:
        found = ", ".join(p.name for p in directory.iterdir()) or "nothing"
        raise InvalidModel(
            f"{directory} holds no {RECORD} and {'several' if candidates else 'no'} model files (found: {found}); "
            "give a modelport export (modelport export REF DIR) or exactly one .onnx or .skops file"
        )
    model = candidates[0]
    sample = _read_sample(directory)
    if model.suffix.lower() == ".skops" and sample is None:
        raise InvalidModel(
            f"{model.name} needs a sample input to build its signature: put sample.json (rows) or sample.csv "
            f"(with a header of the training columns) beside it in {directory}, or export it from the registry"
        )
    packaged = package(model, workdir=workdir, sample_input=sample, trust_pickle=False)
    stem = model.stem if _valid_name(model.stem) else "model"
    version = ModelVersion(
        name=stem,
        version=1,
        runtime=packaged.runtime,
        framework=packaged.framework,
        artifact=manifest_key((rel, file_digest(p)) for rel, p in artifact_files(packaged.directory)),
        signature=packaged.signature,
        created_at=datetime.now(UTC),
        environment=packaged.environment,
        notes=(f"packaged at start-up from {model}", *packaged.notes),
        trusted_code=packaged.trusted_code,
    )
    return version, packaged.directory


def _valid_name(text: str) -> bool:
    try:
        parse_name(text)
    except ModelportError:
        return False
    return True


def _read_sample(directory: Path) -> Any:
    json_path, csv_path = (directory / name for name in SAMPLES)
    if json_path.is_file():
        try:
            return orjson.loads(json_path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise InvalidModel(f"{json_path} is not valid JSON: {exc}") from None
    if csv_path.is_file():
        import pandas as pd

        return pd.read_csv(csv_path)
    return None
