"""``modelport deploy k8s`` and ``deploy kserve``: the files render, validate and point at routes a
real server answers.

- ``kubectl kustomize`` (offline) renders the base and every overlay, and ``kubernetes-validate
  --strict`` accepts each rendering for Kubernetes 1.29, 1.33 and 1.37.
- kubernetes-validate knows no custom resources: the ServiceMonitor and the InferenceService are
  validated with ``jsonschema`` against the openAPIV3Schema of their published CRDs, vendored in
  tests/schemas/ (sources in its README), made strict as the API server's strict field
  validation is (an unknown field is an error). Nothing is skipped.
- Every probe, the Service's target port and the ServiceMonitor's path are collected from the
  rendered manifests and called on a real ``modelport serve`` (as the registry variant runs it)
  and a real SageMaker-mode server (as a baked image runs it), both on a port the system picks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from modelport.auth.keys import KeyFile
from modelport.cli.main import app
from modelport.errors import InvalidSetting
from modelport.reference import parse_reference
from modelport.registry.export import export_version
from modelport.registry.registry import Registry
from modelport.server.spawn import GRPC_RUNNING, serving
from modelport.settings import Settings
from modelport.shipping import container
from modelport.shipping.container import default_image
from modelport.shipping.kserve import kserve_files
from modelport.shipping.kubernetes import (
    API_KEYS_DIR,
    ARTIFACTS_MOUNT,
    GRACE_SECONDS,
    INFLIGHT_METRIC,
    PRESTOP_SECONDS,
    KubernetesOptions,
    kustomize_layout,
    write_files,
)
from modelport.types import ModelVersion
from tests.support.sagemaker import sagemaker_serve
from tests.support.serving import register_iris

KUBECTL = "/usr/bin/kubectl"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0", "1.37.0")
TARGETS = ("base", "overlays/dev", "overlays/prod", "overlays/prod-inflight", "overlays/registry")
SCHEMAS = Path(__file__).parents[1] / "schemas"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.v1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice.v1beta1.json",
}
REF = "iris@production"


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> tuple[Settings, ModelVersion]:
    settings = Settings(home=tmp_path_factory.mktemp("k8s") / "home")
    version, _ = register_iris(settings, iris)
    return settings, version


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory, registered: tuple[Settings, ModelVersion]) -> Path:
    _, version = registered
    directory = tmp_path_factory.mktemp("layout")
    options = KubernetesOptions(namespace="models", min_replicas=2, max_replicas=6)
    write_files(directory, kustomize_layout(version, parse_reference(REF), options), force=True)
    write_files(directory / "kserve", kserve_files(version, parse_reference(REF), default_image(version)))
    return directory


def kustomize(directory: Path) -> str:
    result = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def rendered(layout: Path) -> dict[str, list[dict[str, Any]]]:
    """Each target's objects as kubectl kustomize renders them."""
    return {target: list(yaml.safe_load_all(kustomize(layout / target))) for target in TARGETS}


