"""``modelport serve``: the registry's models, or SageMaker mode, on sockets bound before any model loads."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from modelport.cli.common import UsageError, err, handled, opened_registry, out
from modelport.errors import ModelportError
from modelport.settings import Settings, declared_default, shown_default
from modelport.types import ModelVersion


@handled
def serve(
    refs: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[REF...]",
            help="Models to serve, e.g. iris@production churn@3. None: those MODELPORT_MODELS (or _SERVE_ALIAS, "
            "_VERSION_POLICY) names, else SageMaker mode (the model or bundle in /opt/ml/model).",
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help=f"Address to bind (default: MODELPORT_HOST, else {shown_default('host')}).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Port to bind (0: one the system picks, logged; default: MODELPORT_PORT, else "
            f"{shown_default('port')}).",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the port.")] = declared_default(
        "workers"
    ),
    threads: Annotated[
        int, typer.Option(min=0, help="Compute threads per worker (0: cores / workers).")
    ] = declared_default("threads"),
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = declared_default("log_level"),
    access_log: Annotated[
        bool, typer.Option(help="One line per request on stdout (text or json, as MODELPORT_LOG_FORMAT).")
    ] = False,
    insecure_open: Annotated[
        bool, typer.Option("--insecure-open", help="Serve a non-loopback address WITHOUT authentication.")
    ] = False,
    enable_management: Annotated[
        bool, typer.Option("--enable-management", help="Expose management endpoints (scope 'manage' only).")
    ] = False,
    jwt_public_key: Annotated[
        Path | None, typer.Option(help="PEM public key that verifies OAuth2 bearer tokens (JWT).")
    ] = None,
    jwt_jwks: Annotated[Path | None, typer.Option(help="JWKS file that verifies OAuth2 bearer tokens (JWT).")] = None,
    jwt_issuer: Annotated[str | None, typer.Option(help="Required 'iss' claim of bearer tokens.")] = None,
    jwt_audience: Annotated[str | None, typer.Option(help="Required 'aud' claim of bearer tokens.")] = None,
    jwt_discovery: Annotated[
        bool,
        typer.Option(
            "--jwt-discovery",
            help="Get the token keys from --jwt-issuer's OIDC discovery (HTTPS; cached, refetched on key rotation).",
        ),
    ] = False,
    tls_certfile: Annotated[
        Path | None, typer.Option(help="PEM certificate (chain): serve HTTPS, and gRPC over TLS.")
    ] = None,
    tls_keyfile: Annotated[Path | None, typer.Option(help="PEM private key (unencrypted) of --tls-certfile.")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="PEM CA bundle: require client certificates it signed (mutual TLS).")
    ] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Also serve V2 over gRPC on this port (grpc extra; 0: one the system picks)."
        ),
    ] = None,
    serve_alias: Annotated[
        str | None, typer.Option("--alias", help="Serve, for every model with this alias, the version(s) it points at.")
    ] = None,
    policy: Annotated[
        str | None, typer.Option("--policy", help="Serve every model by version policy: latest[:N], all, specific:1,3.")
    ] = None,
    batching: Annotated[
        bool | None,
        typer.Option(
            "--batching/--no-batching",
            help=f"Merge concurrent requests (default: {shown_default('batching')}; a version's own setting wins).",
        ),
    ] = None,
    max_batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"Most rows in one merged batch ({shown_default('max_batch_size')}; a version's own setting wins).",
        ),
    ] = None,
    max_batch_wait_ms: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Extra wait for a batch to fill, under load "
            f"({shown_default('max_batch_wait_ms')}; a version's own setting wins).",
        ),
    ] = None,
    max_queue_wait_ms: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Refuse (503) a request expected to queue longer than this "
            f"({shown_default('max_queue_wait_ms')}; a version's setting wins).",
        ),
    ] = None,
    request_timeout: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Deadline of every inference request in seconds, then 504 "
            f"({shown_default('request_timeout')}; 0: none).",
        ),
    ] = None,
    capture_rate: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Write this share of answered requests (0 to 1) under MODELPORT_HOME/capture (0: off; "
            "a version's own rate wins).",
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            metavar="DEVICE",
            help="Run versions on cpu, cuda or cuda:N, over the device they were registered with "
            "(default: MODELPORT_DEVICE, else each version's own, else cpu).",
        ),
    ] = None,
    capture_redact: Annotated[
        str | None,
        typer.Option(
            metavar="NAMES",
            help="Comma-separated input, output or feature names whose tensors capture writes as \\[redacted].",
        ),
    ] = None,
) -> None:
    """Serve models over the Open Inference Protocol (V2) and TF Serving REST APIs.

    The server follows the registry: when an alias it serves moves, or a version policy gains a
    version, it loads and warms the new version, switches traffic, drains and unloads the old one.

    With no references, serve what MODELPORT_MODELS, MODELPORT_SERVE_ALIAS or MODELPORT_VERSION_POLICY
    name; with none of those either, serve as a SageMaker container (how SageMaker starts an image:
    `serve`): the model, or the bundle of models an image was built with, in /opt/ml/model.
    """

    if not refs and not serve_alias and not policy:
        named = Settings.from_env()  # MODELPORT_MODELS / _SERVE_ALIAS / _VERSION_POLICY: an image without models
        if not (named.models or named.serve_alias or named.version_policy):
            _serve_sagemaker(log_level=log_level, access_log=access_log)
            return
        refs, serve_alias, policy = list(named.models), named.serve_alias, named.version_policy or None
    refs = refs or []
    from modelport.serving.plans import specs_from

    specs_from(refs, serve_alias, policy or "")  # bad references, aliases or policies stop here
    settings = Settings.from_env(
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        log_level=log_level,
        grpc_port=grpc_port,
        batching=batching,
        max_batch_size=max_batch_size,
        max_batch_wait_ms=max_batch_wait_ms,
        max_queue_wait_ms=max_queue_wait_ms,
        request_timeout=request_timeout,
        capture_rate=capture_rate,
        capture_redact=tuple(n.strip() for n in capture_redact.split(",") if n.strip()) if capture_redact else None,
        device=_device(device),
    )
    settings = settings.with_(  # flags only switch on; MODELPORT_* variables may have set them already
        insecure_open=insecure_open or settings.insecure_open,
        enable_management=enable_management or settings.enable_management,
        jwt_public_key=jwt_public_key or settings.jwt_public_key,
        jwt_jwks=jwt_jwks or settings.jwt_jwks,
        jwt_issuer=jwt_issuer or settings.jwt_issuer,
        jwt_audience=jwt_audience or settings.jwt_audience,
        jwt_discovery=jwt_discovery or settings.jwt_discovery,
        tls_certfile=tls_certfile or settings.tls_certfile,
        tls_keyfile=tls_keyfile or settings.tls_keyfile,
        tls_client_ca=tls_client_ca or settings.tls_client_ca,
    )
    from modelport.server.tls import server_tls

    tls = server_tls(settings)  # unusable certificate files stop here, before anything binds
    if settings.grpc_port is not None:
        _require_grpc()
    settings = settings.with_(
        models=tuple(refs), serve_alias=serve_alias, version_policy=policy or "", threads=settings.compute_threads
    )
    with opened_registry() as registry:
        resolved = [registry.get(ref) for ref in refs]
        check_serving_exposure(settings, registry)
    sockets = _bind(settings, "--port")  # before any model loads: a port in use is the first and only line
    try:
        _serve_bound(settings, sockets, refs, resolved, serve_alias, policy, tls, log_level, access_log)
    finally:
        for sock in sockets:
            sock.close()


def _serve_bound(
    settings: Settings,
    sockets: list[Any],
    refs: list[str],
    resolved: list[ModelVersion],
    serve_alias: str | None,
    policy: str | None,
    tls: Any,
    log_level: str,
    access_log: bool,
) -> None:
    """What ``serve`` says it serves, and the server on the sockets bound for it."""
    host, port = settings.host, sockets[0].getsockname()[1]  # port 0: the one the system picked
    base = f"{'https' if tls else 'http'}://{'[' + host + ']' if ':' in host else host}:{port}"
    for ref, version in zip(refs, resolved, strict=True):
        out.print(f"serving [bold]{ref}[/] (version {version.version}, {version.runtime} runtime)")
    if serve_alias:
        out.print(f"serving alias [bold]{serve_alias}[/] of every model that has it")
    if policy:
        out.print(f"serving every model by version policy [bold]{policy}[/]")
    out.print(f"  docs: {base}/docs   V2: {base}/v2/models/<name>/infer   TF Serving: {base}/v1/models/<name>:predict")
    if settings.grpc_port is not None:
        grpc_host = f"[{host}]" if ":" in host else host
        security = f", {tls.description}" if tls else ""
        shown = settings.grpc_port or "<port, logged at start>"
        out.print(f"  V2 gRPC: {grpc_host}:{shown} (inference.GRPCInferenceService{security})")
    _run_uvicorn(settings, log_level=log_level, access_log=access_log, sockets=sockets)


def _bind(settings: Settings, flag: str) -> list[Any]:
    """The HTTP sockets, bound now (the server listens on them once started), after a check that
    the gRPC port can be bound too; a port in use, or an address that cannot be bound, is one line."""
    from modelport.server.http import bind

    host = settings.host
    if settings.grpc_port:  # checked only: the gRPC server binds it when it starts
        try:
            for sock in bind(host, settings.grpc_port, reuse_port=settings.workers > 1):
                sock.close()
        except OSError as exc:
            raise ModelportError(_unbindable(host, settings.grpc_port, exc, "--grpc-port")) from None
    try:
        return bind(host, settings.port)
    except OSError as exc:
        raise ModelportError(_unbindable(host, settings.port, exc, flag)) from None


def _unbindable(host: str, port: int, exc: OSError, flag: str) -> str:
    """One line for a failed bind: what is wrong, and the option that changes it."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use: another process listens there; pick another with {flag}, or stop it"
    if exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
        return f"cannot bind port {port} on {host}: {why}; pick another with {flag}"
    if exc.errno == errno.EADDRNOTAVAIL:
        why = f"{host} is not an address of this machine"
        return f"cannot bind {host}:{port}: {why}; give one of its addresses with --host (0.0.0.0: all of them)"
    if isinstance(exc, socket.gaierror):
        return f"cannot bind {host}:{port}: {host!r} does not resolve ({exc.strerror}); give an address with --host"
    return f"cannot bind {host}:{port}: {exc.strerror or exc}"


