"""docs/monitoring.png: the Grafana dashboard's main panels, drawn from a real Prometheus that
scraped a real ``modelport serve`` under a scripted load (Grafana itself is not needed).

.venv/bin/python benchmarks/dashboard.py [--out docs/monitoring.png] [--seconds 90] [--window 15s]

In a throwaway MODELPORT_HOME: Iris registered twice (with the training frame as reference data),
``serve iris@production --workers 2 --capture-rate 0.2`` with drift measured every 3 s, the files
of ``modelport monitoring export`` with the scrape and rule intervals set to 1 s, Prometheus on a
port of its choosing. The load (fractions of --seconds): three paced clients throughout; a burst
of six unpaced ones; a spell of bad input (400) with a few requests for an unknown model (404);
20% of the alias's traffic split to version 2 midway; petal_length shifted by 2 cm in the last
third. Then every panel's queries are read back with /api/v1/query_range and drawn.

The queries are the dashboard's, from ``expressions(job)``, with one change: their rate window
(5m) is --window. Over a run shorter than the window, rate() divides what a series counted by
the whole window, so a 5m rate of a 90 s old server reads low and ramps; ``--window 5m`` draws
exactly what the dashboard would show.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelport.shipping.monitoring.dashboard import ROWS, Panel
from modelport.shipping.monitoring.expressions import WINDOW, MonitoringOptions, expressions
from modelport.registry.registry import Registry
from modelport.server.spawn import listening_ports, serving
from modelport.settings import Settings

JOB = "modelport"
# The dashboard's titles, in the order drawn (4 a line).
PANELS = (
    "Requests by model",
    "Errors by model",
    "Latency p50 and p99",
    "In flight",
    "Queue wait p99",
    "Inference p99",
    "Rows per runtime call",
    "Traffic weights",
    "CPU per worker",
    "Memory per worker",
    "Drift PSI",
    "Drift detected",
)
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SHIFTED, SHIFT = "petal_length", 2.0  # cm added to this feature in the last third
STEADY_CLIENTS, STEADY_RATE = 3, 12.0  # requests per second each
BURST_CLIENTS = 6
ROWS_PER_REQUEST = (1, 1, 1, 2, 4, 8)
CANARY_WEIGHT = 20
SERVER_ENV = {"MODELPORT_DRIFT_INTERVAL": "3", "MODELPORT_DRIFT_WINDOW": "20", "MODELPORT_LOG_LEVEL": "warning"}
STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {text}", flush=True)


@dataclass(frozen=True)
class Timeline:
    """When each part of the load happens, in seconds from its start."""

    seconds: float

    def at(self, share: float) -> float:
        return round(self.seconds * share, 1)

    @property
    def burst(self) -> tuple[float, float]:
        return self.at(0.2), self.at(0.28)

    @property
    def bad_input(self) -> tuple[float, float]:
        return self.at(0.33), self.at(0.45)

    @property
    def unknown_model(self) -> tuple[float, float]:
        return self.at(0.37), self.at(0.41)

    @property
    def canary(self) -> float:
        return self.at(0.5)

    @property
    def drift(self) -> float:
        return self.at(2 / 3)

    def events(self) -> list[tuple[float, float | None, str]]:
        """(start, end or None, label) for the markers on every panel."""
        return [
            (*self.burst, "burst"),
            (*self.bad_input, "400s"),
            (self.canary, None, "canary"),
            (self.drift, None, "drift"),
        ]


# -- setting up ---------------------------------------------------------------------------------


def register_models(settings: Settings) -> Any:
    """Iris twice (version 2 less regularised), the training frame as each one's reference data;
    production on version 1. Returns the frame."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import modelport

    frame, labels = load_iris(return_X_y=True, as_frame=True)
    frame.columns = FEATURES
    for strength, alias in ((1.0, "production"), (5.0, ())):
        model = LogisticRegression(C=strength, max_iter=1000).fit(frame, labels)
        version = modelport.register(
            model, name="iris", sample_input=frame.head(20), reference_data=frame, alias=alias, settings=settings
        )
        say(f"registered iris@{version.version}" + (f" ({alias})" if alias else ""))
    return frame


