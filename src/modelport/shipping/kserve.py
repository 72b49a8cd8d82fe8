"""A KServe InferenceService (``serving.kserve.io/v1beta1``) for a registered model: the modelport
image as a custom predictor speaking the Open Inference Protocol (V2), and a canary variant.

KServe knows a custom predictor's protocol from its ``PROTOCOL`` variable (``v2``) and requires
the container to be named ``kserve-container``; in its default (Knative) mode the serving port
may be named only ``http1`` or ``h2c``, the probes' port must be that port, and only
container-level security settings are accepted, so the pod keeps no pod-level ones here.
"""

from __future__ import annotations

from typing import Any

from modelport.errors import InvalidSetting
from modelport.reference import Reference
from modelport.shipping import container
from modelport.shipping.kubernetes import (
    TMP_MOUNT,
    TMP_VOLUME,
    container_security,
    labels,
    memory_quantity,
    millicores,
    names,
    probes,
    to_yaml,
)
from modelport.types import ModelVersion
from modelport.version import __version__

CONTAINER_NAME = "kserve-container"  # KServe's name for a custom predictor's serving container
PORT_NAME = "http1"  # Knative's name for an HTTP/1 serving port


def inference_service(
    version: ModelVersion,
    image: str,
    *,
    min_replicas: int = 1,
    max_replicas: int = 3,
    cpu: str = "1",
    memory: str = "1Gi",
    canary_percent: int | None = None,
) -> dict[str, Any]:
    """The InferenceService; with ``canary_percent``, KServe sends that share of the traffic to this
    spec's revision and the rest to the last one rolled out fully."""
    if not 0 <= min_replicas <= max_replicas or max_replicas < 1:
        raise InvalidSetting(f"--min {min_replicas} --max {max_replicas}: give 0 <= --min <= --max and --max >= 1")
    if canary_percent is not None and not 0 <= canary_percent <= 100:
        raise InvalidSetting(f"--canary-percent {canary_percent}: give a share of the traffic, 0 to 100")
    millicores(cpu, "--cpu")
    memory_quantity(memory, "--memory")
    server = {
        "name": CONTAINER_NAME,
        "image": image,
        "env": [
            {"name": "PROTOCOL", "value": "v2"},
            {"name": "MODELPORT_LOG_FORMAT", "value": "json"},
        ],
        "envFrom": [{"secretRef": {"name": names(version)["credentials"], "optional": True}}],
        "ports": [{"name": PORT_NAME, "containerPort": container.PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
        **probes(container.PORT),
        "securityContext": container_security(),
        "volumeMounts": [TMP_MOUNT],
    }
    predictor: dict[str, Any] = {"minReplicas": min_replicas, "maxReplicas": max_replicas}
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = canary_percent
    predictor |= {"containers": [server], "volumes": [TMP_VOLUME]}
    metadata = {
        "name": names(version)["app"],
        "labels": labels(version),
        "annotations": {"modelport.io/version": version.ref},
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {"predictor": predictor},
    }


def kserve_files(
    version: ModelVersion,
    ref: Reference,
    image: str,
    *,
    canary_percent: int = 10,
    min_replicas: int = 1,
    max_replicas: int = 3,
    cpu: str = "1",
    memory: str = "1Gi",
) -> dict[str, str]:
    """``inferenceservice.yaml`` (all traffic to this version) and ``inferenceservice-canary.yaml``
    (the same service sending ``canary_percent`` of its traffic to this version)."""
    sizing: dict[str, Any] = {"min_replicas": min_replicas, "max_replicas": max_replicas, "cpu": cpu, "memory": memory}
    written = (
        f"Written by modelport {__version__} (modelport deploy kserve {ref}) for {version.ref}; see docs/kubernetes.md."
    )
    full = inference_service(version, image, **sizing)
    canary = inference_service(version, image, canary_percent=canary_percent, **sizing)
    return {
        "inferenceservice.yaml": to_yaml(full, (written, "Apply to serve this version with all the traffic.")),
        "inferenceservice-canary.yaml": to_yaml(
            canary,
            (
                written,
                f"Apply over a running service to send {canary_percent}% of the traffic to this version and the rest",
                "to the last version rolled out fully; apply inferenceservice.yaml to promote it (KServe's",
                "canary needs its default, Knative, deployment mode).",
            ),
        ),
    }
