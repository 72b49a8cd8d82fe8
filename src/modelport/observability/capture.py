"""Payload capture: a sampled share of answered requests, written as JSON lines beside the server.

The server calls :meth:`Capture.offer` on the event loop for every answered request. Offering
costs one random draw when the request is not sampled; a sampled one is put on a bounded queue
without waiting (a full queue drops it, counted). One background thread writes each sample as one
line to ``<root>/<model>/<version>/<UTC time>-<pid>.jsonl``::

    {"time": "2026-11-30T12:00:00.123456+00:00", "model": "iris", "version": 3, "request_id": "r-1",
     "inputs": {"input": [[5.1, 3.5, 1.4, 0.2]]}, "outputs": {"label": ["setosa"]}}

Arrays are nested lists, rows first (NaN as ``null``); text as strings; bytes as text when they are
UTF-8, else ``{"b64": "<base64>"}``. A file past ``max_file_bytes`` is closed and the next line
starts a new one; past ``max_files`` files in a version's folder the oldest go. Every folder
capture makes (the root included) is mode 0700 and every file 0600, whatever the umask. Whatever
goes wrong while writing (a full disk, a folder that cannot be made) drops the sample, counted,
and is logged once per version: it never reaches a request.

Redaction: every tensor named in ``redact`` (an input or output name), and every tensor whose
signature names columns (``feature_names`` of a 2-D input) of which one is in ``redact``, is
written as the string ``"[redacted]"`` instead of its values: the whole tensor, not the column.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import queue
import random
import re
import stat
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import orjson

from modelport.reference import NAME_PATTERN

if TYPE_CHECKING:
    from modelport.types import Signature

log = logging.getLogger(__name__)

MIB = 1024 * 1024
REDACTED = "[redacted]"
SUFFIX = ".jsonl"
_NAME = re.compile(NAME_PATTERN)
_STOP = object()  # put on the queue by close(): everything before it is written, then the writer ends
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE

# One queued sample: (time, model, version, request id, inputs, outputs, signature).
_Sample = tuple[float, str, int, "str | None", Mapping[str, Any], Mapping[str, Any], "Signature | None"]


def _default(obj: Any) -> Any:
    """What orjson cannot write itself: object, text, float16 and non-contiguous arrays (as nested
    lists), bytes (text when UTF-8, else ``{"b64": ...}``) and NumPy scalars."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, bytes):
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON")


def line_of(sample: _Sample, redact: frozenset[str]) -> bytes:
    """The JSON line of one sample, newline included."""
    moment, model, version, request_id, inputs, outputs, signature = sample
    return orjson.dumps(
        {
            "time": datetime.fromtimestamp(moment, UTC).isoformat(timespec="microseconds"),
            "model": model,
            "version": version,
            "request_id": request_id,
            "inputs": _redacted(inputs, redact, signature.input if signature is not None else None),
            "outputs": _redacted(outputs, redact, signature.output if signature is not None else None),
        },
        default=_default,
        option=_OPTIONS,
    )


def _redacted(
    tensors: Mapping[str, Any], redact: frozenset[str], spec_of: Callable[[str], Any] | None
) -> dict[str, Any]:
    if not redact:
        return dict(tensors)
    result: dict[str, Any] = {}
    for name, value in tensors.items():
        spec = spec_of(name) if spec_of is not None else None
        columns = spec.feature_names if spec is not None else None
        hidden = name in redact or (columns is not None and not redact.isdisjoint(columns))
        result[name] = REDACTED if hidden else value
    return result


def file_name(moment: float, pid: int, serial: int = 0) -> str:
    """``20261130T120000Z-<pid>.jsonl``; ``-<serial>`` before the suffix for a second file in one second."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(moment))
    return f"{stamp}-{pid}{f'-{serial}' if serial else ''}{SUFFIX}"


def _age(path: Path) -> tuple[str, int, str]:
    """Sort key, oldest first: the time in the name, then the serial within that second."""
    parts = path.stem.split("-")
    serial = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
    return parts[0], serial, path.name


class Chance(Protocol):
    """Where sampling draws come from: a :class:`random.Random`, or exact draws in tests."""

    def random(self) -> float: ...


@dataclass(slots=True)
class _Open:
    """The file a version's samples go to now."""

    path: Path
    fd: int
    size: int