def export_monitoring(home: Path, directory: Path, port: int) -> Path:
    """``modelport monitoring export`` for the server's port; returns a copy of its Prometheus
    config with the global scrape and evaluation intervals at 1 s (the rule file kept)."""
    command = [sys.executable, "-m", "modelport", "monitoring", "export", str(directory)]
    command += ["--job", JOB, "--target", f"127.0.0.1:{port}"]
    env = {**os.environ, "MODELPORT_HOME": str(home), "NO_COLOR": "1"}
    subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=120)
    config = directory / "prometheus" / "prometheus.yml"
    text, count = re.subn(
        r"^(\s+)(scrape_interval|evaluation_interval): \S+$", r"\1\2: 1s", config.read_text(), flags=re.MULTILINE
    )
    if count != 2:
        raise RuntimeError(f"expected the two global intervals in {config}, changed {count}")
    fast = config.with_name("prometheus-1s.yml")
    fast.write_text(text)
    return fast


@contextlib.contextmanager
def prometheus(config: Path, data: Path) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1 port 0 until the block ends; yields its base URL."""
    log = data.parent / "prometheus.log"
    args = ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}"]
    args += ["--web.listen-address=127.0.0.1:0", "--log.level=warn"]
    with log.open("wb") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
    try:
        base = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {process.returncode}:\n{log.read_text()[-2000:]}")
            ports = listening_ports(process.pid)
            if base is None and ports:
                base = f"http://127.0.0.1:{min(ports)}"
            if base is not None:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/-/ready", timeout=2).status_code == 200:
                        break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"prometheus was not ready within 60 s:\n{log.read_text()[-2000:]}")
        say(f"prometheus (pid {process.pid}) at {base}, scraping every 1 s")
        yield base
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        say(f"prometheus (pid {process.pid}) stopped")


# -- the load ---------------------------------------------------------------------------------------


class Load:
    """Clients in threads, each a bounded loop of httpx requests; counts what came back."""

    def __init__(self, base: str, frame: Any, timeline: Timeline) -> None:
        self.base = base
        self.rows = frame.to_numpy(dtype=float)
        self.timeline = timeline
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.start = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def body(self, rng: random.Random) -> dict[str, Any]:
        count = rng.choice(ROWS_PER_REQUEST)
        rows = self.rows[[rng.randrange(len(self.rows)) for _ in range(count)]].copy()
        if self.elapsed() >= self.timeline.drift:
            rows[:, FEATURES.index(SHIFTED)] += SHIFT
        return {"inputs": [{"name": "input", "shape": [count, 4], "datatype": "FP32", "data": rows.ravel().tolist()}]}

    def send(self, client: httpx.Client, rng: random.Random, kind: str) -> None:
        if kind == "unknown":
            url, body = f"{self.base}/v2/models/nosuch/infer", self.body(rng)
        elif kind == "bad":
            url, body = f"{self.base}/v2/models/iris/versions/production/infer", {"inputs": "x"}
        else:
            url, body = f"{self.base}/v2/models/iris/versions/production/infer", self.body(rng)
        try:
            status = str(client.post(url, json=body).status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        with self._lock:
            self.counts[f"{kind} {status}"] += 1

    def kind(self, index: int, rng: random.Random) -> str:
        t = self.elapsed()
        start, end = self.timeline.unknown_model
        if index == 0 and start <= t < end and rng.random() < 0.3:
            return "unknown"
        start, end = self.timeline.bad_input
        if start <= t < end and rng.random() < 0.25:
            return "bad"
        return "good"

    def paced(self, index: int) -> None:
        rng = random.Random(index)
        gap = 1 / STEADY_RATE
        with httpx.Client(timeout=10) as client:
            next_at = time.monotonic()
            while not self.stop.is_set() and self.elapsed() < self.timeline.seconds:
                self.send(client, rng, self.kind(index, rng))
                next_at = max(next_at + gap, time.monotonic() - gap)
                self.stop.wait(max(0.0, next_at - time.monotonic()))

    def unpaced(self, index: int) -> None:
        rng = random.Random(100 + index)
        start, end = self.timeline.burst
        self.stop.wait(max(0.0, start - self.elapsed()))
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set() and self.elapsed() < end:
                self.send(client, rng, "good")

    def run(self, settings: Settings) -> None:
        """Drive the whole timeline from this thread's point of view (the canary split included)."""
        self.start = time.monotonic()
        threads = [threading.Thread(target=self.paced, args=(i,), daemon=True) for i in range(STEADY_CLIENTS)]
        threads += [threading.Thread(target=self.unpaced, args=(i,), daemon=True) for i in range(BURST_CLIENTS)]
        for thread in threads:
            thread.start()
        marks = [
            (self.timeline.burst[0], f"burst: {BURST_CLIENTS} more clients, unpaced"),
            (self.timeline.burst[1], "burst over"),
            (self.timeline.bad_input[0], "bad input (400) on a quarter of the requests"),
            (self.timeline.unknown_model[0], "a few requests for an unknown model (404)"),
            (self.timeline.bad_input[1], "bad input over"),
            (self.timeline.canary, None),
            (self.timeline.drift, f"{SHIFTED} shifted by {SHIFT:g} cm"),
        ]
        try:
            for at, text in marks:
                if self.stop.wait(max(0.0, at - self.elapsed())):
                    break
                if text is None:
                    with Registry.open(settings) as registry:
                        weights = registry.split("iris@2", "production", CANARY_WEIGHT)
                    text = f"canary: iris@2 gets {weights.get(2, CANARY_WEIGHT)}% of production"
                say(f"load {self.elapsed():5.1f}s: {text}  ({self.total()} requests so far)")
            while alive := [thread for thread in threads if thread.is_alive()]:
                alive[0].join(timeout=15)
                if alive[0].is_alive():
                    say(f"load {self.elapsed():5.1f}s: {self.total()} requests so far")
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=15)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


