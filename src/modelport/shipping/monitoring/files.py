"""``modelport monitoring export``: the Prometheus and Grafana files for a deployment.

prometheus/: a static scrape config and a Kubernetes one, the alert rules (:mod:`.alerts`) and
their ``promtool`` tests; grafana/: the dashboard (:mod:`.dashboard`) and the provisioning that
loads it. The expressions behind both are in :mod:`.expressions`. YAML is written by the
shipping layer's one dumper (:mod:`modelport.shipping.yamlfiles`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelport.errors import InvalidSetting, ModelportError
from modelport.shipping.monitoring.alerts import alert_rules, alert_tests
from modelport.shipping.monitoring.dashboard import dashboard, grafana_dashboards, grafana_datasource
from modelport.shipping.monitoring.expressions import MonitoringOptions
from modelport.shipping.yamlfiles import dump

_CREDENTIALS_NOTE = (
    "With authentication on, /metrics needs a key (or token) with scope metrics:",
    "  modelport keys create --scope metrics --description prometheus > /etc/prometheus/modelport.key",
    "and Prometheus sends it as a bearer credential:",
    "authorization:",
    "  type: Bearer",
    "  credentials_file: /etc/prometheus/modelport.key",
    "With TLS on, add scheme: https and tls_config (ca_file) as well.",
)


def _scrape_job(options: MonitoringOptions) -> dict[str, Any]:
    job: dict[str, Any] = {"job_name": options.job, "metrics_path": "/metrics"}
    if options.credentials_file is not None:
        job["authorization"] = {"type": "Bearer", "credentials_file": options.credentials_file}
    return job


def prometheus_config(options: MonitoringOptions, rule_file: str = "alerts.yml") -> dict[str, Any]:
    """A static scrape of ``options.target``, with the alert rules."""
    job = _scrape_job(options)
    job["static_configs"] = [{"targets": [options.target]}]
    return {
        "global": {"scrape_interval": options.scrape_interval, "evaluation_interval": options.evaluation_interval},
        "rule_files": [rule_file],
        "scrape_configs": [job],
    }


def kubernetes_config(options: MonitoringOptions, rule_file: str = "alerts.yml") -> dict[str, Any]:
    """Pods found through the Kubernetes API: those annotated prometheus.io/scrape: "true", at the
    port of prometheus.io/port, path /metrics."""
    job = _scrape_job(options)
    job["kubernetes_sd_configs"] = [{"role": "pod"}]
    job["relabel_configs"] = [
        {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "action": "keep", "regex": "true"},
        {
            "source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
            "action": "replace",
            "regex": r"([^:]+)(?::\d+)?;(\d+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "action": "replace", "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "action": "replace", "target_label": "pod"},
    ]
    return {
        "global": {"scrape_interval": options.scrape_interval, "evaluation_interval": options.evaluation_interval},
        "rule_files": [rule_file],
        "scrape_configs": [job],
    }


# -- files ---------------------------------------------------------------------------------------


def to_yaml(data: Any) -> str:
    """YAML for plain data (dicts, lists, strings, numbers, booleans, None), lists indented under
    their key as in Prometheus's documentation."""
    return dump(data)


def _comment(lines: Sequence[str], indent: int = 0) -> str:
    return "".join(f"{' ' * indent}# {line}".rstrip() + "\n" for line in lines)


HEADER = "Written by `modelport monitoring export`; run it again to regenerate."


def files(directory: Path, options: MonitoringOptions) -> dict[Path, str]:
    """Every file :func:`export` writes (relative path -> text)."""
    scrape_note = "" if options.credentials_file is not None else _comment(_CREDENTIALS_NOTE, indent=4)
    kubernetes_note = (
        'Scrapes the pods annotated prometheus.io/scrape: "true" at the port in prometheus.io/port,',
        "path /metrics (Prometheus running in the cluster, with RBAC to list pods).",
    )
    static = [f"Scrapes modelport at {options.target}."]
    mounted = "Grafana in a container? Point options.path at where grafana/dashboards is mounted there."
    documents: list[tuple[str, Sequence[str], dict[str, Any], str]] = [
        ("prometheus/prometheus.yml", static, prometheus_config(options), scrape_note),
        ("prometheus/kubernetes.yml", kubernetes_note, kubernetes_config(options), scrape_note),
        ("prometheus/alerts.yml", [], alert_rules(options), ""),
        ("prometheus/alerts_test.yml", ["promtool test rules alerts_test.yml"], alert_tests(options), ""),
        ("grafana/provisioning/datasources/prometheus.yml", [], grafana_datasource(options), ""),
        (
            "grafana/provisioning/dashboards/modelport.yml",
            [mounted],
            grafana_dashboards(directory.resolve() / "grafana" / "dashboards"),
            "",
        ),
    ]
    written = {Path(name): _comment([HEADER, *notes]) + to_yaml(data) + tail for name, notes, data, tail in documents}
    written[Path("grafana/dashboards/modelport.json")] = json.dumps(dashboard(options), indent=2) + "\n"
    return written


def export(directory: Path, options: MonitoringOptions) -> list[Path]:
    """Write :func:`files` under ``directory`` (created if missing; earlier exports overwritten)."""
    if directory.exists() and not directory.is_dir():
        raise InvalidSetting(f"{directory} is a file: give a directory to write the monitoring files into")
    written = []
    try:
        for relative, text in files(directory, options).items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise ModelportError(f"cannot write the monitoring files into {directory}: {exc.strerror or exc}") from None
    return written
