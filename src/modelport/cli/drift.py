"""``modelport drift REF``: a version's captured traffic against its reference profile.

A table (or ``--json``) of PSI, p-value, the drifted flag and the unseen values (of categorical
features) per feature and for the prediction, and with ``--html`` a self-contained report: one
inline SVG histogram per feature, reference against traffic, no external assets. With
``--fail-on-drift`` it exits with :data:`DRIFT_EXIT` (3) when a feature or the prediction is
drifted, for CI; 1 stays "could not compare".
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from modelport.cli.common import open_registry
from modelport.errors import InvalidSetting, ModelportError
from modelport.observability.drift import (
    P_VALUE,
    PSI_THRESHOLD,
    DriftReport,
    FeatureDrift,
    compute_drift,
    iter_captured,
)
from modelport.observability.profile import Profile, read_profile
from modelport.settings import Settings
from modelport.types import ModelVersion

DRIFT_EXIT = 3  # --fail-on-drift: a feature or the prediction drifted (1: could not compare, 2: usage)
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_since(text: str, now: datetime) -> datetime:
    """``90s``, ``30m``, ``1h``, ``2d``, ``1w`` before ``now``, or an ISO 8601 time (UTC unless it says)."""
    found = _DURATION.fullmatch(text.strip())
    if found:
        return now - timedelta(**{UNITS[found[2]]: float(found[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidSetting(
            f"--since expects a duration such as 30m, 1h or 2d, or an ISO time such as 2026-11-30T12:00, got {text!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def run(
    ref: str,
    *,
    since: str | None,
    as_json: bool,
    html_path: Path | None,
    capture_dir: Path | None,
    out: Console,
    err: Console,
    fail_on_drift: bool = False,
) -> int:
    """Compare REF's captured traffic with its reference profile and print the result; the exit
    code is :data:`DRIFT_EXIT` when ``fail_on_drift`` and anything drifted, else 0."""

    settings = Settings.from_env()
    start = parse_since(since, datetime.now(UTC)) if since else None
    registry = open_registry(settings)
    try:
        version = registry.get(ref)
        profile = read_profile(registry.artifact_path(version))
    finally:
        registry.close()
    if profile is None:
        raise ModelportError(
            f"{version.ref} has no reference profile (it was registered before modelport kept one); register "
            "the model again with --reference data.csv (CLI) or reference_data= (Python) to compare traffic with it"
        )
    root = capture_dir or settings.capture_root
    captured = iter_captured(root, version.name, version.version, start)
    report = compute_drift(profile, captured)
    skipped = captured.skipped + report.skipped
    if report.rows == 0:
        when = f" since {start.isoformat(timespec='seconds')}" if start else ""
        also = f" ({skipped} unreadable lines skipped)" if skipped else ""
        raise ModelportError(
            f"no captured requests for {version.ref} in {captured.directory}{when}{also}; serve it with payload "
            "capture on (--capture-rate) and send traffic, then run drift again"
        )
    if skipped:
        err.print(f"{skipped} captured lines skipped: not JSON, or not matching {version.ref}'s inputs")
    if html_path is not None:
        html_path.write_text(render_html(version, report, since=start), encoding="utf-8")
    if as_json:
        out.print_json(orjson.dumps(report_json(version, report)).decode())
    else:
        _print_table(version, report, out)
    if html_path is not None:
        err.print(f"wrote {escape(str(html_path))}")
    drifted = [*report.drifted, *([report.prediction.name] if report.prediction and report.prediction.drifted else [])]
    if fail_on_drift and drifted:
        err.print(f"drifted: {escape(', '.join(drifted))} (exit code {DRIFT_EXIT}, --fail-on-drift)")
        return DRIFT_EXIT
    return 0


def _print_table(version: ModelVersion, report: DriftReport, out: Console) -> None:
    table = Table(
        "feature", "type", "PSI", "p-value", "drifted", "unseen", title=f"drift of {version.ref}", title_justify="left"
    )
    for feature in report.features:
        table.add_row(*_cells(feature))
    out.print(table)
    prediction = report.prediction
    if prediction is None:
        out.print("prediction: not profiled (the model has no output of one value per row)")
    else:
        psi, pvalue, flag, unseen = _cells(prediction)[2:]
        also = f", unseen {unseen}" if prediction.unseen else ""
        out.print(f"prediction {escape(prediction.name)}: PSI {psi}, p-value {pvalue}, {flag}{also}")
    drifted = report.drifted
    verdict = f"[bold red]drifted: {escape(', '.join(drifted))}[/]" if drifted else "no feature drifted"
    out.print(f"{report.rows} captured rows against {_reference(report.profile)}; {verdict}")
    if report.unseen:
        counts = ", ".join(f"{escape(name)} ({count})" for name, count in report.unseen.items())
        out.print(f"[bold yellow]values the reference never had[/] in: {counts}")
    out.print(f"drifted = PSI > {PSI_THRESHOLD:g} and p-value < {P_VALUE:g} (KS for numbers, χ² for categories)")


def _cells(feature: FeatureDrift) -> tuple[str, str, str, str, str, str]:
    psi = "-" if feature.psi is None else f"{feature.psi:.3f}"
    pvalue = "-" if feature.pvalue is None else f"{feature.pvalue:.3g} ({feature.test})"
    flag = "[bold red]DRIFTED[/]" if feature.drifted else ("no values" if feature.psi is None else "stable")
    return escape(feature.name), feature.kind, psi, pvalue, flag, escape(unseen_text(feature))


def unseen_text(feature: FeatureDrift) -> str:
    """``312: fibre 300, fibr 12`` (the most frequent unseen values), ``0``, or ``-`` when not counted."""
    if feature.unseen is None:
        return "-"
    if not feature.unseen:
        return "0"
    shown = ", ".join(f"{value!r} {count}" for value, count in feature.unseen_values)
    more = ", …" if sum(count for _, count in feature.unseen_values) < feature.unseen else ""
    return f"{feature.unseen}: {shown}{more}"


def _reference(profile: Profile) -> str:
    source = "reference data" if profile.source == "reference_data" else "the sample input"
    return f"the reference profile ({profile.rows} rows of {source})"


# --- the HTML report -------------------------------------------------------------------------

WIDTH, HEIGHT, MARGIN, BOTTOM = 560, 250, 36, 70  # BOTTOM: room for slanted bin labels
REFERENCE_COLOR, CURRENT_COLOR, DRIFTED_COLOR = "#9aa5b1", "#2f6fb3", "#c0392b"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1f2933; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { padding: 0.3rem 0.8rem; border-bottom: 1px solid #d9e2ec; text-align: left; }
td.drifted { color: #c0392b; font-weight: bold; }
td.unseen { color: #b7791f; font-weight: bold; }
figure { display: inline-block; margin: 0.5rem 1rem 1rem 0; }
figcaption { font-weight: bold; margin-bottom: 0.3rem; }
.legend span { display: inline-block; width: 0.8rem; height: 0.8rem; margin: 0 0.3rem 0 1rem; }
"""


