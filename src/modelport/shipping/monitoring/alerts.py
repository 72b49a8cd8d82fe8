"""Alert rules on modelport's metrics, each with the ``promtool test rules`` case that makes it
fire (and shows it silent under its threshold and before its ``for:`` has passed)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelport.shipping.monitoring.expressions import MonitoringOptions, expressions, plain_number


@dataclass(frozen=True)
class Case:
    """A ``promtool test rules`` case: series (one sample a minute) under which the alert fires
    for ``firing`` (the labels it is expected with) and stays silent for the others."""

    series: Mapping[str, str]  # series selector -> promtool's expanding notation
    firing: Mapping[str, str]
    value: str = ""  # how the annotations render $value for the firing series


@dataclass(frozen=True)
class Alert:
    name: str
    expression: str  # a key of expressions()
    condition: str  # appended to the expression; {error_rate} and {slo} are filled in
    minutes: int  # the alert's for:, in minutes
    severity: str
    summary: str
    description: str
    action: str  # what to do (the docs' alert table)
    case: Case = field(repr=False, default=Case({}, {}))

    def expr(self, options: MonitoringOptions, table: Mapping[str, str]) -> str:
        condition = self.condition.format(
            error_rate=plain_number(options.error_rate), slo=plain_number(options.slo_p99_seconds)
        )
        return f"{table[self.expression]} {condition}"

    def annotations(self, options: MonitoringOptions) -> dict[str, str]:
        values = {
            "error_rate": plain_number(options.error_rate),
            "error_percent": f"{options.error_rate * 100:g}%",
            "slo": plain_number(options.slo_p99_seconds),
            "job": options.job,
        }
        return {"summary": self.summary.format(**values), "description": self.description.format(**values)}


_SERIES = 'instance="10.0.0.1:8080",job="{job}"'


ALERTS: tuple[Alert, ...] = (
    Alert(
        "ModelportHighErrorRate",
        "server_error_ratio",
        "> {error_rate}",
        5,
        "critical",
        "{{{{ $labels.model }}}}: {{{{ $value | humanizePercentage }}}} of requests answered with a server error",
        "More than {error_percent} of the requests for {{{{ $labels.model }}}} got a 5xx answer over the last 5 "
        "minutes (threshold: --error-rate {error_rate}).",
        "Read the server log for the failing version; check ModelportVersionFailed and "
        "ModelportOverloadRejections; roll the alias back (`modelport rollback NAME@ALIAS`) if a new version "
        "started it.",
        Case(
            {
                f'modelport_requests_total{{{_SERIES},protocol="v2",model="broken",version="2",code="5xx"}}': "0+60x40",
                f'modelport_requests_total{{{_SERIES},protocol="v2",model="healthy",version="1",code="2xx"}}': (
                    "0+60x40"
                ),
                f'modelport_requests_total{{{_SERIES},protocol="v2",model="healthy",version="1",code="4xx"}}': (
                    "0+30x40"
                ),
                # no model's traffic: a failing /docs (model "") and requests for unserved models
                f'modelport_requests_total{{{_SERIES},protocol="other",model="",version="",code="5xx"}}': "0+60x40",
                f'modelport_requests_total{{{_SERIES},protocol="v2",model="(unknown)",version="",code="5xx"}}': (
                    "0+60x40"
                ),
            },
            {"model": "broken"},
            "100%",
        ),
    ),
    Alert(
        "ModelportHighLatencyP99",
        "latency_p99",
        "> {slo}",
        10,
        "warning",
        "{{{{ $labels.model }}}}: p99 latency {{{{ $value | humanizeDuration }}}}",
        "The 99th percentile of request time inside the server for {{{{ $labels.model }}}} has been above "
        "{slo} s for 10 minutes (threshold: --slo-p99-seconds {slo}).",
        "Compare queue wait p99 with inference p99 on the dashboard: queue wait means too few workers or "
        "batches too large (--max-batch-wait-ms); inference means the model itself got slower (a new version, "
        "CPU starvation).",
        Case(
            {  # slow: every request past the last bucket (p99 reads 10 s); fast: all in the first bucket
                **{
                    f'modelport_request_duration_seconds_bucket{{{_SERIES},protocol="v2",model="slow",version="1",'
                    f'le="{le}"}}': values
                    for le, values in (("0.0005", "0x40"), ("10", "0x40"), ("+Inf", "0+60x40"))
                },
                **{
                    f'modelport_request_duration_seconds_bucket{{{_SERIES},protocol="v2",model="fast",version="1",'
                    f'le="{le}"}}': "0+60x40"
                    for le in ("0.0005", "10", "+Inf")
                },
                # no model's requests (a slow /metrics scrape: model ""), however slow, are not a model's
                **{
                    f'modelport_request_duration_seconds_bucket{{{_SERIES},protocol="other",model="",version="",'
                    f'le="{le}"}}': values
                    for le, values in (("0.0005", "0x40"), ("10", "0x40"), ("+Inf", "0+60x40"))
                },
            },
            {"model": "slow"},
            "10s",
        ),
    ),
    Alert(
        "ModelportVersionFailed",
        "version_failed",
        "== 1",
        1,
        "critical",
        "{{{{ $labels.model }}}} version {{{{ $labels.version }}}} failed to load",
        "A worker of the server holds version {{{{ $labels.version }}}} of {{{{ $labels.model }}}} in state "
        "failed: requests for it are refused.",
        "Read the server log for the load error (bad artifact, missing dependency, out of memory); fix and "
        "register a new version, or point the alias back at a good one.",
        Case(
            {
                f'modelport_version_state{{{_SERIES},model="iris",version="2",state="failed",worker="41"}}': "1x40",
                f'modelport_version_state{{{_SERIES},model="iris",version="2",state="ready",worker="41"}}': "0x40",
                f'modelport_version_state{{{_SERIES},model="iris",version="1",state="failed",worker="41"}}': "0x40",
                f'modelport_version_state{{{_SERIES},model="iris",version="1",state="ready",worker="41"}}': "1x40",
            },
            {"model": "iris", "version": "2"},
        ),
    ),
    Alert(
        "ModelportOverloadRejections",
        "overload_rate",
        "> 0",
        5,
        "warning",
        '{{{{ $labels.model }}}}: {{{{ $value | printf "%.2f" }}}} requests/s refused for overload',
        "The server has been answering requests for {{{{ $labels.model }}}} with 503 for 5 minutes: their "
        "expected queue wait was past the version's limit (max_queue_wait_ms).",
        "Add workers or instances, or lower the rows per request; raise --max-queue-wait-ms only if callers "
        "can wait longer.",
        Case(
            {
                f'modelport_rejected_requests_total{{{_SERIES},model="busy",version="1",reason="overload"}}': (
                    "0+6x40"
                ),
                f'modelport_rejected_requests_total{{{_SERIES},model="calm",version="1",reason="overload"}}': "0x40",
                f'modelport_rejected_requests_total{{{_SERIES},model="calm",version="1",reason="deadline"}}': (
                    "0+6x40"
                ),
            },
            {"model": "busy"},
            "0.10",
        ),
    ),
    Alert(
        "ModelportDriftDetected",
        "drift_detected",
        "== 1",
        15,
        "warning",
        "{{{{ $labels.model }}}} version {{{{ $labels.version }}}}: feature {{{{ $labels.feature }}}} drifted",
        "Captured traffic for feature {{{{ $labels.feature }}}} has differed from the reference profile "
        "(population stability index over its limit) for 15 minutes.",
        "Look at the drift PSI panel for the feature; check the data pipeline feeding the model; retrain on "
        "recent data if the change is real.",
        Case(
            {
                f'modelport_drift_detected{{{_SERIES},model="iris",version="1",feature="petal_width"}}': "1x40",
                f'modelport_drift_detected{{{_SERIES},model="iris",version="1",feature="sepal_width"}}': "0x40",
            },
            {"model": "iris", "version": "1", "feature": "petal_width"},
        ),
    ),
    Alert(
        "ModelportTargetDown",
        "target_up",
        "== 0",
        2,
        "critical",
        "Prometheus cannot scrape modelport at {{{{ $labels.instance }}}}",
        "Scrapes of job {job} at {{{{ $labels.instance }}}} have failed for 2 minutes: the server is down, "
        "unreachable, or refuses the scrape (with authentication on, /metrics needs a key with scope metrics).",
        "Check the process and its health endpoint (/v2/health/ready); look at Prometheus' Targets page for "
        "the scrape error (401/403: the scrape credential).",
        Case(
            {
                'up{instance="10.0.0.1:8080",job="{job}"}': "0x40",
                'up{instance="10.0.0.2:8080",job="{job}"}': "1x40",
            },
            {"instance": "10.0.0.1:8080", "job": "{job}"},
        ),
    ),
)


def alert_rules(options: MonitoringOptions) -> dict[str, Any]:
    """The rule file: one group, each alert with for:, a severity and its annotations."""
    table = expressions(options.job)
    rules = [
        {
            "alert": alert.name,
            "expr": alert.expr(options, table),
            "for": f"{alert.minutes}m",
            "labels": {"severity": alert.severity},
            "annotations": alert.annotations(options),
        }
        for alert in ALERTS
    ]
    return {"groups": [{"name": "modelport", "rules": rules}]}


_TEMPLATE = re.compile(r"\{\{ (\$labels\.(\w+)|\$value[^}]*) \}\}")


def _rendered(text: str, labels: Mapping[str, str], value: str) -> str:
    """The annotation as Prometheus renders it for ``labels``, ``$value`` already rendered."""
    return _TEMPLATE.sub(lambda m: labels[m.group(2)] if m.group(2) else value, text)


def alert_tests(options: MonitoringOptions, rule_file: str = "alerts.yml") -> dict[str, Any]:
    """``promtool test rules`` input: per alert, its case's series; silent before its for: has
    passed; firing after, for the case's firing series only (the others stay under the threshold)."""
    tests = []
    for alert in ALERTS:
        series = [
            {"series": selector.replace("{job}", options.job), "values": values}
            for selector, values in alert.case.series.items()
        ]
        labels = {key: value.replace("{job}", options.job) for key, value in alert.case.firing.items()}
        annotations = {
            key: _rendered(text, labels, alert.case.value) for key, text in alert.annotations(options).items()
        }
        expected = {"exp_labels": {**labels, "severity": alert.severity}, "exp_annotations": annotations}
        tests.append(
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": f"{alert.minutes - 1}m", "alertname": alert.name, "exp_alerts": []},
                    {"eval_time": "30m", "alertname": alert.name, "exp_alerts": [expected]},
                ],
            }
        )
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": tests}
