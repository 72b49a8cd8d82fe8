"""Settings, read once from the environment (``MODELPORT_*``) and passed down explicitly."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DRAIN_SECONDS = 30  # on SIGTERM, requests in progress get this long to finish (orchestrators wait longer)
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
    artifacts: where artifacts are stored: a folder, or a URL (``file:///srv/artifacts``;
        ``s3://bucket/prefix`` with the ``s3`` extra, the endpoint, region and credentials from the
        standard AWS variables; the scheme of an installed store plugin). Default ``home/artifacts``.
    device: where versions run: ``cpu``, ``cuda`` or ``cuda:N`` (``MODELPORT_DEVICE``,
        ``serve --device``); given, it wins over the device a version was registered with (logged
        when they differ). None (not given): each version on its own device, else the CPU. A
        runtime that cannot use the device refuses to load, saying so.
    artifact_cache_bytes: how much a remote store (S3) keeps in its local cache,
        ``home/cache/artifacts``; the least recently used artifacts go first
        (``MODELPORT_ARTIFACT_CACHE_MB``, default 10240).
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
        rows.
    max_queue_wait_ms: overload is shed early: a request that would wait longer than this behind
        the work queued for its version (expected from the version's measured cost; default
        1000 ms; a version's own setting wins), or find more than ``max_queue_rows`` rows queued,
        is refused at once with 503 + Retry-After. overload_unready: while a version sheds load
        (and for a second after), ``/v2/health/ready`` answers 503 so a load balancer can route
        around this server (``/ping`` and ``/v2/health/live`` are never affected).
    grpc_port: port of the V2 gRPC endpoint; None means no gRPC.
    insecure_open: allow a non-loopback bind without authentication (prints a loud warning).
    enable_management: expose management endpoints (repository load/unload); they always need
        the ``manage`` scope.
    api_keys_file: a file of API key hashes (``modelport keys create --file``), checked besides
        the registry's keys and re-read every ``poll_seconds``: how an image without a registry
        (baked models, a Kubernetes Secret mounted as a file) gets keys. Naming one turns
        authentication on, even while it lists no key.
    jwt_public_key / jwt_jwks: PEM public key file, or JWKS file, that verifies OAuth2/OIDC
        bearer tokens. jwt_issuer / jwt_audience: required ``iss`` / ``aud`` claims.
        jwt_scope_claim: the claim holding scopes (space-separated string or list).
    jwt_discovery: find the keys by OpenID Connect discovery instead: ``jwt_issuer`` is then also
        the URL whose ``/.well-known/openid-configuration`` names the JWKS (both fetched over
        HTTPS, verified against ``jwt_ca_bundle`` when given, else the system's CAs). The keys are
        cached and refetched when older than ``jwt_jwks_max_age`` seconds (default 3600) or when
        a token names an unknown ``kid``, at most once per ``jwt_jwks_refetch_seconds`` (default
        30); a failed fetch keeps the last good keys.
    tls_certfile / tls_keyfile: PEM certificate (chain) and unencrypted private key: HTTP and
        gRPC then serve TLS only (both or neither). tls_client_ca: PEM CA bundle; when given,
        clients must present a certificate it signed (mutual TLS), on both transports.
    request_timeout: every inference request's deadline in seconds (default 60; 0: none): past
        it the request is dropped from the queue, or its answer abandoned, and answered 504. A
        request may ask for less (V2 ``parameters.timeout`` in microseconds, as Triton's client
        sends it; the ``modelport-timeout`` header in seconds; a gRPC deadline).
    capture_rate: payload capture: the share of answered requests written (0 to 1, default 0:
        off), as JSON lines under ``capture_root`` (``home/capture``): one folder per model and
        version, files rotated at 64 MiB, at most 50 kept per version. A version registered
        with its own rate (``register --capture-rate``) uses that instead. Samples are written
        in the background through a bounded queue: when it is full a sample is dropped
        (counted), never a request slowed or failed.
    capture_redact: names (comma-separated) whose values capture never writes: an input or
        output with that name, or a 2-D input with a feature of that name, is written as
        ``"[redacted]"`` (the whole tensor).
    log_level / log_format: ``debug``, ``info``, ``warning`` or ``error``; ``text`` or ``json``
        (one object per line), for the ``modelport`` logger and uvicorn's alike.
    access_log: one line per request on stdout (``modelport.access`` logger, in ``log_format``):
        time, request id, client address, API key id, method, path, protocol, model, version,
        status, latency and rows. Off by default.
    metrics: ``GET /metrics`` in the Prometheus text format (default on; ``MODELPORT_METRICS=0``
        turns it off, and it is then 404). metrics_dir: where the workers of one server exchange
        their counts; ``serve --workers N`` makes one for the run (see docs/monitoring.md).
    drift_interval / drift_window: every ``drift_interval`` seconds (default 60; 0: never) the
        server compares each served version's captured traffic of the last ``drift_window``
        seconds (default 3600) with its reference profile, for the ``modelport_drift_*`` gauges.
    max_header_bytes / header_timeout / max_connections: per connection, before any request
        reaches the app (so before authentication): request line and headers larger than this
        are answered 431 (``MODELPORT_MAX_HEADER_KB``, default 64); headers must arrive within
        ``header_timeout`` seconds (default 10, else 408); at most ``max_connections`` per worker
        (0, the default: as many as the open-files limit allows, up to 4096), the longest-idle
        connection making way for a new one at the cap.
    body_timeout: a request's body must arrive within this many seconds of its headers, plus one
        second per 64 KiB received (``MODELPORT_BODY_TIMEOUT``, default 30, else 408 and the
        connection closed): a trickle is cut after 30 s, an upload keeping up 64 KiB/s never.
    tracing: OpenTelemetry tracing (``MODELPORT_TRACING=1``; needs the ``tracing`` extra): a server
        span per request with its decode, queue, inference and encode steps as children, a
        caller's W3C ``traceparent`` continued and the answer's sent back. The exporter is named
        by the standard ``OTEL_TRACES_EXPORTER`` (tracing_exporter: ``otlp``, the default, needs
        ``opentelemetry-exporter-otlp`` and reads ``OTEL_EXPORTER_OTLP_*``; ``console``; ``none``);
        the other ``OTEL_*`` variables (service name, resource, sampler, batching) are the SDK's
        own. See docs/monitoring.md.
    sentry_dsn: report faults (answers of 500, gRPC INTERNAL) and failed model loads to Sentry
        (the standard ``SENTRY_DSN``; needs the ``sentry`` extra). Bodies, headers, query strings,
        frame variables, API keys and tokens are never sent.
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
    artifacts: str | Path | None = None
    artifact_cache_bytes: int = 10 * 1024 * MIB
    device: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    threads: int = 0
    max_body_bytes: int = 32 * MIB
    allow_env_mismatch: bool = False
    trust_exported_code: bool = False
    log_level: str = "info"
    log_format: str = "text"
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 0
    models: tuple[str, ...] = ()
    serve_alias: str | None = None
    version_policy: str = ""
    poll_seconds: float = 1.0
    sticky_header: str = "x-modelport-routing-key"
    batching: bool = True
    max_batch_size: int = 64
    max_batch_wait_ms: float = 0.0
    max_queue_rows: int = 8192
    max_queue_wait_ms: float = 1000.0
    overload_unready: bool = True
    grpc_port: int | None = None
    insecure_open: bool = False
    enable_management: bool = False
    api_keys_file: Path | None = None
    jwt_public_key: Path | None = None
    jwt_jwks: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_scope_claim: str = "scope"
    jwt_discovery: bool = False
    jwt_ca_bundle: Path | None = None
    jwt_jwks_max_age: float = 3600.0
    jwt_jwks_refetch_seconds: float = 30.0
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    tls_client_ca: Path | None = None
    request_timeout: float = 60.0
    access_log: bool = False
    metrics: bool = True
    metrics_dir: Path | None = None
    drift_interval: float = 60.0
    drift_window: float = 3600.0
    capture_rate: float = 0.0
    capture_redact: tuple[str, ...] = ()
    tracing: bool = False
    tracing_exporter: str = "otlp"
    sentry_dsn: str | None = None
    sagemaker_model_dir: Path = Path("/opt/ml/model")
    sagemaker_models_dir: Path = Path("/opt/ml/models")
    sagemaker: bool = False
    sagemaker_multi_model: bool = False
    sagemaker_memory_factor: float = 3.0
    sagemaker_memory_headroom: int = 256 * MIB

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                from modelport.errors import InvalidSetting

                variable = ENVIRONMENT[name][0]
                raise InvalidSetting(f"{variable}={getattr(self, name)!r} is not valid: choose {', '.join(allowed)}")
        rate = self.capture_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            from modelport.errors import InvalidSetting

            raise InvalidSetting(
                f"MODELPORT_CAPTURE_RATE={rate!r} is not valid: give the share of requests captured, a number "
                "from 0 (off) to 1 (every request), e.g. 0.01"
            )
        for name in ("drift_interval", "drift_window"):
            if getattr(self, name) < 0:
                from modelport.errors import InvalidSetting

                raise InvalidSetting(f"{ENVIRONMENT[name][0]}={getattr(self, name)!r} is not valid: give seconds, >= 0")
        for name in ("header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:  # NaN too
                from modelport.errors import InvalidSetting

                raise InvalidSetting(f"{ENVIRONMENT[name][0]}={getattr(self, name)!r} is not valid: give seconds, > 0")
        home = Path(self.home).expanduser().absolute()
        object.__setattr__(self, "home", home)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{home / 'registry.db'}")
        if self.artifacts is None:
            object.__setattr__(self, "artifacts", str(home / "artifacts"))
        elif isinstance(self.artifacts, Path):
            object.__setattr__(self, "artifacts", str(self.artifacts))

    @property
    def artifact_location(self) -> str:
        """Where artifacts are stored, as given: a folder or a URL (see ``artifacts``)."""
        assert self.artifacts is not None  # set in __post_init__
        return str(self.artifacts)

    @property
    def artifact_cache(self) -> Path:
        """Where a remote artifact store keeps its downloads: ``home/cache/artifacts``."""
        return self.home / "cache" / "artifacts"

    @property
    def capture_root(self) -> Path:
        """Where payload capture writes: ``home/capture/<model>/<version>/*.jsonl``."""
        return self.home / "capture"

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
                try:
                    values[name] = parse(env[variable])
                except (ValueError, TypeError, OverflowError):
                    from modelport.errors import InvalidSetting

                    raise InvalidSetting(
                        f"{variable}={env[variable]!r} is not valid: give a {_KIND.get(name, 'value')}"
                    ) from None
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


def _device(text: str) -> str | None:
    from modelport.types import device_of

    return device_of(text)


def _text(value: Any) -> str:
    return str(value)


def _flag(value: Any) -> str:
    return "1" if value else "0"


_Entry = tuple[str, Callable[[str], Any], Callable[[Any], str]]

# field -> (environment variable, parse, render)
ENVIRONMENT: dict[str, _Entry] = {
    "home": ("MODELPORT_HOME", Path, _text),
    "database_url": ("MODELPORT_DATABASE_URL", str, _text),
    "artifacts": ("MODELPORT_ARTIFACTS", str, _text),
    "device": ("MODELPORT_DEVICE", lambda t: _device(t), _text),
    "artifact_cache_bytes": ("MODELPORT_ARTIFACT_CACHE_MB", lambda t: int(float(t) * MIB), lambda v: f"{v / MIB:g}"),
    "host": ("MODELPORT_HOST", str, _text),
    "port": ("MODELPORT_PORT", int, _text),
    "workers": ("MODELPORT_WORKERS", int, _text),
    "threads": ("MODELPORT_THREADS", int, _text),
    "max_body_bytes": ("MODELPORT_MAX_BODY_MB", lambda t: int(float(t) * MIB), lambda v: f"{v / MIB:g}"),
    "allow_env_mismatch": ("MODELPORT_ALLOW_ENV_MISMATCH", _bool, _flag),
    "trust_exported_code": ("MODELPORT_TRUST_EXPORTED_CODE", _bool, _flag),
    "log_level": ("MODELPORT_LOG_LEVEL", str, _text),
    "log_format": ("MODELPORT_LOG_FORMAT", lambda t: t.strip().lower(), _text),
    "max_header_bytes": ("MODELPORT_MAX_HEADER_KB", lambda t: int(float(t) * 1024), lambda v: f"{v / 1024:g}"),
    "header_timeout": ("MODELPORT_HEADER_TIMEOUT", float, _text),
    "body_timeout": ("MODELPORT_BODY_TIMEOUT", float, _text),
    "max_connections": ("MODELPORT_MAX_CONNECTIONS", int, _text),
    "models": ("MODELPORT_MODELS", _refs, ",".join),
    "serve_alias": ("MODELPORT_SERVE_ALIAS", lambda t: t or None, _text),
    "version_policy": ("MODELPORT_VERSION_POLICY", str, _text),
    "poll_seconds": ("MODELPORT_POLL_SECONDS", float, _text),
    "sticky_header": ("MODELPORT_STICKY_HEADER", lambda t: t.strip().lower(), _text),
    "batching": ("MODELPORT_BATCHING", _switch, lambda v: "on" if v else "off"),
    "max_batch_size": ("MODELPORT_MAX_BATCH_SIZE", int, _text),
    "max_batch_wait_ms": ("MODELPORT_MAX_BATCH_WAIT_MS", float, _text),
    "max_queue_rows": ("MODELPORT_MAX_QUEUE_ROWS", int, _text),
    "max_queue_wait_ms": ("MODELPORT_MAX_QUEUE_WAIT_MS", float, _text),
    "overload_unready": ("MODELPORT_OVERLOAD_UNREADY", _bool, _flag),
    "grpc_port": ("MODELPORT_GRPC_PORT", lambda t: int(t) if t else None, _text),
    "insecure_open": ("MODELPORT_INSECURE_OPEN", _bool, _flag),
    "enable_management": ("MODELPORT_ENABLE_MANAGEMENT", _bool, _flag),
    "api_keys_file": ("MODELPORT_API_KEYS_FILE", _optional_path, _text),
    "jwt_public_key": ("MODELPORT_JWT_PUBLIC_KEY", _optional_path, _text),
    "jwt_jwks": ("MODELPORT_JWT_JWKS", _optional_path, _text),
    "jwt_issuer": ("MODELPORT_JWT_ISSUER", lambda t: t or None, _text),
    "jwt_audience": ("MODELPORT_JWT_AUDIENCE", lambda t: t or None, _text),
    "jwt_scope_claim": ("MODELPORT_JWT_SCOPE_CLAIM", str, _text),
    "jwt_discovery": ("MODELPORT_JWT_DISCOVERY", _bool, _flag),
    "jwt_ca_bundle": ("MODELPORT_JWT_CA_BUNDLE", _optional_path, _text),
    "jwt_jwks_max_age": ("MODELPORT_JWT_JWKS_MAX_AGE", float, _text),
    "jwt_jwks_refetch_seconds": ("MODELPORT_JWT_JWKS_REFETCH_SECONDS", float, _text),
    "tls_certfile": ("MODELPORT_TLS_CERTFILE", _optional_path, _text),
    "tls_keyfile": ("MODELPORT_TLS_KEYFILE", _optional_path, _text),
    "tls_client_ca": ("MODELPORT_TLS_CLIENT_CA", _optional_path, _text),
    "request_timeout": ("MODELPORT_REQUEST_TIMEOUT", float, _text),
    "access_log": ("MODELPORT_ACCESS_LOG", _bool, _flag),
    "metrics": ("MODELPORT_METRICS", _bool, _flag),
    "metrics_dir": ("MODELPORT_METRICS_DIR", _optional_path, _text),
    "drift_interval": ("MODELPORT_DRIFT_INTERVAL", float, _text),
    "drift_window": ("MODELPORT_DRIFT_WINDOW", float, _text),
    "capture_rate": ("MODELPORT_CAPTURE_RATE", lambda t: _share(float(t)), _text),
    "capture_redact": ("MODELPORT_CAPTURE_REDACT", _refs, ",".join),
    "tracing": ("MODELPORT_TRACING", _bool, _flag),
    "tracing_exporter": ("OTEL_TRACES_EXPORTER", lambda t: t.strip().lower() or "otlp", _text),
    "sentry_dsn": ("SENTRY_DSN", lambda t: t.strip() or None, _text),
    "sagemaker_model_dir": ("MODELPORT_SAGEMAKER_MODEL_DIR", Path, _text),
    "sagemaker_models_dir": ("MODELPORT_SAGEMAKER_MODELS_DIR", Path, _text),
    "sagemaker": ("MODELPORT_SAGEMAKER", _bool, _flag),
    "sagemaker_multi_model": ("MODELPORT_SAGEMAKER_MULTI_MODEL", _bool, _flag),
    "sagemaker_memory_factor": ("MODELPORT_SAGEMAKER_MEMORY_FACTOR", float, _text),
    "sagemaker_memory_headroom": (
        "MODELPORT_SAGEMAKER_MEMORY_HEADROOM_MB",
        lambda t: int(float(t) * MIB),
        lambda v: f"{v / MIB:.12g}",
    ),
}


_CHOICES = {"log_format": ("text", "json"), "log_level": ("critical", "error", "warning", "info", "debug", "trace")}

# What a variable's text must be, for messages (fields not listed: "value").
_KIND = {
    name: kind
    for kind, names in {
        "whole number": (
            "port",
            "workers",
            "threads",
            "max_batch_size",
            "max_queue_rows",
            "grpc_port",
            "max_connections",
        ),
        "number": (
            "max_body_bytes",
            "poll_seconds",
            "max_batch_wait_ms",
            "max_queue_wait_ms",
            "request_timeout",
            "header_timeout",
            "body_timeout",
            "max_header_bytes",
            "sagemaker_memory_factor",
            "sagemaker_memory_headroom",
            "jwt_jwks_max_age",
            "jwt_jwks_refetch_seconds",
        ),
        "switch (on or off)": ("batching",),
        "number from 0 (off) to 1 (every request), e.g. 0.01": ("capture_rate",),
    }.items()
    for name in names
}


def _share(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(value)
    return value


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