def kserve_objects(layout: Path) -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in sorted((layout / "kserve").glob("*.yaml"))]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the CRD lists an object's fields and does not
    keep unknown ones, as the API server's strict field validation (kubectl's default) refuses them."""
    if isinstance(schema, dict):
        result = {key: strict(value) for key, value in schema.items()}
        if "properties" in result and not result.get("x-kubernetes-preserve-unknown-fields"):
            result.setdefault("additionalProperties", False)
        return result
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def crd_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[document["apiVersion"], document["kind"]]).read_text())
    validator = jsonschema.Draft7Validator(strict(schema))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def kubernetes_validate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VALIDATE), "--strict", "--no-warn", "-k", version, str(path)], capture_output=True, text=True, timeout=120
    )


# -- rendering and validation ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_each_target_renders_and_validates_strictly_on_three_kubernetes_versions(
    target: str, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    objects = rendered[target]
    builtin = [o for o in objects if (o["apiVersion"], o["kind"]) not in CRD_SCHEMAS]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(builtin))
    for version in KUBERNETES_VERSIONS:
        result = kubernetes_validate(path, version)
        assert result.returncode == 0, f"{target} on {version}:\n{result.stdout}{result.stderr}"
    for document in objects:
        if (document["apiVersion"], document["kind"]) in CRD_SCHEMAS:
            assert crd_errors(document) == [], target


def test_the_layout_holds_what_each_environment_needs(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {target: sorted(o["kind"] for o in objects) for target, objects in rendered.items()}
    everywhere = ["ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service", "ServiceMonitor"]
    assert kinds["base"] == kinds["overlays/dev"] == everywhere  # dev: no autoscaler, it would override replicas
    for target in ("overlays/prod", "overlays/prod-inflight", "overlays/registry"):
        assert kinds[target] == sorted([*everywhere, "HorizontalPodAutoscaler"])
        assert {o["metadata"].get("namespace") for o in rendered[target]} == {"models"}
    (dev,) = of_kind(rendered["overlays/dev"], "Deployment")
    assert dev["spec"]["replicas"] == 1
    assert dev["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "500m"
    (hpa,) = of_kind(rendered["overlays/prod"], "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]
    (inflight,) = of_kind(rendered["overlays/prod-inflight"], "HorizontalPodAutoscaler")
    assert inflight["spec"]["metrics"][0]["pods"]["metric"]["name"] == INFLIGHT_METRIC


def test_the_kserve_files_match_the_published_inference_service_schema(layout: Path) -> None:
    full, canary = (
        yaml.safe_load((layout / "kserve" / name).read_text())
        for name in ("inferenceservice.yaml", "inferenceservice-canary.yaml")
    )
    for document in (full, canary):
        assert crd_errors(document) == []
        (server,) = document["spec"]["predictor"]["containers"]
        assert server["name"] == "kserve-container"
        assert {"name": "PROTOCOL", "value": "v2"} in server["env"]
    assert "canaryTrafficPercent" not in full["spec"]["predictor"]
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert full["metadata"]["name"] == canary["metadata"]["name"]  # the canary is the same service, updated


def test_strict_validation_refuses_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """The validators are not passing everything: a typo fails both."""
    (deployment,) = of_kind(rendered["overlays/prod"], "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(deployment))
    assert kubernetes_validate(path, KUBERNETES_VERSIONS[-1]).returncode != 0
    (monitor,) = of_kind(rendered["overlays/prod"], "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["pathh"] = "/metrics"
    assert crd_errors(monitor) != []


# -- the image's contract ---------------------------------------------------------------------


def test_pods_run_as_the_image_expects(rendered: dict[str, list[dict[str, Any]]], layout: Path) -> None:
    for target, objects in rendered.items():
        (deployment,) = of_kind(objects, "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        (server,) = pod["containers"]
        security = server["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == (container.USER, container.GROUP), target
        assert security["readOnlyRootFilesystem"] is True, target
        assert security["runAsNonRoot"] is True, target
        assert security["allowPrivilegeEscalation"] is False, target
        assert security["capabilities"] == {"drop": ["ALL"]}, target
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, target
        tmp = next(m for m in server["volumeMounts"] if m["mountPath"] == "/tmp")
        assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
        assert container.HOME.startswith("/tmp/")
        assert pod["terminationGracePeriodSeconds"] == GRACE_SECONDS > PRESTOP_SECONDS + container.DRAIN_SECONDS
        assert server["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SECONDS)]
        assert "command" not in server, target  # the image's ENTRYPOINT and CMD serve
        assert "args" not in server, target
    for document in kserve_objects(layout):
        (server,) = document["spec"]["predictor"]["containers"]
        assert server["securityContext"]["runAsUser"] == container.USER
        assert server["securityContext"]["readOnlyRootFilesystem"]


def test_the_registry_variant_serves_the_reference_from_the_shared_registry(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["overlays/registry"]
    (settings_map,) = of_kind(objects, "ConfigMap")
    settings = Settings.from_env(settings_map["data"])  # the server reads exactly these variables
    assert settings.models == (REF,)
    assert settings.host == "0.0.0.0"
    assert settings.artifact_location == ARTIFACTS_MOUNT
    assert settings.log_format == "json"
    assert settings.access_log
    (deployment,) = of_kind(objects, "Deployment")
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    assert server["image"].endswith(":registry")
    secret = next(source["secretRef"] for source in server["envFrom"] if "secretRef" in source)
    assert secret["optional"] is False  # no registry without MODELPORT_DATABASE_URL
    assert any(m["mountPath"] == ARTIFACTS_MOUNT for m in server["volumeMounts"])
    (monitor,) = of_kind(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["authorization"]["type"] == "Bearer"  # registry keys guard /metrics
    (prod,) = of_kind(rendered["overlays/prod"], "Deployment")
    baked = prod["spec"]["template"]["spec"]["containers"][0]
    assert next(s["secretRef"] for s in baked["envFrom"] if "secretRef" in s)["optional"] is True


# -- probes against a real server ---------------------------------------------------------------


def http_paths(rendered: dict[str, list[dict[str, Any]]], layout: Path) -> set[str]:
    """Every path the manifests make the cluster call, each checked to go to the image's port."""
    paths = set()
    for objects in rendered.values():
        (deployment,) = of_kind(objects, "Deployment")
        (server,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {port["name"]: port["containerPort"] for port in server["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = server[probe]["httpGet"]
            assert ports.get(get["port"], get["port"]) == container.PORT, probe
            paths.add(get["path"])
        (service,) = of_kind(objects, "Service")
        service_ports = {port["name"]: port for port in service["spec"]["ports"]}
        for port in service_ports.values():
            assert ports.get(port["targetPort"], port["targetPort"]) == container.PORT
        (monitor,) = of_kind(objects, "ServiceMonitor")
        for endpoint in monitor["spec"]["endpoints"]:
            assert ports[service_ports[endpoint["port"]]["targetPort"]] == container.PORT
            paths.add(endpoint["path"])
    for document in kserve_objects(layout):
        (server,) = document["spec"]["predictor"]["containers"]
        assert [port["containerPort"] for port in server["ports"]] == [container.PORT]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert server[probe]["httpGet"]["port"] == container.PORT
            paths.add(server[probe]["httpGet"]["path"])
    return paths


def answers(base: str, paths: set[str], scrape_key: str) -> dict[str, int]:
    """Each path's status as the cluster calls it: probes without credentials, /metrics with the
    ServiceMonitor's key (scope metrics)."""
    headers = {container.METRICS_PATH: {"Authorization": f"Bearer {scrape_key}"}}
    return {path: httpx.get(base + path, headers=headers.get(path), timeout=10).status_code for path in sorted(paths)}


@dataclass(frozen=True)
class MountedKeys:
    """The API keys Secret as a pod sees it: the keys file at the path the ConfigMap names."""

    settings: dict[str, str]  # the ConfigMap's data with the keys file's path on this machine
    infer: str
    scrape: str


def mount_keys(objects: list[dict[str, Any]], directory: Path) -> MountedKeys:
    (settings_map,) = of_kind(objects, "ConfigMap")
    (deployment,) = of_kind(objects, "Deployment")
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    path = Path(settings_map["data"]["MODELPORT_API_KEYS_FILE"])
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    assert path.parent == Path(mounts["api-keys"]) == Path(API_KEYS_DIR)  # the Secret is mounted where it is read
    (monitor,) = of_kind(objects, "ServiceMonitor")
    assert all(endpoint["authorization"]["type"] == "Bearer" for endpoint in monitor["spec"]["endpoints"])
    keys = KeyFile(directory / path.name)
    _, infer = keys.create(["infer"], "client")
    _, scrape = keys.create(["metrics"], "prometheus")
    return MountedKeys({**settings_map["data"], "MODELPORT_API_KEYS_FILE": str(keys.path)}, infer, scrape)


@pytest.fixture
def server_env(
    rendered: dict[str, list[dict[str, Any]]], registered: tuple[Settings, ModelVersion], tmp_path: Path
) -> tuple[dict[str, str], MountedKeys]:
    """The registry variant's settings as its pods get them, with this test's registry in place of
    the cluster's (database and artifacts), the keys Secret's file and the address given on the command line."""
    settings, _ = registered
    mounted = mount_keys(rendered["overlays/registry"], tmp_path)
    data = {k: v for k, v in mounted.settings.items() if k not in ("MODELPORT_HOST", "MODELPORT_ARTIFACTS")}
    return {**os.environ, **data, "MODELPORT_HOME": str(settings.home), "NO_COLOR": "1"}, mounted


@pytest.mark.slow
def test_every_probe_and_scrape_path_answers_on_a_real_registry_server(
    rendered: dict[str, list[dict[str, Any]]], layout: Path, server_env: tuple[dict[str, str], MountedKeys]
) -> None:
    env, keys = server_env
    paths = http_paths(rendered, layout)
    assert paths == {container.LIVE_PATH, container.READY_PATH, container.METRICS_PATH}
    with serving([env["MODELPORT_MODELS"]], env=env) as server:
        assert server.port != container.PORT  # never the cluster's port on this machine
        assert answers(server.base, paths, keys.scrape) == dict.fromkeys(sorted(paths), 200)
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.9, 3.0, 5.1, 1.8]}]}
        assert httpx.post(f"{server.base}/v2/models/iris/infer", json=body).status_code == 401  # keys are on
        infer = httpx.post(f"{server.base}/v2/models/iris/infer", json=body, headers={"X-API-Key": keys.infer})
        assert infer.status_code == 200
        metrics = httpx.get(server.base + container.METRICS_PATH, headers={"X-API-Key": keys.scrape}).text
    assert f"{INFLIGHT_METRIC}{{" in metrics  # the in-flight autoscaler's metric is the server's gauge


