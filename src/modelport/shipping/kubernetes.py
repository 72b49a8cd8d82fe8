"""Kubernetes manifests for a registered model: a kustomize base, ``dev`` and ``prod`` overlays,
and components for autoscaling on in-flight requests and for serving from a shared registry.

Pure functions from a :class:`~modelport.types.ModelVersion` and :class:`KubernetesOptions` to
file texts (:func:`kustomize_layout`); :func:`write_files` is the only I/O. Every number the image
decides (port, user, probe paths, drain time) comes from :mod:`modelport.shipping.container`.
docs/kubernetes.md explains each object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.errors import InvalidSetting
from modelport.reference import Reference
from modelport.shipping import container
from modelport.shipping.container import default_image, slug
from modelport.shipping.yamlfiles import dump
from modelport.types import ModelVersion
from modelport.version import __version__

PRESTOP_SECONDS = 5  # endpoints are removed from Services while the pod sleeps, then SIGTERM starts the drain
GRACE_SECONDS = PRESTOP_SECONDS + container.DRAIN_SECONDS + 10  # the kubelet kills after this
ACCESS_LABEL = "modelport.io/access"  # label a namespace (ingress controller, Prometheus) "true" to reach the pods
INFLIGHT_METRIC = "modelport_inflight_requests"  # the server's gauge (modelport.observability.metrics)
ARTIFACTS_MOUNT = "/srv/modelport/artifacts"  # the registry variant's shared artifacts folder
API_KEYS_DIR = "/etc/modelport/api-keys"  # the API keys Secret, mounted; its key "keys" is the keys file
KUSTOMIZE = "kustomize.config.k8s.io/v1beta1"
COMPONENT = "kustomize.config.k8s.io/v1alpha1"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_CPU = re.compile(r"(\d+(?:\.\d+)?)(m?)")
_MEMORY = re.compile(r"\d+(?:\.\d+)?(?:Ki|Mi|Gi|Ti|k|M|G|T)?")


@dataclass(frozen=True, slots=True)
class KubernetesOptions:
    """What ``modelport deploy k8s`` takes; the constructor refuses values a cluster would refuse.

    replicas is the prod Deployment's count when created (the HPA then keeps it between
    min_replicas and max_replicas); cpu and memory are each container's requests, cpu_limit and
    memory_limit its limits (memory: request = limit unless given, a model's memory is not
    elastic); target_cpu_percent and inflight_per_pod are the HPAs' targets. grpc_port: the
    registry variant also serves the V2 gRPC API on this port, and its readiness probe is gRPC
    health on it (a baked image serves SageMaker's HTTP contract only).
    """

    image: str | None = None  # None: default_image(version)
    registry_image: str | None = None  # None: default_image(version, "registry")
    namespace: str | None = None
    replicas: int = 2
    min_replicas: int = 2
    max_replicas: int = 10
    cpu: str = "1"
    cpu_limit: str = "2"
    memory: str = "1Gi"
    memory_limit: str | None = None
    target_cpu_percent: int = 70
    inflight_per_pod: int = 8
    open: bool = False  # no API keys Secret: inside the cluster the NetworkPolicy is then the only gate
    artifacts: str | None = None  # the registry variant's store URL (s3://...); None: a shared volume
    grpc_port: int | None = None  # the registry variant's gRPC port; None: no gRPC

    def __post_init__(self) -> None:
        for what, image in (("--image", self.image), ("--registry-image", self.registry_image)):
            if image is not None and (not image or any(c.isspace() for c in image)):
                raise InvalidSetting(f"{what} {image!r} is not an image reference (e.g. registry.example.com/iris:3)")
        if self.namespace is not None and not _DNS_LABEL.fullmatch(self.namespace):
            raise InvalidSetting(
                f"--namespace {self.namespace!r} is not a Kubernetes namespace name (lower case letters, digits, "
                "'-', at most 63)"
            )
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise InvalidSetting(
                f"--min {self.min_replicas} --max {self.max_replicas}: give 1 <= --min <= --max (the HPA's range)"
            )
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise InvalidSetting(
                f"--replicas {self.replicas} is outside --min {self.min_replicas} .. --max {self.max_replicas}: "
                "the autoscaler would move it there at once"
            )
        millicores(self.cpu, "--cpu")
        if millicores(self.cpu_limit, "--cpu-limit") < millicores(self.cpu, "--cpu"):
            raise InvalidSetting(
                f"--cpu-limit {self.cpu_limit} is below --cpu {self.cpu}: a limit must be >= the request"
            )
        memory_quantity(self.memory, "--memory")
        if self.memory_limit is not None:
            memory_quantity(self.memory_limit, "--memory-limit")
        if not 1 <= self.target_cpu_percent <= 100:
            raise InvalidSetting(f"--target-cpu {self.target_cpu_percent}: give a percentage of the request, 1 to 100")
        if self.artifacts is not None and not self.artifacts.startswith("s3://"):
            raise InvalidSetting(
                f"--artifacts {self.artifacts!r}: give the shared store's s3://bucket/prefix URL, or leave it out "
                "to mount a shared volume of artifacts"
            )
        if self.grpc_port is not None and not (1 <= self.grpc_port <= 65535 and self.grpc_port != container.PORT):
            raise InvalidSetting(
                f"--grpc-port {self.grpc_port}: give a port from 1 to 65535 other than the HTTP port {container.PORT}"
            )
        if self.inflight_per_pod < 1:
            raise InvalidSetting(
                f"--inflight-target {self.inflight_per_pod}: give the in-flight requests per pod, >= 1"
            )


def millicores(quantity: str, what: str = "cpu") -> int:
    """A CPU quantity (``2``, ``1.5``, ``500m``) in millicores; InvalidSetting for anything else."""
    match = _CPU.fullmatch(quantity)
    cores = float(match.group(1)) if match else 0.0
    value = int(cores if match and match.group(2) else cores * 1000)
    if value < 1:
        raise InvalidSetting(f"{what} {quantity!r} is not a CPU quantity (e.g. 500m, 1, 1.5)")
    return value


def memory_quantity(quantity: str, what: str = "memory") -> str:
    """``quantity`` when it is a memory quantity (``512Mi``, ``2Gi``); InvalidSetting otherwise."""
    if not _MEMORY.fullmatch(quantity):
        raise InvalidSetting(f"{what} {quantity!r} is not a memory quantity (e.g. 512Mi, 2Gi)")
    return quantity


# -- objects ----------------------------------------------------------------------------------


def names(version: ModelVersion) -> dict[str, str]:
    """The objects' names: ``modelport-<slug>`` and the ConfigMap and Secrets beside it."""
    base = f"modelport-{slug(version.name)}"
    return {
        "app": base,
        "settings": f"{base}-settings",
        "credentials": f"{base}-credentials",
        "scrape": f"{base}-scrape",
        "api_keys": f"{base}-api-keys",
        "artifacts": f"{base}-artifacts",
    }


def selector(version: ModelVersion) -> dict[str, str]:
    return {"app.kubernetes.io/name": "modelport", "app.kubernetes.io/instance": slug(version.name)}


def labels(version: ModelVersion) -> dict[str, str]:
    return {**selector(version), "app.kubernetes.io/component": "model-server"}


def _meta(name: str, version: ModelVersion) -> dict[str, Any]:
    return {"name": name, "labels": labels(version)}


def probes(port: int | str) -> dict[str, Any]:
    """Startup, liveness and readiness probes on the server's health routes.

    The server answers only once its models are loaded, so the startup probe allows five minutes
    for that before liveness counts; readiness is also 503 while the server sheds load
    (``MODELPORT_OVERLOAD_UNREADY``) or drains, which takes the pod out of its Service."""

    def get(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    return {
        "startupProbe": get(container.LIVE_PATH, 2, 150),
        "livenessProbe": get(container.LIVE_PATH, 10, 3),
        "readinessProbe": get(container.READY_PATH, 5, 2),
    }


def grpc_readiness(port: int) -> dict[str, Any]:
    """Readiness as gRPC health on ``port`` (service "": the server, ready exactly when
    /v2/health/ready is 200); the probe also proves the gRPC port answers. Startup and liveness stay
    on HTTP /v2/health/live: gRPC health is readiness, and a pod that is only not ready (loading,
    shedding load, draining) must not be restarted."""
    return {"grpc": {"port": port}, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2}


def container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": container.USER,
        "runAsGroup": container.GROUP,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


TMP_VOLUME = {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}  # the only path the server writes (container.HOME lives there)


def deployment(version: ModelVersion, ref: Reference, options: KubernetesOptions) -> dict[str, Any]:
    n = names(version)
    limits = {"cpu": options.cpu_limit, "memory": options.memory_limit or options.memory}
    server = {
        "name": "modelport",
        "image": options.image or default_image(version),
        "imagePullPolicy": "IfNotPresent",
        # no command or args: the image's ENTRYPOINT and default command serve (container.COMMAND)
        "ports": [{"name": "http", "containerPort": container.PORT, "protocol": "TCP"}],
        "envFrom": [
            {"configMapRef": {"name": n["settings"]}},
            {"secretRef": {"name": n["credentials"], "optional": True}},
        ],
        "resources": {"requests": {"cpu": options.cpu, "memory": options.memory}, "limits": limits},
        **probes("http"),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}},
        "securityContext": container_security(),
        "volumeMounts": [TMP_MOUNT],
    }
    volumes: list[dict[str, Any]] = [TMP_VOLUME]
    if not options.open:  # the keys file (hashes only) from its Secret; the kubelet refreshes it in place
        server["volumeMounts"] = [TMP_MOUNT, {"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True}]
        volumes.append({"name": "api-keys", "secret": {"secretName": n["api_keys"], "defaultMode": 0o440}})
    pod = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": container.USER,
            "runAsGroup": container.GROUP,
            "fsGroup": container.GROUP,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(version)},
            }
        ],
        "containers": [server],
        "volumes": volumes,
    }
    annotations = {"modelport.io/model": str(ref), "modelport.io/version": version.ref}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**_meta(n["app"], version), "annotations": annotations},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(version)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels(version), "annotations": annotations}, "spec": pod},
        },
    }


