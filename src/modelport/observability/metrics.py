"""Prometheus metrics: counted cheaply on the request path, written out only when scraped.

The request path touches plain Python objects only: a :class:`Histogram` is a list of bucket
counts and a sum, a request adds one to a status-class count and one observation (about a
microsecond in all). Everything else (in-flight requests, queue rows, version states, traffic
weights, shadow agreement, rejections, hot swaps, process figures) is read from the serving
objects when ``/metrics`` is asked for, so it costs requests nothing.

A scrape answers for the whole server: with several worker processes (``serve --workers N``)
every worker writes its :meth:`Metrics.snapshot` to ``<directory>/<pid>.json`` once a second
(:meth:`Metrics.flushing`), and the worker that answers merges its own fresh snapshot with the
others' files (:func:`merge`). Counters and histograms of a worker that died are folded into
``dead.json`` once, under a lock, so totals never go backwards and are never counted twice; its
gauges are dropped. Labels are bounded: ``model`` and ``version`` come from what the server
serves, never from a caller's text (see :meth:`Metrics.request`).

The exposition itself is prometheus-client's, from a collector registry made for each scrape (no
process-wide registry).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import threading
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from modelport.observability.capture import Capture
from modelport.serving.tasks import in_background
from modelport.serving.versions import VersionState
from modelport.types import Exchange, ModelVersion
from modelport.version import __version__

if TYPE_CHECKING:
    from modelport.serving.manager import ModelManager

logger = logging.getLogger("modelport")

# From 0.1 ms: a request served inline waits 0 and a small model answers in well under a
# millisecond; with 0.5 ms first, every such p99 read as about 0.5 ms (interpolated in the bucket).
DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
UNKNOWN = "(unknown)"  # the model label of requests for a model the server does not serve
PROTOCOLS = frozenset({"v2", "tfserving", "sagemaker", "grpc"})
AUTH_REASONS = ("missing", "invalid", "forbidden", "not_loopback")
FLUSH_SECONDS = 1.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEAD = "dead.json"


class Histogram:
    """Bucket counts (not cumulative; the last is +Inf) and the sum of what was observed."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value
        self.sum += value

    def state(self) -> list[float]:
        return [*self.counts, self.sum]


class VersionMetrics:
    """One version's :class:`~modelport.serving.hooks.VersionWatch`: runtime calls, queue waits
    (locked: prediction threads report too) and, when its capture rate is above 0, the answered
    requests go to payload capture."""

    __slots__ = ("_lock", "capture", "inference", "queue_wait", "rows", "version")

    def __init__(self, version: ModelVersion, capture: Capture | None) -> None:
        self.version = version
        self._lock = threading.Lock()
        self.queue_wait = Histogram(DURATION_BUCKETS)
        self.inference = Histogram(DURATION_BUCKETS)
        self.rows = Histogram(ROW_BUCKETS)
        rate = version.capture_rate if version.capture_rate is not None else capture.rate if capture else 0.0
        self.capture = capture if rate > 0 else None

    def ran(self, rows: int, seconds: float, waited: float | None = None) -> None:
        with self._lock:
            self.inference.observe(seconds)
            self.rows.observe(rows)
            if waited is not None:
                self.queue_wait.observe(waited)

    def queued(self, seconds: float) -> None:
        with self._lock:
            self.queue_wait.observe(seconds)

    def answered(
        self, request_id: str | None, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
    ) -> None:
        if self.capture is not None:
            version = self.version
            capture_rate = version.capture_rate
            self.capture.offer(
                version.name, version.version, capture_rate, request_id, inputs, outputs, version.signature
            )


class _Series:
    """Requests of one (protocol, model, version): counts by status class, and their durations."""

    __slots__ = ("codes", "duration")

    def __init__(self) -> None:
        self.codes = [0] * 6  # index: status // 100
        self.duration = Histogram(DURATION_BUCKETS)


@dataclass(frozen=True, slots=True)
class Family:
    """One metric as exposed: its type, labels and how workers' values combine (``sum``; ``worker``:
    one series per worker, with a ``worker`` label; ``max``: the largest worker's)."""

    kind: str  # counter, gauge or histogram
    help: str
    labels: tuple[str, ...]
    merge: str = "sum"
    buckets: tuple[float, ...] = ()


