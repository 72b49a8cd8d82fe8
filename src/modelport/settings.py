"""Settings, read once from the environment (``MODELPORT_*``) and passed down explicitly."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MIB = 1024 * 1024


def _bool(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes", "on"}


def _switch(text: str) -> bool:
    value = text.strip().lower()
    if value not in {"on", "off", "1", "0", "true", "false", "yes", "no"}:
        raise ValueError(f"expected on or off, got {text!r}")
    return _bool(value) or value == "on"


def _refs(text: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in text.split(",") if r.strip())


def _optional_path(text: str) -> Path | None:
    return Path(text) if text else None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable. ``Settings.from_env()`` is the only reader of the environment;
    each field's variable is in ``ENVIRONMENT`` below.

    home: where the default registry lives (``MODELPORT_HOME``, default ``./.modelport``).
    database_url: SQLAlchemy URL of the metadata DB; default a SQLite file in ``home``.
        PostgreSQL works by URL (``postgresql+psycopg://user@host:5432/db``).
    artifacts: directory of the local content-addressed artifact store.
    threads: compute threads per worker process; 0 means cores / workers.
    max_body_bytes: largest request body accepted (``MODELPORT_MAX_BODY_MB``, default 32 MiB).
    allow_env_mismatch: load native models even when library versions differ.
    trust_exported_code: load pickles and custom Python code from model directories (exports,
        SageMaker's ``/opt/ml/model`` and multi-model directories). Without it a directory whose
        ``modelport.json`` says ``trusted_code`` is refused: the file's own word is never enough.
    models: references the server loads at start (comma-separated), so every worker process
        of ``modelport serve --workers N`` builds the same app.
    serve_alias: serve, for every model, the version this alias points at (``--alias``).
    version_policy: serve every model by policy: ``latest``, ``latest:N``, ``all`` or
        ``specific:1,3`` (TF Serving style), when neither models nor serve_alias is given.
    poll_seconds: how often a server checks the registry for alias moves and key changes.
    sticky_header: the request header whose value pins a caller to one version of a split alias
        (same value, same version); without it, traffic splits at random by weight.
    batching: adaptive batching of concurrent requests per model version: ``on`` or ``off``
        (the default for versions registered without their own setting). No timer: requests
        that arrive in the same pass of the event loop, or while the model computes, are merged
        into one call, in batches of at most ``max_batch_size`` rows; ``max_batch_wait_ms``
        (default 0) holds a batch formed under load that is not full up to that long for more
        rows; past ``max_queue_rows`` queued rows a request is refused with 503 + Retry-After.
    grpc_port: port of the V2 gRPC endpoint; None means no gRPC.
    insecure_open: allow a non-loopback bind without authentication (prints a loud warning).
    enable_management: expose management endpoints (repository load/unload); they always need
        the ``manage`` scope.
    jwt_public_key / jwt_jwks: PEM public key file, or JWKS file, that verifies OAuth2/OIDC
        bearer tokens. jwt_issuer / jwt_audience: required ``iss`` / ``aud`` claims.
        jwt_scope_claim: the claim holding scopes (space-separated string or list).
    request_timeout: seconds a request may take before it is answered 504 (0: no limit).
    sagemaker_model_dir / sagemaker_models_dir: where SageMaker puts the single model, and the
        root of multi-model endpoint models.
    sagemaker: serve the SageMaker container contract (``/ping``, ``/invocations``) with the model
        in ``sagemaker_model_dir`` instead of registry models; ``Settings.for_sagemaker()`` sets it.
    sagemaker_multi_model: be a SageMaker multi-model endpoint (``/models`` load/unload/invoke of
        models under ``sagemaker_models_dir``) instead; ``SAGEMAKER_MULTI_MODEL=true`` sets it.
    sagemaker_memory_factor / sagemaker_memory_headroom: a multi-model load is refused (507) when
        artifact size x factor plus the headroom (bytes, ``MODELPORT_SAGEMAKER_MEMORY_HEADROOM_MB``)
        exceeds the memory available.
    """

    home: Path = field(default_factory=lambda: Path(".modelport"))
    database_url: str = ""
    artifacts: Path | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    threads: int = 0
    max_body_bytes: int = 32 * MIB
    allow_env_mismatch: bool = False
    trust_exported_code: bool = False
    log_level: str = "info"
    models: tuple[str, ...] = ()
    serve_alias: str | None = None
    version_policy: str = ""
    poll_seconds: float = 1.0
    sticky_header: str = "x-modelport-routing-key"
    batching: bool = True
    max_batch_size: int = 64
    max_batch_wait_ms: float = 0.0
    max_queue_rows: int = 8192
    grpc_port: int | None = None
    insecure_open: bool = False
    enable_management: bool = False
    jwt_public_key: Path | None = None
    jwt_jwks: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_scope_claim: str = "scope"
    request_timeout: float = 0.0
    sagemaker_model_dir: Path = Path("/opt/ml/model")
    sagemaker_models_dir: Path = Path("/opt/ml/models")
    sagemaker: bool = False
    sagemaker_multi_model: bool = False
    sagemaker_memory_factor: float = 3.0
    sagemaker_memory_headroom: int = 256 * MIB

    def __post_init__(self) -> None:
        home = Path(self.home).expanduser().absolute()
        object.__setattr__(self, "home", home)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{home / 'registry.db'}")
        if self.artifacts is None:
            object.__setattr__(self, "artifacts", home / "artifacts")

    @property
    def artifact_dir(self) -> Path:
        assert self.artifacts is not None  # set in __post_init__
        return Path(self.artifacts)

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @property
    def compute_threads(self) -> int:
        """Threads for one worker's runtimes, so workers x threads never exceeds the cores."""
        if self.threads > 0:
            return self.threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // max(1, self.workers))

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``MODELPORT_*`` variables; ``overrides`` that are not None win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, (variable, parse, _) in ENVIRONMENT.items():
            if variable in env:
                values[name] = parse(env[variable])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The variables that make ``Settings.from_env()`` in another process equal these."""
        result: dict[str, str] = {}
        for name, (variable, _, render) in ENVIRONMENT.items():
            value = getattr(self, name)
            if value is not None:
                result[variable] = render(value)
        return result

    @classmethod
    def for_sagemaker(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings for ``modelport serve`` started by SageMaker (``<image> serve``).

        The SageMaker variables win over ``MODELPORT_*`` ones: ``SAGEMAKER_BIND_TO_PORT`` (port,
        default 8080), ``SAGEMAKER_MODEL_SERVER_WORKERS``, ``SAGEMAKER_MODEL_SERVER_TIMEOUT``
        (seconds, answered 504 past it), ``SAGEMAKER_MAX_PAYLOAD_IN_MB`` (413 past it) and
        ``SAGEMAKER_MULTI_MODEL=true`` (a multi-model endpoint). It binds 0.0.0.0 unless
        ``MODELPORT_HOST`` says otherwise, with ``insecure_open``: SageMaker authenticates callers
        before a request reaches the container.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {"sagemaker": True, "insecure_open": True}
        if ENVIRONMENT["host"][0] not in env:
            values["host"] = "0.0.0.0"
        for variable, (name, parse) in SAGEMAKER_ENVIRONMENT.items():
            text = env.get(variable, "").strip()
            if not text:
                continue
            try:
                values[name] = parse(text)
            except ValueError:
                from modelport.errors import InvalidSetting

                raise InvalidSetting(f"{variable}={text!r} is not valid: {SAGEMAKER_HELP[variable]}") from None
        return cls.from_env(env, **values)


def _text(value: Any) -> str:
    return str(value)


_Entry = tuple[str, Callable[[str], Any], Callable[[Any], str]]

# field -> (environment variable, parse, render)
ENVIRONMENT: dict[str, _Entry] = {
    "home": ("MODELPORT_HOME", Path, _text),
    "database_url": ("MODELPORT_DATABASE_URL", str, _text),
    "artifacts": ("MODELPORT_ARTIFACTS", Path, _text),
    "host": ("MODELPORT_HOST", str, _text),
    "port": ("MODELPORT_PORT", int, _text),
    "workers": ("MODELPORT_WORKERS", int, _text),
    "threads": ("MODELPORT_THREADS", int, _text),
    "max_body_bytes": ("MODELPORT_MAX_BODY_MB", lambda t: int(float(t) * MIB), lambda v: f"{v / MIB:g}"),
    "allow_env_mismatch": ("MODELPORT_ALLOW_ENV_MISMATCH", _bool, lambda v: "1" if v else "0"),
    "trust_exported_code": ("MODELPORT_TRUST_EXPORTED_CODE", _bool, lambda v: "1" if v else "0"),
    "log_level": ("MODELPORT_LOG_LEVEL", str, _text),
    "models": ("MODELPORT_MODELS", _refs, ",".join),
    "serve_alias": ("MODELPORT_SERVE_ALIAS", lambda t: t or None, _text),
    "version_policy": ("MODELPORT_VERSION_POLICY", str, _text),
    "poll_seconds": ("MODELPORT_POLL_SECONDS", float, _text),
    "sticky_header": ("MODELPORT_STICKY_HEADER", lambda t: t.strip().lower(), _text),
    "batching": ("MODELPORT_BATCHING", _switch, lambda v: "on" if v else "off"),
    "max_batch_size": ("MODELPORT_MAX_BATCH_SIZE", int, _text),
    "max_batch_wait_ms": ("MODELPORT_MAX_BATCH_WAIT_MS", float, _text),
    "max_queue_rows": ("MODELPORT_MAX_QUEUE_ROWS", int, _text),
    "grpc_port": ("MODELPORT_GRPC_PORT", lambda t: int(t) if t else None, _text),
    "insecure_open": ("MODELPORT_INSECURE_OPEN", _bool, lambda v: "1" if v else "0"),
    "enable_management": ("MODELPORT_ENABLE_MANAGEMENT", _bool, lambda v: "1" if v else "0"),
    "jwt_public_key": ("MODELPORT_JWT_PUBLIC_KEY", _optional_path, _text),
    "jwt_jwks": ("MODELPORT_JWT_JWKS", _optional_path, _text),
    "jwt_issuer": ("MODELPORT_JWT_ISSUER", lambda t: t or None, _text),
    "jwt_audience": ("MODELPORT_JWT_AUDIENCE", lambda t: t or None, _text),
    "jwt_scope_claim": ("MODELPORT_JWT_SCOPE_CLAIM", str, _text),
    "request_timeout": ("MODELPORT_REQUEST_TIMEOUT", float, _text),
    "sagemaker_model_dir": ("MODELPORT_SAGEMAKER_MODEL_DIR", Path, _text),
    "sagemaker_models_dir": ("MODELPORT_SAGEMAKER_MODELS_DIR", Path, _text),
    "sagemaker": ("MODELPORT_SAGEMAKER", _bool, lambda v: "1" if v else "0"),
    "sagemaker_multi_model": ("MODELPORT_SAGEMAKER_MULTI_MODEL", _bool, lambda v: "1" if v else "0"),
    "sagemaker_memory_factor": ("MODELPORT_SAGEMAKER_MEMORY_FACTOR", float, _text),
    "sagemaker_memory_headroom": (
        "MODELPORT_SAGEMAKER_MEMORY_HEADROOM_MB",
        lambda t: int(float(t) * MIB),
        lambda v: f"{v / MIB:.12g}",
    ),
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError(text)
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


# The variables SageMaker sets in a container -> (field, parse); read only by Settings.for_sagemaker.
SAGEMAKER_ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "SAGEMAKER_BIND_TO_PORT": ("port", _port),
    "SAGEMAKER_MODEL_SERVER_WORKERS": ("workers", _positive_int),
    "SAGEMAKER_MODEL_SERVER_TIMEOUT": ("request_timeout", _positive_float),
    "SAGEMAKER_MAX_PAYLOAD_IN_MB": ("max_body_bytes", lambda t: int(_positive_float(t) * MIB)),
    "SAGEMAKER_MULTI_MODEL": ("sagemaker_multi_model", _bool),
}
SAGEMAKER_HELP = {
    "SAGEMAKER_BIND_TO_PORT": "give a port number from 1 to 65535, e.g. 8080",
    "SAGEMAKER_MODEL_SERVER_WORKERS": "give a number of worker processes >= 1",
    "SAGEMAKER_MODEL_SERVER_TIMEOUT": "give seconds > 0, e.g. 60",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB": "give megabytes > 0, e.g. 6",
    "SAGEMAKER_MULTI_MODEL": "give true or false",
}