# -- reading Prometheus ---------------------------------------------------------------------------


@dataclass
class Series:
    legend: str
    times: np.ndarray  # seconds from the start of the load
    values: np.ndarray


def panel_queries(window: str) -> list[tuple[Panel, list[tuple[str, str]]]]:
    """The panels drawn, each with (PromQL, legend format) per query: the dashboard's expressions
    with their rate window replaced by ``window``."""
    table = expressions(JOB)
    by_title = {panel.title: panel for _, row in ROWS for panel in row}
    chosen = []
    for title in PANELS:
        panel = by_title[title]
        queries = [(table[name].replace(f"[{WINDOW}]", f"[{window}]"), legend) for name, legend in panel.queries]
        chosen.append((panel, queries))
    return chosen


def legend_text(template: str, labels: dict[str, str]) -> str:
    """Grafana's legend format filled in; a label the series lacks (or has empty) reads "(none)"."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1)) or "(none)", template)


def query_range(base: str, expression: str, legend: str, start: float, end: float, origin: float) -> list[Series]:
    answer = httpx.get(
        f"{base}/api/v1/query_range",
        params={"query": expression, "start": start, "end": end, "step": "1s"},
        timeout=30,
    )
    body = answer.json()
    if answer.status_code != 200 or body.get("status") != "success":
        raise RuntimeError(f"{expression}: {body}")
    found = []
    for result in body["data"]["result"]:
        points = np.array([(float(t), float(v)) for t, v in result["values"]])
        found.append(Series(legend_text(legend, result["metric"]), points[:, 0] - origin, points[:, 1]))
    return sorted(found, key=lambda s: s.legend)


# -- drawing ----------------------------------------------------------------------------------------

BACKGROUND, PANEL, TEXT, MUTED, GRID = "#111217", "#181b1f", "#ccccdc", "#8e8e8e", "#2c3235"
# Grafana's classic palette, in its order
PALETTE = ("#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0", "#508642",
           "#cca300", "#447ebc", "#c15c17")  # fmt: skip
RED = "#f2495c"


def unit_formatter(unit: str, top: float) -> Any:
    """Tick labels the way Grafana writes the panel's unit, scaled to the axis' top."""
    from matplotlib.ticker import FuncFormatter

    def number(v: float) -> str:
        return f"{v:.0f}" if top >= 10 else f"{v:.1f}" if top >= 1 else f"{v:.2f}"

    if unit == "percentunit":
        return FuncFormatter(lambda v, _: f"{v * 100:.0f}%" if top >= 0.1 else f"{v * 100:.1f}%")
    if unit == "s":
        scale, suffix = (1e6, "µs") if top < 1e-3 else (1e3, "ms") if top < 1 else (1, "s")
        scaled = top * scale
        digits = 0 if scaled >= 10 else 1 if scaled >= 1 else 2
        return FuncFormatter(lambda v, _: f"{v * scale:.{digits}f} {suffix}" if v else "0")
    if unit == "bytes":
        return FuncFormatter(lambda v, _: f"{v / 2**20:.0f} MiB")
    if unit == "reqps":
        return FuncFormatter(lambda v, _: f"{number(v)} req/s" if v else "0")
    return FuncFormatter(lambda v, _: number(v))


def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten at least ``raw``."""
    power = 10 ** np.floor(np.log10(raw)) if raw > 0 else 1.0
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def figures(unit: str, series: Series) -> str:
    """Median, peak (and when) and last value of a series, in the panel's unit."""
    present = np.isfinite(series.values)
    if not present.any():
        return "no numbers"
    values, times = series.values[present], series.times[present]
    peak = int(np.argmax(values))

    def show(value: float) -> str:
        return unit_formatter(unit, abs(value))(value, None)

    return (
        f"median {show(float(np.median(values)))}, max {show(float(values[peak]))} at {clock(float(times[peak]))}, "
        f"last {show(float(values[-1]))} ({clock(float(times[0]))}–{clock(float(times[-1]))})"
    )