class Capture:
    """Samples answered requests at ``rate`` (a version's own rate wins) into JSON-lines files under ``root``.

    ``chance`` draws the samples (a request is sampled when its draw is below the rate);
    ``clock`` gives the time of a sample and of a file's name; ``before_write`` runs on the writer
    thread before each sample is written (tests hold the writer with it). The writer thread starts
    with the first sample (a capture that samples nothing never starts one, and one made before a
    fork writes from the process that samples); call :meth:`close`.
    """

    def __init__(
        self,
        root: Path,
        *,
        rate: float,
        redact: Collection[str] = (),
        chance: Chance | None = None,
        queue_size: int = 1024,
        max_file_bytes: int = 64 * MIB,
        max_files: int = 50,
        clock: Callable[[], float] = time.time,
        before_write: Callable[[], None] | None = None,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ValueError(f"the capture rate is the share of requests captured, from 0 to 1, got {rate!r}")
        if queue_size < 1 or max_file_bytes < 1 or max_files < 1:
            raise ValueError("queue_size, max_file_bytes and max_files must each be at least 1")
        self.root = Path(root)
        self.rate = float(rate)
        self.redact = frozenset(redact)
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self._draw = (chance or random.Random()).random
        self._clock = clock
        self._before_write = before_write
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._lock = threading.Lock()  # counters and closing; never taken by an offer that is not sampled
        self._written: dict[tuple[str, int], int] = {}
        self._dropped: dict[tuple[str, int], int] = {}
        self._closed = False
        self._files: dict[tuple[str, int], _Open] = {}  # the writer thread's alone
        self._complained: set[tuple[str, int]] = set()  # the writer thread's alone
        self._root_checked = False  # whether an existing root was checked for others' access; the writer thread's
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None  # started by the first sample

    def __repr__(self) -> str:
        return f"Capture({str(self.root)!r}, rate={self.rate})"

    # -- the event loop's side ------------------------------------------------------------------

    def offer(
        self,
        model: str,
        version: int,
        rate: float | None,
        request_id: str | None,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        signature: Signature | None = None,
    ) -> None:
        """Capture this answered request with probability ``rate`` (None: the server's rate).

        Never blocks and never raises: a full queue drops the sample (counted). The arrays are
        kept, not copied, until written: do not change them afterwards. ``signature`` (the
        version's) lets redaction find feature names.
        """
        if rate is None:
            rate = self.rate
        if rate <= 0.0 or (rate < 1.0 and self._draw() >= rate):
            return
        if not self._closed and (self._thread is not None or self._start()):
            try:
                self._queue.put_nowait((self._clock(), model, version, request_id, inputs, outputs, signature))
                return
            except queue.Full:
                pass
        self._count(self._dropped, (model, version))

    def counts(self) -> dict[tuple[str, int], tuple[int, int]]:
        """``(model, version) -> (written, dropped)`` for every version that was sampled."""
        with self._lock:
            keys = self._written.keys() | self._dropped.keys()
            return {key: (self._written.get(key, 0), self._dropped.get(key, 0)) for key in keys}

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then stop the writer. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):  # a writer stuck that long: the join below gives up too
            self._queue.put(_STOP, timeout=timeout)
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning(
                "payload capture: the writer did not finish within %gs at shutdown; about %d queued samples "
                "are not written",
                timeout,
                self._queue.qsize(),
            )

    def _start(self) -> bool:
        """Start the writer thread (for the first sample); False when closed meanwhile."""
        with self._lock:
            if self._closed:
                return False
            if self._thread is None:
                self._pid = os.getpid()  # the process that writes names the files
                self._thread = threading.Thread(
                    target=self._write_all, name=f"modelport-capture {self.root}", daemon=True
                )
                self._thread.start()
            return True

    def _count(self, counter: dict[tuple[str, int], int], key: tuple[str, int]) -> None:
        with self._lock:
            counter[key] = counter.get(key, 0) + 1

    # -- the writer thread ----------------------------------------------------------------------

    def _write_all(self) -> None:
        try:
            while True:
                sample = self._queue.get()
                if sample is _STOP:
                    return
                key = (sample[1], sample[2])
                try:
                    if self._before_write is not None:
                        self._before_write()
                    self._write(key, line_of(sample, self.redact))
                except Exception as exc:  # a sample is never worth a dead writer
                    self._count(self._dropped, key)
                    self._complain(
                        key,
                        f"cannot write a sample of {key[0]}@{key[1]} under {self.root}: {exc}; its samples are "
                        "dropped (counted) until writing works again",
                    )
                else:
                    self._count(self._written, key)
                if self._closed and self._queue.empty():  # close() found the queue full and gave up on its stop
                    return
        finally:
            for current in self._files.values():
                os.close(current.fd)
            self._files.clear()

    def _write(self, key: tuple[str, int], line: bytes) -> None:
        current = self._files.get(key)
        if current is not None and current.size and current.size + len(line) > self.max_file_bytes:
            del self._files[key]
            os.close(current.fd)
            current = None
        if current is None:
            current = self._files[key] = self._open(key)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(current.fd, view) :]
        except OSError:
            del self._files[key]
            try:  # no half line left for readers: cut the file back to its last whole line
                os.ftruncate(current.fd, current.size)
            finally:
                os.close(current.fd)
            raise
        current.size += len(line)

    def _open(self, key: tuple[str, int]) -> _Open:
        model, version = key
        if not _NAME.fullmatch(model) or isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"{model!r} version {version!r} is not a model name and version number")
        folder = self._private_folders(model, str(version))
        moment, serial = self._clock(), 0
        while True:
            path = folder / file_name(moment, self._pid, serial)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
                break
            except FileExistsError:
                serial += 1
        os.fchmod(fd, 0o600)  # whatever the umask took from the mode
        self._prune(key, folder, path)
        return _Open(path, fd, 0)

    def _private_folders(self, *names: str) -> Path:
        """``root/names...``, every level capture makes mode 0700 whatever the umask (requests may
        hold personal data, and the folder names are model names): ``mkdir(mode, parents=True)``
        would give the levels above the last the umask's mode, and mask the last's. What is above
        ``root`` (the home) is made as the registry makes it. An existing root that others may
        open is reported once, not changed: nothing under a root of 0700 is theirs to see."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        folder = self.root
        for name in ("", *names):
            folder = folder / name
            try:
                folder.mkdir(mode=0o700)
            except FileExistsError:
                if folder == self.root and not self._root_checked:
                    self._root_checked = True
                    self._report_open_root()
            else:
                os.chmod(folder, 0o700)  # the umask may have taken bits from mkdir's mode
        return folder

    def _report_open_root(self) -> None:
        mode = stat.S_IMODE(self.root.stat().st_mode)
        if mode & 0o077:
            log.warning(
                "payload capture: %s may be opened by other users of this machine (mode %o); it holds "
                "captured requests: chmod 700 it",
                self.root,
                mode,
            )

    def _prune(self, key: tuple[str, int], folder: Path, current: Path) -> None:
        """Delete the oldest files of the version past ``max_files`` (never the one just opened)."""
        try:
            files = sorted((p for p in folder.glob(f"*{SUFFIX}") if p != current), key=_age)
            for old in files[: max(0, len(files) + 1 - self.max_files)]:
                old.unlink(missing_ok=True)
        except OSError as exc:
            self._complain(key, f"cannot delete old capture files in {folder}: {exc}; the folder may grow")

    def _complain(self, key: tuple[str, int], message: str) -> None:
        if key not in self._complained:
            self._complained.add(key)
            log.warning("payload capture: %s (logged once per version)", message)
