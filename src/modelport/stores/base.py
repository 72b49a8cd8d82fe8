"""The artifact store seam: content-addressed directories.

An artifact is a directory of files. Its key is ``sha256:<hex>`` of a manifest listing each
file's relative path and SHA-256, so equal content gets the same key and a key never changes
meaning. Keys are made by the store, never taken from a client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class ArtifactStore(Protocol):
    def put(self, directory: Path) -> str:
        """Store a directory's files atomically and return its key (idempotent)."""
        ...

    def fetch(self, key: str) -> Path:
        """A local, read-only directory with the artifact's files. ``NotFound`` if absent."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove an artifact; deleting an absent key is not an error."""
        ...

    def keys(self) -> Iterator[str]: ...


@runtime_checkable
class CollectableStore(ArtifactStore, Protocol):
    """A store :meth:`Registry.gc` can clean: it knows each artifact's age."""

    def age(self, key: str) -> float:
        """Seconds since the artifact was (last) stored; ``NotFound`` if absent."""
        ...

    def purge_incomplete(self, older_than: float) -> list[str]:
        """Remove leftovers of interrupted puts older than ``older_than`` seconds; return where they were."""
        ...