@pytest.mark.slow
def test_every_probe_and_scrape_path_answers_on_a_baked_model_server(
    rendered: dict[str, list[dict[str, Any]]],
    layout: Path,
    registered: tuple[Settings, ModelVersion],
    tmp_path: Path,
) -> None:
    """A baked image runs ``serve`` with its model in MODEL_DIR (SageMaker's layout), with the base ConfigMap."""
    settings, version = registered
    with Registry.open(settings) as registry:
        model_dir = tmp_path / "opt" / "ml" / "model"
        export_version(version, registry.artifact_path(version), model_dir, archive=False)
    keys = mount_keys(rendered["base"], tmp_path)
    with sagemaker_serve(**keys.settings, MODELPORT_SAGEMAKER_MODEL_DIR=str(model_dir)) as base:
        paths = http_paths(rendered, layout)
        assert answers(base, paths, keys.scrape) == dict.fromkeys(sorted(paths), 200)
        body = {"instances": [[5.9, 3.0, 5.1, 1.8]]}
        assert httpx.post(f"{base}/invocations", json=body).status_code == 401  # the baked image is not open
        assert httpx.post(f"{base}/invocations", json=body, headers={"X-API-Key": keys.infer}).status_code == 200


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def run(registered: tuple[Settings, ModelVersion]) -> Any:
    settings, _ = registered
    runner = CliRunner()
    env = {"MODELPORT_HOME": str(settings.home), "COLUMNS": "200", "NO_COLOR": "1"}
    return lambda *args: runner.invoke(app, list(args), env=env)


