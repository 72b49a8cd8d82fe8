"""The conformance check every artifact store passes, built-in or a user's.

``check_artifact_store(lambda: MyStore(...))`` runs a battery of checks, each on a fresh store
from the factory, and raises ``AssertionError`` naming the first broken promise.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from modelport.errors import InvalidModel, NotFound
from modelport.stores.base import ArtifactStore, CollectableStore
from modelport.stores.local import KEY_RE, content_key

StoreFactory = Callable[[], ArtifactStore]


def _sample_files() -> dict[str, bytes]:
    """Binary and text files, an empty one, and files two and four folders deep."""
    return {
        "model.onnx": bytes(range(256)) * 64 + b"\x00\r\n\x00",
        "meta.json": b'{"name": "iris"}\n',
        "empty.txt": b"",
        "nested/weights.bin": bytes((i * 131 + 7) % 256 for i in range(4096)),
        "nested/deeper/still/config.txt": "ünïcode ✓\n".encode(),
    }


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _read(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _raises(error: type[Exception], action: Callable[[], object], what: str) -> None:
    try:
        action()
    except error:
        return
    except Exception as exc:
        raise AssertionError(f"{what}: expected {error.__name__}, got {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"{what}: expected {error.__name__}, nothing was raised")


def check_roundtrip(store: ArtifactStore, work: Path) -> None:
    files = _sample_files()
    source = _write(work / "src", files)
    key = store.put(source)
    _check(isinstance(key, str) and KEY_RE.fullmatch(key) is not None, f"key {key!r} is not sha256:<64 hex>")
    _check(key == content_key(source), f"key {key} is not the content key {content_key(source)}")
    _check(store.exists(key), "exists() is False right after put()")
    fetched = store.fetch(key)
    _check(isinstance(fetched, Path) and fetched.is_dir(), f"fetch() returned {fetched!r}, not a directory")
    _check(_read(fetched) == files, "fetched files differ from the stored files (names or bytes)")
    (source / "model.onnx").write_bytes(b"changed after put")
    _check(_read(store.fetch(key)) == files, "changing the source after put() changed the stored artifact")


def check_idempotent_put(store: ArtifactStore, work: Path) -> None:
    files = _sample_files()
    first = store.put(_write(work / "a", files))
    second = store.put(_write(work / "b", files))
    _check(first == second, f"the same content stored twice got two keys: {first}, {second}")
    _check(list(store.keys()).count(first) == 1, "keys() lists one artifact twice")
    _check(_read(store.fetch(first)) == files, "a second put of the same content damaged the artifact")


def check_different_content(store: ArtifactStore, work: Path) -> None:
    base = store.put(_write(work / "a", {"x.bin": b"one"}))
    other_bytes = store.put(_write(work / "b", {"x.bin": b"two"}))
    other_name = store.put(_write(work / "c", {"y.bin": b"one"}))
    other_place = store.put(_write(work / "d", {"sub/x.bin": b"one"}))
    keys = {base, other_bytes, other_name, other_place}
    _check(len(keys) == 4, "different content (bytes, file name or folder) got the same key")
    _check(_read(store.fetch(other_place)) == {"sub/x.bin": b"one"}, "nested file came back wrong")


def check_unknown_keys(store: ArtifactStore, work: Path) -> None:
    unknown = "sha256:" + "0" * 64
    _raises(NotFound, lambda: store.fetch(unknown), "fetch() of an unknown key")
    _check(not store.exists(unknown), "exists() is True for an unknown key")
    for bad in ("../../etc", "sha256:../../etc/passwd", "md5:abc", "sha256:" + "A" * 64, ""):
        _raises(NotFound, partial(store.fetch, bad), f"fetch({bad!r}) of a malformed key")
        _check(not store.exists(bad), f"exists({bad!r}) is True for a malformed key")


def check_delete(store: ArtifactStore, work: Path) -> None:
    keep = store.put(_write(work / "keep", {"k.txt": b"keep"}))
    key = store.put(_write(work / "gone", {"g.txt": b"gone"}))
    store.delete(key)
    _check(not store.exists(key), "exists() is True after delete()")
    _raises(NotFound, lambda: store.fetch(key), "fetch() after delete()")
    _check(key not in set(store.keys()), "keys() lists a deleted artifact")
    store.delete(key)
    store.delete("sha256:" + "f" * 64)
    _check(_read(store.fetch(keep)) == {"k.txt": b"keep"}, "delete() of one artifact damaged another")
    again = store.put(_write(work / "again", {"g.txt": b"gone"}))
    _check(again == key and store.exists(key), "content cannot be stored again after delete()")


def check_keys(store: ArtifactStore, work: Path) -> None:
    _check(list(store.keys()) == [], "a new store lists keys")
    stored = {store.put(_write(work / f"a{i}", {"n.txt": str(i).encode()})) for i in range(3)}
    _check(set(store.keys()) == stored, "keys() does not list exactly the stored artifacts")


def check_refuses_unsafe_input(store: ArtifactStore, work: Path) -> None:
    secret = work / "secret.txt"
    secret.write_bytes(b"not part of the artifact")
    escaping = _write(work / "escaping", {"ok.txt": b"ok"})
    (escaping / "link.txt").symlink_to(secret)
    _raises(InvalidModel, lambda: store.put(escaping), "put() of a folder with a symlink leading outside it")
    fifo = _write(work / "fifo", {"ok.txt": b"ok"})
    os.mkfifo(fifo / "pipe")
    _raises(InvalidModel, lambda: store.put(fifo), "put() of a folder with a FIFO")
    _raises(InvalidModel, lambda: store.put(secret), "put() of a file instead of a folder")
    (work / "empty").mkdir()
    _raises(InvalidModel, lambda: store.put(work / "empty"), "put() of an empty folder")
    _check(list(store.keys()) == [], "a refused put() left an artifact behind")
    inside = _write(work / "inside", {"real.txt": b"real"})
    (inside / "alias.txt").symlink_to(inside / "real.txt")
    key = store.put(inside)
    _check(_read(store.fetch(key)) == {"alias.txt": b"real", "real.txt": b"real"}, "inner symlink not stored as file")


def check_collectable(store: ArtifactStore, work: Path) -> None:
    """What ``Registry.gc`` relies on, for stores that offer it (``age``, ``purge_incomplete``)."""
    if not isinstance(store, CollectableStore):
        _check(
            not hasattr(store, "age") and not hasattr(store, "purge_incomplete"),
            "a store with age() or purge_incomplete() must have both (CollectableStore)",
        )
        return
    key = store.put(_write(work / "a", {"a.txt": b"a"}))
    age = store.age(key)
    _check(0 <= age < 60, f"age() of an artifact stored now is {age!r}, not a few seconds")
    _raises(NotFound, lambda: store.age("sha256:" + "0" * 64), "age() of an unknown key")
    removed = store.purge_incomplete(older_than=3600.0)
    _check(isinstance(removed, list), "purge_incomplete() must return the list of what it removed")
    _check(store.exists(key) and _read(store.fetch(key)) == {"a.txt": b"a"}, "purge_incomplete() touched an artifact")


CHECKS: tuple[Callable[[ArtifactStore, Path], None], ...] = (
    check_roundtrip,
    check_idempotent_put,
    check_different_content,
    check_unknown_keys,
    check_delete,
    check_keys,
    check_refuses_unsafe_input,
    check_collectable,
)


def check_artifact_store(make_store: StoreFactory) -> None:
    """Run every check on a fresh store from ``make_store``; raise AssertionError on the first failure."""
    for check in CHECKS:
        store = make_store()
        _check(isinstance(store, ArtifactStore), f"{store!r} does not implement the ArtifactStore protocol")
        with tempfile.TemporaryDirectory(prefix="modelport-store-check-") as work:
            try:
                check(store, Path(work))
            except AssertionError as exc:
                raise AssertionError(f"{type(store).__name__} fails {check.__name__}: {exc}") from None
