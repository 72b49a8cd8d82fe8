"""Artifact stores: the conformance battery for every store, plus LocalStore's on-disk promises."""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelport.errors import InvalidModel, NotFound
from modelport.stores.base import ArtifactStore
from modelport.stores.conformance import check_artifact_store
from modelport.stores.local import LocalStore, content_key
from modelport.stores.memory import MemoryStore


def _artifact(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.fixture(params=["local", "memory"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], ArtifactStore]]:
    counter = itertools.count()
    made: list[MemoryStore] = []

    def make() -> ArtifactStore:
        if request.param == "local":
            return LocalStore(tmp_path / f"store{next(counter)}")
        made.append(MemoryStore())
        return made[-1]

    yield make
    for store in made:
        store.close()


def test_store_passes_the_artifact_store_conformance_check(make_store: Callable[[], ArtifactStore]) -> None:
    check_artifact_store(make_store)


def test_conformance_check_catches_a_store_that_loses_nested_files(tmp_path: Path) -> None:
    class FlatStore(LocalStore):
        """A broken store: keeps only top-level files."""

        def put(self, directory: Path) -> str:
            flat = tmp_path / f"flat{time.monotonic_ns()}"
            flat.mkdir()
            for path in Path(directory).iterdir():
                if path.is_file() and not path.is_symlink():
                    (flat / path.name).write_bytes(path.read_bytes())
            return super().put(flat)

    counter = itertools.count()
    with pytest.raises(AssertionError, match="FlatStore fails check_roundtrip"):
        check_artifact_store(lambda: FlatStore(tmp_path / f"s{next(counter)}"))


def test_key_is_the_sha256_of_the_sorted_file_manifest(tmp_path: Path) -> None:
    source = _artifact(tmp_path / "src", {"b.txt": b"bee", "a/c.bin": b"\x00\x01"})
    manifest = "".join(
        f"{hashlib.sha256(data).hexdigest()} {rel}\n"
        for rel, data in sorted({"a/c.bin": b"\x00\x01", "b.txt": b"bee"}.items())
    )
    expected = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    assert content_key(source) == expected
    assert LocalStore(tmp_path / "store").put(source) == expected


def test_local_store_layout_is_content_addressed_and_read_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    source = _artifact(tmp_path / "src", {"model.onnx": b"onnx bytes", "sub/tool.sh": b"#!/bin/sh\n"})
    (source / "sub/tool.sh").chmod(0o755)
    key = store.put(source)
    hexdigest = key.removeprefix("sha256:")
    stored = store.fetch(key)
    assert stored == tmp_path / "store" / "sha256" / hexdigest[:2] / hexdigest
    assert stat.S_IMODE((stored / "model.onnx").stat().st_mode) == 0o444
    assert stat.S_IMODE((stored / "sub/tool.sh").stat().st_mode) == 0o555
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


def test_local_store_refuses_symlinked_directories_and_dangling_links(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    linked = _artifact(tmp_path / "linked", {"sub/a.txt": b"a"})
    (linked / "again").symlink_to(linked / "sub")
    with pytest.raises(InvalidModel, match="symlink to a directory"):
        store.put(linked)
    dangling = _artifact(tmp_path / "dangling", {"a.txt": b"a"})
    (dangling / "gone.txt").symlink_to(dangling / "missing.txt")
    with pytest.raises(InvalidModel, match="outside the artifact directory"):
        store.put(dangling)


def test_local_store_put_of_stored_content_refreshes_its_age(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    source = _artifact(tmp_path / "src", {"m.bin": b"m"})
    key = store.put(source)
    old = time.time() - 7200
    os.utime(store.fetch(key), (old, old))
    assert store.age(key) > 7000
    assert store.put(source) == key
    assert store.age(key) < 60


def test_local_store_age_of_unknown_key_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        LocalStore(tmp_path / "store").age("sha256:" + "1" * 64)


def test_purge_incomplete_removes_only_stale_leftovers(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    key = store.put(_artifact(tmp_path / "src", {"m.bin": b"m"}))
    stale = tmp_path / "store" / "tmp" / "put-killed"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = tmp_path / "store" / "tmp" / "put-in-flight"
    fresh.mkdir()
    assert store.purge_incomplete(3600) == [str(stale)]
    assert fresh.exists()
    assert store.exists(key)


_PUT_SAME_CONTENT = """
import sys
from pathlib import Path
from modelport.stores.local import LocalStore
print(LocalStore(Path(sys.argv[1])).put(Path(sys.argv[2])))
"""


@pytest.mark.slow
def test_processes_putting_the_same_content_at_once_all_get_one_key(tmp_path: Path) -> None:
    source = _artifact(tmp_path / "src", {f"part{i}.bin": os.urandom(200_000) for i in range(5)})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PUT_SAME_CONTENT, str(tmp_path / "store"), str(source)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0], [err for _, err in results]
    keys = {out.strip() for out, _ in results}
    assert keys == {content_key(source)}
    store = LocalStore(tmp_path / "store")
    assert list(store.keys()) == list(keys)
    assert content_key(store.fetch(keys.pop())) == content_key(source)
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


def test_memory_store_close_removes_fetched_copies(tmp_path: Path) -> None:
    store = MemoryStore()
    key = store.put(_artifact(tmp_path / "src", {"m.bin": b"m"}))
    fetched = store.fetch(key)
    assert (fetched / "m.bin").read_bytes() == b"m"
    store.close()
    assert not fetched.exists()
    assert (store.fetch(key) / "m.bin").read_bytes() == b"m"
    store.close()
