"""``modelport bench``: load a served model with valid requests built from its signature, and report.

Pure parts (endpoints, payloads, statistics, comparison, the Locust file) are plain functions;
the load itself is one async loop of N workers sharing one keep-alive httpx client. A reference
is benchmarked through a real ``modelport serve`` subprocess on a free loopback port.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson

from modelport.errors import InvalidSetting, ModelportError
from modelport.reference import parse_reference
from modelport.types import Signature, TensorSpec

PROTOCOLS = ("v2", "tfserving")
JSON_HEADERS = {"content-type": "application/json"}
INSTALL_BENCH = "pip install 'modelport[bench]'"
# Synthesized values per datatype kind, for models registered without an example.
SYNTHETIC: dict[str, Any] = {"FP": 0.5, "INT": 1, "UINT": 1, "BOOL": True, "BYTES": "a"}


class RequestRejected(ModelportError):
    """The first request, checked before any load, was refused (or the server could not be reached)."""


# -- endpoints ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a model answers: protocol, server base URL (scheme, host, any path prefix) and model."""

    protocol: str
    base: str
    name: str
    selector: str | None = None  # version number or alias; None for the model's default version

    @property
    def infer_path(self) -> str:
        prefix = urlsplit(self.base).path
        if self.protocol == "v2":
            return f"{prefix}{self._v2_model}/infer"
        label = "versions" if (self.selector or "").isdigit() else "labels"
        selected = f"/{label}/{self.selector}" if self.selector else ""
        return f"{prefix}/v1/models/{self.name}{selected}:predict"

    @property
    def host(self) -> str:
        parts = urlsplit(self.base)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def infer_url(self) -> str:
        return self.host + self.infer_path

    @property
    def metadata_url(self) -> str:
        """The V2 model metadata URL (modelport serves it for every model, whatever the protocol)."""
        return self.base + self._v2_model

    @property
    def _v2_model(self) -> str:
        return f"/v2/models/{self.name}" + (f"/versions/{self.selector}" if self.selector else "")


_V2_PATH = re.compile(r"(?P<prefix>.*?)/v2/models/(?P<name>[^/]+)(?:/versions/(?P<sel>[^/]+))?(?:/infer)?/?")
_V1_PATH = re.compile(
    r"(?P<prefix>.*?)/v1/models/(?P<name>[^/:]+)(?:/(?:versions|labels)/(?P<sel>[^/:]+))?(?::predict)?/?"
)


def parse_url(url: str, protocol: str | None = None) -> Endpoint:
    """A served model's URL (``.../v2/models/NAME[/versions/V]`` or ``.../v1/models/NAME[...]``).

    ``protocol`` switches to the other protocol's path on the same server.
    """
    parts = urlsplit(url)
    for found_protocol, pattern in (("v2", _V2_PATH), ("tfserving", _V1_PATH)):
        match = pattern.fullmatch(parts.path)
        if parts.scheme in ("http", "https") and parts.netloc and match:
            base = f"{parts.scheme}://{parts.netloc}{match['prefix']}"
            return Endpoint(protocol or found_protocol, base, match["name"], match["sel"])
    raise InvalidSetting(
        f"cannot tell the model from {url!r}: use http://HOST:PORT/v2/models/NAME or http://HOST:PORT/v1/models/NAME "
        "(optionally with /versions/V), or a model reference like iris@production"
    )


def endpoint_for_ref(ref: str, base: str, protocol: str) -> Endpoint:
    parsed = parse_reference(ref)
    selector = str(parsed.version) if parsed.version is not None else parsed.alias
    return Endpoint(protocol, base, parsed.name, selector)


def signature_from_metadata(doc: Any) -> Signature:
    """A signature from V2 model metadata (modelport adds ``parameters.feature_names``)."""

    def spec(tensor: Mapping[str, Any]) -> TensorSpec:
        params = tensor.get("parameters") or {}
        names = params.get("feature_names") if isinstance(params, Mapping) else None
        shape = tuple(int(d) for d in tensor["shape"])
        return TensorSpec(str(tensor["name"]), str(tensor["datatype"]), shape, tuple(names) if names else None)

    try:
        return Signature(tuple(spec(t) for t in doc["inputs"]), tuple(spec(t) for t in doc.get("outputs", ())))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ModelportError("the server's model metadata has no usable 'inputs' (name, datatype, shape)") from None


