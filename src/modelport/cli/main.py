"""The ``modelport`` command line. The only module that reads argv.

Errors print as one line; exit code 2 for usage errors (bad arguments, bad references, bad
settings), 1 for failures, 130 for Ctrl-C. A traceback is shown only with ``modelport --debug``.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import numpy as np
import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from modelport.cli.build import register as register_build
from modelport.cli.ci import register as register_ci
from modelport.cli.deploy import commands as deploy_commands
from modelport.cli.monitoring import commands as monitoring_commands
from modelport.errors import InvalidReference, InvalidScope, InvalidSetting, ModelportError
from modelport.reference import parse_reference
from modelport.settings import Settings, declared_default, shown_default
from modelport.types import Batching, ModelVersion
from modelport.version import __version__

app = typer.Typer(
    name="modelport",
    help="Register trained models as versioned artifacts and serve them over a fast HTTP API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

P = ParamSpec("P")
R = TypeVar("R")


class UsageError(ModelportError):
    """A command-line mistake: exit code 2."""


DEBUG = {"on": False}  # set by --debug: errors keep their tracebacks


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


# register --alias, alias and promote: what lets a move change the signature clients depend on
AllowSignatureChange = Annotated[
    bool,
    typer.Option(
        "--allow-signature-change",
        help="Move the alias even if the version's inputs or outputs differ from what its clients send and read.",
    ),
]


def _handled(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every error into one clear line and the right exit code (tracebacks with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:
            if DEBUG["on"]:
                raise
            if isinstance(exc, InvalidReference | InvalidScope | InvalidSetting | UsageError):
                raise _fail(str(exc), 2) from None
            if isinstance(exc, ModelportError):
                raise _fail(str(exc), 1) from None
            detail = str(exc).strip().splitlines()
            what = f"{type(exc).__name__}: {detail[0]}" if detail else type(exc).__name__
            raise _fail(f"unexpected {what} (run modelport --debug ... for the traceback)", 1) from None

    return wrapper


@contextmanager
def _registry(*, create: bool = False) -> Iterator[Any]:
    """The registry of the standard settings. Only registering (and keys create) makes one: every
    other command finds none where there is none, and says where it looked (exit 1)."""
    from modelport.registry.registry import Registry

    registry = Registry.open(Settings.from_env(), create=create)
    try:
        yield registry
    finally:
        registry.close()


def _device(text: str | None) -> str | None:
    from modelport.types import device_of

    try:
        return device_of(text)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None


def _pairs(items: list[str] | None, what: str, numeric: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--{what} expects KEY=VALUE, got {item!r}")
        if numeric:
            try:
                result[key] = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                result[key] = value
        else:
            result[key] = value
    return result


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; False for text too long to be a path (inline JSON)."""
    try:
        return path.is_file()
    except OSError:
        return False


def read_data(source: str) -> Any:
    """Read inline JSON, or a .json / .csv / .npy file, as data for a sample or a prediction."""
    path = Path(source)
    text = source.strip()
    if text[:1] in "[{" and not _is_file(path):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"--input is not valid JSON: {exc}") from None
    if not _is_file(path):
        raise UsageError(f"{source!r} is neither a file nor inline JSON")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(path)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            why = _first_line(exc)
            raise UsageError(f"cannot read {path} as CSV (a header row, then one row per line): {why}") from None
        if frame.empty:
            raise UsageError(f"{path} has a header but no rows; add at least one row of values")
        return frame
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            why = _first_line(exc)
            raise UsageError(f"cannot read {path} as a NumPy .npy array (pickled ones are refused): {why}") from None
    if suffix == ".json":
        try:
            return orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{path} is not valid JSON: {exc}") from None
    raise UsageError(f"cannot read {path}: use a .json, .csv or .npy file")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def configure_cli_logging(debug: bool) -> None:
    """The ``modelport`` logger's warnings (and, with --debug, everything) as plain lines on stderr."""
    import logging

    class CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
        """Writes to the ``sys.stderr`` of the moment (an in-process run, e.g. a test's, swaps it)."""

        def __init__(self) -> None:
            logging.Handler.__init__(self)

        @property
        def stream(self) -> Any:
            return sys.stderr

        @stream.setter
        def stream(self, value: Any) -> None:
            pass

    logger = logging.getLogger("modelport")
    if not logger.handlers:
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"modelport {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors (for bug reports).")] = False,
) -> None:
    """Register trained models as versioned artifacts and serve them over a fast HTTP API.

    The registry lives in ./.modelport (or $MODELPORT_HOME); $MODELPORT_DATABASE_URL points the
    metadata at another database, e.g. PostgreSQL. Only register (and keys create) makes a registry;
    the other commands say where they looked when there is none.
    """
    DEBUG["on"] = debug
    configure_cli_logging(debug)


