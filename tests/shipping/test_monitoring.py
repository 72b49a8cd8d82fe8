"""``modelport monitoring export``: the alert rules and scrape configs checked and unit-tested by
the real ``promtool``, every dashboard and alert expression evaluated by a real Prometheus
scraping a real ``modelport serve``, the dashboard's structure, and the command's errors."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from modelport.auth.keys import KeyStore
from modelport.cli.main import app as cli
from modelport.errors import InvalidSetting
from modelport.observability.metrics import FAMILIES
from modelport.registry.registry import Registry
from modelport.server.spawn import listening_ports, serving
from modelport.settings import Settings
from modelport.shipping.monitoring.alerts import ALERTS, alert_rules
from modelport.shipping.monitoring.dashboard import ROWS, dashboard
from modelport.shipping.monitoring.expressions import EXPRESSIONS, MonitoringOptions, expressions
from modelport.shipping.monitoring.files import export, files, kubernetes_config, to_yaml
from tests.support.serving import register_iris

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus: scripts/setup.sh --test)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (Debian package prometheus: scripts/setup.sh --test)"
)
ROW = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}
OTHER_OPTIONS = MonitoringOptions(job="mp-prod", target="[::1]:9443", slo_p99_seconds=0.025, error_rate=0.2)


# -- one table of expressions ----------------------------------------------------------------------


def panel_targets(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [target for panel in board["panels"] if panel["type"] != "row" for target in panel["targets"]]


@pytest.mark.parametrize("options", [MonitoringOptions(), OTHER_OPTIONS], ids=["defaults", "other"])
def test_every_panel_query_and_alert_expression_is_a_named_expression(options: MonitoringOptions) -> None:
    table = expressions(options.job)
    queries = {target["expr"] for target in panel_targets(dashboard(options))}
    assert queries <= set(table.values())
    rules = alert_rules(options)["groups"][0]["rules"]
    assert [rule["alert"] for rule in rules] == [alert.name for alert in ALERTS]
    used = set(queries)
    for rule, alert in zip(rules, ALERTS, strict=True):
        expression = table[alert.expression]
        assert rule["expr"].startswith(expression + " "), rule["alert"]
        assert re.fullmatch(r"(>|==) [0-9.e-]+", rule["expr"].removeprefix(expression + " ")), rule["expr"]
        used.add(expression)
    assert used == set(table.values()), "an expression that no panel and no alert uses"


def test_the_alert_thresholds_come_from_the_options() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules(OTHER_OPTIONS)["groups"][0]["rules"]}
    assert rules["ModelportHighErrorRate"]["expr"].endswith(" > 0.2")
    assert rules["ModelportHighLatencyP99"]["expr"].endswith(" > 0.025")
    assert rules["ModelportTargetDown"]["expr"] == 'up{job="mp-prod"} == 0'
    for rule in rules.values():
        assert re.fullmatch(r"\d+m", rule["for"])
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


def exposed_names() -> set[str]:
    """The series names /metrics has: its families with the suffixes of their kind."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    names = {"modelport_build_info", "modelport_workers"}
    for name, family in FAMILIES.items():
        names |= {name + suffix for suffix in suffixes[family.kind]}
    return names


def test_expressions_read_only_series_the_server_exposes() -> None:
    """A misspelled metric would be a panel that never shows anything and an alert that never
    fires: every series an expression reads is one /metrics has (drift included, which the
    real-Prometheus test below cannot see)."""
    exposed = exposed_names()
    assert {"modelport_requests_total", "modelport_request_duration_seconds_bucket"} <= exposed
    read = {name for e in EXPRESSIONS.values() for name in re.findall(r"\b(?:modelport|process)_[a-z_]+", e)}
    assert read - exposed == set()


# -- the dashboard -----------------------------------------------------------------------------------