def fetch_signature(endpoint: Endpoint, headers: Mapping[str, str], timeout: float = 30.0) -> Signature:
    url = endpoint.metadata_url
    try:
        response = httpx.get(url, headers=dict(headers), timeout=timeout)
    except httpx.HTTPError as exc:
        raise ModelportError(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        raise ModelportError(
            f"cannot read the model's signature: {url} answered {response.status_code}: {_message(response)}"
            + credentials_hint(response.status_code)
        )
    try:
        return signature_from_metadata(response.json())
    except ValueError:
        raise ModelportError(f"{url} did not answer JSON model metadata") from None


def credentials_hint(status: int) -> str:
    """What to do about an answer of 401 (no or an unknown key) or 403 (a key without the scope); else ""."""
    if status == 401:
        return (
            "; give an API key with --api-key KEY (or MODELPORT_API_KEY); modelport keys create --scope infer makes one"
        )
    if status == 403:
        return "; give a key with the infer scope (or infer:MODEL) with --api-key KEY (or MODELPORT_API_KEY)"
    return ""


def _message(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text[:300]
    return str(doc.get("error", doc)) if isinstance(doc, dict) else response.text[:300]


# -- payloads -----------------------------------------------------------------------------------


def synthetic_row(spec: TensorSpec) -> Any:
    """One valid row for ``spec``: the datatype's value over the row shape (free dims become 1)."""
    kind = next(k for k in ("UINT", "INT", "FP", "BOOL", "BYTES") if spec.datatype.startswith(k))
    value = SYNTHETIC[kind]
    row: Any = value
    for dim in reversed(spec.shape[1:]):
        row = [row] * (dim if dim > 0 else 1)
    return row


def example_rows(signature: Signature) -> dict[str, list[Any]]:
    """Rows per input: the registered example when it covers every input, else synthesized."""
    example = signature.example or {}
    if example and all(isinstance(example.get(s.name), list) and example[s.name] for s in signature.inputs):
        count = min(len(example[s.name]) for s in signature.inputs)
        return {s.name: list(example[s.name][:count]) for s in signature.inputs}
    return {s.name: [synthetic_row(s)] for s in signature.inputs}


def build_payload(signature: Signature, protocol: str, rows_per_request: int = 1) -> dict[str, Any]:
    """A request body for ``protocol`` with ``rows_per_request`` rows (example rows, repeated in turn)."""
    if rows_per_request < 1:
        raise InvalidSetting("--rows-per-request must be at least 1")
    for spec in signature.inputs:
        if spec.shape and spec.shape[0] not in (-1, rows_per_request):
            raise InvalidSetting(
                f"input {spec.name!r} takes exactly {spec.shape[0]} rows per request: "
                f"use --rows-per-request {spec.shape[0]}"
            )
    rows = {name: [r[i % len(r)] for i in range(rows_per_request)] for name, r in example_rows(signature).items()}
    if protocol == "v2":
        inputs = []
        for spec in signature.inputs:
            array = np.asarray(rows[spec.name], dtype=object if spec.datatype == "BYTES" else None)
            data = array.ravel().tolist()
            inputs.append({"name": spec.name, "shape": list(array.shape), "datatype": spec.datatype, "data": data})
        return {"inputs": inputs}
    if protocol != "tfserving":
        raise InvalidSetting(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    features = signature.feature_names
    if features:  # rows as objects keyed by feature name, as people write them
        (values,) = rows.values()
        return {"instances": [dict(zip(features, row, strict=True)) for row in values]}
    if len(signature.inputs) == 1:
        (values,) = rows.values()
        return {"instances": values}
    return {"instances": [{name: values[i] for name, values in rows.items()} for i in range(rows_per_request)]}


def locustfile(endpoint: Endpoint, payload: Mapping[str, Any]) -> str:
    """A Locust file: one HttpUser POSTing the same payload to the same endpoint, no wait between tasks."""
    body = orjson.dumps(payload).decode()
    return f"""# Locust load test for model {endpoint.name} ({endpoint.protocol}), from `modelport bench --locustfile`.
#
# Run:       locust -f THIS_FILE --host {endpoint.host}
# Headless:  locust -f THIS_FILE --host {endpoint.host} --headless --users 64 --spawn-rate 64 --run-time 60s
# An API key, if the server wants one, comes from $MODELPORT_API_KEY.

import os

from locust import HttpUser, between, task

PATH = {endpoint.infer_path!r}
BODY = {body!r}
HEADERS = {{"content-type": "application/json"}}
if os.environ.get("MODELPORT_API_KEY"):
    HEADERS["authorization"] = "Bearer " + os.environ["MODELPORT_API_KEY"]


class ModelUser(HttpUser):
    wait_time = between(0, 0)

    @task
    def infer(self) -> None:
        self.client.post(PATH, data=BODY, headers=HEADERS, name=PATH)
"""


# -- load ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """What the workers recorded: latencies of answered 2xx requests, errors by kind, wall time."""

    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first_error: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def done(self) -> int:
        return len(self.latencies_s) + self.errors.total()

    def fail(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.first_error.setdefault(kind, detail[:300])


OnProgress = Callable[[Run, float], None]  # (run so far, seconds since the start)


async def run_load(
    url: str,
    body: bytes,
    *,
    concurrency: int,
    duration_s: float | None = None,
    requests: int | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
    validate: bool = True,
    on_progress: OnProgress | None = None,
) -> Run:
    """POST ``body`` to ``url`` from ``concurrency`` workers, each on its own HTTP/1.1 keep-alive
    connection, until ``duration_s`` passes or ``requests`` are sent. Errors are non-2xx answers
    and transport errors.

    With ``validate``, one request goes first and :class:`RequestRejected` stops everything if
    it is refused.
    """
    if (duration_s is None) == (requests is None):
        raise InvalidSetting("give either a duration or a number of requests")
    if concurrency < 1:
        raise InvalidSetting("--concurrency must be at least 1")
    sent_headers = {**JSON_HEADERS, **(headers or {})}
    # One client (one keep-alive connection) per worker: a single pool shared by N workers slows
    # down as N grows (encode/httpx#3215; measured here: 150 vs 600-900 req/s at 64 connections).
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    run = Run()
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=timeout_s, headers=sent_headers))
            for _ in range(concurrency)
        ]
        if validate:
            await _check_first(clients[0], url, body)
        start = time.perf_counter()
        deadline = start + duration_s if duration_s is not None else math.inf
        left = [requests]  # requests not yet claimed; None: until the deadline

        def claim() -> bool:
            if left[0] is None:
                return time.perf_counter() < deadline
            left[0] -= 1
            return left[0] >= 0

        async def worker(client: httpx.AsyncClient) -> None:
            while claim():
                began = time.perf_counter()
                try:
                    response = await client.post(url, content=body)
                except httpx.HTTPError as exc:
                    run.fail(type(exc).__name__, str(exc) or type(exc).__name__)
                    continue
                latency = time.perf_counter() - began
                if 200 <= response.status_code < 300:
                    run.latencies_s.append(latency)
                else:
                    run.fail(f"HTTP {response.status_code}", _message(response))

        async def ticker() -> None:
            while on_progress is not None:
                on_progress(run, time.perf_counter() - start)
                await asyncio.sleep(0.1)

        ticking = asyncio.create_task(ticker())
        try:
            await asyncio.gather(*(worker(client) for client in clients))
        finally:
            ticking.cancel()
            with suppress(asyncio.CancelledError):
                await ticking
        run.elapsed_s = time.perf_counter() - start
    if on_progress is not None:
        on_progress(run, run.elapsed_s)
    return run


async def _check_first(client: httpx.AsyncClient, url: str, body: bytes) -> None:
    try:
        response = await client.post(url, content=body)
    except httpx.HTTPError as exc:
        raise RequestRejected(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        refused = f"the server refused the first request, so no load was sent: {url} answered {response.status_code}"
        hint = credentials_hint(response.status_code)
        if hint:  # not the payload's fault: one line that says what to give
            raise RequestRejected(f"{refused}: {_message(response)}{hint}")
        shown = body[:300].decode(errors="replace") + ("..." if len(body) > 300 else "")
        raise RequestRejected(f"{refused}: {_message(response)}\n  request body: {shown}")


# -- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stats:
    """Throughput counts successful (2xx) answers; latencies are those of successful requests."""

    requests: int
    errors: int
    duration_s: float
    rps: float
    mean_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def summarize(latencies_s: Sequence[float], errors: int, duration_s: float) -> Stats:
    ok = len(latencies_s)
    rps = ok / duration_s if duration_s > 0 else 0.0
    if not ok:
        return Stats(errors, errors, duration_s, rps, None, None, None, None, None)
    ms = np.asarray(latencies_s) * 1000.0
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return Stats(ok + errors, errors, duration_s, rps, float(ms.mean()), p50, p90, p99, float(ms.max()))


def histogram(latencies_s: Sequence[float], buckets: int = 40) -> dict[str, list[float] | list[int]]:
    """Latency buckets (ms), log-spaced between the fastest and the slowest request."""
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    if not ms.size:
        return {"edges_ms": [], "counts": []}
    low, high = float(ms.min()), float(ms.max())
    edges = np.geomspace(low, high, buckets + 1) if high > low else np.asarray([low, low * 1.001 + 1e-9])
    counts, _ = np.histogram(ms, bins=edges)
    return {"edges_ms": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}


def write_histogram_png(hist: Mapping[str, Sequence[float]], stats: Stats, path: Path, title: str) -> str | None:
    """Draw the histogram with matplotlib's Agg backend (no pyplot, no global state).

    Returns None when written, or why it was skipped (matplotlib not installed).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return f"latency.png skipped: matplotlib is not installed ({INSTALL_BENCH})"
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    edges, counts = list(hist["edges_ms"]), list(hist["counts"])
    if counts:
        widths = [b - a for a, b in itertools.pairwise(edges)]
        axes.bar(edges[:-1], counts, width=widths, align="edge", color="#d81b60", edgecolor="white", linewidth=0.4)
        if edges[-1] > edges[0] * 1.01:
            axes.set_xscale("log")
    for label, value, style in (("p50", stats.p50_ms, "--"), ("p99", stats.p99_ms, ":")):
        if value is not None:
            axes.axvline(value, color="#333333", linestyle=style, linewidth=1, label=f"{label} {value:.2f} ms")
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("requests")
    axes.set_title(f"{title}: {stats.rps:,.0f} req/s, {stats.errors} errors", fontsize=10)
    if stats.p50_ms is not None:
        axes.legend()
    figure.savefig(path, dpi=110)
    return None


# -- comparison ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    metric: str
    baseline: float
    current: float
    worse_by: float  # fraction; positive means worse (fewer req/s, higher p99)
    regressed: bool


def parse_threshold(text: str) -> float:
    """``10%`` (or ``10``) -> 0.10."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        value = -1.0
    if not 0 <= value < 1000 or math.isnan(value):
        raise InvalidSetting(f"--max-regression expects a percentage like 10%, got {text!r}")
    return value / 100.0


def compare(current: Mapping[str, Any], baseline: Mapping[str, Any], max_regression: float) -> list[Change]:
    """req/s and p99 of two results.json ``stats``: regressed when worse by more than ``max_regression``."""
    changes = []
    for metric, key, higher_is_better in (("req/s", "rps", True), ("p99 ms", "p99_ms", False)):
        base, now = baseline.get(key), current.get(key)
        if base is None or not isinstance(base, int | float) or base <= 0:
            continue
        if now is None:  # nothing succeeded now
            changes.append(Change(metric, float(base), math.nan, math.inf, True))
            continue
        worse = (base - now) / base if higher_is_better else (now - base) / base
        changes.append(Change(metric, float(base), float(now), worse, worse > max_regression))
    return changes


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise InvalidSetting(f"cannot read the baseline {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError:
        raise InvalidSetting(f"the baseline {path} is not JSON (give a results.json from modelport bench)") from None
    stats = doc.get("stats") if isinstance(doc, dict) else None
    if not isinstance(stats, dict) or not isinstance(stats.get("rps"), int | float):
        raise InvalidSetting(f"the baseline {path} has no stats.rps: give a results.json written by modelport bench")
    return dict(doc)


# What shapes the load: ``bench --compare`` takes these from the baseline when not given and refuses
# a run that differs in one; how long the runs last may differ (a note says so).
SAME_LOAD = ("protocol", "concurrency", "rows_per_request")
COMPARABLE = (*SAME_LOAD, "duration_s", "requests")


def config_differences(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    """Settings two runs differ in (the load's shape, how long it lasted)."""
    return [
        f"{key}: baseline {baseline.get(key)}, now {current.get(key)}"
        for key in COMPARABLE
        if key in baseline and baseline.get(key) != current.get(key)
    ]
