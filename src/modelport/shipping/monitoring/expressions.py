"""The named PromQL expressions behind modelport's dashboard and alerts, and the options
(job, target, thresholds) that ``modelport monitoring export`` fills them with.

:func:`expressions` is the one table: every Grafana panel's query (:mod:`.dashboard`) and every
alert's expression (:mod:`.alerts`) is one of its entries, so the two cannot disagree, and a test
evaluates each entry against a real Prometheus scraping a real server.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from modelport.errors import InvalidSetting

DEFAULT_JOB = "modelport"
DEFAULT_TARGET = "127.0.0.1:8080"
DEFAULT_SLO_P99_SECONDS = 0.5
DEFAULT_ERROR_RATE = 0.01
WINDOW = "5m"  # every rate() and quantile looks back this far
# The request-duration histogram's buckets end at 10 s: a p99 past them reads as 10 s, and one
# below the first buckets (0.1 ms, 0.25 ms) cannot be told apart, so an SLO must lie between the two.
SLO_RANGE = (0.001, 10.0)
_JOB = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_TARGET = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


def expressions(job: str = DEFAULT_JOB) -> dict[str, str]:
    """The named PromQL expressions that the dashboard draws and the alerts test (by model and
    version where the metric has them). Process figures and ``up`` are selected by ``job``:
    other exporters, Prometheus itself included, have series of those names too."""
    w = WINDOW
    # Requests that name no model (health, /metrics, /docs: model="") are not a model's traffic,
    # and those for models the server does not serve ("(unknown)", all 404) are shown as a rate
    # only: in a ratio or a latency they would stand for no model and trip the alerts.
    served = 'model!="",model!="(unknown)"'
    requests = f"sum by (model) (rate(modelport_requests_total{{{served}}}[{w}]))"
    return {
        "request_rate": f'sum by (model) (rate(modelport_requests_total{{model!=""}}[{w}]))',
        "error_ratio": (
            f'sum by (model, code) (rate(modelport_requests_total{{code=~"4xx|5xx",{served}}}[{w}]))'
            f" / ignoring (code) group_left {requests}"
        ),
        # 0 rather than no data while a model has had no server error at all
        "server_error_ratio": (
            f'(sum by (model) (rate(modelport_requests_total{{code="5xx",{served}}}[{w}])) or 0 * {requests})'
            f" / {requests}"
        ),
        "latency_p50": _quantile(0.5, "modelport_request_duration_seconds", "model", served),
        "latency_p99": _quantile(0.99, "modelport_request_duration_seconds", "model", served),
        "queue_wait_p99": _quantile(0.99, "modelport_queue_wait_seconds", "model, version"),
        "inference_p99": _quantile(0.99, "modelport_inference_duration_seconds", "model, version"),
        "batch_rows_mean": (
            f"sum by (model, version) (rate(modelport_batch_rows_sum[{w}]))"
            f" / sum by (model, version) (rate(modelport_batch_rows_count[{w}]))"
        ),
        "inflight": "sum by (model, version) (modelport_inflight_requests)",
        "queue_rows": "sum by (model, version) (modelport_queue_rows)",
        "rejected_rate": f"sum by (model, reason) (rate(modelport_rejected_requests_total[{w}]))",
        "overload_rate": f'sum by (model) (rate(modelport_rejected_requests_total{{reason="overload"}}[{w}]))',
        # per worker: a version that failed in any worker of any instance counts
        "version_state": "max by (model, version, state) (modelport_version_state) == 1",
        "version_failed": 'max by (model, version) (modelport_version_state{state="failed"})',
        "traffic_weight": "max by (model, alias, version) (modelport_traffic_weight)",
        "shadow_rate": f"sum by (model, alias, shadow_version) (rate(modelport_shadow_requests_total[{w}]))",
        # over the window, not since the start: counted label values agreeing / compared
        "shadow_agreement": (
            f"sum by (model, alias, shadow_version) (rate(modelport_shadow_agreed_values_total[{w}]))"
            f" / sum by (model, alias, shadow_version) (rate(modelport_shadow_compared_values_total[{w}]))"
        ),
        "client_rate": f"sum by (client) (rate(modelport_client_requests_total[{w}]))",
        "auth_failure_rate": f"sum by (reason) (rate(modelport_auth_failures_total[{w}]))",
        "worker_cpu": f'sum by (instance, worker) (rate(process_cpu_seconds_total{{job="{job}"}}[{w}]))',
        "worker_memory": f'sum by (instance, worker) (process_resident_memory_bytes{{job="{job}"}})',
        "worker_fds": f'sum by (instance, worker) (process_open_fds{{job="{job}"}})',
        "workers": "sum by (instance) (modelport_workers)",
        "drift_psi": "max by (model, version, feature) (modelport_drift_psi)",
        "drift_detected": "max by (model, version, feature) (modelport_drift_detected)",
        "target_up": f'up{{job="{job}"}}',
    }


def _quantile(q: float, histogram: str, by: str, selector: str = "") -> str:
    series = f"{histogram}_bucket{{{selector}}}" if selector else f"{histogram}_bucket"
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({series}[{WINDOW}])))"


EXPRESSIONS = expressions()


@dataclass(frozen=True)
class MonitoringOptions:
    """What ``modelport monitoring export`` is told; InvalidSetting for a value it cannot use."""

    job: str = DEFAULT_JOB
    target: str = DEFAULT_TARGET
    slo_p99_seconds: float = DEFAULT_SLO_P99_SECONDS
    error_rate: float = DEFAULT_ERROR_RATE
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    credentials_file: str | None = None  # a key with scope metrics, sent as a bearer credential
    prometheus_url: str = "http://localhost:9090"  # where Grafana reaches Prometheus

    def __post_init__(self) -> None:
        if not _JOB.fullmatch(self.job):
            raise InvalidSetting(f"--job {self.job!r}: use letters, digits, '_', '.' and '-' (e.g. modelport)")
        port = _TARGET.fullmatch(self.target)
        if port is None or not 0 < int(port.group(1)) < 65536:
            raise InvalidSetting(f"--target {self.target!r}: give HOST:PORT, e.g. 127.0.0.1:8080")
        low, high = SLO_RANGE
        if not (math.isfinite(self.slo_p99_seconds) and low <= self.slo_p99_seconds < high):
            raise InvalidSetting(
                f"--slo-p99-seconds {self.slo_p99_seconds:g}: give at least {low:g} and less than {high:g} "
                "(the latency histogram's buckets span 0.1 ms to 10 s)"
            )
        if not (math.isfinite(self.error_rate) and 0 < self.error_rate < 1):
            raise InvalidSetting(f"--error-rate {self.error_rate:g}: give a share between 0 and 1, e.g. 0.01 for 1%")


def plain_number(value: float) -> str:
    """0.5 as "0.5", 2.0 as "2": how thresholds read in PromQL and messages."""
    return repr(float(value)).removesuffix(".0")
