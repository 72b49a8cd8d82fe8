"""The ``modelport bench`` command: options, the run, results.json, the histogram, the regression gate.

The engine (endpoints, payloads, load, statistics, comparison) is :mod:`modelport.bench.load`.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelport.bench.load import (
    PROTOCOLS,
    SAME_LOAD,
    Change,
    Endpoint,
    Run,
    Stats,
    build_payload,
    compare,
    config_differences,
    endpoint_for_ref,
    fetch_signature,
    histogram,
    load_baseline,
    locustfile,
    parse_threshold,
    parse_url,
    run_load,
    summarize,
    write_histogram_png,
)
from modelport.errors import InvalidSetting
from modelport.server.spawn import serving
from modelport.version import __version__

DEFAULT_CONCURRENCY = 8
DEFAULT_DURATION_S = 10.0


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What ``modelport bench`` was asked for; None: the baseline's with ``compare``, else the default."""

    target: str  # model reference or URL
    concurrency: int | None = None  # default 8
    duration_s: float | None = None  # neither this nor requests: 10 s
    requests: int | None = None
    rows_per_request: int | None = None  # default 1
    protocol: str | None = None  # from the URL, else v2
    output: Path = Path("bench-results")
    compare: Path | None = None
    max_regression: str = "10%"
    locustfile: Path | None = None
    api_key: str | None = None
    timeout_s: float = 30.0