@app.command()
@_handled
def register(
    path: Annotated[Path, typer.Argument(help="Model file (.onnx, .skops, .pkl/.joblib) or custom model directory.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name; the version number is assigned.")],
    sample: Annotated[
        str | None, typer.Option(help="Sample input (.csv with header, .json, .npy) for signature and checks.")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="Reference data for drift (.csv with header, .json, .npy): a few thousand training rows "
            "(default: the sample, with a warning)."
        ),
    ] = None,
    alias: Annotated[list[str] | None, typer.Option(help="Alias to point at the new version (repeatable).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag KEY=VALUE (repeatable).")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="Metric KEY=VALUE (repeatable).")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Parameter KEY=VALUE (repeatable).")] = None,
    description: Annotated[str, typer.Option(help="Free-text description.")] = "",
    trust_pickle: Annotated[
        bool, typer.Option("--trust-pickle", help="Accept pickle/joblib files and custom Python code (they run code).")
    ] = False,
    runtime: Annotated[
        str | None,
        typer.Option(
            help="scikit-learn: onnx (must convert) or sklearn (native; default: ONNX if verified); "
            "a directory: python (default) or an installed runtime plugin's kind."
        ),
    ] = None,
    batching: Annotated[
        bool | None,
        typer.Option("--batching/--no-batching", help="This version's batching, over the server's (default: on)."),
    ] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(min=1, help="This version's most rows per merged batch (server default: 64).")
    ] = None,
    max_batch_wait_ms: Annotated[
        float | None,
        typer.Option(min=0.0, max=59_999.0, help="This version's extra wait for a batch to fill (server default: 0)."),
    ] = None,
    max_queue_wait_ms: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=59_999.0,
            help="This version's expected queue wait past which requests get 503 (server default: 1000).",
        ),
    ] = None,
    capture_rate: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of this version's requests payload capture writes, 0 to 1 (server default: 0, off).",
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="Run this version on cpu, cuda or cuda:N unless the server's --device says otherwise.",
            metavar="DEVICE",
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="fp16 or bf16: this version in reduced precision (runtimes that offer it: torch).", metavar="P"
        ),
    ] = None,
    precision_tolerance: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="With --precision: the largest deviation from fp32 on the sample accepted, as a share of the "
            "output's largest magnitude (default 0.02).",
            metavar="SHARE",
        ),
    ] = None,
    allow_signature_change: AllowSignatureChange = False,
) -> None:
    """Register a model file or directory as the next version of NAME.

    Batching, queue and capture options are stored with the version: a server uses them instead
    of its own defaults for this version.
    """
    from modelport.api import register as register_model

    if not path.exists():
        raise UsageError(f"{path} does not exist")
    with _registration_warnings():
        version = register_model(
            path,
            name=name,
            sample_input=read_data(sample) if sample else None,
            reference_data=read_data(reference) if reference else None,
            alias=alias or (),
            tags=_pairs(tag, "tag", numeric=False),
            metrics=_pairs(metric, "metric", numeric=True),
            params=_pairs(param, "param", numeric=True),
            description=description,
            trust_pickle=trust_pickle,
            runtime=runtime,
            batching=Batching(batching, max_batch_size, max_batch_wait_ms, max_queue_wait_ms),
            capture_rate=capture_rate,
            device=device,
            precision=precision,
            precision_tolerance=precision_tolerance,
            allow_signature_change=allow_signature_change,
        )
    _print_registered(version)


