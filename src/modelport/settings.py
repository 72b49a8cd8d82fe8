"""Settings, read once from the environment (``MODELPORT_*``) and passed down explicitly.

Each setting is declared once, as a field of ``Settings`` made by ``setting(...)``: its default,
its environment variable, how the variable's text is parsed and written back, what the text must
be (for the message when it is not), its choices, its group and one line saying what it does.
``ENVIRONMENT``, the choices, the kinds, ``SAGEMAKER_ENVIRONMENT``, the settings tables in the
docs (``scripts/settings_docs.py`` writes them) and the defaults ``modelport serve --help`` shows
are all read from those declarations.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DRAIN_SECONDS = 30  # on SIGTERM, requests in progress get this long to finish (orchestrators wait longer)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MIB = 1024 * 1024

# What a variable's text must be, for the message when it is not ("give a ...").
VALUE = "value"
WHOLE = "whole number"
NUMBER = "number"
SWITCH = "switch (on or off)"
SHARE = "number from 0 (off) to 1 (every request), e.g. 0.01"

# Groups, in the order the docs table lists them.
GROUPS = {
    "registry": "Registry and artifacts",
    "server": "Server",
    "limits": "Limits and timeouts",
    "serving": "What is served, and batching",
    "auth": "Authentication and TLS",
    "watching": "Watching: logs, metrics, capture, drift, tracing",
    "sagemaker": "SageMaker",
}


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


def _optional(text: str) -> str | None:
    return text or None


def _lower(text: str) -> str:
    return text.strip().lower()


def _device(text: str) -> str | None:
    from modelport.types import device_of

    return device_of(text)


def _mib(text: str) -> int:
    return int(float(text) * MIB)


def _kib(text: str) -> int:
    return int(float(text) * 1024)


def _optional_int(text: str) -> int | None:
    return int(text) if text else None


def _share(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(value)
    return value


def _rate(text: str) -> float:
    return _share(float(text))


def _exporter(text: str) -> str:
    return text.strip().lower() or "otlp"


def _stripped_or_none(text: str) -> str | None:
    return text.strip() or None


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


def _positive_mib(text: str) -> int:
    return int(_positive_float(text) * MIB)


def _text(value: Any) -> str:
    return str(value)


def _flag(value: Any) -> str:
    return "1" if value else "0"


def _on_off(value: Any) -> str:
    return "on" if value else "off"


def _joined(value: Any) -> str:
    return ",".join(value)


def _in_mib(value: Any) -> str:
    return f"{value / MIB:g}"


def _in_mib_exact(value: Any) -> str:
    return f"{value / MIB:.12g}"


def _in_kib(value: Any) -> str:
    return f"{value / 1024:g}"


@dataclass(frozen=True, slots=True)
class SageMakerVariable:
    """A variable SageMaker sets in a container that ``Settings.for_sagemaker()`` reads into a field."""

    variable: str
    parse: Callable[[str], Any]
    help: str  # the end of the message for a bad value: "give ..."
    doc: str
    shown: str | None = None  # its default, as the docs show it (None: the field's)


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting's declaration (a ``Settings`` field's metadata)."""

    variable: str
    parse: Callable[[str], Any]
    render: Callable[[Any], str]
    kind: str
    choices: tuple[str, ...]
    group: str
    doc: str
    shown: str | None  # the default as the docs and --help show it; None: rendered from the default
    sagemaker: SageMakerVariable | None