def _run_uvicorn(settings: Settings, *, log_level: str, access_log: bool, **options: Any) -> None:
    """Run the app under modelport's guarded uvicorn (:mod:`modelport.server.http`): in this process,
    or in settings.workers processes; ``options`` go to :func:`modelport.server.http.run` (``sockets``
    bound beforehand) and on to uvicorn."""
    from modelport.server import http as httpserver
    from modelport.server.tls import uvicorn_options

    settings = settings.with_(log_level=log_level, access_log=access_log or settings.access_log)
    common: dict[str, Any] = {**uvicorn_options(settings), **options}
    if settings.workers == 1:
        from modelport.server.app import build_app

        httpserver.run(build_app(settings), settings, **common)
        return
    with httpserver.metrics_directory(settings) as settings:
        os.environ.update(settings.to_env())  # each worker process builds the same app from these
        httpserver.run("modelport.server.app:create_app", settings, factory=True, **common)


def _serve_sagemaker(*, log_level: str, access_log: bool) -> None:
    """The SageMaker container contract: settings from SAGEMAKER_* variables, model from /opt/ml/model."""
    settings = Settings.for_sagemaker()
    settings = settings.with_(log_level=log_level, threads=settings.compute_threads)
    if settings.sagemaker_multi_model:
        what = f"a multi-model endpoint (models under {settings.sagemaker_models_dir})"
    else:
        what = f"the model in {settings.sagemaker_model_dir}"
        if not settings.sagemaker_model_dir.is_dir():
            raise UsageError(
                "no models to serve: give references (modelport serve iris@production), --alias / --policy or "
                "MODELPORT_MODELS; with none, modelport serves as a SageMaker container, and "
                f"{settings.sagemaker_model_dir} "
                "(MODELPORT_SAGEMAKER_MODEL_DIR) holds no model directory"
            )
    from modelport.server.tls import server_tls

    tls = server_tls(settings)
    sockets = _bind(settings, "SAGEMAKER_BIND_TO_PORT (or MODELPORT_PORT)")
    try:
        port = sockets[0].getsockname()[1]
        where = f"{settings.host}:{port}" + (f" over {tls.description}" if tls else "")
        out.print(f"SageMaker mode: serving {what} on {where} ({settings.workers} worker(s))")
        # keep-alive longer than SageMaker's front end keeps idle connections
        _run_uvicorn(settings, log_level=log_level, access_log=access_log, timeout_keep_alive=75, sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()


def _device(text: str | None) -> str | None:
    from modelport.types import device_of

    try:
        return device_of(text)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None


def _require_grpc() -> None:
    import importlib.util

    for module in ("grpc", "google.protobuf"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its parent package is missing
            found = False
        if not found:
            raise ModelportError(
                f"--grpc-port needs the grpc extra ({module} is not installed): pip install 'modelport[grpc]'"
            )


def check_serving_exposure(settings: Settings, registry: Any) -> None:
    """The startup rules before serving (InvalidSetting: exit 2), and the loud --insecure-open warning."""
    from modelport.auth.authenticator import build_authenticator, check_exposure
    from modelport.auth.oidc import jwks_fetcher

    authenticator = build_authenticator(settings, registry, jwks_fetcher(settings))
    check_exposure(settings, authenticator)
    if not settings.loopback and not authenticator.enabled:
        err.print(
            f"[bold red]WARNING: serving {settings.host} WITHOUT AUTHENTICATION (--insecure-open).[/] "
            "Anyone who can reach this address can call every model. "
            "Use an API key instead: modelport keys create --scope infer",
            soft_wrap=True,
        )