def clock(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    seconds = abs(round(seconds))
    return f"{sign}{seconds // 60}:{seconds % 60:02d}"


def draw_panel(ax: Any, panel: Panel, series: list[Series], timeline: Timeline, options: MonitoringOptions) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator

    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(True, color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    ax.tick_params(colors=MUTED, labelsize=7, length=0)
    ax.set_title(panel.title, loc="left", color=TEXT, fontsize=9.5, fontweight="bold", pad=6)
    for start, end, label in timeline.events():
        if end is None:
            ax.axvline(start, color="#6e7079", linewidth=0.8, linestyle=(0, (3, 3)))
        else:
            ax.axvspan(start, end, color="#ffffff", alpha=0.045, linewidth=0)
        ax.text(start, 1.0, f" {label}", transform=ax.get_xaxis_transform(), color=MUTED, fontsize=6, va="top")
    top = 0.0
    for index, one in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        ax.plot(one.times, one.values, color=color, linewidth=1.2, label=one.legend)
        ax.fill_between(one.times, one.values, color=color, alpha=0.08, linewidth=0)
        finite = one.values[np.isfinite(one.values)]
        top = max(top, float(finite.max()) if finite.size else 0.0)
    if not series:
        ax.text(0.5, 0.5, "No data", transform=ax.transAxes, color=MUTED, ha="center", va="center")
    top = top * 1.15 if top > 0 else 1.0
    ax.set_ylim(0, top)
    threshold = {"slo": options.slo_p99_seconds, "error_rate": options.error_rate}.get(panel.threshold or "")
    if threshold is not None and threshold <= top:
        ax.axhline(threshold, color=RED, linewidth=1, alpha=0.8)
    elif threshold is not None:  # not stretched to: the data would be a flat line at the bottom
        shown = unit_formatter(panel.unit, threshold)(threshold, None)
        ax.text(0.99, 0.97, f"threshold {shown}: above", transform=ax.transAxes, color=RED, fontsize=6.5,
                ha="right", va="top")  # fmt: skip
    if panel.unit == "bytes":
        ax.yaxis.set_major_locator(MultipleLocator(nice_step(top / 2**20 / 5) * 2**20))
    else:
        ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.yaxis.set_major_formatter(unit_formatter(panel.unit, top))
    ax.set_xlim(-5, timeline.seconds + 3)
    ax.xaxis.set_major_locator(MaxNLocator(7, steps=[1, 1.5, 3, 5, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: clock(v)))
    if series:
        placed = {"loc": "upper left", "bbox_to_anchor": (0, -0.1), "ncol": 2}
        legend = ax.legend(**placed, frameon=False, fontsize=6.3, handlelength=1.2, columnspacing=1.2, borderaxespad=0)
        for text in legend.get_texts():
            text.set_color(TEXT)


def render(drawn: Sequence[tuple[Panel, list[Series]]], timeline: Timeline, subtitle: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4
    lines = -(-len(drawn) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(16, 3.65 * lines + 0.7), squeeze=False, facecolor=BACKGROUND)
    options = MonitoringOptions()
    for ax, (panel, series) in zip(axes.flat, drawn, strict=False):
        draw_panel(ax, panel, series, timeline, options)
    for ax in axes.flat[len(drawn) :]:
        ax.set_visible(False)
    fig.suptitle("modelport", x=0.012, y=0.995, ha="left", color=TEXT, fontsize=13, fontweight="bold")
    fig.text(0.012, 0.963, subtitle, ha="left", va="top", color=MUTED, fontsize=8)
    fig.subplots_adjust(left=0.045, right=0.99, top=0.9, bottom=0.085, wspace=0.22, hspace=0.66)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, facecolor=BACKGROUND)
    plt.close(fig)


# -- the run ------------------------------------------------------------------------------------------


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("docs/monitoring.png"), help="the PNG to write")
    parser.add_argument("--seconds", type=float, default=90.0, help="how long the load runs (default 90)")
    parser.add_argument("--window", default="15s", help=f"rate window of the queries (the dashboard's: {WINDOW})")
    args = parser.parse_args(argv)
    if args.seconds < 30:
        parser.error("--seconds: give at least 30 (the load has seven parts)")
    if not re.fullmatch(r"\d+[smh]", args.window):
        parser.error("--window: a Prometheus duration such as 15s or 5m")
    return args


def run(args: argparse.Namespace) -> None:
    timeline = Timeline(args.seconds)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelport-dashboard-")))
        settings = Settings(home=work / "home")
        frame = register_models(settings)
        env = {**os.environ, "MODELPORT_HOME": str(settings.home), "NO_COLOR": "1", **SERVER_ENV}
        server = stack.enter_context(serving(["iris@production", "--workers", "2", "--capture-rate", "0.2"], env=env))
        say(f"modelport serve (pid {server.process.pid}, 2 workers) at {server.base}")
        config = export_monitoring(settings.home, work / "monitoring", server.port)
        say(f"monitoring files exported to {config.parent.parent}")
        base = stack.enter_context(prometheus(config, work / "promdata"))
        time.sleep(3)  # a few scrapes before the load
        load = Load(server.base, frame, timeline)
        say(f"load for {args.seconds:g} s: {STEADY_CLIENTS} clients at {STEADY_RATE:g} requests/s each")
        started = time.time()
        load.run(settings)
        ended = time.time()
        say("load over; waiting for the last scrapes and drift measurement")
        time.sleep(5)
        drawn = []
        for panel, queries in panel_queries(args.window):
            series = []
            for expression, legend in queries:
                series += query_range(base, expression, legend, started - 5, ended + 3, started)
            drawn.append((panel, series))
            say(f"queried {panel.title!r}: {len(series)} series")
            for one in series:
                print(f"    {one.legend}: {figures(panel.unit, one)}", flush=True)
    total = load.total()
    statuses = Counter()
    for key, count in load.counts.items():
        statuses[key.split(" ", 1)[1]] += count
    say(f"{total} requests in {ended - started:.0f} s: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    empty = [panel.title for panel, series in drawn if not series]
    if empty:
        say(f"WARNING: no data for {', '.join(empty)}")
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    subtitle = (
        f"A {ended - started:.0f} s load on iris@production (2 workers, capture 0.2, drift every 3 s over 20 s), "
        f"Prometheus scraping every 1 s; {total} requests. Queries: the dashboard's, rate window {args.window} "
        f"(dashboard: {WINDOW}). {date}, {os.cpu_count()} cores, {platform.machine()}.\n"
        f"Load: {STEADY_CLIENTS} clients × {STEADY_RATE:g} req/s, 1–8 rows; burst {clock(timeline.burst[0])}–"
        f"{clock(timeline.burst[1])} (+{BURST_CLIENTS} unpaced clients); bad input {clock(timeline.bad_input[0])}–"
        f"{clock(timeline.bad_input[1])} with a few unknown-model requests; canary {CANARY_WEIGHT}% to v2 at "
        f"{clock(timeline.canary)}; {SHIFTED} +{SHIFT:g} cm from {clock(timeline.drift)}."
    )
    render(drawn, timeline, subtitle, args.out)
    say(f"wrote {args.out}")


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(argv)

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    try:
        run(args)
    except KeyboardInterrupt:
        say("interrupted: every process started was stopped")
        sys.exit(130)


if __name__ == "__main__":
    main()
