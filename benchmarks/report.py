"""docs/benchmarks.md from a run's results: tables, the issue's target ratios, versions, commands."""

from __future__ import annotations

from typing import Any

from config import CASES

CASE_NAMES = {c.key: c.name for c in CASES}

# (model, case, what, threshold, higher is better): the targets of issue #4.
TARGETS = (
    ("iris", "1x64", "req/s vs ceiling", 0.40, True),
    ("iris", "1x64", "req/s vs fastapi", 5.0, True),
    ("iris", "1x64", "req/s vs mlserver best", 10.0, True),
    ("iris", "1x64", "p99 vs ceiling p99", 3.0, False),
    ("forest", "1x64", "req/s vs fastapi", 50.0, True),
    ("forest", "1x64", "req/s vs mlserver best", 10.0, True),
)
BATCHING_P50_BUDGET_MS = 0.1


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def best(results: list[dict[str, Any]], model: str, group: str, case: str) -> dict[str, Any] | None:
    """The error-free server of a group with the most req/s in one case, with its name."""
    candidates = [
        {"server": r["server"], **r["cases"][case]}
        for r in results
        if r["model"] == model and r["group"] == group and case in r["cases"] and r["cases"][case]["errors"] == 0
    ]
    return max(candidates, key=lambda c: c["rps"], default=None)


def ratios(results: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """Rows (target, modelport server, value, threshold, verdict) for the issue's targets."""
    rows = []
    for model, case, what, threshold, higher in TARGETS:
        ours = best(results, model, "modelport", case)
        other_group = {"ceiling": "ceiling", "fastapi": "fastapi", "mlserver": "mlserver"}[what.split()[2]]
        theirs = best(results, model, other_group, case)
        label = f"{model}, {CASE_NAMES[case]}: modelport {what}"
        if ours is None or theirs is None:
            rows.append((label, ours["server"] if ours else "-", "not measured", _target(threshold, higher, what), "-"))
            continue
        key = "p99_ms" if what.startswith("p99") else "rps"
        value = ours[key] / theirs[key] if theirs[key] else float("inf")
        met = value >= threshold if higher else value <= threshold
        shown = f"{value:.0%}" if "ceiling" in what and key == "rps" else f"{value:.2f}×"
        verdict = "met" if met else f"missed by {abs(value - threshold) / threshold:.0%}"
        compared = f"{ours['server']} vs {theirs['server']}"
        rows.append((label, compared, shown, _target(threshold, higher, what), verdict))
    return rows


def _target(threshold: float, higher: bool, what: str) -> str:
    if "ceiling" in what and what.startswith("req/s"):
        return f"≥ {threshold:.0%}"
    return f"{'≥' if higher else '≤'} {threshold:g}×"


def batching_costs(results: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """p50 at 1 row x 1 connection, batching on vs off, for every pair of servers."""
    rows = []
    for on in (r for r in results if r["batching"] and "1x1" in r["cases"]):
        off = next((r for r in results if r["model"] == on["model"] and r["pair"] == on["pair"]
                    and not r["batching"] and "1x1" in r["cases"]), None)  # fmt: skip
        if off is None:
            continue
        p_on, p_off = on["cases"]["1x1"]["p50_ms"], off["cases"]["1x1"]["p50_ms"]
        if p_on is None or p_off is None:
            continue
        delta = p_on - p_off
        verdict = ""
        if on["group"] == "modelport":
            verdict = "met" if delta <= BATCHING_P50_BUDGET_MS else f"missed by {delta - BATCHING_P50_BUDGET_MS:.2f} ms"
        rows.append((on["model"], on["pair"], f"{p_off:.2f} → {p_on:.2f}", f"{delta:+.2f}", verdict))
    return rows


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def markdown(info: dict[str, Any], chart_name: str) -> str:
    results, m = info["results"], info["machine"]
    out = ["# Benchmarks: modelport and its peers, side by side", ""]
    if info["quick"]:
        out += [
            "> **Not yet run on a quiet machine.** The figures below are a *smoke run* "
            f"(`--quick`, {info['duration_s']:g} s per case) taken on a loaded development machine while other "
            "test suites ran: they prove the harness works end to end and are **not results**. "
            "Run `make bench` on a quiet machine to replace this page.",
            "",
        ]
    out += [
        f"Run {info['date']} on {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB memory, "
        f"Linux {m['kernel']}, Python {m['python']}, {m['wrk']}. Load average (1/5/15 min) at the start: "
        f"{' / '.join(f'{x:.2f}' for x in m['loadavg_start'])}; at the end: "
        f"{' / '.join(f'{x:.2f}' for x in m['loadavg_end'])}.",
        "",
        f"Each case: wrk on 127.0.0.1 for {info['duration_s']:g} s after a {info['warmup_s']:g} s warm-up, "
        "sharing the cores with the server (`-t1` at 1 connection, `-t2` otherwise). "
        "Every server is checked for correct labels (1 and 64 rows against the model's own `predict`) "
        "before it is loaded. Errors are non-2xx answers plus socket errors. Latencies in ms.",
        "",
        f"![req/s per server and case]({chart_name})",
        "",
        "Reproduce: `make bench` (full) or `make bench-quick` (smoke); this run: "
        f"`{info['argv']}`. How it works: [benchmarks/](../benchmarks/).",
        "",
    ]
    for model in dict.fromkeys(r["model"] for r in results):
        out += [f"## {model}", ""]
        for case in info["cases"]:
            rows = [
                (r["server"], fmt(c["rps"], 0), fmt(c["p50_ms"]), fmt(c["p99_ms"]), str(c["errors"]))
                for r in results
                if r["model"] == model and (c := r["cases"].get(case))
            ]
            if rows:
                out += [f"### {model}: {CASE_NAMES[case]}", ""]
                out += _table(("server", "req/s", "p50", "p99", "errors"), rows)
        skipped = [(r["server"], r["status"]) for r in results if r["model"] == model and not r["cases"]]
        if skipped:
            out += [f"### {model}: not loaded", "", *_table(("server", "why"), skipped)]
    out += ["## Targets (issue #4)", ""]
    out += _table(("target", "compared", "value", "target", "verdict"), ratios(results))
    out += ["### Batching at 1 connection: p50 off → on", ""]
    out += _table(("model", "server", "p50 ms", "Δ ms", f"modelport target ≤ {BATCHING_P50_BUDGET_MS} ms"),
                  batching_costs(results))  # fmt: skip
    out += ["## Versions", ""]
    rows = [(venv, ", ".join(f"{k} {v}" for k, v in sorted(pkgs.items()))) for venv, pkgs in info["versions"].items()]
    out += _table(("environment", "packages"), rows)
    out += ["## Exact commands", "", "Servers (ports are chosen free per run; `BENCH_MODEL` names the model file):", ""]
    out += ["```"] + [f"# {name}\n{command}" for name, command in info["commands"].items()] + ["```", ""]
    wrk = {case: c["wrk"] for r in results for case, c in r["cases"].items()}
    out += ["Load, for example against the last server (the Lua script sets method POST, "
            "`Content-Type: application/json` and that case's body):", "", "```"]  # fmt: skip
    out += [wrk[case] for case in info["cases"] if case in wrk] + ["```", ""]
    return "\n".join(out)