_MV = ("model", "version")
FAMILIES: dict[str, Family] = {
    "modelport_requests": Family(
        "counter", "Answered requests by protocol, model, version and status class.", ("protocol", *_MV, "code")
    ),
    "modelport_request_duration_seconds": Family(
        "histogram",
        "Request time inside the server, admission to answer.",
        ("protocol", *_MV),
        buckets=DURATION_BUCKETS,
    ),
    "modelport_queue_wait_seconds": Family(
        "histogram", "Wait before the runtime call serving a request started.", _MV, buckets=DURATION_BUCKETS
    ),
    "modelport_inference_duration_seconds": Family(
        "histogram", "Duration of one runtime call.", _MV, buckets=DURATION_BUCKETS
    ),
    "modelport_batch_rows": Family("histogram", "Rows per runtime call.", _MV, buckets=ROW_BUCKETS),
    "modelport_rejected_requests": Family(
        "counter", "Requests refused before running: overload (503) or deadline (504).", (*_MV, "reason")
    ),
    "modelport_inflight_requests": Family("gauge", "Requests using the version now.", _MV),
    "modelport_runaway_predictions": Family(
        "gauge", "Runtime calls still running past the server's deadline (their threads cannot be stopped).", _MV
    ),
    "modelport_queue_rows": Family("gauge", "Rows queued at the version's batcher.", _MV),
    "modelport_version_state": Family(
        "gauge", "1 for the version's state in this worker, else 0.", (*_MV, "state", "worker"), merge="worker"
    ),
    "modelport_version_load_duration_seconds": Family(
        "gauge", "Time to load and warm the version in this worker.", (*_MV, "worker"), merge="worker"
    ),
    "modelport_hot_swaps": Family("counter", "Routes of the model moved to other versions while serving.", ("model",)),
    "modelport_traffic_weight": Family(
        "gauge", "Share of the alias's traffic the version gets.", ("model", "alias", "version"), merge="max"
    ),
    "modelport_shadow_requests": Family(
        "counter", "Requests mirrored to a shadow version and compared.", ("model", "alias", "shadow_version")
    ),
    "modelport_shadow_compared_values": Family(
        "counter", "Label output values compared with the primary's.", ("model", "alias", "shadow_version")
    ),
    "modelport_shadow_agreed_values": Family(
        "counter", "Label output values equal to the primary's.", ("model", "alias", "shadow_version")
    ),
    "modelport_client_requests": Family("counter", "Requests by caller (API key id).", ("client",)),
    "modelport_auth_failures": Family("counter", "Refused callers by reason.", ("reason",)),
    "modelport_capture_samples": Family("counter", "Requests written by payload capture.", _MV),
    "modelport_capture_dropped": Family("counter", "Samples payload capture dropped.", _MV),
    "modelport_drift_psi": Family(
        "gauge", "Population stability index of captured traffic.", (*_MV, "feature"), merge="max"
    ),
    "modelport_drift_detected": Family("gauge", "1 when the feature drifted.", (*_MV, "feature"), merge="max"),
    "modelport_drift_unseen_values": Family(
        "gauge", "Captured values of a categorical feature its reference never had.", (*_MV, "feature"), merge="max"
    ),
    "process_cpu_seconds": Family("counter", "CPU time of the worker process.", ("worker",), merge="worker"),
    "process_resident_memory_bytes": Family("gauge", "Resident memory of the worker.", ("worker",), merge="worker"),
    "process_open_fds": Family("gauge", "Open file descriptors of the worker.", ("worker",), merge="worker"),
}
# Worker-labelled gauges and counters are exposed per live worker; a dead worker's counters stay.
Samples = dict[str, dict[tuple[str, ...], Any]]  # family -> label values -> value (histogram: state list)
Extra = Callable[[], Iterable[tuple[str, tuple[str, ...], float]]]  # more gauge samples (drift)


