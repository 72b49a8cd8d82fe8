"""Payload capture: sampling, the line format, rotation, redaction, a bounded queue, write errors, close."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from modelport.observability.capture import REDACTED, Capture
from modelport.types import Signature, TensorSpec

NOON = 1_796_040_000.0  # 2026-11-30T12:00:00Z
X = {"input": np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]], dtype=np.float32)}
Y = {"label": np.array(["setosa", "versicolor"], dtype=object), "probabilities": np.array([[0.9, 0.1], [0.2, 0.8]])}


class Draws:
    """Exact draws, in order; fails the test when more are taken than given."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.taken = 0

    def random(self) -> float:
        assert self.taken < len(self.values), "more draws than the test gave"
        self.taken += 1
        return self.values[self.taken - 1]


class Ticks:
    """A clock that moves one second at every reading, from noon."""

    def __init__(self, start: float = NOON) -> None:
        self.now = start - 1

    def __call__(self) -> float:
        self.now += 1
        return self.now


class Gate:
    """A writer hook that holds the writer until the test opens the gate."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        assert self.open.wait(30), "the test never opened the gate"


class Steps:
    """A writer hook that holds the writer before each sample: write ``n`` starts after ``go(n)``."""

    def __init__(self, count: int) -> None:
        self.entered = [threading.Event() for _ in range(count)]
        self.opened = [threading.Event() for _ in range(count)]
        self.calls = 0

    def __call__(self) -> None:
        n = self.calls
        self.calls += 1
        self.entered[n].set()
        assert self.opened[n].wait(30), f"the test never let write {n} start"

    def go(self, n: int) -> None:
        self.opened[n].set()

    def reached(self, n: int) -> None:
        assert self.entered[n].wait(30), f"the writer never came to write {n}"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "capture"


@pytest.fixture
def closing() -> Iterator[list[Capture]]:
    made: list[Capture] = []
    yield made
    for capture in made:
        capture.close()


def lines(folder: Path) -> list[dict[str, Any]]:
    """Every line of every capture file in ``folder``, oldest file first."""
    return [orjson.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_bytes().splitlines()]


def test_a_request_is_sampled_when_its_draw_is_below_the_rate(root: Path, closing: list[Capture]) -> None:
    draws = Draws(0.049, 0.05, 0.5, 0.2, 0.3)
    capture = Capture(root, rate=0.05, chance=draws)
    closing.append(capture)
    for request_id in ("a", "b", "c"):  # the server's rate: 0.049 < 0.05 only
        capture.offer("iris", 1, None, request_id, X, Y)
    capture.offer("iris", 2, 0.25, "d", X, Y)  # a version's own rate wins: 0.2 < 0.25
    capture.offer("iris", 2, 0.25, "e", X, Y)  # 0.3 >= 0.25
    capture.offer("iris", 3, 0.0, "f", X, Y)  # its own rate 0: off, no draw
    capture.offer("iris", 3, 1.0, "g", X, Y)  # rate 1: every request, no draw
    capture.close()
    assert draws.taken == 5
    assert [line["request_id"] for line in lines(root / "iris" / "1")] == ["a"]
    assert [line["request_id"] for line in lines(root / "iris" / "2")] == ["d"]
    assert [line["request_id"] for line in lines(root / "iris" / "3")] == ["g"]
    assert capture.counts() == {("iris", 1): (1, 0), ("iris", 2): (1, 0), ("iris", 3): (1, 0)}


def test_capture_is_off_at_rate_zero_and_writes_nothing(root: Path) -> None:
    capture = Capture(root, rate=0.0, chance=Draws())
    for _ in range(100):
        capture.offer("iris", 1, None, None, X, Y)
    capture.close()
    assert capture.counts() == {}
    assert not root.exists()


def test_the_writer_thread_starts_with_the_first_sample_not_before(root: Path) -> None:
    """The app makes its capture when it is built: one that samples nothing runs no thread."""

    def writers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == f"modelport-capture {root}"]

    capture = Capture(root, rate=0.5, chance=Draws(0.9, 0.1))
    capture.offer("iris", 1, None, "a", X, Y)  # 0.9: not sampled
    assert writers() == []
    capture.offer("iris", 1, None, "b", X, Y)  # 0.1: sampled, written by the thread it starts
    assert len(writers()) == 1
    capture.close()
    assert writers() == []
    assert [line["request_id"] for line in lines(root / "iris" / "1")] == ["b"]
    unused = Capture(root, rate=1.0)
    unused.close()  # nothing to stop
    unused.offer("iris", 1, None, "late", X, Y)  # after close: dropped, counted, no thread
    assert writers() == []
    assert unused.counts() == {("iris", 1): (0, 1)}


def test_each_sample_is_one_json_line_in_the_agreed_format(root: Path) -> None:
    capture = Capture(root, rate=1.0, clock=lambda: NOON + 0.25)
    inputs = {
        "input": np.array([[1.5, np.nan], [3.0, 4.0]]),
        "text": np.array(["héllo", "x"], dtype=object),
        "raw": np.array([b"plain", b"\xff\x00"], dtype=object),
        "counts": np.arange(6, dtype=np.int64).reshape(3, 2)[:, 1],  # not contiguous
        "half": np.array([0.5], dtype=np.float16),
        "flags": np.array([True, False]),
    }
    capture.offer("iris", 3, None, "req-1", inputs, Y)
    capture.offer("iris", 3, None, None, X, {})
    capture.close()
    folder = root / "iris" / "3"
    assert [p.name for p in folder.iterdir()] == [f"20261130T120000Z-{os.getpid()}.jsonl"]
    raw = (folder / f"20261130T120000Z-{os.getpid()}.jsonl").read_bytes()
    assert raw.count(b"\n") == 2
    assert raw.endswith(b"\n")
    first, second = (orjson.loads(line) for line in raw.splitlines())
    assert first == {
        "time": "2026-11-30T12:00:00.250000+00:00",
        "model": "iris",
        "version": 3,
        "request_id": "req-1",
        "inputs": {
            "input": [[1.5, None], [3.0, 4.0]],
            "text": ["héllo", "x"],
            "raw": ["plain", {"b64": "/wA="}],
            "counts": [1, 3, 5],
            "half": [0.5],
            "flags": [True, False],
        },
        "outputs": {"label": ["setosa", "versicolor"], "probabilities": [[0.9, 0.1], [0.2, 0.8]]},
    }
    assert list(first) == ["time", "model", "version", "request_id", "inputs", "outputs"]
    assert second["request_id"] is None
    assert second["inputs"]["input"] == [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]  # float32, shortest text
    assert second["outputs"] == {}
    assert folder.stat().st_mode & 0o777 == 0o700  # requests may hold personal data: the owner's alone
    assert next(folder.iterdir()).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("umask", [0o022, 0o277], ids=["umask022", "umask277"])
def test_every_folder_capture_makes_is_the_owners_alone_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    home = tmp_path / "home"
    home.mkdir()
    previous = os.umask(umask)
    try:
        capture = Capture(home / "capture", rate=1.0)
        capture.offer("iris", 1, None, "r", X, Y)
        capture.close()
    finally:
        os.umask(previous)
    assert capture.counts() == {("iris", 1): (1, 0)}
    levels = [home / "capture", home / "capture" / "iris", home / "capture" / "iris" / "1"]
    assert [oct(level.stat().st_mode & 0o777) for level in levels] == ["0o700"] * 3  # model names included
    assert [oct(path.stat().st_mode & 0o777) for path in levels[-1].iterdir()] == ["0o600"]


def test_an_existing_capture_root_open_to_others_is_reported_once_and_left_as_it_is(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root.mkdir()
    root.chmod(0o755)
    capture = Capture(root, rate=1.0)
    with caplog.at_level(logging.WARNING, logger="modelport"):
        capture.offer("iris", 1, None, "a", X, Y)
        capture.offer("iris", 2, None, "b", X, Y)
        capture.close()
    assert capture.counts() == {("iris", 1): (1, 0), ("iris", 2): (1, 0)}
    assert caplog.text.count(f"{root} may be opened by other users of this machine (mode 755)") == 1
    assert "chmod 700 it" in caplog.text
    assert root.stat().st_mode & 0o777 == 0o755
    assert (root / "iris").stat().st_mode & 0o777 == 0o700


def test_files_rotate_past_the_size_limit_and_only_the_newest_are_kept(root: Path) -> None:
    folder = root / "iris" / "1"
    folder.mkdir(parents=True)
    older = folder / "20261129T000000Z-1.jsonl"  # a previous run's file: the oldest
    older.write_text("{}\n")
    probe = Capture(root / "probe", rate=1.0, clock=lambda: NOON)
    probe.offer("iris", 1, None, "r00", X, Y)
    probe.close()
    one = (root / "probe" / "iris" / "1").joinpath(f"20261130T120000Z-{os.getpid()}.jsonl").stat().st_size
    capture = Capture(root, rate=1.0, clock=Ticks(), max_file_bytes=2 * one, max_files=3)
    for n in range(9):
        capture.offer("iris", 1, None, f"r{n:02d}", X, Y)
    capture.close()
    assert capture.counts() == {("iris", 1): (9, 0)}
    kept = sorted(p.name for p in folder.iterdir())
    assert len(kept) == 3
    assert older.name not in kept
    assert all(path.stat().st_size <= 2 * one for path in folder.iterdir())
    assert [line["request_id"] for line in lines(folder)] == ["r04", "r05", "r06", "r07", "r08"]


def test_a_second_file_in_the_same_second_gets_a_serial_and_sorts_after_the_first(root: Path) -> None:
    capture = Capture(root, rate=1.0, clock=lambda: NOON, max_file_bytes=1, max_files=2)
    for n in range(3):
        capture.offer("iris", 1, None, f"r{n}", X, Y)
    capture.close()
    pid = os.getpid()
    folder = root / "iris" / "1"
    assert sorted(p.name for p in folder.iterdir()) == [
        f"20261130T120000Z-{pid}-1.jsonl",
        f"20261130T120000Z-{pid}-2.jsonl",
    ]
    assert [
        orjson.loads((folder / f"20261130T120000Z-{pid}-{n}.jsonl").read_bytes())["request_id"] for n in (1, 2)
    ] == [
        "r1",
        "r2",
    ]


def test_redacted_names_are_written_as_redacted_whole_tensors(root: Path) -> None:
    signature = Signature(
        inputs=(
            TensorSpec("features", "FP64", (-1, 3), feature_names=("age", "ssn", "income")),
            TensorSpec("other", "FP64", (-1, 2), feature_names=("a", "b")),
            TensorSpec("email", "BYTES", (-1,)),
        ),
        outputs=(TensorSpec("score", "FP64", (-1,)), TensorSpec("label", "BYTES", (-1,))),
    )
    capture = Capture(root, rate=1.0, redact={"ssn", "email", "score"})
    inputs = {
        "features": np.array([[40.0, 123456789.0, 5e4]]),
        "other": np.array([[1.0, 2.0]]),
        "email": np.array(["a@b.c"], dtype=object),
    }
    outputs = {"score": np.array([0.7]), "label": np.array(["yes"], dtype=object)}
    capture.offer("loan", 1, None, "r1", inputs, outputs, signature)
    capture.offer("loan", 1, None, "r2", {"ssn": np.array([1.0])}, {})  # no signature: names still count
    capture.close()
    first, second = lines(root / "loan" / "1")
    assert first["inputs"] == {"features": REDACTED, "other": [[1.0, 2.0]], "email": REDACTED}
    assert first["outputs"] == {"score": REDACTED, "label": ["yes"]}
    assert second["inputs"] == {"ssn": "[redacted]"}
    text = b"".join(p.read_bytes() for p in (root / "loan" / "1").iterdir())
    for secret in (b"123456789", b"a@b.c", b"0.7"):
        assert secret not in text


def test_a_full_queue_drops_and_counts_without_blocking_the_caller(root: Path) -> None:
    gate = Gate()
    capture = Capture(root, rate=1.0, queue_size=2, before_write=gate)
    try:
        capture.offer("iris", 1, None, "held", X, Y)  # the writer takes it and waits at the gate
        assert gate.entered.wait(30)
        offered = threading.Event()

        def offer_many() -> None:
            for n in range(50):
                capture.offer("iris", 1, None, f"r{n}", X, Y)
            offered.set()

        caller = threading.Thread(target=offer_many, daemon=True)
        caller.start()
        caller.join(5)  # generous: fifty offers take microseconds; a blocking put would never return
        assert offered.is_set(), "offer blocked while the writer was stuck"
        assert capture.counts() == {("iris", 1): (0, 48)}  # two fit in the queue
    finally:
        gate.open.set()
        capture.close()
    assert capture.counts() == {("iris", 1): (3, 48)}
    assert [line["request_id"] for line in lines(root / "iris" / "1")] == ["held", "r0", "r1"]


def test_a_write_error_is_counted_and_logged_once_per_version_and_never_raised(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root.mkdir(mode=0o700)
    (root / "iris").mkdir()
    (root / "iris" / "1").write_text("a file where the version's folder should be")
    (root / "iris" / "2").write_text("likewise")
    capture = Capture(root, rate=1.0)
    with caplog.at_level(logging.WARNING, logger="modelport"):
        for n in range(3):
            capture.offer("iris", 1, None, f"a{n}", X, Y)
            capture.offer("iris", 2, None, f"b{n}", X, Y)
        capture.close()
    assert capture.counts() == {("iris", 1): (0, 3), ("iris", 2): (0, 3)}
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("modelport")]
    assert len(warnings) == 2, warnings
    assert "cannot write a sample of iris@1" in warnings[0]
    assert "cannot write a sample of iris@2" in warnings[1]


def test_writing_resumes_once_the_error_is_gone(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    (root / "iris").mkdir(parents=True)
    blocker = root / "iris" / "1"
    blocker.write_text("in the way")
    steps = Steps(3)
    capture = Capture(root, rate=1.0, before_write=steps)
    with caplog.at_level(logging.WARNING, logger="modelport"):
        for request_id in ("lost", "kept", "also kept"):
            capture.offer("iris", 1, None, request_id, X, Y)
        steps.go(0)
        steps.reached(1)  # the first write is over: it failed, the folder being a file
        assert capture.counts() == {("iris", 1): (0, 1)}
        blocker.unlink()
        steps.go(1)
        steps.go(2)
        capture.close()
    assert capture.counts() == {("iris", 1): (2, 1)}
    assert [line["request_id"] for line in lines(root / "iris" / "1")] == ["kept", "also kept"]
    assert caplog.text.count("cannot write a sample of iris@1") == 1


def test_a_sample_that_cannot_be_written_as_json_is_dropped_not_fatal(root: Path) -> None:
    capture = Capture(root, rate=1.0)
    capture.offer("iris", 1, None, "bad", {"input": np.array([object()], dtype=object)}, {})
    capture.offer("iris", 1, None, "good", X, Y)
    capture.close()
    assert capture.counts() == {("iris", 1): (1, 1)}
    assert [line["request_id"] for line in lines(root / "iris" / "1")] == ["good"]


def test_a_name_that_is_not_a_model_name_never_becomes_a_path(root: Path) -> None:
    capture = Capture(root, rate=1.0)
    capture.offer("../escape", 1, None, "r", X, Y)
    capture.close()
    assert capture.counts() == {("../escape", 1): (0, 1)}
    assert not (root.parent / "escape").exists()


def test_close_writes_everything_queued_and_is_safe_twice(root: Path) -> None:
    gate = Gate()
    capture = Capture(root, rate=1.0, before_write=gate)
    for n in range(20):
        capture.offer("iris", 1, None, f"r{n}", X, Y)
    assert gate.entered.wait(30)
    closer = threading.Thread(target=capture.close)
    closer.start()  # close waits for the queue, held at the gate
    gate.open.set()
    closer.join(30)
    assert not closer.is_alive()
    assert capture.counts() == {("iris", 1): (20, 0)}
    assert len(lines(root / "iris" / "1")) == 20
    capture.close()
    capture.offer("iris", 1, None, "late", X, Y)  # after close: dropped, counted, never raised
    assert capture.counts() == {("iris", 1): (20, 1)}


def test_close_gives_up_on_a_stuck_writer_within_its_timeout(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    gate = Gate()
    capture = Capture(root, rate=1.0, queue_size=1, before_write=gate)
    capture.offer("iris", 1, None, "held", X, Y)
    assert gate.entered.wait(30)
    capture.offer("iris", 1, None, "queued", X, Y)
    (writer,) = (t for t in threading.enumerate() if t.name == f"modelport-capture {root}")
    try:
        with caplog.at_level(logging.WARNING, logger="modelport"):
            capture.close(timeout=0.05)
        assert "did not finish within 0.05s" in caplog.text
    finally:
        gate.open.set()
    writer.join(30)  # once free, the writer ends by itself: no thread left behind
    assert not writer.is_alive()
    assert capture.counts() == {("iris", 1): (2, 0)}


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), True])
def test_the_server_rate_must_be_a_share(root: Path, rate: float) -> None:
    with pytest.raises(ValueError, match="from 0 to 1"):
        Capture(root, rate=rate)