def test_dashboard_is_a_grafana_json_model_with_unique_panels_on_the_grid() -> None:
    board = json.loads(json.dumps(dashboard(MonitoringOptions())))  # survives JSON as written
    assert isinstance(board["schemaVersion"], int)
    assert board["schemaVersion"] >= 36
    assert board["uid"] == "modelport"
    assert board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) and i > 0 for i in ids)
    taken: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys()
        assert all(isinstance(v, int) for v in grid.values())
        assert grid["x"] >= 0
        assert grid["w"] > 0
        assert grid["x"] + grid["w"] <= 24
        cells = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["type"] == "timeseries"
        assert panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["fieldConfig"]["defaults"]["unit"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"] in EXPRESSIONS.values()
            assert target["legendFormat"]
    titles = {panel["title"] for panel in board["panels"]}
    assert {title for title, _ in ROWS} <= titles


def test_dashboard_covers_every_view_the_operators_asked_for() -> None:
    drawn = {name for _, panels in ROWS for panel in panels for name, _ in panel.queries}
    wanted = {
        *("request_rate", "error_ratio", "latency_p50", "latency_p99", "queue_wait_p99", "inference_p99"),
        *("batch_rows_mean", "inflight", "queue_rows", "rejected_rate", "version_state", "traffic_weight"),
        *("shadow_agreement", "client_rate", "auth_failure_rate", "worker_cpu", "worker_memory", "worker_fds"),
        "drift_psi",
    }
    assert wanted <= drawn


def test_latency_and_error_panels_draw_the_alert_thresholds() -> None:
    board = dashboard(OTHER_OPTIONS)
    steps = {
        panel["title"]: [step["value"] for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
        for panel in board["panels"]
        if panel["type"] != "row"
    }
    assert steps["Latency p50 and p99"] == [None, 0.025]
    assert steps["Errors by model"] == [None, 0.2]


# -- the files ----------------------------------------------------------------------------------------


def test_yaml_files_read_back_as_the_data_they_were_written_from(tmp_path: Path) -> None:
    tricky: dict[str, object] = {
        "a": "it's",
        "b": 'x{y="1"}',
        "c": "true",
        "d": "5m",
        "e": [],
        "f": {},
        "g": [{"h": [1, 2.5]}],
        "i": None,
    }
    assert yaml.safe_load(to_yaml(tricky)) == tricky
    written = files(tmp_path, MonitoringOptions())
    for path, text in written.items():
        if path.suffix == ".yml":
            assert isinstance(yaml.safe_load(text), dict), path
    rules = yaml.safe_load(written[Path("prometheus/alerts.yml")])
    assert rules == alert_rules(MonitoringOptions())


def test_scrape_configs_name_the_target_rules_and_credentials(tmp_path: Path) -> None:
    written = files(tmp_path, MonitoringOptions(target="10.1.2.3:8080", job="serving"))
    static = yaml.safe_load(written[Path("prometheus/prometheus.yml")])
    assert static["rule_files"] == ["alerts.yml"]
    (job,) = static["scrape_configs"]
    assert job["job_name"] == "serving"
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["10.1.2.3:8080"]}]
    assert "authorization" not in job  # the note is a comment until a credentials file is named
    assert "#   credentials_file: /etc/prometheus/modelport.key" in written[Path("prometheus/prometheus.yml")]
    assert "--scope metrics" in written[Path("prometheus/prometheus.yml")]
    with_key = yaml.safe_load(
        files(tmp_path, MonitoringOptions(credentials_file="/run/secrets/mp"))[Path("prometheus/prometheus.yml")]
    )
    assert with_key["scrape_configs"][0]["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/mp"}
    pods = yaml.safe_load(written[Path("prometheus/kubernetes.yml")])["scrape_configs"][0]
    assert pods["kubernetes_sd_configs"] == [{"role": "pod"}]
    assert pods["metrics_path"] == "/metrics"
    keep = pods["relabel_configs"][0]
    assert keep["action"] == "keep"
    assert keep["regex"] == "true"
    assert keep["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    provider = yaml.safe_load(written[Path("grafana/provisioning/dashboards/modelport.yml")])["providers"][0]
    assert provider["type"] == "file"
    assert Path(provider["options"]["path"]) == (tmp_path / "grafana" / "dashboards").resolve()
    source = yaml.safe_load(written[Path("grafana/provisioning/datasources/prometheus.yml")])["datasources"][0]
    assert source["type"] == "prometheus"
    assert source["uid"] == "modelport-prometheus"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"job": 'a"b'}, "--job"),
        ({"target": "localhost"}, "--target"),
        ({"target": "host:99999"}, "--target"),
        ({"slo_p99_seconds": 0.0001}, "--slo-p99-seconds"),
        ({"slo_p99_seconds": 10.0}, "--slo-p99-seconds"),
        ({"error_rate": 0.0}, "--error-rate"),
        ({"error_rate": float("nan")}, "--error-rate"),
    ],
)
def test_options_it_cannot_use_are_refused_with_the_option_named(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidSetting, match=re.escape(fragment)):
        MonitoringOptions(**options)


