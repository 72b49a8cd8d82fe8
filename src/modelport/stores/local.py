"""The default artifact store: a content-addressed folder on local disk.

Layout: ``root/sha256/<first 2 hex>/<64 hex>/<the artifact's files>``. A ``put`` copies into
``root/tmp`` (same file system) and renames the finished copy into place, so a reader never
sees half an artifact and a process killed mid-way leaves only a temporary folder behind.
Stored files are read-only.

The key is ``sha256:`` + SHA-256 of a manifest with one ``<file sha256> <relative posix path>``
line per file, sorted by path: equal content gets the same key in every store that uses
:func:`content_key` (memory, local, S3), so artifacts can move between them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from modelport.errors import InvalidModel, NotFound

KEY_PREFIX = "sha256:"
KEY_RE = re.compile(r"sha256:([0-9a-f]{64})")
_CHUNK = 1024 * 1024


def artifact_files(directory: Path) -> list[tuple[str, Path]]:
    """The regular files of an artifact directory as (relative posix path, path), sorted by path.

    Symlinks to files inside the directory count as those files; a symlink that leaves the
    directory, dangles or names a directory, and any special file (FIFO, socket, device), is
    refused with :class:`InvalidModel`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidModel(
            f"artifact {str(directory)!r} is not a directory; give the folder that holds the model files"
        )
    root = directory.resolve()
    found: list[tuple[str, Path]] = []
    for current, dirnames, filenames in os.walk(directory):
        for name in sorted(dirnames + filenames):
            path = Path(current) / name
            rel = path.relative_to(directory).as_posix()
            if "\n" in rel or "\r" in rel:
                raise InvalidModel(f"artifact file name {rel!r} contains a line break; rename it")
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                target = path.resolve()
                if not target.is_relative_to(root) or not target.exists():
                    raise InvalidModel(
                        f"artifact file {rel!r} is a symlink to {str(target)!r}, outside the artifact directory; "
                        "copy the file into the directory instead"
                    )
                if target.is_dir():
                    raise InvalidModel(f"artifact entry {rel!r} is a symlink to a directory; copy the files instead")
                mode = target.stat().st_mode
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise InvalidModel(f"artifact entry {rel!r} is not a regular file (FIFO, socket or device); remove it")
            found.append((rel, path))
    if not found:
        raise InvalidModel(f"artifact directory {str(directory)!r} holds no files")
    return sorted(found)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_key(entries: Iterable[tuple[str, str]]) -> str:
    """The key of an artifact from its (relative posix path, file sha256 hex) pairs."""
    manifest = "".join(f"{digest} {rel}\n" for rel, digest in sorted(entries))
    return KEY_PREFIX + hashlib.sha256(manifest.encode("utf-8")).hexdigest()


def content_key(directory: Path) -> str:
    """The key a store gives the directory's content (reads every file; copies nothing)."""
    return manifest_key((rel, file_digest(path)) for rel, path in artifact_files(directory))


def check_key(key: str) -> str:
    """The hex part of a well-formed key; :class:`NotFound` for anything else."""
    match = KEY_RE.fullmatch(key)
    if match is None:
        raise NotFound(f"artifact {key!r} not found: artifact keys look like sha256:<64 hex digits>")
    return match.group(1)


def copy_hashing(source: Path, target: Path) -> str:
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(target, "xb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    executable = source.stat().st_mode & stat.S_IXUSR
    os.chmod(target, 0o555 if executable else 0o444)
    return digest.hexdigest()


class LocalStore:
    """Content-addressed artifacts under ``root``; see the module docstring for the layout."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        hexdigest = check_key(key)
        return self.root / "sha256" / hexdigest[:2] / hexdigest

    def _temp_root(self) -> Path:
        temp = self.root / "tmp"
        temp.mkdir(parents=True, exist_ok=True)
        return temp

    def put(self, directory: Path) -> str:
        files = artifact_files(directory)
        staging = Path(tempfile.mkdtemp(prefix="put-", dir=self._temp_root()))
        try:
            staging.chmod(0o755)
            entries = []
            for rel, source in files:
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                entries.append((rel, copy_hashing(source, target)))
            key = manifest_key(entries)
            final = self._path(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, final)
            except OSError:
                if not final.is_dir():
                    raise
                # Same content is stored already: keep that copy and mark it as freshly used, so
                # a garbage collection that runs before the caller records the key spares it.
                os.utime(final)
                shutil.rmtree(staging)
            return key
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def fetch(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_dir():
            raise NotFound(f"artifact {key} not found in {self.root}")
        return path

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).is_dir()
        except NotFound:
            return False

    def delete(self, key: str) -> None:
        try:
            path = self._path(key)
        except NotFound:
            return
        # Rename first so that no reader ever sees a half-deleted artifact.
        trash = self._temp_root() / f"del-{path.name}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash)

    def keys(self) -> Iterator[str]:
        base = self.root / "sha256"
        if not base.is_dir():
            return
        for prefix in sorted(base.iterdir()):
            for entry in sorted(prefix.iterdir()):
                key = KEY_PREFIX + entry.name
                if KEY_RE.fullmatch(key) and entry.is_dir():
                    yield key

    def age(self, key: str) -> float:
        """Seconds since the artifact was stored (or last stored again by an idempotent put)."""
        path = self.fetch(key)
        return max(0.0, time.time() - path.stat().st_mtime)

    def purge_incomplete(self, older_than: float) -> list[str]:
        """Remove temporary folders left by puts or deletes of killed processes; return their paths."""
        temp = self.root / "tmp"
        if not temp.is_dir():
            return []
        removed = []
        now = time.time()
        for entry in sorted(temp.iterdir()):
            try:
                stale = now - entry.lstat().st_mtime >= older_than
            except FileNotFoundError:
                continue
            if stale:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(str(entry))
        return removed