def service(version: ModelVersion) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(names(version)["app"], version),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(version),
            "ports": [{"name": "http", "port": container.PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def settings_map(version: ModelVersion, options: KubernetesOptions) -> dict[str, Any]:
    data = {"MODELPORT_LOG_FORMAT": "json", "MODELPORT_ACCESS_LOG": "1"}
    if not options.open:
        data["MODELPORT_API_KEYS_FILE"] = f"{API_KEYS_DIR}/keys"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(names(version)["settings"], version),
        "data": data,
    }


def disruption_budget(version: ModelVersion) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(names(version)["app"], version),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(version)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def network_policy(version: ModelVersion, *, grpc: bool = False) -> dict[str, Any]:
    """Ingress from the namespace's pods and from namespaces labelled ACCESS_LABEL, to the http port
    (and ``grpc``'s)."""
    ports = [{"port": "http", "protocol": "TCP"}] + ([{"port": "grpc", "protocol": "TCP"}] if grpc else [])
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(names(version)["app"], version),
        "spec": {
            "podSelector": {"matchLabels": selector(version)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {}}, {"namespaceSelector": {"matchLabels": {ACCESS_LABEL: "true"}}}],
                    "ports": ports,
                }
            ],
        },
    }


def scrape_endpoint(version: ModelVersion, authorized: bool) -> dict[str, Any]:
    """The ServiceMonitor's endpoint; ``authorized``: with a key of scope metrics from the scrape Secret."""
    endpoint: dict[str, Any] = {
        "port": "http",
        "path": container.METRICS_PATH,
        "interval": "15s",
        "scrapeTimeout": "10s",
    }
    if authorized:
        endpoint["authorization"] = {"type": "Bearer", "credentials": {"name": names(version)["scrape"], "key": "key"}}
    return endpoint