def bench(options: BenchOptions, console: Console) -> int:
    """Run ``modelport bench``; returns the exit code (1 when --compare finds a regression)."""
    threshold = parse_threshold(options.max_regression)
    baseline = load_baseline(options.compare) if options.compare is not None else None
    if baseline is not None:
        options = _with_baseline(options, baseline, options.compare)
    options = _checked(options)
    headers = {"authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    is_url = options.target.startswith(("http://", "https://"))
    if is_url:
        endpoint = parse_url(options.target, options.protocol)
        signature = fetch_signature(endpoint, headers, options.timeout_s)
    else:
        from modelport.registry.registry import Registry
        from modelport.settings import DEFAULT_PORT, Settings

        endpoint = endpoint_for_ref(options.target, f"http://127.0.0.1:{DEFAULT_PORT}", options.protocol or "v2")
        registry = Registry.open(Settings.from_env(), create=False)
        try:
            signature = registry.get(options.target).signature
        finally:
            registry.close()
    if baseline is not None:
        _check_same_load(_shape(options, endpoint), baseline, options.compare)
    payload = build_payload(signature, endpoint.protocol, _rows(options))
    if options.locustfile is not None:
        options.locustfile.parent.mkdir(parents=True, exist_ok=True)
        options.locustfile.write_text(locustfile(endpoint, payload), encoding="utf-8")
        console.print(f"wrote {options.locustfile}: POST {endpoint.infer_path} ({_rows(options)} row(s))")
        if not is_url:
            console.print(f"  start the server:  modelport serve {options.target}")
        console.print(f"  run it:            locust -f {options.locustfile} --host {endpoint.host}")
        return 0
    body = orjson.dumps(payload)
    if is_url:
        run = _load(endpoint, body, headers, options, console)
    else:
        with serving([options.target]) as server:
            endpoint = replace(endpoint, base=server.base)
            run = _load(endpoint, body, headers, options, console)
    stats = summarize(run.latencies_s, run.errors.total(), run.elapsed_s)
    hist = histogram(run.latencies_s)
    results = _results(options, endpoint, stats, hist, run)
    options.output.mkdir(parents=True, exist_ok=True)
    (options.output / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    skipped = write_histogram_png(hist, stats, options.output / "latency.png", f"{endpoint.name} ({endpoint.protocol})")
    _print_stats(console, stats, run)
    written = "results.json" + (" and latency.png" if skipped is None else "")
    console.print(f"wrote {written} to {options.output}")
    if skipped:
        console.print(f"[yellow]{skipped}[/]")
    if baseline is None:
        return 0
    changes = compare(results["stats"], baseline["stats"], threshold)
    _print_changes(console, changes, options.compare, threshold)
    for difference in config_differences(results["config"], _config(baseline)):
        console.print(f"[yellow]note:[/] the runs differ in {difference}")
    return 1 if any(c.regressed for c in changes) else 0


def _config(baseline: dict[str, Any]) -> dict[str, Any]:
    config = baseline.get("config")
    return config if isinstance(config, dict) else {}


def _with_baseline(options: BenchOptions, baseline: dict[str, Any], path: Path | None) -> BenchOptions:
    """``--compare``: the settings not given are the baseline's (a baseline without them: the defaults)."""
    config = _config(baseline)

    def given(key: str, *kinds: type) -> Any:
        value = config.get(key)
        if value is None:
            return None
        wrong = not isinstance(value, kinds) or isinstance(value, bool)
        if wrong or (isinstance(value, int | float) and value <= 0) or (key == "protocol" and value not in PROTOCOLS):
            raise InvalidSetting(f"the baseline {path} has config.{key} {value!r}: give a modelport bench results.json")
        return value

    if options.concurrency is None:
        options = replace(options, concurrency=given("concurrency", int))
    if options.rows_per_request is None:
        options = replace(options, rows_per_request=given("rows_per_request", int))
    if options.protocol is None:
        options = replace(options, protocol=given("protocol", str))
    if options.duration_s is None and options.requests is None:
        duration, requests = given("duration_s", int, float), given("requests", int)
        options = replace(options, duration_s=None if duration is None else float(duration), requests=requests)
    return options


def _check_same_load(shape: dict[str, Any], baseline: dict[str, Any], path: Path | None) -> None:
    """Refuse, before any load, a run whose load differs in shape from the baseline's (one line)."""
    config = _config(baseline)
    differ = [
        f"--{key.replace('_', '-')} {shape[key]} (the baseline's: {config[key]})"
        for key in SAME_LOAD
        if config.get(key) is not None and config[key] != shape[key]
    ]
    if differ:
        raise InvalidSetting(
            f"cannot compare with {path}, made with other settings: {', '.join(differ)}; "
            "leave the option out to reuse the baseline's, or make a new baseline"
        )


def _shape(options: BenchOptions, endpoint: Endpoint) -> dict[str, Any]:
    return {"protocol": endpoint.protocol, "concurrency": _concurrency(options), "rows_per_request": _rows(options)}


def _concurrency(options: BenchOptions) -> int:
    return DEFAULT_CONCURRENCY if options.concurrency is None else options.concurrency


def _rows(options: BenchOptions) -> int:
    return 1 if options.rows_per_request is None else options.rows_per_request


def _checked(options: BenchOptions) -> BenchOptions:
    if options.duration_s is not None and options.requests is not None:
        raise InvalidSetting("give --duration or --requests, not both")
    if options.duration_s is None and options.requests is None:
        options = replace(options, duration_s=DEFAULT_DURATION_S)
    if options.duration_s is not None and not options.duration_s > 0:
        raise InvalidSetting("--duration must be more than 0 seconds")
    if options.requests is not None and options.requests < 1:
        raise InvalidSetting("--requests must be at least 1")
    if _concurrency(options) < 1:
        raise InvalidSetting("--concurrency must be at least 1")
    if _rows(options) < 1:
        raise InvalidSetting("--rows-per-request must be at least 1")
    if options.protocol is not None and options.protocol not in PROTOCOLS:
        raise InvalidSetting(f"unknown protocol {options.protocol!r}: use one of {', '.join(PROTOCOLS)}")
    return options


def _load(endpoint: Endpoint, body: bytes, headers: dict[str, str], options: BenchOptions, console: Console) -> Run:
    bound = f"{options.requests} requests" if options.requests is not None else f"{options.duration_s:g} s"
    console.print(
        f"POST {endpoint.infer_url}: {_concurrency(options)} concurrent connection(s), {bound}, "
        f"{_rows(options)} row(s) per request (the client shares this machine's cores)"
    )
    total = float(options.requests if options.requests is not None else options.duration_s or 0)
    columns = (
        BarColumn(),
        TextColumn("{task.fields[done]:,} requests  {task.fields[rps]:,.0f} req/s  {task.fields[errors]:,} errors"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task("load", total=total, done=0, rps=0.0, errors=0)

        def update(run: Run, elapsed: float) -> None:
            done = run.done
            position = done if options.requests is not None else min(elapsed, total)
            rate = len(run.latencies_s) / elapsed if elapsed > 0 else 0.0
            progress.update(task, completed=position, done=done, rps=rate, errors=run.errors.total())

        coroutine = run_load(
            endpoint.infer_url,
            body,
            concurrency=_concurrency(options),
            duration_s=options.duration_s,
            requests=options.requests,
            headers=headers,
            timeout_s=options.timeout_s,
            on_progress=update,
        )
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(coroutine)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _results(options: BenchOptions, endpoint: Endpoint, stats: Stats, hist: Any, run: Run) -> dict[str, Any]:
    return {
        "modelport_version": __version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"nproc": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "config": {
            "target": options.target,
            "url": endpoint.infer_url,
            "protocol": endpoint.protocol,
            "concurrency": _concurrency(options),
            "duration_s": options.duration_s,
            "requests": options.requests,
            "rows_per_request": _rows(options),
        },
        "stats": asdict(stats),
        "errors": {kind: {"count": n, "first": run.first_error[kind]} for kind, n in run.errors.items()},
        "histogram": hist,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _print_stats(console: Console, stats: Stats, run: Run) -> None:
    table = Table("req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "requests", "errors", title_justify="left")
    errors = f"[red]{stats.errors:,}[/]" if stats.errors else "0"
    cells = (_ms(stats.p50_ms), _ms(stats.p90_ms), _ms(stats.p99_ms), _ms(stats.max_ms))
    table.add_row(f"{stats.rps:,.1f}", *cells, f"{stats.requests:,}", errors)
    console.print(table)
    for kind, count in run.errors.most_common():
        console.print(f"[red]{count:,} × {kind}[/]: {run.first_error[kind]}", markup=True)


def _print_changes(console: Console, changes: list[Change], baseline: Path | None, threshold: float) -> None:
    table = Table("metric", "baseline", "now", "change", "verdict", title=f"compared with {baseline}")
    for c in changes:
        if math.isinf(c.worse_by):
            change = "no successful request"
        else:
            change = f"{c.worse_by:.1%} worse" if c.worse_by > 0 else f"{-c.worse_by:.1%} better"
        verdict = f"[red]REGRESSED (limit {threshold:.0%})[/]" if c.regressed else "ok"
        table.add_row(c.metric, f"{c.baseline:,.2f}", f"{c.current:,.2f}", change, verdict)
    console.print(table)
    if any(c.regressed for c in changes):
        worst = ", ".join(f"{c.metric} worse by {c.worse_by:.1%}" for c in changes if c.regressed)
        console.print(f"[bold red]regression:[/] {worst} (more than {threshold:.0%})")
