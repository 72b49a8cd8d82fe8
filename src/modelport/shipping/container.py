"""The contract of a modelport container image, which every shipping target builds on.

``modelport build`` makes images that keep it, and the Kubernetes, KServe and CI files point at
it, so the numbers live here once:

- the server listens on :data:`PORT` (HTTP: V2, TF Serving, ``/metrics``; with baked models also
  SageMaker's ``/ping`` and ``/invocations``);
- it runs as the non-root :data:`USER`:``GROUP`` and needs no writable path but ``/tmp``
  (:data:`HOME` lives there), so it runs with a read-only root filesystem;
- the probes are :data:`LIVE_PATH` (the process answers) and :data:`READY_PATH` (every served
  model is loaded and warm);
- on SIGTERM it drains for up to :data:`DRAIN_SECONDS`, so an orchestrator's grace period must be
  longer;
- ``ENTRYPOINT`` is :data:`ENTRYPOINT` with the default command ``serve``: models baked into
  :data:`MODEL_DIR` are served as SageMaker serves a container (``<image> serve``), and an image
  built without models serves from the registry the ``MODELPORT_*`` variables name
  (:data:`REGISTRY_VARIABLES`).
"""

from __future__ import annotations

import hashlib
import re

from modelport.settings import DEFAULT_PORT
from modelport.settings import DRAIN_SECONDS as DRAIN_SECONDS  # how long the server drains on SIGTERM
from modelport.types import ModelVersion

PORT = DEFAULT_PORT
USER = 10001
GROUP = 10001
VENV = "/opt/venv"
ENTRYPOINT = (f"{VENV}/bin/modelport",)
COMMAND = ("serve",)
MODEL_DIR = "/opt/ml/model"  # SageMaker's model directory: baked models live where it looks
HOME = "/tmp/modelport"  # MODELPORT_HOME: the only place the server writes (capture, packaging scratch)
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"
METRICS_PATH = "/metrics"
# What an image without models (``--models registry``) reads to find its registry and models.
REGISTRY_VARIABLES = ("MODELPORT_DATABASE_URL", "MODELPORT_ARTIFACTS", "MODELPORT_MODELS", "MODELPORT_SERVE_ALIAS")


def default_image(version: ModelVersion, models: str = "baked") -> str:
    """The image ``modelport build`` tags by default: ``localhost/modelport-<name>:<version>`` with
    the model baked in, ``localhost/modelport-<name>:registry`` for ``--models registry``."""
    return f"localhost/modelport-{slug(version.name)}:{version.version if models == 'baked' else 'registry'}"


def slug(name: str) -> str:
    """A model name as a DNS label part (lower case, ``-`` for ``_`` and ``.``, at most 40
    characters); a short hash of the name is added when the name had to change, so two names
    never share a slug."""
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:40].strip("-") or "model"
    if text == name:
        return text
    return f"{text}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"