def service_monitor(version: ModelVersion, options: KubernetesOptions) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(names(version)["app"], version),
        "spec": {
            "selector": {"matchLabels": selector(version)},
            "endpoints": [scrape_endpoint(version, not options.open)],
        },
    }


def cpu_metric(options: KubernetesOptions) -> dict[str, Any]:
    target = {"type": "Utilization", "averageUtilization": options.target_cpu_percent}
    return {"type": "Resource", "resource": {"name": "cpu", "target": target}}


def autoscaler(version: ModelVersion, options: KubernetesOptions) -> dict[str, Any]:
    name = names(version)["app"]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(name, version),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": options.min_replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [cpu_metric(options)],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


# -- patches for the overlays and components --------------------------------------------------


def _patch(kind: str, api: str, name: str, spec: dict[str, Any], key: str = "spec") -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, key: spec}


def _server_patch(name: str, fields: dict[str, Any], pod: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {"containers": [{"name": "modelport", **fields}], **(pod or {})}
    return _patch("Deployment", "apps/v1", name, {"template": {"spec": spec}})


def dev_patch(version: ModelVersion, options: KubernetesOptions) -> dict[str, Any]:
    """One replica with half the CPU request (memory as given: a model needs it in every environment)."""
    cpu = f"{max(50, millicores(options.cpu) // 2)}m"
    patch = _server_patch(names(version)["app"], {"resources": {"requests": {"cpu": cpu}}})
    patch["spec"]["replicas"] = 1
    return patch


def inflight_patch(version: ModelVersion, options: KubernetesOptions) -> dict[str, Any]:
    """The HPA on the mean in-flight requests per pod (a Pods metric served by a custom-metrics
    adapter; see docs/kubernetes.md), keeping CPU: the HPA follows whichever asks for more pods."""
    pods = {
        "metric": {"name": INFLIGHT_METRIC},
        "target": {"type": "AverageValue", "averageValue": str(options.inflight_per_pod)},
    }
    metrics = [{"type": "Pods", "pods": pods}, cpu_metric(options)]
    return _patch("HorizontalPodAutoscaler", "autoscaling/v2", names(version)["app"], {"metrics": metrics})


def registry_patches(version: ModelVersion, ref: Reference, options: KubernetesOptions) -> list[dict[str, Any]]:
    """Serve ``ref`` from the shared registry: the image without models, the reference and the
    artifacts folder in the settings, the credentials Secret required, the shared artifacts
    volume mounted, and /metrics scraped with a key (the registry's keys switch authentication on)."""
    n = names(version)
    artifacts = options.artifacts or ARTIFACTS_MOUNT
    settings = {"MODELPORT_MODELS": str(ref), "MODELPORT_HOST": "0.0.0.0", "MODELPORT_ARTIFACTS": artifacts}
    server: dict[str, Any] = {
        "image": options.registry_image or default_image(version, "registry"),
        "envFrom": [
            {"configMapRef": {"name": n["settings"]}},
            {"secretRef": {"name": n["credentials"], "optional": False}},
        ],
    }
    pod: dict[str, Any] = {}
    if options.artifacts is None:  # a shared folder: a volume every replica mounts
        server["volumeMounts"] = [{"name": "artifacts", "mountPath": ARTIFACTS_MOUNT, "readOnly": True}]
        pod["volumes"] = [
            {"name": "artifacts", "persistentVolumeClaim": {"claimName": n["artifacts"], "readOnly": True}}
        ]
    grpc = options.grpc_port
    if grpc is not None:  # the V2 gRPC API beside HTTP: port, Service port, NetworkPolicy, gRPC readiness
        settings["MODELPORT_GRPC_PORT"] = str(grpc)
        server["ports"] = [{"name": "grpc", "containerPort": grpc, "protocol": "TCP"}]  # merged with http's
        server["readinessProbe"] = {"httpGet": None, **grpc_readiness(grpc)}  # null: the base's httpGet goes
    patches = [
        _patch("ConfigMap", "v1", n["settings"], settings, key="data"),
        _server_patch(n["app"], server, pod),
        _patch(
            "ServiceMonitor",
            "monitoring.coreos.com/v1",
            n["app"],
            {"endpoints": [scrape_endpoint(version, True)]},
        ),
    ]
    if grpc is not None:
        ports = [{"name": "grpc", "port": grpc, "targetPort": "grpc", "protocol": "TCP"}]  # merged by port
        patches.append(_patch("Service", "v1", n["app"], {"ports": ports}))
        allowed = network_policy(version, grpc=True)["spec"]["ingress"]  # a list kustomize replaces whole
        patches.append(_patch("NetworkPolicy", "networking.k8s.io/v1", n["app"], {"ingress": allowed}))
    return patches


# -- files ------------------------------------------------------------------------------------


def to_yaml(document: Mapping[str, Any], notes: tuple[str, ...] = ()) -> str:
    head = "".join(f"# {line}\n" for line in notes)
    return head + dump(dict(document), indent_lists=False, width=120)


def _kustomization(kind: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": COMPONENT if kind == "Component" else KUSTOMIZE, "kind": kind, **fields}


def kustomize_layout(version: ModelVersion, ref: Reference, options: KubernetesOptions) -> dict[str, str]:
    """Every file of the layout, path (relative, ``/``-separated) -> text."""
    written = (
        f"Written by modelport {__version__} (modelport deploy k8s {ref}) for {version.ref}; see docs/kubernetes.md."
    )
    base = {
        "configmap.yaml": settings_map(version, options),
        "deployment.yaml": deployment(version, ref, options),
        "service.yaml": service(version),
        "pdb.yaml": disruption_budget(version),
        "networkpolicy.yaml": network_policy(version),
        "servicemonitor.yaml": service_monitor(version, options),
    }
    base_fields: dict[str, Any] = {"namespace": options.namespace} if options.namespace else {}
    n = names(version)
    prod_replicas = _patch("Deployment", "apps/v1", n["app"], {"replicas": options.replicas})
    registry = registry_patches(version, ref, options)
    files: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
        **{f"base/{name}": (doc, ()) for name, doc in base.items()},
        "base/kustomization.yaml": (_kustomization("Kustomization", **base_fields, resources=list(base)), ()),
        "overlays/dev/patch-deployment.yaml": (dev_patch(version, options), ()),
        "overlays/dev/kustomization.yaml": (
            _kustomization("Kustomization", resources=["../../base"], patches=[{"path": "patch-deployment.yaml"}]),
            ("dev: one replica, half the CPU request, no autoscaler (it would override the replica count).",),
        ),
        "overlays/prod/hpa.yaml": (autoscaler(version, options), ()),
        "overlays/prod/patch-replicas.yaml": (prod_replicas, ()),
        "overlays/prod/kustomization.yaml": (
            _kustomization(
                "Kustomization",
                **base_fields,
                resources=["../../base", "hpa.yaml"],
                patches=[{"path": "patch-replicas.yaml"}],
            ),
            ("prod: the replica count to start with and the CPU autoscaler (--replicas, --min, --max).",),
        ),
        "components/inflight-autoscaling/patch-hpa.yaml": (inflight_patch(version, options), ()),
        "components/inflight-autoscaling/kustomization.yaml": (
            _kustomization("Component", patches=[{"path": "patch-hpa.yaml"}]),
            (f"Scale on {INFLIGHT_METRIC} per pod: needs a custom-metrics adapter (docs/kubernetes.md).",),
        ),
        "overlays/prod-inflight/kustomization.yaml": (
            _kustomization(
                "Kustomization", resources=["../prod"], components=["../../components/inflight-autoscaling"]
            ),
            ("prod, autoscaled on in-flight requests as well as CPU.",),
        ),
        **{f"components/registry/patch-{i}.yaml": (doc, ()) for i, doc in enumerate(registry)},
        "components/registry/kustomization.yaml": (
            _kustomization("Component", patches=[{"path": f"patch-{i}.yaml"} for i in range(len(registry))]),
            (
                f"Serve {ref} from the shared registry (image built with --models registry). Needs the Secret",
                f"{n['credentials']} (MODELPORT_DATABASE_URL; API keys live in that database: modelport keys create),",
                (
                    f"the claim {n['artifacts']} (the shared artifacts folder)"
                    if options.artifacts is None
                    else f"access to {options.artifacts} (AWS_* credentials in that Secret, or a workload identity)"
                )
                + f" and the Secret {n['scrape']}",
                "(key: a key with scope metrics, for the ServiceMonitor).",
            ),
        ),
        "overlays/registry/kustomization.yaml": (
            _kustomization("Kustomization", resources=["../prod"], components=["../../components/registry"]),
            ("prod, replicas serving from the shared registry and following alias moves.",),
        ),
    }
    return {path: to_yaml(doc, (written, *notes)) for path, (doc, notes) in files.items()}


def write_files(directory: Path, files: Mapping[str, str], *, force: bool = False) -> list[Path]:
    """Write ``files`` under ``directory``. A directory that exists and is not empty is refused
    unless ``force``: then the files named here are replaced and any others left as they are."""
    if directory.exists() and not directory.is_dir():
        raise InvalidSetting(f"--out {directory} is a file, not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise InvalidSetting(
            f"--out {directory} is not empty: choose a new directory, or pass --force to replace the files "
            "modelport writes there (other files are left as they are)"
        )
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
