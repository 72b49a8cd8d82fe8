"""The Grafana dashboard (its JSON model, as plain data) and Grafana's provisioning files.

Every panel's query is an entry of :func:`modelport.shipping.monitoring.expressions.expressions`.
Grafana is not needed to build it: a test checks the structure Grafana reads (schemaVersion,
uid, panel ids and grid positions, data source, targets).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.shipping.monitoring.expressions import MonitoringOptions, expressions

DATASOURCE_UID = "modelport-prometheus"
DASHBOARD_UID = "modelport"


@dataclass(frozen=True)
class Panel:
    title: str
    queries: Sequence[tuple[str, str]]  # (key of expressions(), legend)
    unit: str
    description: str
    threshold: str | None = None  # "slo" or "error_rate": drawn as a red line


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Traffic",
        (
            Panel("Requests by model", [("request_rate", "{{model}}")], "reqps", "Answered requests per second."),
            Panel(
                "Errors by model",
                [("error_ratio", "{{model}} {{code}}"), ("server_error_ratio", "{{model}} 5xx (alert)")],
                "percentunit",
                "Share of requests answered 4xx or 5xx; the red line is ModelportHighErrorRate's threshold.",
                threshold="error_rate",
            ),
            Panel(
                "Latency p50 and p99",
                [("latency_p50", "{{model}} p50"), ("latency_p99", "{{model}} p99")],
                "s",
                "Request time inside the server; the red line is the p99 SLO (ModelportHighLatencyP99).",
                threshold="slo",
            ),
            Panel("Requests by client", [("client_rate", "{{client}}")], "reqps", "Requests per API key id."),
        ),
    ),
    (
        "Inside the server",
        (
            Panel(
                "Queue wait p99",
                [("queue_wait_p99", "{{model}} v{{version}}")],
                "s",
                "From arrival at the version to the start of the runtime call serving it.",
            ),
            Panel("Inference p99", [("inference_p99", "{{model}} v{{version}}")], "s", "One runtime call."),
            Panel(
                "Rows per runtime call",
                [("batch_rows_mean", "{{model}} v{{version}}")],
                "short",
                "Mean rows per runtime call: above the rows per request when batching merges requests.",
            ),
            Panel("In flight", [("inflight", "{{model}} v{{version}}")], "short", "Requests using the version now."),
            Panel("Queued rows", [("queue_rows", "{{model}} v{{version}}")], "short", "Rows waiting at the batcher."),
            Panel(
                "Rejected requests",
                [("rejected_rate", "{{model}} {{reason}}")],
                "reqps",
                "Refused before running: overload (503) or deadline (504).",
            ),
        ),
    ),
    (
        "Versions and rollout",
        (
            Panel(
                "Version state",
                [("version_state", "{{model}} v{{version}} {{state}}")],
                "short",
                "The state each served version is in (1 while it is).",
            ),
            Panel(
                "Traffic weights",
                [("traffic_weight", "{{model}}@{{alias}} v{{version}}")],
                "percentunit",
                "Share of an alias's traffic each version gets.",
            ),
            Panel(
                "Shadow agreement",
                [("shadow_agreement", "{{model}}@{{alias}} shadow v{{shadow_version}}")],
                "percentunit",
                "Share of a shadow version's label outputs equal to the primary's over the last 5 minutes.",
            ),
            Panel(
                "Shadow requests",
                [("shadow_rate", "{{model}}@{{alias}} shadow v{{shadow_version}}")],
                "reqps",
                "Requests mirrored to a shadow version and compared.",
            ),
        ),
    ),
    (
        "Security",
        (
            Panel(
                "Authentication failures",
                [("auth_failure_rate", "{{reason}}")],
                "reqps",
                "Refused callers: missing, invalid, forbidden (lacks the scope), not_loopback.",
            ),
        ),
    ),
    (
        "Workers",
        (
            Panel(
                "CPU per worker", [("worker_cpu", "{{instance}} {{worker}}")], "percentunit", "CPU seconds per second."
            ),
            Panel("Memory per worker", [("worker_memory", "{{instance}} {{worker}}")], "bytes", "Resident memory."),
            Panel("Open files per worker", [("worker_fds", "{{instance}} {{worker}}")], "short", "Open descriptors."),
            Panel(
                "Workers and scrapes",
                [("workers", "{{instance}} workers"), ("target_up", "{{instance}} up")],
                "short",
                "Live worker processes, and whether Prometheus' last scrape succeeded (1) or not (0).",
            ),
        ),
    ),
    (
        "Drift",
        (
            Panel(
                "Drift PSI",
                [("drift_psi", "{{model}} v{{version}} {{feature}}")],
                "short",
                "Population stability index of captured traffic against the reference profile.",
            ),
            Panel(
                "Drift detected",
                [("drift_detected", "{{model}} v{{version}} {{feature}}")],
                "short",
                "1 while a feature is flagged as drifted (ModelportDriftDetected).",
            ),
        ),
    ),
)

_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_WIDTH, _HEIGHT = 12, 8  # two panels a row on Grafana's 24-column grid


def dashboard(options: MonitoringOptions) -> dict[str, Any]:
    """The Grafana dashboard (JSON model): one row panel per group, two graphs a line."""
    table = expressions(options.job)
    thresholds = {"slo": options.slo_p99_seconds, "error_rate": options.error_rate}
    panels: list[dict[str, Any]] = []
    y = 0
    for title, row in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        for index, panel in enumerate(row):
            position = {"h": _HEIGHT, "w": _WIDTH, "x": (index % 2) * _WIDTH, "y": y + (index // 2) * _HEIGHT}
            panels.append(_graph(len(panels) + 1, panel, position, table, thresholds))
        y += math.ceil(len(row) / 2) * _HEIGHT
    return {
        "uid": DASHBOARD_UID,
        "title": "modelport",
        "description": "Requests, latency, batching, versions, rollout, security, workers and drift of modelport.",
        "tags": ["modelport"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": DATASOURCE_UID},
                    "hide": 0,
                    "refresh": 1,
                    "options": [],
                }
            ]
        },
        "panels": panels,
    }


def _graph(
    number: int, panel: Panel, position: dict[str, int], table: Mapping[str, str], thresholds: Mapping[str, float]
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "spanNulls": False}
    if panel.threshold is not None:
        steps.append({"color": "red", "value": thresholds[panel.threshold]})
        custom["thresholdsStyle"] = {"mode": "line"}
    targets = [
        {
            "refId": chr(ord("A") + index),
            "datasource": _DATASOURCE,
            "expr": table[name],
            "legendFormat": legend,
            "range": True,
        }
        for index, (name, legend) in enumerate(panel.queries)
    ]
    return {
        "id": number,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": _DATASOURCE,
        "gridPos": position,
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "custom": custom,
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
    }


def grafana_datasource(options: MonitoringOptions) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": DATASOURCE_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": options.prometheus_url,
                "isDefault": True,
                "editable": True,
            }
        ],
    }


def grafana_dashboards(folder: Path) -> dict[str, Any]:
    """A file provider loading the dashboards in ``folder``."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "modelport",
                "orgId": 1,
                "folder": "modelport",
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": True,
                "updateIntervalSeconds": 30,
                "options": {"path": str(folder), "foldersFromFilesStructure": False},
            }
        ],
    }