# -- the command --------------------------------------------------------------------------------------


def test_export_command_writes_every_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["monitoring", "export", str(target), "--job", "mp", "--error-rate", "0.05"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    expected = {
        "prometheus/prometheus.yml",
        "prometheus/kubernetes.yml",
        "prometheus/alerts.yml",
        "prometheus/alerts_test.yml",
        "grafana/dashboards/modelport.json",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/modelport.yml",
    }
    assert {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()} == expected
    for name in expected:
        assert name in result.output
    assert 'up{job="mp"} == 0' in (target / "prometheus" / "alerts.yml").read_text()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["DIR_IS_A_FILE"], "is a file"),
        (["UNDER_A_FILE"], "cannot write the monitoring files"),
        (["OK", "--error-rate", "1.5"], "--error-rate 1.5"),
        (["OK", "--target", "nowhere"], "--target 'nowhere'"),
    ],
    ids=["file", "under-a-file", "error-rate", "target"],
)
def test_export_command_answers_a_mistake_with_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    where = {"DIR_IS_A_FILE": str(a_file), "UNDER_A_FILE": str(a_file / "out"), "OK": str(tmp_path / "ok")}
    result = CliRunner().invoke(cli, ["monitoring", "export", where[args[0]], *args[1:]], env={"COLUMNS": "200"})
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:"), result.output
    assert fragment in lines[0], result.output


# -- promtool -----------------------------------------------------------------------------------------


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
@needs_promtool
@pytest.mark.parametrize("options", [MonitoringOptions(), OTHER_OPTIONS], ids=["defaults", "other"])
def test_promtool_checks_the_configs_and_rules_and_every_alert_fires_in_its_unit_test(
    tmp_path: Path, options: MonitoringOptions
) -> None:
    export(tmp_path, options)
    prometheus = tmp_path / "prometheus"
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")):
        checked = promtool(*args, cwd=prometheus)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in promtool("check", "rules", "alerts.yml", cwd=prometheus).stdout
    tested = promtool("test", "rules", "alerts_test.yml", cwd=prometheus)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    cases = yaml.safe_load((prometheus / "alerts_test.yml").read_text())["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    silent = {t["alertname"] for case in cases for t in case["alert_rule_test"] if not t["exp_alerts"]}
    assert fired == silent == {alert.name for alert in ALERTS}


@pytest.mark.slow
@needs_promtool
def test_promtool_checks_the_kubernetes_scrape_config(tmp_path: Path) -> None:
    export(tmp_path, MonitoringOptions())
    prometheus = tmp_path / "prometheus"
    checked = promtool("check", "config", "kubernetes.yml", cwd=prometheus)
    if "field kubernetes_sd_configs not found" in checked.stdout + checked.stderr:
        # Debian's Prometheus is built without Kubernetes discovery: check everything else of the
        # job (relabelling included) with file discovery in its place; the real Prometheus test
        # runs the same relabelling on pods described through file discovery.
        config = yaml.safe_load((prometheus / "kubernetes.yml").read_text())
        job = config["scrape_configs"][0]
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
        job["file_sd_configs"] = [{"files": ["pods.json"]}]
        (prometheus / "kubernetes-as-files.yml").write_text(to_yaml(config))
        checked = promtool("check", "config", "kubernetes-as-files.yml", cwd=prometheus)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow
@needs_promtool
def test_promtool_unit_tests_catch_a_rule_that_would_not_fire(tmp_path: Path) -> None:
    """The generated tests have teeth: with the error-rate alert's threshold out of reach, they fail."""
    export(tmp_path, MonitoringOptions())
    rules = tmp_path / "prometheus" / "alerts.yml"
    document = yaml.safe_load(rules.read_text())
    (alert,) = (r for r in document["groups"][0]["rules"] if r["alert"] == "ModelportHighErrorRate")
    assert alert["expr"].endswith(" > 0.01")
    alert["expr"] = alert["expr"].removesuffix(" > 0.01") + " > 1"
    rules.write_text(to_yaml(document))
    tested = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path / "prometheus")
    assert tested.returncode != 0
    assert "ModelportHighErrorRate" in tested.stdout + tested.stderr


# -- a real Prometheus scraping a real server ------------------------------------------------------