class Metrics:
    """Everything ``/metrics`` shows for one process (see the module docstring).

    ``directory``: where the workers of one server exchange snapshots (None: a single process).
    ``manager``: what the server serves now (None while it starts), read for the serving figures
    and to tell a served model's name from a caller's text. ``capture``: called with every
    answered request of every version (payload capture). ``extras``: more gauge samples (drift).
    """

    def __init__(
        self,
        *,
        directory: Path | None = None,
        manager: Callable[[], ModelManager | None] = lambda: None,
        capture: Capture | None = None,
        extras: Iterable[Extra] = (),
    ) -> None:
        self.directory = directory
        self.manager = manager
        self.capture = capture
        self.extras = tuple(extras)
        self._versions: dict[tuple[str, int], VersionMetrics] = {}
        self._series: dict[tuple[str, str, int | None], _Series] = {}
        self.clients: dict[str, int] = {}
        self.auth_failures = dict.fromkeys(AUTH_REASONS, 0)
        self.pid = os.getpid()
        self.identity = _identity(self.pid)

    # -- the request path -------------------------------------------------------------------

    def version(self, version: ModelVersion) -> VersionMetrics:
        """The watch of one version (kept across reloads, so its histograms never restart)."""
        key = (version.name, version.version)
        watch = self._versions.get(key)
        if watch is None:
            watch = self._versions[key] = VersionMetrics(version, self.capture)
        return watch

    def request(self, exchange: Exchange, status: int, seconds: float) -> None:
        """Count one answered request. Its labels are what the exchange says when the model is
        served, else ``(unknown)``: caller-chosen text never becomes a series."""
        key = (exchange.protocol, exchange.model, exchange.version)
        series = self._series.get(key)
        if series is None:
            series = self._new_series(key)
        series.codes[status // 100 if 100 <= status < 600 else 5] += 1
        series.duration.observe(seconds)

    def _new_series(self, key: tuple[str, str, int | None]) -> _Series:
        protocol, model, version = key
        if protocol not in PROTOCOLS:
            canonical: tuple[str, str, int | None] = ("other", "", None)
        else:
            manager = self.manager()
            served = manager is not None and manager.serves(model)
            canonical = (protocol, model, version) if served else (protocol, UNKNOWN, None)
        series = self._series.get(canonical)
        if series is None:
            series = self._series[canonical] = _Series()
        return series

    def client(self, client: str) -> None:
        """One request by ``client`` (an API key id, or ``(token)``)."""
        self.clients[client] = self.clients.get(client, 0) + 1

    def refused(self, reason: str) -> None:
        self.auth_failures[reason] += 1

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """This process's samples, JSON-ready: what it writes for the other workers."""
        samples: Samples = {name: {} for name in FAMILIES}
        worker = str(self.pid)
        for (protocol, model, version), series in list(self._series.items()):
            labels = (protocol, model, "" if version is None else str(version))
            for index, count in enumerate(series.codes):
                if count:
                    samples["modelport_requests"][(*labels, f"{index}xx")] = count
            samples["modelport_request_duration_seconds"][labels] = series.duration.state()
        for (name, number), watch in list(self._versions.items()):
            mv = (name, str(number))
            with watch._lock:
                samples["modelport_queue_wait_seconds"][mv] = watch.queue_wait.state()
                samples["modelport_inference_duration_seconds"][mv] = watch.inference.state()
                samples["modelport_batch_rows"][mv] = watch.rows.state()
        manager = self.manager()
        if manager is not None:
            self._serving(samples, manager, worker)
        for (name, number), (written, dropped) in (self.capture.counts() if self.capture else {}).items():
            samples["modelport_capture_samples"][(name, str(number))] = written
            samples["modelport_capture_dropped"][(name, str(number))] = dropped
        for family, label_values, value in (sample for extra in self.extras for sample in extra()):
            samples[family][label_values] = value
        samples["modelport_client_requests"] = {(client,): n for client, n in self.clients.items()}
        samples["modelport_auth_failures"] = {(reason,): n for reason, n in self.auth_failures.items()}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        samples["process_cpu_seconds"][(worker,)] = usage.ru_utime + usage.ru_stime
        for family, value in _process_figures().items():
            samples[family][(worker,)] = value
        return {
            "identity": self.identity,
            "samples": {
                name: [[list(labels), value] for labels, value in values.items()] for name, values in samples.items()
            },
        }

    def _serving(self, samples: Samples, manager: ModelManager, worker: str) -> None:
        for model in manager.served():
            mv = (model.name, str(model.version.version))
            samples["modelport_inflight_requests"][mv] = model.drain.inflight
            samples["modelport_queue_rows"][mv] = model.batcher.queued_rows if model.batcher is not None else 0
            samples["modelport_version_load_duration_seconds"][(*mv, worker)] = model.load_seconds
            samples["modelport_rejected_requests"][(*mv, "overload")] = model.overload.refused
            samples["modelport_rejected_requests"][(*mv, "deadline")] = model.overload.timed_out
        for (name, number), count in manager.runaways().items():
            samples["modelport_runaway_predictions"][(name, str(number))] = count
        for status in manager.status():
            mv = (status.name, str(status.version))
            for state in VersionState:
                samples["modelport_version_state"][(*mv, state.value, worker)] = 1 if status.state is state else 0
        for name, count in manager.swaps.items():
            samples["modelport_hot_swaps"][(name,)] = count
        for name, alias, number, share in manager.traffic():
            samples["modelport_traffic_weight"][(name, alias, str(number))] = share
        for (name, alias, number), stats in list(manager.shadows.totals.items()):
            labels = (name, alias, str(number))
            samples["modelport_shadow_requests"][labels] = stats.get("requests", 0)
            outputs = [entry for entry in stats.get("outputs", {}).values() if entry.get("kind") == "label"]
            samples["modelport_shadow_compared_values"][labels] = sum(entry["total"] for entry in outputs)
            samples["modelport_shadow_agreed_values"][labels] = sum(entry["equal"] for entry in outputs)

    def exposition(self, own: dict[str, Any] | None = None) -> bytes:
        """The text a scrape gets: ``own`` (this process's :meth:`snapshot`, taken now when None)
        merged with the other workers' (see :func:`merge`). Reading the others' files may wait
        for their lock: with a directory, take ``own`` on the event loop and call this in a thread."""
        samples, workers = self.gathered(own)
        registry = CollectorRegistry(auto_describe=False)  # this scrape's: no process-wide registry
        registry.register(_Exposition(samples, workers))
        return generate_latest(registry)

    def gathered(self, snapshot: dict[str, Any] | None = None) -> tuple[Samples, int]:
        """Every worker's samples merged, and how many workers are alive."""
        own = _parse(snapshot if snapshot is not None else self.snapshot())
        if self.directory is None:
            return merge([own], []), 1
        others, dead = self._others()
        return merge([own, *others], dead), 1 + len(others)

    # -- several workers ----------------------------------------------------------------------

    def flush(self, document: bytes | None = None) -> None:
        """Write this worker's snapshot for the others (atomically: a reader sees the old or the new)."""
        assert self.directory is not None
        path = self.directory / f"{self.pid}.json"
        temporary = path.with_name(f".{self.pid}.tmp")
        temporary.write_bytes(document if document is not None else orjson.dumps(self.snapshot()))
        os.replace(temporary, path)

    @contextlib.asynccontextmanager
    async def flushing(self) -> AsyncIterator[None]:
        """While the app runs (with a directory): flush every :data:`FLUSH_SECONDS`, and at the end."""
        if self.directory is None:
            yield
            return

        async def forever() -> None:
            while True:
                try:  # the snapshot on the loop (it reads serving state), the writing in a thread
                    await asyncio.to_thread(self.flush, orjson.dumps(self.snapshot()))
                except OSError as exc:
                    logger.warning("cannot write metrics for the other workers: %s", exc)
                await asyncio.sleep(FLUSH_SECONDS)

        try:
            async with in_background(forever(), "modelport-metrics-flush"):
                yield
        finally:
            with contextlib.suppress(OSError):
                self.flush()

    def _others(self) -> tuple[list[Samples], list[Samples]]:
        """The live workers' samples, and the dead ones' (folded into ``dead.json`` first)."""
        assert self.directory is not None
        live: list[Samples] = []
        gone: list[tuple[Path, dict[str, Any]]] = []
        for path in self.directory.glob("*.json"):
            if path.name == DEAD or path.stem == str(self.pid):
                continue
            document = _read(path)
            if document is None:
                continue
            if _alive(document["identity"]):
                live.append(_parse(document))
            else:
                gone.append((path, document))
        return live, self._fold(gone)

    def _fold(self, gone: list[tuple[Path, dict[str, Any]]]) -> list[Samples]:
        """Fold dead workers' counters into ``dead.json`` (once each, under a lock); return its samples."""
        assert self.directory is not None
        dead_path = self.directory / DEAD
        if not gone:
            document = _read(dead_path)
            return [_parse(document)] if document is not None else []
        with open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            document = _read(dead_path) or {"folded": [], "samples": {}}
            folded = {tuple(identity) for identity in document["folded"]}
            merged = [_parse(document)]
            for _, worker in gone:
                identity = tuple(worker["identity"])
                if identity not in folded:
                    merged.append(_counters(_parse(worker)))
                    document["folded"].append(list(identity))
            total = merge(merged, [])
            document["samples"] = {
                name: [[list(labels), value] for labels, value in values.items()] for name, values in total.items()
            }
            temporary = dead_path.with_name(".dead.tmp")
            temporary.write_bytes(orjson.dumps(document))
            os.replace(temporary, dead_path)
            for path, _ in gone:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return [total]


def merge(live: list[Samples], dead: list[Samples]) -> Samples:
    """Combine workers' samples family by family (see :class:`Family`); ``dead`` add counters only."""
    result: Samples = {name: {} for name in FAMILIES}
    for samples in [*live, *dead]:
        for name, values in samples.items():
            family = FAMILIES.get(name)
            if family is None:
                continue
            into = result[name]
            for labels, value in values.items():
                if family.kind == "histogram":
                    known = into.get(labels)
                    into[labels] = list(value) if known is None else [a + b for a, b in zip(known, value, strict=True)]
                elif family.merge == "max" and labels in into:
                    into[labels] = max(into[labels], value)
                else:
                    into[labels] = into.get(labels, 0) + value
    return result


def _counters(samples: Samples) -> Samples:
    """What of a dead worker is kept: counters and histograms, not its gauges nor its per-worker series."""
    return {
        name: values
        for name, values in samples.items()
        if FAMILIES[name].kind != "gauge" and FAMILIES[name].merge != "worker"
    }


def _parse(document: Mapping[str, Any]) -> Samples:
    return {
        name: {tuple(labels): value for labels, value in values}
        for name, values in document.get("samples", {}).items()
        if name in FAMILIES
    }


def _read(path: Path) -> dict[str, Any] | None:
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None  # gone meanwhile, or being replaced
    return document if isinstance(document, dict) else None


def _identity(pid: int) -> list[int]:
    """(pid, start time in clock ticks since boot): a pid the system reuses is another process."""
    return [pid, _started(pid) or 0]


def _started(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])  # field 22: starttime


