"""The registry under real concurrent processes, and processes killed at random moments."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelport.registry.registry import Registry
from modelport.stores.local import LocalStore, content_key
from modelport.types import Signature, TensorSpec

pytestmark = pytest.mark.slow  # real processes

SIGNATURE = Signature(inputs=(TensorSpec("x", "FP32", (-1, 2)),), outputs=(TensorSpec("y", "FP32", (-1,)),))

# One registering process. With mode "open-first" it opens the registry (running migrations),
# says "ready", waits for the go file and registers COUNT versions (forever when COUNT < 0),
# printing each version number; the first artifact of every process has the same content, so
# processes also race to store identical artifacts. With mode "open-at-go" it says "ready" after
# its imports and opens the registry only at the go signal, so all processes create the schema
# and the model at the same moment (every artifact then has distinct content).
WORKER = """
import os, sys, time
from pathlib import Path
from modelport.registry.registry import Registry
from modelport.stores.local import LocalStore
from modelport.types import Signature, TensorSpec

url, store, work, name, count, go, mode = sys.argv[1:]
signature = Signature(inputs=(TensorSpec("x", "FP32", (-1, 2)),), outputs=(TensorSpec("y", "FP32", (-1,)),))
registry = Registry(url, LocalStore(Path(store))) if mode == "open-first" else None
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.002)
registry = registry or Registry(url, LocalStore(Path(store)))
i = 0
while int(count) < 0 or i < int(count):
    shared = i == 0 and mode == "open-first"
    artifact = Path(work) / f"{os.getpid()}-{i}"
    (artifact / "nested").mkdir(parents=True)
    (artifact / "model.bin").write_bytes(b"shared" if shared else os.urandom(50_000))
    (artifact / "nested" / "meta.txt").write_text("first" if shared else f"{os.getpid()} {i}")
    version = registry.register(
        name, artifact, runtime="onnx", framework="onnx", signature=signature,
        tags={"pid": str(os.getpid()), "i": str(i)}, aliases=["newest"],
    )
    print(version.version, flush=True)
    i += 1
registry.close()
"""


def start_workers(
    url: str, root: Path, *, processes: int, count: int, mode: str = "open-first"
) -> list[subprocess.Popen[str]]:
    """Start registering processes; they register (or open, see WORKER) once ``root/go`` exists."""
    (root / "work").mkdir(parents=True, exist_ok=True)
    go = root / "go"
    go.unlink(missing_ok=True)
    args = [url, str(root / "store"), str(root / "work"), "shared", str(count), str(go), mode]
    return [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]


def wait_ready(workers: list[subprocess.Popen[str]]) -> None:
    for worker in workers:
        assert worker.stdout is not None
        line = worker.stdout.readline().strip()
        if line != "ready":
            _, err = worker.communicate(timeout=30)
            raise AssertionError(f"worker did not start: {line!r}\n{err}")


def register_concurrently(
    url: str, root: Path, *, processes: int = 4, count: int = 5, mode: str = "open-first"
) -> list[int]:
    """Run workers that register ``count`` versions each at once; return every version number printed."""
    workers = start_workers(url, root, processes=processes, count=count, mode=mode)
    wait_ready(workers)
    (root / "go").touch()
    numbers: list[int] = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        assert "Traceback" not in err, err
        numbers += [int(line) for line in out.split()]
    return numbers


def check_registry_consistent(registry: Registry, name: str = "shared") -> None:
    """Every version's artifact is stored and re-hashes to its key; the alias points at a version."""
    found = registry.versions(name)
    assert [v.version for v in found] == sorted({v.version for v in found})
    for version in found:
        assert version.tags.keys() == {"pid", "i"}
        assert content_key(registry.artifact_path(version)) == version.artifact
    assert registry.get(f"{name}@newest").version in {v.version for v in found}


def test_processes_registering_at_once_get_distinct_consecutive_versions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    numbers = register_concurrently(url, tmp_path, processes=4, count=5)
    assert sorted(numbers) == list(range(1, 21))
    with Registry(url, LocalStore(tmp_path / "store")) as registry:
        assert [v.version for v in registry.versions("shared")] == list(range(1, 21))
        check_registry_consistent(registry)
        shared = {v.artifact for v in registry.versions("shared") if v.tags["i"] == "0"}
        assert len(shared) == 1


def test_processes_killed_at_random_moments_leave_no_half_versions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    rng = random.Random(20240509)
    for round_no in range(4):
        workers = start_workers(url, tmp_path, processes=3, count=-1)
        if round_no == 0:  # kill during start-up: imports, engine, migrations
            time.sleep(rng.uniform(0.3, 0.9))
        else:
            wait_ready(workers)
            (tmp_path / "go").touch()
            time.sleep(rng.uniform(0.05, 0.5))
        for worker in workers:
            time.sleep(rng.uniform(0, 0.05))
            os.kill(worker.pid, signal.SIGKILL)
        for worker in workers:
            worker.communicate(timeout=30)
            assert worker.returncode == -signal.SIGKILL

    with sqlite3.connect(tmp_path / "registry.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = LocalStore(tmp_path / "store")
    with Registry(url, store) as registry:
        existing = registry.versions("shared")
        assert existing, "no registration finished in any round; the test did not exercise the registry"
        check_registry_consistent(registry)
        orphan = store.put(_folder(tmp_path / "orphan", b"put, then killed before the database write"))
        registry.gc(grace=0)
        referenced = {v.artifact for v in registry.versions("shared")}
        assert orphan not in set(store.keys())
        assert set(store.keys()) == referenced
        assert list((tmp_path / "store" / "tmp").iterdir()) == []
        fresh = registry.register(
            "shared", _folder(tmp_path / "after", b"after"), runtime="onnx", framework="onnx", signature=SIGNATURE
        )
        assert fresh.version > max(v.version for v in existing)
        assert content_key(registry.artifact_path(fresh)) == fresh.artifact


def _folder(path: Path, content: bytes) -> Path:
    path.mkdir(parents=True)
    (path / "model.bin").write_bytes(content)
    return path


def test_processes_creating_the_database_and_model_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'registry.db'}"
    numbers = register_concurrently(url, tmp_path, processes=4, count=2, mode="open-at-go")
    assert sorted(numbers) == list(range(1, 9))