@pytest.mark.parametrize("command", [["deploy", "--help"], ["deploy", "k8s", "--help"], ["deploy", "kserve", "--help"]])
def test_deploy_commands_have_help(run: Any, command: list[str]) -> None:
    result = run(*command)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_deploy_k8s_writes_the_layout_and_says_how_to_apply_it(run: Any, tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    result = run("deploy", "k8s", REF, "--out", str(out), "--image", "registry.example.com/iris:1", "--min", "3")
    assert result.exit_code == 0, result.output
    assert f"kubectl kustomize {out}/overlays/prod | kubectl apply -f -" in result.output
    deployment = yaml.safe_load((out / "base" / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/iris:1"
    replicas = yaml.safe_load((out / "overlays" / "prod" / "patch-replicas.yaml").read_text())
    assert replicas["spec"]["replicas"] == 3  # --replicas defaults to --min


def test_deploy_kserve_writes_the_service_and_its_canary(run: Any, tmp_path: Path) -> None:
    out = tmp_path / "kserve"
    result = run("deploy", "kserve", REF, "--out", str(out), "--canary-percent", "25")
    assert result.exit_code == 0, result.output
    canary = yaml.safe_load((out / "inferenceservice-canary.yaml").read_text())
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert canary["spec"]["predictor"]["containers"][0]["image"] == "localhost/modelport-iris:1"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["k8s", REF, "--min", "5", "--max", "2"], 2, "give 1 <= --min <= --max"),
        (["k8s", REF, "--replicas", "20"], 2, "--replicas 20 is outside"),
        (["k8s", REF, "--cpu", "lots"], 2, "is not a CPU quantity"),
        (["k8s", REF, "--namespace", "Bad_Name"], 2, "is not a Kubernetes namespace name"),
        (["k8s", "nosuchmodel@production"], 1, "nosuchmodel"),
        (["kserve", REF, "--memory", "much"], 2, "is not a memory quantity"),
        (["kserve", "iris@@"], 2, "invalid model reference"),
    ],
)
def test_bad_options_give_one_line_and_a_failing_exit(
    run: Any, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    out = tmp_path / "out"
    result = run("deploy", *args, "--out", str(out))
    assert result.exit_code == code, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert message in result.output
    assert not out.exists()  # nothing written


def test_a_non_empty_out_is_refused_unless_forced(run: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    refused = run("deploy", "kserve", REF, "--out", str(out))
    assert refused.exit_code == 2
    assert "--force" in refused.output
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    forced = run("deploy", "kserve", REF, "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert (out / "mine.txt").read_text() == "keep me"
    assert (out / "inferenceservice.yaml").is_file()


def test_open_leaves_the_api_keys_out_and_scrapes_without_a_key(registered: tuple[Settings, ModelVersion]) -> None:
    _, version = registered
    files = {
        open_: kustomize_layout(version, parse_reference(REF), KubernetesOptions(open=open_)) for open_ in (False, True)
    }
    for open_, layout_files in files.items():
        deployment = yaml.safe_load(layout_files["base/deployment.yaml"])
        volumes = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
        settings = yaml.safe_load(layout_files["base/configmap.yaml"])["data"]
        (endpoint,) = yaml.safe_load(layout_files["base/servicemonitor.yaml"])["spec"]["endpoints"]
        assert ("api-keys" in volumes) is not open_
        assert ("MODELPORT_API_KEYS_FILE" in settings) is not open_
        assert ("authorization" in endpoint) is not open_


@pytest.mark.slow
def test_the_registry_variant_on_s3_mounts_no_volume_and_still_validates(
    registered: tuple[Settings, ModelVersion], tmp_path: Path
) -> None:
    _, version = registered
    options = KubernetesOptions(artifacts="s3://models/registry")
    write_files(tmp_path, kustomize_layout(version, parse_reference(REF), options))
    objects = list(yaml.safe_load_all(kustomize(tmp_path / "overlays" / "registry")))
    (settings_map,) = of_kind(objects, "ConfigMap")
    assert settings_map["data"]["MODELPORT_ARTIFACTS"] == "s3://models/registry"
    (deployment,) = of_kind(objects, "Deployment")
    assert "artifacts" not in {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all([o for o in objects if (o["apiVersion"], o["kind"]) not in CRD_SCHEMAS]))
    result = kubernetes_validate(path, KUBERNETES_VERSIONS[-1])
    assert result.returncode == 0, result.stdout + result.stderr
    with pytest.raises(InvalidSetting, match="give the shared store's s3://"):
        KubernetesOptions(artifacts="/mnt/artifacts")


@pytest.mark.slow
def test_with_grpc_the_registry_variant_serves_it_and_its_readiness_probe_is_grpc_health(
    registered: tuple[Settings, ModelVersion], run: Any, tmp_path: Path
) -> None:
    grpc = pytest.importorskip("grpc")
    from modelport.protocols.grpc.proto import health_pb2
    from modelport.protocols.grpc.proto.health_pb2_grpc import HealthStub

    settings, _ = registered
    result = run("deploy", "k8s", REF, "--out", str(tmp_path / "layout"), "--grpc-port", "8081")
    assert result.exit_code == 0, result.output
    objects = list(yaml.safe_load_all(kustomize(tmp_path / "layout" / "overlays" / "registry")))
    (deployment,) = of_kind(objects, "Deployment")
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {port["name"]: port["containerPort"] for port in server["ports"]} == {"http": container.PORT, "grpc": 8081}
    assert server["readinessProbe"] == {
        "grpc": {"port": 8081},
        "periodSeconds": 5,
        "timeoutSeconds": 2,
        "failureThreshold": 2,
    }
    for probe in ("startupProbe", "livenessProbe"):  # gRPC health is readiness: liveness stays /v2/health/live
        assert server[probe]["httpGet"]["path"] == container.LIVE_PATH
    (service,) = of_kind(objects, "Service")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "http": (container.PORT, "http"),
        "grpc": (8081, "grpc"),
    }
    (policy,) = of_kind(objects, "NetworkPolicy")
    assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == ["http", "grpc"]
    (baked,) = of_kind(list(yaml.safe_load_all(kustomize(tmp_path / "layout" / "base"))), "Deployment")
    assert "httpGet" in baked["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]  # SageMaker mode: HTTP
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all([o for o in objects if (o["apiVersion"], o["kind"]) not in CRD_SCHEMAS]))
    for kubernetes in KUBERNETES_VERSIONS:
        result = kubernetes_validate(path, kubernetes)
        assert result.returncode == 0, f"{kubernetes}: {result.stdout}{result.stderr}"
    # The probe as the kubelet sends it (service "", no credentials) to the server the variant runs
    mounted = mount_keys(objects, tmp_path)
    assert mounted.settings["MODELPORT_GRPC_PORT"] == "8081"
    drop = ("MODELPORT_HOST", "MODELPORT_ARTIFACTS")
    data = {k: v for k, v in mounted.settings.items() if k not in drop} | {"MODELPORT_GRPC_PORT": "0"}
    env = {**os.environ, **data, "MODELPORT_HOME": str(settings.home), "NO_COLOR": "1"}
    with serving([env["MODELPORT_MODELS"]], env=env) as launched:
        port = int(launched.output.wait_for(GRPC_RUNNING, 60).group(1))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(InvalidSetting, match="--grpc-port 8080: give a port from 1 to 65535 other than the HTTP port"):
        KubernetesOptions(grpc_port=container.PORT)