def render_html(version: ModelVersion, report: DriftReport, *, since: datetime | None = None) -> str:
    """A self-contained HTML page: the summary table and one histogram per feature (and the prediction)."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(f.name)}</td><td>{f.kind}</td><td>{_number(f.psi, '.3f')}</td>"
        f"<td>{_number(f.pvalue, '.3g')} {f.test}</td>"
        f"<td class='{'drifted' if f.drifted else ''}'>{'drifted' if f.drifted else 'stable'}</td>"
        f"<td class='{'unseen' if f.unseen else ''}'>{e(unseen_text(f))}</td></tr>"
        for f in (*report.features, *([report.prediction] if report.prediction else []))
    )
    window = f" since {e(since.isoformat(timespec='seconds'))}" if since else ""
    plots = "".join(_figure(feature, "feature") for feature in report.features)
    prediction = _figure(report.prediction, "prediction") if report.prediction else ""
    legend = (
        f"<p class='legend'><span style='background:{REFERENCE_COLOR}'></span>reference"
        f"<span style='background:{CURRENT_COLOR}'></span>captured traffic"
        f"<span style='background:{DRIFTED_COLOR}'></span>captured traffic, drifted</p>"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>drift of {e(version.ref)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Drift of {e(version.ref)}</h1>"
        f"<p>{report.rows} captured rows{window} against {e(_reference(report.profile))}. "
        f"A feature is drifted when its PSI is above {PSI_THRESHOLD:g} and its p-value (Kolmogorov–Smirnov "
        f"for numbers, chi-squared for categories) is below {P_VALUE:g}. Unseen: values of a categorical "
        "feature that its reference never had, counted apart (the most frequent named).</p>"
        "<table><tr><th>feature</th><th>type</th><th>PSI</th><th>p-value</th><th>drifted</th><th>unseen</th></tr>"
        f"{rows}</table>{legend}<h2>Features</h2>{plots}"
        f"{'<h2>Prediction</h2>' + prediction if prediction else ''}</body></html>\n"
    )


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _figure(feature: FeatureDrift, kind: str) -> str:
    """One grouped-bar histogram: the reference's and the traffic's share of each bin."""
    e = html.escape
    bins = len(feature.bins)
    top = max([*feature.reference, *feature.current, 1e-9])
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - MARGIN - BOTTOM
    step = plot_w / max(bins, 1)
    bar = step * 0.4
    current_color = DRIFTED_COLOR if feature.drifted else CURRENT_COLOR
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' role='img' "
        f"aria-label='{e(feature.name)}: reference and captured traffic per bin'>",
        f"<line x1='{MARGIN}' y1='{HEIGHT - BOTTOM}' x2='{WIDTH - MARGIN}' y2='{HEIGHT - BOTTOM}' stroke='#52606d'/>",
        f"<text x='4' y='{MARGIN - 8}' font-size='10'>{top:.0%}</text>",
    ]
    for i, (label, ref, cur) in enumerate(zip(feature.bins, feature.reference, feature.current, strict=True)):
        x = MARGIN + i * step + step * 0.1
        for offset, share, color, who in ((0.0, ref, REFERENCE_COLOR, "reference"), (bar, cur, current_color, "now")):
            h = plot_h * share / top
            parts.append(
                f"<rect x='{x + offset:.1f}' y='{HEIGHT - BOTTOM - h:.1f}' width='{bar:.1f}' height='{h:.1f}' "
                f"fill='{color}'><title>{e(label)}: {who} {share:.1%}</title></rect>"
            )
        short = label if len(label) <= 16 else label[:15] + "…"
        lx, ly = x + bar, HEIGHT - BOTTOM + 10
        parts.append(
            f"<text x='{lx:.1f}' y='{ly}' font-size='9' text-anchor='end' "
            f"transform='rotate(-35 {lx:.1f} {ly})'>{e(short)}</text>"
        )
    parts.append("</svg>")
    psi = _number(feature.psi, ".3f")
    caption = f"{e(feature.name)} — PSI {psi}{' (drifted)' if feature.drifted else ''}"
    if feature.unseen:
        caption += f"<br><span class='unseen'>{e(unseen_text(feature))} unseen</span>"
    return (
        f"<figure class='{kind}' data-name='{e(feature.name)}'><figcaption>{caption}</figcaption>{''.join(parts)}"
        "</figure>"
    )


def report_json(version: ModelVersion, report: DriftReport) -> dict[str, Any]:
    """``{"model", "version", "rows", "features": [{"name", "psi", "ks_pvalue", "drifted", "unseen"}],
    "prediction"}``."""
    return {"model": version.name, "version": version.version, **report.to_dict()}