@contextmanager
def _registration_warnings() -> Iterator[None]:
    """What registration warns about (RegistrationWarning: ONNX not used, a device missing here) as
    one line each on stderr; other warnings go on as they came."""
    import warnings

    from modelport.errors import RegistrationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RegistrationWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, RegistrationWarning):
            err.print(f"[yellow]warning:[/] {escape(str(warning.message))}", soft_wrap=True)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _print_registered(version: ModelVersion) -> None:
    aliases = f" (aliases: {', '.join(version.aliases)})" if version.aliases else ""
    out.print(f"registered [bold]{version.ref}[/]{aliases}, served by the {version.runtime} runtime")
    for note in version.notes:
        out.print(f"  - {escape(note)}")


@app.command()
@_handled
def models(
    name: Annotated[
        str | None,
        typer.Argument(metavar="[NAME]", help="One model: its versions, with aliases, runtime, metrics, created."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List registered models, or (NAME) one model's versions."""
    if name is not None:
        _model_versions(name, as_json=as_json)
        return
    with _registry() as registry:
        summaries = registry.models()
    if as_json:
        listed = [
            {
                "name": s.name,
                "latest_version": s.latest_version,
                "version_count": s.version_count,
                "aliases": dict(sorted(s.aliases.items())),
                "updated_at": s.updated_at.isoformat(),
                "description": s.description,
            }
            for s in summaries
        ]
        out.print_json(orjson.dumps(listed).decode())
        return
    if not summaries:
        out.print("no models registered yet: modelport register PATH --name NAME")
        return
    table = Table("name", "latest", "versions", "aliases", "updated", "description")
    for s in summaries:
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(s.aliases.items()))
        cells = (s.name, str(s.latest_version), str(s.version_count), aliases, _when(s.updated_at), s.description)
        table.add_row(*map(escape, cells))
    out.print(table)


def _model_versions(name: str, *, as_json: bool) -> None:
    """``models NAME``: every version of NAME, oldest first."""
    from modelport.reference import parse_name

    if "@" in name:
        raise UsageError(f"models takes a model NAME, not {name!r}; for one version: modelport show {name}")
    parse_name(name)
    with _registry() as registry:
        found = registry.versions(name)
    if as_json:
        listed = [
            {
                "version": v.version,
                "aliases": list(v.aliases),
                "runtime": v.runtime,
                "framework": v.framework,
                "metrics": dict(v.metrics),
                "tags": dict(v.tags),
                "created_at": v.created_at.isoformat(),
                "description": v.description,
            }
            for v in found
        ]
        out.print_json(orjson.dumps({"name": name, "versions": listed}).decode())
        return
    if not found:
        out.print(f"{name} has no versions left (all were deleted): modelport register PATH --name {name}")
        return
    created = Column("created", no_wrap=True)
    table = Table("version", "aliases", "runtime", "metrics", created, "description", title=name, title_justify="left")
    for v in found:
        metrics = ", ".join(f"{k}={m}" for k, m in v.metrics.items())
        cells = (str(v.version), ", ".join(v.aliases), v.runtime, metrics, _when(v.created_at), v.description)
        table.add_row(*map(escape, cells))
    out.print(table)


def _when(moment: Any) -> str:
    return str(moment.strftime("%Y-%m-%d %H:%M:%S UTC")) if moment is not None else ""


@app.command()
@_handled
def show(
    ref: Annotated[str, typer.Argument(help="Model reference: NAME, NAME@VERSION or NAME@ALIAS.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show one version: runtime, aliases, signature, metrics, environment and notes."""
    from modelport.registry.environment import compare

    parse_reference(ref)  # a malformed reference is a usage error, registry or not
    with _registry() as registry:
        version = registry.get(ref)
        traffic = _traffic(registry, ref)
    mismatches = compare(version.environment, runtime=version.runtime)
    if as_json:
        data = _version_dict(version)
        data["environment_mismatches"] = [m.message for m in mismatches]
        if traffic is not None:
            data["traffic"] = traffic
        out.print_json(orjson.dumps(data).decode())
        return
    out.print(f"[bold]{version.ref}[/]  {escape(version.description)}")
    facts = Table.grid(padding=(0, 2))
    facts.add_row("runtime", version.runtime)
    facts.add_row("framework", version.framework)
    facts.add_row("aliases", ", ".join(version.aliases) or "-")
    facts.add_row("created", _when(version.created_at))
    facts.add_row("artifact", version.artifact)
    facts.add_row("trusted code", "yes (pickle or custom code)" if version.trusted_code else "no")
    own = version.batching.to_dict()
    facts.add_row("batching", ", ".join(f"{k}={v}" for k, v in own.items()) if own else "the server's settings")
    rate = version.capture_rate
    facts.add_row("capture", f"rate {rate:g} (this version's)" if rate is not None else "the server's rate")
    own_device = f"{version.device}, unless the server's --device says otherwise" if version.device else ""
    facts.add_row("device", own_device or "the server's (--device, default cpu)")
    facts.add_row("precision", version.precision or "fp32")
    for title, values in (("tags", version.tags), ("metrics", version.metrics), ("params", version.params)):
        if values:
            facts.add_row(title, escape(", ".join(f"{k}={v}" for k, v in values.items())))
    facts.add_row("environment", escape(", ".join(f"{k} {v}" for k, v in version.environment.items())))
    if traffic is not None:
        facts.add_row("traffic", ", ".join(f"version {v}: {w}%" for v, w in traffic["weights"].items()))
    out.print(facts)
    if traffic is not None and traffic["shadows"]:
        _print_shadows(traffic["shadows"])
    sig = Table("", "name", "datatype", "shape", "features", title="signature", title_justify="left")
    for kind, specs in (("input", version.signature.inputs), ("output", version.signature.outputs)):
        for spec in specs:
            cells = (kind, spec.name, spec.datatype, str(list(spec.shape)), ", ".join(spec.feature_names or ()))
            sig.add_row(*map(escape, cells))
    out.print(sig)
    for note in version.notes:
        out.print(f"note: {escape(note)}")
    for mismatch in mismatches:
        out.print(f"[yellow]{mismatch.severity}:[/] {escape(mismatch.message)}")


def _traffic(registry: Any, ref: str) -> dict[str, Any] | None:
    """An alias's weighted versions and shadows (with agreement from every server), or None."""
    from modelport.registry.traffic import summary

    if parse_reference(ref).alias is None:
        return None
    shadows = [{"version": s.version, "fraction": s.fraction, **summary(s.stats)} for s in registry.shadows(ref)]
    return {"weights": {str(v): w for v, w in registry.splits(ref).items()}, "shadows": shadows}


def _print_shadows(shadows: list[dict[str, Any]]) -> None:
    table = Table(
        "shadow", "mirrored", "compared", "errors", "dropped", "agreement", title="shadows", title_justify="left"
    )
    for s in shadows:
        parts = []
        for name, entry in s["outputs"].items():
            if "agreement" in entry:
                parts.append(f"{name}: {entry['agreement']:.1%} equal")
            else:
                parts.append(f"{name}: mean |Δ| {entry['mean_abs_diff']:.3g}, max |Δ| {entry['max_abs_diff']:.3g}")
        mirrored = f"{s['fraction']:.0%}"
        counts = (str(s["requests"]), str(s["errors"]), str(s["dropped"]))
        table.add_row(f"version {s['version']}", mirrored, *counts, "; ".join(parts) or "-")
    out.print(table)


def _version_dict(version: ModelVersion) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": version.version,
        "aliases": list(version.aliases),
        "runtime": version.runtime,
        "framework": version.framework,
        "artifact": version.artifact,
        "created_at": version.created_at.isoformat(),
        "description": version.description,
        "tags": dict(version.tags),
        "metrics": dict(version.metrics),
        "params": dict(version.params),
        "environment": dict(version.environment),
        "notes": list(version.notes),
        "trusted_code": version.trusted_code,
        "batching": version.batching.to_dict(),
        "capture_rate": version.capture_rate,
        "device": version.device,
        "precision": version.precision,
        "signature": version.signature.to_dict(),
    }


@app.command()
@_handled
def alias(
    ref: Annotated[
        str,
        typer.Argument(help="The version to point at (NAME@VERSION); NAME with --remove; NAME@ALIAS with --shadow."),
    ],
    alias_name: Annotated[str | None, typer.Argument(metavar="[ALIAS]", help="Alias name, e.g. production.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the alias (or, with --shadow, the shadow).")] = False,
    weight: Annotated[
        int | None,
        typer.Option(min=0, max=99, help="Send this percent of ALIAS's traffic to REF; the rest stays (0 stops)."),
    ] = None,
    shadow: Annotated[
        str | None, typer.Option(help="Mirror requests for REF (NAME@ALIAS) to this version, e.g. iris@5.")
    ] = None,
    fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of requests --shadow mirrors.")] = 1.0,
    allow_signature_change: AllowSignatureChange = False,
) -> None:
    """Point ALIAS at a version (moving it if it exists), split its traffic, shadow it, or remove it."""
    parse_reference(ref)
    with _registry() as registry:
        if shadow is not None:
            if alias_name is not None:
                raise UsageError(
                    "--shadow takes the alias from REF (NAME@ALIAS): modelport alias iris@production --shadow iris@5"
                )
            if remove:
                registry.remove_shadow(ref, shadow)
                out.print(f"{ref}: no longer mirrored to {shadow}")
                return
            mirrored = registry.set_shadow(ref, shadow, fraction, allow_signature_change=allow_signature_change)
            out.print(f"{ref}: mirroring {fraction:.0%} of requests to {mirrored.ref} (callers get {ref}'s answers)")
            return
        if alias_name is None:
            raise UsageError("give the ALIAS, e.g. modelport alias iris@4 production")
        if weight is not None:
            weights = registry.split(ref, alias_name, weight, allow_signature_change=allow_signature_change)
            name = parse_reference(ref).name
            out.print(f"{name}@{alias_name} → " + ", ".join(f"version {v}: {w}%" for v, w in weights.items()))
            return
        if remove:
            name = parse_reference(ref).name
            registry.remove_alias(name, alias_name)
            out.print(f"removed alias {alias_name!r} from {name}")
            return
        version = registry.set_alias(ref, alias_name, allow_signature_change=allow_signature_change)
    out.print(f"{version.name}@{alias_name} → version {version.version}")


@app.command()
@_handled
def promote(
    ref: Annotated[str, typer.Argument(help="The version to promote, e.g. iris@5.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="Alias name, e.g. production.")],
    create: Annotated[bool, typer.Option("--create", help="Create ALIAS if the model has no such alias yet.")] = False,
    allow_signature_change: AllowSignatureChange = False,
) -> None:
    """Move ALIAS fully to REF's version, ending its split and that version's shadow."""
    parse_reference(ref)
    with _registry() as registry:
        version = registry.promote(ref, alias_name, create=create, allow_signature_change=allow_signature_change)
    out.print(f"{version.name}@{alias_name} → version {version.version} (promoted)")


@app.command()
@_handled
def rollback(
    ref: Annotated[str, typer.Argument(help="The alias to roll back, e.g. iris@production.")],
) -> None:
    """Point an alias back at the version it pointed at before its last move."""
    parsed = parse_reference(ref)
    if parsed.alias is None:
        raise UsageError(f"roll back an alias: give NAME@ALIAS (e.g. {parsed.name}@production), not {ref}")
    with _registry() as registry:
        version = registry.rollback(parsed.name, parsed.alias)
    out.print(f"{version.name}@{parsed.alias} → version {version.version} (rolled back)")


@app.command()
@_handled
def delete(
    ref: Annotated[str, typer.Argument(help="The version to delete: NAME@VERSION or NAME@ALIAS.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete one version. Refused while an alias points to it."""
    parse_reference(ref)
    if not yes and sys.stdin.isatty() and not typer.confirm(f"delete {ref}?"):
        raise typer.Exit(1)
    with _registry() as registry:
        version = registry.delete(ref)
    out.print(f"deleted {version.ref}")


@app.command()
@_handled
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
    with _registry() as registry:
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


@app.command()
@_handled
def export(
    ref: Annotated[str, typer.Argument(help="The version to export: NAME@VERSION or NAME@ALIAS.")],
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="A new or empty directory to write.")],
) -> None:
    """Write a model directory that serves without the registry (SageMaker's /opt/ml/model) and its model.tar.gz."""
    from modelport.registry.export import export_version

    parse_reference(ref)
    with _registry() as registry:
        version = registry.get(ref)
        archive = export_version(version, registry.artifact_path(version), directory)
    out.print(f"exported [bold]{version.ref}[/] ({version.runtime} runtime) to {escape(str(directory))}")
    out.print(f"  {escape(str(archive))}: {archive.stat().st_size} bytes, the model data to upload to S3 for SageMaker")
    out.print(f"  serve it here: MODELPORT_SAGEMAKER_MODEL_DIR={escape(str(directory))} modelport serve")


@app.command()
@_handled
def drift(
    ref: Annotated[str, typer.Argument(help="The version to check: NAME, NAME@VERSION or NAME@ALIAS.")],
    since: Annotated[str | None, typer.Option(help="Only traffic captured since: 30m, 1h, 2d or an ISO time.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    html: Annotated[Path | None, typer.Option(help="Also write a self-contained HTML report to this file.")] = None,
    capture_dir: Annotated[
        Path | None, typer.Option(help="The capture root (default: MODELPORT_HOME/capture).")
    ] = None,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help="Exit with code 3 when a feature or the prediction drifted (CI).")
    ] = False,
) -> None:
    """Compare a version's captured traffic with its reference profile: PSI and a KS or χ² test per feature."""
    from modelport.cli.drift import run

    code = run(
        ref,
        since=since,
        as_json=as_json,
        html_path=html,
        capture_dir=capture_dir,
        fail_on_drift=fail_on_drift,
        out=out,
        err=err,
    )
    raise typer.Exit(code)


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


@app.command()
@_handled
def predict(
    target: Annotated[str, typer.Argument(metavar="REF|URL", help="A model reference, or a served model's URL.")],
    input_: Annotated[str, typer.Option("--input", "-i", help="Inline JSON, or a .json / .csv / .npy file.")],
    output: Annotated[list[str] | None, typer.Option(help="Only these outputs (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outputs as JSON.")] = False,
    api_key: Annotated[
        str | None, typer.Option(envvar="MODELPORT_API_KEY", help="API key or bearer token for a URL.")
    ] = None,
) -> None:
    """Predict with a registered model in this process, or with a running server by URL.

    A URL names the model on a server: http://HOST:PORT/v2/models/NAME (Open Inference
    Protocol) or http://HOST:PORT/v1/models/NAME (TF Serving), optionally with /versions/V.
    """
    from modelport.cli.client import predict_url

    data = read_data(input_)
    if target.startswith(("http://", "https://")):
        outputs = predict_url(target, data, outputs=output, api_key=api_key)
    else:
        from modelport.api import load

        with load(target) as model:
            outputs = model.predict(data, outputs=output)
    print_outputs(outputs, as_json=as_json)


def print_outputs(outputs: dict[str, np.ndarray], *, as_json: bool = False) -> None:
    if as_json:
        out.print_json(orjson.dumps({k: v.tolist() for k, v in outputs.items()}).decode())
        return
    table = Table("row", *map(escape, outputs))
    rows = min(len(v) for v in outputs.values()) if outputs else 0
    for i in range(rows):
        table.add_row(str(i), *(escape(_cell(v[i])) for v in outputs.values()))
    out.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value)


@app.command()
@_handled
def quickstart(
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to serve on (0: one the system picks).")
    ] = declared_default("port"),
    serve_forever: Annotated[bool, typer.Option("--serve/--no-serve", help="Keep serving until Ctrl-C.")] = True,
) -> None:
    """Train the bundled Iris example, register it as iris@production, serve it and predict."""
    from modelport.cli.quickstart import run

    raise typer.Exit(run(port=port, serve_forever=serve_forever, console=out))


@app.command()
@_handled
def bench(
    target: Annotated[str, typer.Argument(metavar="REF|URL", help="A model reference (served for the run) or URL.")],
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="Concurrent connections (default 8).")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds of load (default 10 unless --requests).")] = None,
    requests: Annotated[int | None, typer.Option(min=1, help="Send this many requests instead of a duration.")] = None,
    rows_per_request: Annotated[
        int | None, typer.Option(min=1, help="Rows in each request, example rows repeated (default 1).")
    ] = None,
    protocol: Annotated[str | None, typer.Option(help="v2 or tfserving (default: the URL's, else v2).")] = None,
    output: Annotated[Path, typer.Option(help="Directory for results.json and latency.png.")] = Path("bench-results"),
    compare: Annotated[
        Path | None,
        typer.Option(help="A previous results.json: run its load again (options not given), exit 1 if it regressed."),
    ] = None,
    max_regression: Annotated[str, typer.Option(help="Allowed drop in req/s or rise in p99 for --compare.")] = "10%",
    locustfile: Annotated[Path | None, typer.Option(help="Write a Locust file for the model and exit.")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="MODELPORT_API_KEY", help="API key (bearer token).")] = None,
) -> None:
    """Load a model with valid requests built from its signature: req/s, latency percentiles, errors.

    Writes results.json and a latency histogram (latency.png, with the bench extra). With
    --compare BASELINE.json it is a CI gate: exit 1 when req/s dropped or p99 rose by more than
    --max-regression. The options left out are the baseline's; a run whose protocol, concurrency or
    rows per request differ from the baseline's is refused.
    """
    from modelport.bench.benchmark import BenchOptions
    from modelport.bench.benchmark import bench as run_bench

    options = BenchOptions(
        target=target,
        concurrency=concurrency,
        duration_s=duration,
        requests=requests,
        rows_per_request=rows_per_request,
        protocol=protocol,
        output=output,
        compare=compare,
        max_regression=max_regression,
        locustfile=locustfile,
        api_key=api_key,
    )
    raise typer.Exit(run_bench(options, out))


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


keys_app = typer.Typer(
    help="API keys: create (shown once, stored hashed), list, revoke.", no_args_is_help=True, add_completion=False
)
app.add_typer(keys_app, name="keys")
app.add_typer(monitoring_commands(_handled), name="monitoring")
register_build(app, _handled)
app.add_typer(deploy_commands(_handled), name="deploy")
register_ci(app, _handled)


KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--file",
        metavar="PATH",
        help="A keys file (hashes only; MODELPORT_API_KEYS_FILE) instead of the registry, e.g. for a Secret.",
    ),
]


@contextmanager
def _keys(file: Path | None, *, create: bool = False) -> Iterator[Any]:
    """The key store: the registry's (made with ``create``), or the keys file ``file``."""
    from modelport.auth.keys import KeyFile, KeyStore

    if file is not None:
        yield KeyFile(file)
        return
    with _registry(create=create) as registry:
        yield KeyStore(registry.engine)


@keys_app.command("create")
@_handled
def keys_create(
    scope: Annotated[
        list[str],
        typer.Option("--scope", "-s", help="infer (every model), infer:MODEL, manage or metrics (repeatable)."),
    ],
    description: Annotated[str, typer.Option(help="What the key is for (shown by keys list).")] = "",
    file: KeyFileOption = None,
) -> None:
    """Create an API key. Only the key goes to stdout, once: KEY=$(modelport keys create --scope infer)."""
    with _keys(file, create=True) as keys:
        record, key = keys.create(scope, description)
    where = f" in {file}" if file is not None else ""
    err.print(
        f"created API key {record.id}{where} (scopes: {', '.join(record.scopes)}); it is shown once, keep it secret:"
    )
    out.print(key, markup=False)


@keys_app.command("list")
@_handled
def keys_list(file: KeyFileOption = None) -> None:
    """List API keys (never their secrets)."""
    with _keys(file) as keys:
        records = keys.all()
    if not records:
        out.print("no API keys yet: modelport keys create --scope infer")
        return
    table = Table("scopes", "description", "created", "revoked")
    table.columns.insert(0, Column("id", no_wrap=True))
    table.columns.append(Column("ends", no_wrap=True))
    for r in records:
        cells = (r.id, ", ".join(r.scopes), r.description, _when(r.created_at), _when(r.revoked_at), f"...{r.last4}")
        table.add_row(*map(escape, cells))
    out.print(table)


@keys_app.command("revoke")
@_handled
def keys_revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (keys list shows it).")],
    file: KeyFileOption = None,
) -> None:
    """Revoke an API key; running servers refuse it within MODELPORT_POLL_SECONDS."""
    with _keys(file) as keys:
        record = keys.revoke(key_id)
    out.print(f"revoked API key {record.id} (scopes: {', '.join(record.scopes)})")


def main() -> None:
    app()
