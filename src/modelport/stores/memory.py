"""The tiny fake of the artifact store seam: artifacts held in memory.

Same keys as every other store (:func:`~modelport.stores.local.content_key`); ``fetch`` writes
the files into a private temporary folder, removed by :meth:`MemoryStore.close` or when the
store is garbage-collected.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from modelport.errors import NotFound
from modelport.stores.local import KEY_RE, artifact_files, check_key, manifest_key


class MemoryStore:
    def __init__(self) -> None:
        self._artifacts: dict[str, dict[str, bytes]] = {}
        self._stored_at: dict[str, float] = {}
        self._folder: Path | None = None
        self._cleanup: Callable[[], object] | None = None

    def put(self, directory: Path) -> str:
        files = {rel: path.read_bytes() for rel, path in artifact_files(directory)}
        key = manifest_key((rel, _sha256(data)) for rel, data in files.items())
        self._artifacts.setdefault(key, files)
        self._stored_at[key] = time.time()
        return key

    def fetch(self, key: str) -> Path:
        hexdigest = check_key(key)
        files = self._artifacts.get(key)
        if files is None:
            raise NotFound(f"artifact {key} not found in the memory store")
        target = self._root() / hexdigest
        if not target.is_dir():
            staging = Path(tempfile.mkdtemp(dir=self._root()))
            for rel, data in files.items():
                path = staging / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                path.chmod(0o444)
            staging.rename(target)
        return target

    def exists(self, key: str) -> bool:
        return key in self._artifacts

    def delete(self, key: str) -> None:
        self._artifacts.pop(key, None)
        self._stored_at.pop(key, None)
        if self._folder is not None and KEY_RE.fullmatch(key):
            shutil.rmtree(self._folder / key.removeprefix("sha256:"), ignore_errors=True)

    def keys(self) -> Iterator[str]:
        return iter(sorted(self._artifacts))

    def age(self, key: str) -> float:
        if key not in self._stored_at:
            raise NotFound(f"artifact {key} not found in the memory store")
        return max(0.0, time.time() - self._stored_at[key])

    def purge_incomplete(self, older_than: float) -> list[str]:
        """Nothing is ever half-stored in memory: puts are one dict assignment."""
        return []

    def close(self) -> None:
        """Remove the folder that fetched artifacts were written to."""
        if self._cleanup is not None:
            self._cleanup()
        self._folder = self._cleanup = None

    def _root(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="modelport-memory-store-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
        return self._folder


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