# Expressions that may have no data under this test's load, with the reason; every other one
# must have numbers. None today: the server below captures its traffic and measures drift every
# second, mirrors to a shadow and splits an alias, so even those views have data.
NO_DATA_HERE: dict[str, str] = {}


def deadline_loop(seconds: float, interval: float) -> Iterator[float]:
    """Yield the time left until ``seconds`` have passed, sleeping ``interval`` between passes."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        yield left
        time.sleep(interval)


def start_prometheus(config: Path, data: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A real Prometheus on 127.0.0.1, port 0; returns it, its base URL and its log file."""
    assert PROMETHEUS is not None
    log = data.parent / "prometheus.log"
    args = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        "--web.listen-address=127.0.0.1:0",
        "--log.level=info",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
    try:
        for _ in deadline_loop(60, 0.1):
            if process.poll() is not None:
                pytest.fail(f"prometheus exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            ports = listening_ports(process.pid)
            if ports:
                base = f"http://127.0.0.1:{min(ports)}"
                break
        else:
            pytest.fail(f"prometheus did not listen within 60 s:\n{log.read_text()[-3000:]}")
        for _ in deadline_loop(60, 0.1):
            try:
                if httpx.get(f"{base}/-/ready", timeout=2).status_code == 200:
                    return process, base, log
            except httpx.HTTPError:
                pass
        pytest.fail(f"prometheus was not ready within 60 s:\n{log.read_text()[-3000:]}")
    except BaseException:
        stop_prometheus(process)
        raise


def stop_prometheus(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def query(base: str, expression: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{base}/api/v1/query", params={"query": expression}, timeout=10)
    body = answer.json()
    assert answer.status_code == 200, f"{expression}: {body}"
    assert body["status"] == "success", f"{expression}: {body}"
    assert body["data"]["resultType"] == "vector"
    return list(body["data"]["result"])


def has_numbers(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


@pytest.fixture
def served_with_rollout(tmp_path: Path, iris: tuple[pd.DataFrame, np.ndarray]) -> Iterator[tuple[str, str, Path]]:
    """``modelport serve iris@production`` (real ONNX Iris models) with authentication on, 30% of
    the alias's traffic on version 2, version 3 as its shadow, every request captured and drift
    measured every second; yields the base URL, an infer key and the path of a file holding a
    key with scope metrics."""
    settings = Settings(home=tmp_path / "home")
    for strength, aliases in ((1.0, ("production",)), (0.5, ()), (0.1, ())):
        register_iris(settings, iris, aliases=aliases, strength=strength)
    with Registry.open(settings) as registry:
        registry.split("iris@2", "production", 30)
        registry.set_shadow("iris@production", "iris@3", 1.0)
        keys = KeyStore(registry.engine)
        _, infer_key = keys.create(["infer"], "load")
        _, metrics_key = keys.create(["metrics"], "prometheus")
    credentials = tmp_path / "metrics.key"
    credentials.write_text(metrics_key + "\n")
    credentials.chmod(0o600)
    env = {**os.environ, "MODELPORT_HOME": str(settings.home), "NO_COLOR": "1", "MODELPORT_DRIFT_INTERVAL": "1"}
    with serving(["iris@production", "--capture-rate", "1"], env=env) as server:
        yield server.base, infer_key, credentials


def drive(client: httpx.Client, base: str, key: str) -> None:
    """A burst of requests: answered ones over V2 and TF Serving, bad input (400), an unknown
    model (404), a wrong key and none at all (401)."""
    good = {"Authorization": f"Bearer {key}"}
    body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [*ROW.values(), *ROW.values()]}]}
    for _ in range(4):
        answer = client.post(f"{base}/v2/models/iris/versions/production/infer", json=body, headers=good)
        assert answer.status_code == 200, answer.text
    tf = client.post(f"{base}/v1/models/iris/labels/production:predict", json={"instances": [ROW, ROW]}, headers=good)
    assert tf.status_code == 200, tf.text
    bad = client.post(f"{base}/v2/models/iris/versions/production/infer", json={"inputs": "x"}, headers=good)
    assert bad.status_code == 400, bad.text
    assert client.post(f"{base}/v2/models/nosuch/infer", json=body, headers=good).status_code == 404
    wrong = {"Authorization": "Bearer mp_000000000000_" + "x" * 43}
    assert client.post(f"{base}/v2/models/iris/infer", json=body, headers=wrong).status_code == 401
    assert client.post(f"{base}/v2/models/iris/infer", json=body).status_code == 401


@pytest.mark.slow
@needs_prometheus
def test_every_expression_evaluates_on_a_real_prometheus_scraping_a_real_server(
    tmp_path: Path, served_with_rollout: tuple[str, str, Path]
) -> None:
    base, key, credentials = served_with_rollout
    port = int(base.rsplit(":", 1)[1])
    options = MonitoringOptions(
        target=f"127.0.0.1:{port}", scrape_interval="1s", evaluation_interval="1s", credentials_file=str(credentials)
    )
    out = tmp_path / "monitoring"
    export(out, options)
    config = yaml.safe_load((out / "prometheus" / "prometheus.yml").read_text())
    # The Kubernetes job's relabelling, run on two pods described through file discovery (this
    # Prometheus may lack Kubernetes discovery, and no cluster is here): the annotated pod is kept
    # and scraped at the annotated port, the other dropped.
    pods = kubernetes_config(options)["scrape_configs"][0]
    pods["job_name"] = "modelport-pods"
    del pods["kubernetes_sd_configs"]
    pods["file_sd_configs"] = [{"files": ["pods.json"], "refresh_interval": "1s"}]
    described = [
        {"targets": ["127.0.0.1:1"], "labels": _pod("serving-0", scrape="true", port=str(port))},
        {"targets": ["127.0.0.1:2"], "labels": _pod("other-0", scrape="false", port="2")},
    ]
    (out / "prometheus" / "pods.json").write_text(json.dumps(described))
    config["scrape_configs"].append(pods)
    test_config = out / "prometheus" / "prometheus-test.yml"
    test_config.write_text(to_yaml(config))

    process, prometheus, log = start_prometheus(test_config, tmp_path / "promdata")
    try:
        missing: dict[str, Any] = {}
        with httpx.Client(timeout=10) as client:
            for _ in deadline_loop(120, 0.5):
                drive(client, base, key)
                results = {name: query(prometheus, expression) for name, expression in EXPRESSIONS.items()}
                missing = {name: r for name, r in results.items() if name not in NO_DATA_HERE and not has_numbers(r)}
                up = query(prometheus, 'up{job="modelport-pods"}')
                if not missing and has_numbers(up) and float(up[0]["value"][1]) == 1:
                    break
            else:
                pytest.fail(f"no data after 120 s for {sorted(missing)}; prometheus log:\n{log.read_text()[-2000:]}")
        assert query(prometheus, 'up{job="modelport"}')[0]["value"][1] == "1"  # scraped with the metrics key
        for name in NO_DATA_HERE:
            assert results[name] == [], f"{name} has data now: take it out of NO_DATA_HERE"
        by_model = {r["metric"].get("model"): r for r in results["error_ratio"]}
        assert "iris" in by_model  # the 400s of a served model
        assert {r["metric"]["reason"] for r in results["auth_failure_rate"]} >= {"missing", "invalid"}
        weights = {r["metric"]["version"]: float(r["value"][1]) for r in results["traffic_weight"]}
        assert weights == pytest.approx({"1": 0.7, "2": 0.3})

        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]
        kept = [t for t in targets["activeTargets"] if t["labels"]["job"] == "modelport-pods"]
        assert [(t["scrapeUrl"], t["labels"]["pod"], t["labels"]["namespace"]) for t in kept] == [
            (f"http://127.0.0.1:{port}/metrics", "serving-0", "ml")
        ]
        dropped = [t["discoveredLabels"].get("__meta_kubernetes_pod_name") for t in targets["droppedTargets"]]
        assert "other-0" in dropped

        for _ in deadline_loop(30, 0.5):
            groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            if len(rules) == len(ALERTS) and all(rule["health"] == "ok" for rule in rules):
                break
        else:
            pytest.fail(f"rules not all evaluated without error: {rules}")
        firing = {rule["name"] for rule in rules if rule["state"] != "inactive"}
        assert "ModelportTargetDown" not in firing
        assert "ModelportVersionFailed" not in firing
    finally:
        stop_prometheus(process)


def _pod(name: str, *, scrape: str, port: str) -> dict[str, str]:
    """The labels Kubernetes discovery gives a pod with prometheus.io annotations."""
    annotation = "__meta_kubernetes_pod_annotation_prometheus_io_"
    return {
        "__meta_kubernetes_namespace": "ml",
        "__meta_kubernetes_pod_name": name,
        f"{annotation}scrape": scrape,
        f"{annotation}port": port,
    }