def _alive(identity: list[int]) -> bool:
    pid, started = identity
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    now = _started(pid)
    return now is None or now == started


def _process_figures() -> dict[str, float]:
    figures: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        figures["process_resident_memory_bytes"] = pages * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(OSError):
        figures["process_open_fds"] = len(os.listdir("/proc/self/fd"))
    return figures


class _Exposition(Collector):
    """prometheus-client's view of merged samples (:meth:`Metrics.gathered`)."""

    def __init__(self, samples: Samples, workers: int) -> None:
        self.samples = samples
        self.workers = workers

    def collect(self) -> Iterator[Any]:
        samples, workers = self.samples, self.workers

        info = GaugeMetricFamily("modelport_build_info", "The modelport version; always 1.", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info
        yield GaugeMetricFamily("modelport_workers", "Live worker processes.", value=workers)
        for name, family in FAMILIES.items():
            values = samples.get(name, {})
            labels = list(family.labels)
            if family.kind == "counter":
                counter = CounterMetricFamily(name, family.help, labels=labels)
                for label_values, value in sorted(values.items()):
                    counter.add_metric(list(label_values), value)
                yield counter
            elif family.kind == "gauge":
                gauge = GaugeMetricFamily(name, family.help, labels=labels)
                for label_values, value in sorted(values.items()):
                    gauge.add_metric(list(label_values), value)
                yield gauge
            else:
                histogram = HistogramMetricFamily(name, family.help, labels=labels)
                for label_values, state in sorted(values.items()):
                    *counts, total = state
                    cumulative, buckets = 0, []
                    for bound, count in zip([*family.buckets, float("inf")], counts, strict=True):
                        cumulative += count
                        buckets.append((_le(bound), cumulative))
                    histogram.add_metric(list(label_values), buckets, total)
                yield histogram


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