def setting(
    default: Any = MISSING,
    *,
    variable: str,
    doc: str,
    group: str,
    parse: Callable[[str], Any] | None = None,
    render: Callable[[Any], str] | None = None,
    kind: str = VALUE,
    choices: tuple[str, ...] = (),
    shown: str | None = None,
    factory: Callable[[], Any] | None = None,
    sagemaker: SageMakerVariable | None = None,
) -> Any:
    """A ``Settings`` field with its declaration as metadata (``default`` or ``factory`` gives its default).
    ``parse`` and ``render`` default to the type of ``default``: a flag (1/true/yes/on) for a bool, else text."""
    if group not in GROUPS:
        raise ValueError(f"setting {variable}: unknown group {group!r}")
    if parse is None:
        parse = _bool if isinstance(default, bool) else str
    if render is None:
        render = _flag if parse is _bool else _text
    meta = {"setting": Setting(variable, parse, render, kind, choices, group, doc, shown, sagemaker)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable. ``Settings.from_env()`` is the only reader of the environment;
    each field's declaration (``setting(...)``) names its variable and says what it does, and
    docs/serving.md's settings table is generated from them. Fields used together:

    batching: requests that arrive in the same pass of the event loop, or while the model
        computes, are merged into one call, in batches of at most ``max_batch_size`` rows;
        ``max_batch_wait_ms`` holds a batch formed under load that is not full up to that long.
    max_queue_wait_ms / max_queue_rows: overload is shed early, with 503 + Retry-After; with
        ``overload_unready``, ``/v2/health/ready`` answers 503 meanwhile (and for a second after).
    jwt_*: bearer tokens verified by a key file, a JWKS file, or the issuer's OIDC discovery
        (``jwt_discovery``: keys fetched over HTTPS, cached ``jwt_jwks_max_age`` seconds, refetched
        for an unknown ``kid`` at most once per ``jwt_jwks_refetch_seconds``; a failed fetch keeps
        the last good keys).
    tls_*: with a certificate and key, HTTP and gRPC serve TLS only; ``tls_client_ca`` asks for
        client certificates (mutual TLS) on both.
    capture_*: samples are written in the background through a bounded queue (full: a sample is
        dropped and counted, never a request slowed); files rotate at 64 MiB, 50 kept per version.
    max_header_bytes / header_timeout / body_timeout / max_connections: per connection, before
        any request reaches the app (so before authentication).
    """

    home: Path = setting(
        variable="MODELPORT_HOME",
        parse=Path,
        factory=lambda: Path(".modelport"),
        shown="`./.modelport`",
        group="registry",
        doc="where the default registry lives (``registry.db``, ``artifacts/``, ``cache/``, ``capture/``)",
    )
    database_url: str = setting(
        "",
        variable="MODELPORT_DATABASE_URL",
        shown="SQLite, `home/registry.db`",
        group="registry",
        doc="SQLAlchemy URL of the metadata database, e.g. ``postgresql+psycopg://user@host:5432/db``",
    )
    artifacts: str | Path | None = setting(
        None,
        variable="MODELPORT_ARTIFACTS",
        shown="`home/artifacts`",
        group="registry",
        doc="where artifacts are stored: a folder, or a URL (``file:///srv/artifacts``; ``s3://bucket/prefix`` "
        "with the ``s3`` extra, endpoint, region and credentials from the standard AWS variables; the scheme of "
        "an installed store plugin)",
    )
    artifact_cache_bytes: int = setting(
        10 * 1024 * MIB,
        variable="MODELPORT_ARTIFACT_CACHE_MB",
        parse=_mib,
        render=_in_mib,
        group="registry",
        doc="megabytes a remote store (S3) keeps in its local cache, ``home/cache/artifacts``; the least recently "
        "used artifacts go first",
    )
    device: str | None = setting(
        None,
        variable="MODELPORT_DEVICE",
        parse=_device,
        shown="each version's own, else `cpu`",
        group="server",
        doc="where versions run: ``cpu``, ``cuda`` or ``cuda:N`` (``serve --device``); given, it wins over the "
        "device a version was registered with (logged when they differ); a runtime that cannot use it refuses "
        "to load",
    )
    host: str = setting(
        DEFAULT_HOST, variable="MODELPORT_HOST", group="server", doc="address to bind (``serve --host``)"
    )
    port: int = setting(
        DEFAULT_PORT,
        variable="MODELPORT_PORT",
        parse=int,
        kind=WHOLE,
        group="server",
        doc="port to bind; 0: one the system picks, logged (``serve --port``)",
        sagemaker=SageMakerVariable(
            "SAGEMAKER_BIND_TO_PORT", _port, "give a port number from 1 to 65535, e.g. 8080", "port"
        ),
    )
    workers: int = setting(
        1,
        variable="MODELPORT_WORKERS",
        parse=int,
        kind=WHOLE,
        group="server",
        doc="worker processes sharing the port, each loading the models (``serve --workers``)",
        sagemaker=SageMakerVariable(
            "SAGEMAKER_MODEL_SERVER_WORKERS",
            _positive_int,
            "give a number of worker processes >= 1",
            "worker processes (each loads the model)",
        ),
    )
    threads: int = setting(
        0,
        variable="MODELPORT_THREADS",
        parse=int,
        kind=WHOLE,
        group="server",
        doc="compute threads per worker process; 0 means cores / workers",
    )
    max_body_bytes: int = setting(
        32 * MIB,
        variable="MODELPORT_MAX_BODY_MB",
        parse=_mib,
        render=_in_mib,
        kind=NUMBER,
        group="limits",
        doc="largest request body accepted, in megabytes (after decompression); larger: 413",
        sagemaker=SageMakerVariable(
            "SAGEMAKER_MAX_PAYLOAD_IN_MB",
            _positive_mib,
            "give megabytes > 0, e.g. 6",
            "largest request body; 413 past it",
        ),
    )
    allow_env_mismatch: bool = setting(
        False,
        variable="MODELPORT_ALLOW_ENV_MISMATCH",
        group="registry",
        doc="load native models even when library versions differ from those they were registered with",
    )
    trust_exported_code: bool = setting(
        False,
        variable="MODELPORT_TRUST_EXPORTED_CODE",
        group="registry",
        doc="load pickles and custom Python code from model directories (exports, SageMaker's ``/opt/ml/model`` "
        "and multi-model directories); without it a directory whose ``modelport.json`` says ``trusted_code`` is "
        "refused: the file's own word is never enough",
    )
    log_level: str = setting(
        "info",
        variable="MODELPORT_LOG_LEVEL",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        group="watching",
        doc="level of the ``modelport`` logger and uvicorn's alike",
    )
    log_format: str = setting(
        "text",
        variable="MODELPORT_LOG_FORMAT",
        parse=_lower,
        choices=("text", "json"),
        group="watching",
        doc="how log lines are written; ``json``: one object per line",
    )
    max_header_bytes: int = setting(
        64 * 1024,
        variable="MODELPORT_MAX_HEADER_KB",
        parse=_kib,
        render=_in_kib,
        kind=NUMBER,
        group="limits",
        doc="largest request line and headers, in KiB, per connection; larger: 431",
    )
    header_timeout: float = setting(
        10.0,
        variable="MODELPORT_HEADER_TIMEOUT",
        parse=float,
        kind=NUMBER,
        group="limits",
        doc="seconds a connection's headers must arrive within, else 408",
    )
    body_timeout: float = setting(
        30.0,
        variable="MODELPORT_BODY_TIMEOUT",
        parse=float,
        kind=NUMBER,
        group="limits",
        doc="seconds a request's body must arrive within after its headers, plus one second per 64 KiB received, "
        "else 408 and the connection closed: a trickle is cut, an upload keeping up 64 KiB/s never",
    )
    max_connections: int = setting(
        0,
        variable="MODELPORT_MAX_CONNECTIONS",
        parse=int,
        kind=WHOLE,
        group="limits",
        doc="connections per worker (0: as many as the open-files limit allows, up to 4096); at the cap the "
        "longest-idle connection makes way for a new one",
    )
    models: tuple[str, ...] = setting(
        (),
        variable="MODELPORT_MODELS",
        parse=_refs,
        render=_joined,
        shown="none",
        group="serving",
        doc="references the server loads at start (comma-separated), so every worker process of "
        "``serve --workers N`` builds the same app",
    )
    serve_alias: str | None = setting(
        None,
        variable="MODELPORT_SERVE_ALIAS",
        parse=_optional,
        group="serving",
        doc="serve, for every model, the version this alias points at (``serve --alias``)",
    )
    version_policy: str = setting(
        "",
        variable="MODELPORT_VERSION_POLICY",
        shown="none",
        group="serving",
        doc="serve every model by policy: ``latest``, ``latest:N``, ``all`` or ``specific:1,3`` (TF Serving style), "
        "when neither models nor an alias is given (``serve --policy``)",
    )
    poll_seconds: float = setting(
        1.0,
        variable="MODELPORT_POLL_SECONDS",
        parse=float,
        kind=NUMBER,
        group="serving",
        doc="how often a server checks the registry for alias moves and key changes",
    )
    sticky_header: str = setting(
        "x-modelport-routing-key",
        variable="MODELPORT_STICKY_HEADER",
        parse=_lower,
        group="serving",
        doc="the request header whose value pins a caller to one version of a split alias; without it, traffic "
        "splits at random by weight",
    )
    batching: bool = setting(
        True,
        variable="MODELPORT_BATCHING",
        parse=_switch,
        render=_on_off,
        kind=SWITCH,
        group="serving",
        doc="adaptive batching of concurrent requests per version, no timer (for versions registered without "
        "their own setting)",
    )
    max_batch_size: int = setting(
        64,
        variable="MODELPORT_MAX_BATCH_SIZE",
        parse=int,
        kind=WHOLE,
        group="serving",
        doc="most rows in one merged batch (a version's own setting wins)",
    )
    max_batch_wait_ms: float = setting(
        0.0,
        variable="MODELPORT_MAX_BATCH_WAIT_MS",
        parse=float,
        kind=NUMBER,
        group="serving",
        doc="how long a batch formed under load that is not full waits for more rows (a version's own setting wins)",
    )
    max_queue_rows: int = setting(
        8192,
        variable="MODELPORT_MAX_QUEUE_ROWS",
        parse=int,
        kind=WHOLE,
        group="serving",
        doc="a request finding more rows than this queued for its version is refused at once: 503 + Retry-After",
    )
    max_queue_wait_ms: float = setting(
        1000.0,
        variable="MODELPORT_MAX_QUEUE_WAIT_MS",
        parse=float,
        kind=NUMBER,
        group="serving",
        doc="a request expected to wait longer than this behind its version's queue (from the version's measured "
        "cost) is refused at once: 503 + Retry-After (a version's own setting wins)",
    )
    overload_unready: bool = setting(
        True,
        variable="MODELPORT_OVERLOAD_UNREADY",
        group="serving",
        doc="while a version sheds load (and for a second after), ``/v2/health/ready`` answers 503 so a load "
        "balancer can route around this server (``/ping`` and ``/v2/health/live`` never are)",
    )
    grpc_port: int | None = setting(
        None,
        variable="MODELPORT_GRPC_PORT",
        parse=_optional_int,
        kind=WHOLE,
        shown="none: no gRPC",
        group="server",
        doc="port of the V2 gRPC endpoint (``grpc`` extra)",
    )
    insecure_open: bool = setting(
        False,
        variable="MODELPORT_INSECURE_OPEN",
        group="auth",
        doc="allow a non-loopback bind without authentication (prints a loud warning)",
    )
    enable_management: bool = setting(
        False,
        variable="MODELPORT_ENABLE_MANAGEMENT",
        group="auth",
        doc="expose management endpoints (repository load/unload); they always need the ``manage`` scope",
    )
    api_keys_file: Path | None = setting(
        None,
        variable="MODELPORT_API_KEYS_FILE",
        parse=_optional_path,
        group="auth",
        doc="a file of API key hashes (``keys create --file``), checked besides the registry's and re-read every "
        "``poll_seconds``; naming one turns authentication on, even while it lists no key",
    )
    jwt_public_key: Path | None = setting(
        None,
        variable="MODELPORT_JWT_PUBLIC_KEY",
        parse=_optional_path,
        group="auth",
        doc="PEM public key file that verifies OAuth2/OIDC bearer tokens",
    )
    jwt_jwks: Path | None = setting(
        None,
        variable="MODELPORT_JWT_JWKS",
        parse=_optional_path,
        group="auth",
        doc="JWKS file that verifies OAuth2/OIDC bearer tokens",
    )
    jwt_issuer: str | None = setting(
        None, variable="MODELPORT_JWT_ISSUER", parse=_optional, group="auth", doc="required ``iss`` claim"
    )
    jwt_audience: str | None = setting(
        None, variable="MODELPORT_JWT_AUDIENCE", parse=_optional, group="auth", doc="required ``aud`` claim"
    )
    jwt_scope_claim: str = setting(
        "scope",
        variable="MODELPORT_JWT_SCOPE_CLAIM",
        group="auth",
        doc="the claim holding scopes (a space-separated string or a list)",
    )
    jwt_discovery: bool = setting(
        False,
        variable="MODELPORT_JWT_DISCOVERY",
        group="auth",
        doc="find the keys by OpenID Connect discovery: the issuer is also the URL whose "
        "``/.well-known/openid-configuration`` names the JWKS (both fetched over HTTPS)",
    )
    jwt_ca_bundle: Path | None = setting(
        None,
        variable="MODELPORT_JWT_CA_BUNDLE",
        parse=_optional_path,
        shown="the system's CAs",
        group="auth",
        doc="CA bundle that discovery's HTTPS fetches are verified against",
    )
    jwt_jwks_max_age: float = setting(
        3600.0,
        variable="MODELPORT_JWT_JWKS_MAX_AGE",
        parse=float,
        kind=NUMBER,
        group="auth",
        doc="seconds discovered keys are cached before they are refetched",
    )
    jwt_jwks_refetch_seconds: float = setting(
        30.0,
        variable="MODELPORT_JWT_JWKS_REFETCH_SECONDS",
        parse=float,
        kind=NUMBER,
        group="auth",
        doc="a token naming an unknown ``kid`` refetches the keys at most once per this many seconds",
    )
    tls_certfile: Path | None = setting(
        None,
        variable="MODELPORT_TLS_CERTFILE",
        parse=_optional_path,
        group="auth",
        doc="PEM certificate (chain): HTTP and gRPC then serve TLS only (with ``tls_keyfile``: both or neither)",
    )
    tls_keyfile: Path | None = setting(
        None,
        variable="MODELPORT_TLS_KEYFILE",
        parse=_optional_path,
        group="auth",
        doc="PEM private key (unencrypted) of the certificate",
    )
    tls_client_ca: Path | None = setting(
        None,
        variable="MODELPORT_TLS_CLIENT_CA",
        parse=_optional_path,
        group="auth",
        doc="PEM CA bundle: clients must present a certificate it signed (mutual TLS), on both transports",
    )
    request_timeout: float = setting(
        60.0,
        variable="MODELPORT_REQUEST_TIMEOUT",
        parse=float,
        kind=NUMBER,
        group="limits",
        doc="every inference request's deadline in seconds (0: none), then 504; a request may ask for less (V2 "
        "``parameters.timeout`` in microseconds, the ``modelport-timeout`` header in seconds, a gRPC deadline)",
        sagemaker=SageMakerVariable(
            "SAGEMAKER_MODEL_SERVER_TIMEOUT",
            _positive_float,
            "give seconds > 0, e.g. 60",
            "seconds a prediction may take; 504 past it",
        ),
    )
    access_log: bool = setting(
        False,
        variable="MODELPORT_ACCESS_LOG",
        group="watching",
        doc="one line per request on stdout (``modelport.access`` logger, in the log format): time, request id, "
        "client, API key id, method, path, protocol, model, version, status, latency and rows",
    )
    metrics: bool = setting(
        True,
        variable="MODELPORT_METRICS",
        group="watching",
        doc="``GET /metrics`` in the Prometheus text format (off: 404)",
    )
    metrics_dir: Path | None = setting(
        None,
        variable="MODELPORT_METRICS_DIR",
        parse=_optional_path,
        shown="one per ``serve --workers N`` run",
        group="watching",
        doc="where the workers of one server exchange their counts (docs/monitoring.md)",
    )
    drift_interval: float = setting(
        60.0,
        variable="MODELPORT_DRIFT_INTERVAL",
        parse=float,
        group="watching",
        doc="every this many seconds (0: never) each served version's captured traffic is compared with its "
        "reference profile, for the ``modelport_drift_*`` gauges",
    )
    drift_window: float = setting(
        3600.0,
        variable="MODELPORT_DRIFT_WINDOW",
        parse=float,
        group="watching",
        doc="seconds of captured traffic each drift comparison reads",
    )
    capture_rate: float = setting(
        0.0,
        variable="MODELPORT_CAPTURE_RATE",
        parse=_rate,
        kind=SHARE,
        shown="0: off",
        group="watching",
        doc="share of answered requests written as JSON lines under ``home/capture``, a folder per model and "
        "version (a version registered with its own rate uses that)",
    )
    capture_redact: tuple[str, ...] = setting(
        (),
        variable="MODELPORT_CAPTURE_REDACT",
        parse=_refs,
        render=_joined,
        shown="none",
        group="watching",
        doc='names (comma-separated) of inputs, outputs or 2-D inputs\' features that capture writes as "[redacted]" '
        "(the whole tensor)",
    )
    tracing: bool = setting(
        False,
        variable="MODELPORT_TRACING",
        group="watching",
        doc="OpenTelemetry tracing (``tracing`` extra): a span per request with its decode, queue, inference and "
        "encode steps, a caller's ``traceparent`` continued; the other ``OTEL_*`` variables are the SDK's own",
    )
    tracing_exporter: str = setting(
        "otlp",
        variable="OTEL_TRACES_EXPORTER",
        parse=_exporter,
        group="watching",
        doc="``otlp`` (needs ``opentelemetry-exporter-otlp``, reads ``OTEL_EXPORTER_OTLP_*``), ``console`` or ``none``",
    )
    sentry_dsn: str | None = setting(
        None,
        variable="SENTRY_DSN",
        parse=_stripped_or_none,
        group="watching",
        doc="report faults (answers of 500, gRPC INTERNAL) and failed model loads to Sentry (``sentry`` extra); "
        "bodies, headers, query strings, frame variables, keys and tokens are never sent",
    )
    sagemaker_model_dir: Path = setting(
        Path("/opt/ml/model"),
        variable="MODELPORT_SAGEMAKER_MODEL_DIR",
        parse=Path,
        group="sagemaker",
        doc="where the model is",
    )
    sagemaker_models_dir: Path = setting(
        Path("/opt/ml/models"),
        variable="MODELPORT_SAGEMAKER_MODELS_DIR",
        parse=Path,
        group="sagemaker",
        doc="the only root multi-model loads may come from",
    )
    sagemaker: bool = setting(
        False,
        variable="MODELPORT_SAGEMAKER",
        group="sagemaker",
        doc="serve the SageMaker container contract (``/ping``, ``/invocations``) with the model in the model "
        "directory instead of registry models; ``Settings.for_sagemaker()`` sets it",
    )
    sagemaker_multi_model: bool = setting(
        False,
        variable="MODELPORT_SAGEMAKER_MULTI_MODEL",
        group="sagemaker",
        doc="be a SageMaker multi-model endpoint (``/models`` load, unload and invoke of models under the models "
        "directory) instead",
        sagemaker=SageMakerVariable(
            "SAGEMAKER_MULTI_MODEL", _bool, "give true or false", "``true``: a multi-model endpoint (below)", "false"
        ),
    )
    sagemaker_memory_factor: float = setting(
        3.0,
        variable="MODELPORT_SAGEMAKER_MEMORY_FACTOR",
        parse=float,
        kind=NUMBER,
        group="sagemaker",
        doc="a multi-model load is refused (507) when artifact size x this factor plus the headroom exceeds the "
        "memory available",
    )
    sagemaker_memory_headroom: int = setting(
        256 * MIB,
        variable="MODELPORT_SAGEMAKER_MEMORY_HEADROOM_MB",
        parse=_mib,
        render=_in_mib_exact,
        kind=NUMBER,
        group="sagemaker",
        doc="megabytes a multi-model load must leave free besides the factor",
    )

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                from modelport.errors import InvalidSetting

                variable = DECLARED[name].variable
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

                raise InvalidSetting(
                    f"{DECLARED[name].variable}={getattr(self, name)!r} is not valid: give seconds, >= 0"
                )
        for name in ("header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:  # NaN too
                from modelport.errors import InvalidSetting

                raise InvalidSetting(
                    f"{DECLARED[name].variable}={getattr(self, name)!r} is not valid: give seconds, > 0"
                )
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

    def variable_for(self, name: str) -> str:
        """The environment variable that sets field ``name`` for this server: SageMaker's where
        SageMaker mode reads one (it wins there), else modelport's; for advice in messages."""
        declared = DECLARED[name]
        if self.sagemaker and declared.sagemaker is not None:
            return declared.sagemaker.variable
        return declared.variable

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``MODELPORT_*`` variables; ``overrides`` that are not None win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, declared in DECLARED.items():
            if declared.variable in env:
                try:
                    values[name] = declared.parse(env[declared.variable])
                except (ValueError, TypeError, OverflowError):
                    from modelport.errors import InvalidSetting

                    raise InvalidSetting(
                        f"{declared.variable}={env[declared.variable]!r} is not valid: give a {declared.kind}"
                    ) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The variables that make ``Settings.from_env()`` in another process equal these."""
        result: dict[str, str] = {}
        for name, declared in DECLARED.items():
            value = getattr(self, name)
            if value is not None:
                result[declared.variable] = declared.render(value)
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
        if DECLARED["host"].variable not in env:
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


def declarations(cls: type[Any]) -> dict[str, Setting]:
    """Field name -> declaration, for every field of the dataclass ``cls``; a field made without
    ``setting(...)`` is an error, so a setting cannot be added without its variable and doc."""
    result: dict[str, Setting] = {}
    for item in fields(cls):
        declared = item.metadata.get("setting")
        if not isinstance(declared, Setting):
            raise TypeError(
                f"{cls.__name__}.{item.name} has no declaration: make it with setting(default, variable=..., "
                "group=..., doc=...) in modelport/settings.py"
            )
        result[item.name] = declared
    return result


DECLARED = declarations(Settings)

_Entry = tuple[str, Callable[[str], Any], Callable[[Any], str]]

# Derived from the declarations: field -> (environment variable, parse, render).
ENVIRONMENT: dict[str, _Entry] = {name: (d.variable, d.parse, d.render) for name, d in DECLARED.items()}
CHOICES = {name: d.choices for name, d in DECLARED.items() if d.choices}

# The variables SageMaker sets in a container -> (field, parse); read only by Settings.for_sagemaker.
SAGEMAKER_ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    d.sagemaker.variable: (name, d.sagemaker.parse) for name, d in DECLARED.items() if d.sagemaker
}
SAGEMAKER_HELP = {d.sagemaker.variable: d.sagemaker.help for d in DECLARED.values() if d.sagemaker}


def declared_default(name: str) -> Any:
    """The default a field is declared with."""
    item = next(f for f in fields(Settings) if f.name == name)
    if item.default_factory is not MISSING:
        return item.default_factory()
    return item.default


def shown_default(name: str) -> str:
    """A field's default as ``--help`` and the docs show it (``64``, ``on``, ``none``, ...)."""
    declared = DECLARED[name]
    if declared.shown is not None:
        return declared.shown.replace("``", "`").replace("`", "")
    return _display(declared, declared_default(name))


def _display(declared: Setting, value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return _on_off(value)
    if isinstance(value, float):
        return f"{value:g}"
    return declared.render(value)


def _cell(declared: Setting, name: str) -> str:
    if declared.shown is not None:
        return declared.shown.replace("``", "`")
    text = shown_default(name)
    return text if text in {"on", "off", "none"} or text.replace(".", "").isdigit() else f"`{text}`"


def _markdown(text: str) -> str:
    return text.replace("``", "`").replace("|", "\\|")


def settings_table(*groups: str) -> str:
    """The Markdown table of the settings of ``groups`` (all when none), from their declarations."""
    chosen = groups or tuple(GROUPS)
    lines = ["| variable | default | what it does |", "| --- | --- | --- |"]
    for group in chosen:
        for name, declared in DECLARED.items():
            if declared.group == group:
                doc = _markdown(declared.doc)
                if declared.choices:
                    doc += f" ({', '.join(f'`{c}`' for c in declared.choices)})"
                lines.append(f"| `{declared.variable}` | {_cell(declared, name)} | {doc} |")
    return "\n".join(lines) + "\n"


def sagemaker_table() -> str:
    """The Markdown table of what SageMaker mode reads: SageMaker's variables, then the SageMaker directories."""
    lines = ["| variable | effect | default |", "| --- | --- | --- |"]
    for name, declared in DECLARED.items():
        if declared.sagemaker:
            shown = declared.sagemaker.shown or _cell(declared, name)
            lines.append(f"| `{declared.sagemaker.variable}` | {_markdown(declared.sagemaker.doc)} | {shown} |")
    for name, declared in DECLARED.items():
        if declared.group == "sagemaker" and isinstance(declared_default(name), Path):
            lines.append(f"| `{declared.variable}` | {_markdown(declared.doc)} | {_cell(declared, name)} |")
    return "\n".join(lines) + "\n"
