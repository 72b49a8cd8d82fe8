"""Artifact stores by location: a local folder, ``file://`` URLs, ``s3://`` (S3 and S3-compatible
stores, with the ``s3`` extra), and installed store plugins.

A package adds a store with an entry point in the ``modelport.stores`` group, named by the URL
scheme it serves; the class is made with ``cls.from_url(url)`` when it has that method, else
``cls(url)``::

    [project.entry-points."modelport.stores"]
    mystore = "my_package.store:MyStore"      # MODELPORT_ARTIFACTS=mystore://bucket/prefix

Installing the package is what trusts its code. :func:`modelport.testing.check_artifact_store`
checks a store against the seam's promises (and the garbage collection ones, when it has them).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from urllib.parse import unquote, urlsplit

from modelport.errors import InvalidSetting
from modelport.stores.base import ArtifactStore
from modelport.stores.local import LocalStore

__all__ = ["ENTRY_POINTS", "ArtifactStore", "open_store", "store_schemes"]

ENTRY_POINTS = "modelport.stores"
VARIABLE = "MODELPORT_ARTIFACTS"


def store_schemes() -> dict[str, EntryPoint]:
    """The URL schemes of installed store plugins -> their entry point."""
    return {point.name: point for point in entry_points(group=ENTRY_POINTS) if point.name != "file"}


def open_store(location: str, *, cache: Path | None = None, cache_bytes: int | None = None) -> ArtifactStore:
    """The store at ``location``: a folder path or ``file://`` URL (the local store), an ``s3://``
    URL (:class:`~modelport.stores.s3.S3Store`, fetching into the folder ``cache`` and keeping it
    under ``cache_bytes``), or a URL whose scheme an installed plugin serves; :class:`InvalidSetting`
    naming the choices otherwise."""
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if not scheme or len(scheme) == 1:  # a path (a Windows drive letter is no scheme)
        return LocalStore(Path(location))
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidSetting(f"{VARIABLE}={location!r}: a file:// URL names a local folder, file:///path")
        return LocalStore(Path(unquote(parts.path)))
    if scheme == "s3":
        from modelport.stores.s3 import DEFAULT_CACHE_BYTES, S3Store

        if cache is None:
            raise InvalidSetting(f"{VARIABLE}={location!r}: an s3:// store needs a local cache folder")
        return S3Store.from_url(location, cache=cache, cache_bytes=cache_bytes or DEFAULT_CACHE_BYTES)
    plugins = store_schemes()
    point = plugins.get(scheme)
    if point is None:
        known = ", ".join(["a folder path", "file://", "s3://", *(f"{s}://" for s in sorted(plugins))])
        why = f"no installed store serves {scheme}:// URLs"
        raise InvalidSetting(f"{VARIABLE}={location!r}: {why}; give {known}")
    target = point.value
    try:
        cls = point.load()
        store = cls.from_url(location) if hasattr(cls, "from_url") else cls(location)
    except InvalidSetting:
        raise
    except Exception as exc:
        raise InvalidSetting(f"{VARIABLE}={location!r}: the {scheme} store ({target}) failed to open: {exc}") from None
    if not isinstance(store, ArtifactStore):
        raise InvalidSetting(f"{VARIABLE}={location!r}: {target} is not a modelport artifact store")
    return store
