"""The ``modelport`` command line. The only module that reads argv.

Errors print as one line; exit code 2 for usage errors (bad arguments, bad references), 1 for
failures.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import numpy as np
import orjson
import typer
from rich.console import Console
from rich.table import Table

from modelport import __version__
from modelport.errors import InvalidReference, ModelportError
from modelport.reference import parse_reference
from modelport.settings import DEFAULT_HOST, DEFAULT_PORT, Settings
from modelport.types import ModelVersion

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


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def _handled(func: Callable[P, R]) -> Callable[P, R]:
    """Turn domain errors into one clear line and the right exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (InvalidReference, UsageError) as exc:
            raise _fail(str(exc), 2) from None
        except ModelportError as exc:
            raise _fail(str(exc), 1) from None

    return wrapper


@contextmanager
def _registry() -> Iterator[Any]:
    from modelport.registry import Registry

    registry = Registry.open(Settings.from_env())
    try:
        yield registry
    finally:
        registry.close()


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


def read_data(source: str) -> Any:
    """Read inline JSON, or a .json / .csv / .npy file, as data for a sample or a prediction."""
    path = Path(source)
    text = source.strip()
    if text[:1] in "[{" and not path.exists():
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"--input is not valid JSON: {exc}") from None
    if not path.is_file():
        raise UsageError(f"{source!r} is neither a file nor inline JSON")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        import pandas as pd

        return pd.read_csv(path)
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".json":
        try:
            return orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{path} is not valid JSON: {exc}") from None
    raise UsageError(f"cannot read {path}: use a .json, .csv or .npy file")


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"modelport {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Register trained models as versioned artifacts and serve them over a fast HTTP API.

    The registry lives in ./.modelport (or $MODELPORT_HOME); $MODELPORT_DATABASE_URL points the
    metadata at another database, e.g. PostgreSQL.
    """


@app.command()
@_handled
def register(
    path: Annotated[Path, typer.Argument(help="Model file (.onnx, .skops, .pkl/.joblib) or custom model directory.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name; the version number is assigned.")],
    sample: Annotated[
        str | None, typer.Option(help="Sample input (.csv with header, .json, .npy) for signature and checks.")
    ] = None,
    alias: Annotated[list[str] | None, typer.Option(help="Alias to point at the new version (repeatable).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag KEY=VALUE (repeatable).")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="Metric KEY=VALUE (repeatable).")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Parameter KEY=VALUE (repeatable).")] = None,
    description: Annotated[str, typer.Option(help="Free-text description.")] = "",
    trust_pickle: Annotated[
        bool, typer.Option("--trust-pickle", help="Accept pickle/joblib files and custom Python code (they run code).")
    ] = False,
) -> None:
    """Register a model file or directory as the next version of NAME."""
    from modelport.api import register as register_model

    if not path.exists():
        raise UsageError(f"{path} does not exist")
    version = register_model(
        path,
        name=name,
        sample_input=read_data(sample) if sample else None,
        alias=alias or (),
        tags=_pairs(tag, "tag", numeric=False),
        metrics=_pairs(metric, "metric", numeric=True),
        params=_pairs(param, "param", numeric=True),
        description=description,
        trust_pickle=trust_pickle,
    )
    _print_registered(version)


def _print_registered(version: ModelVersion) -> None:
    aliases = f" (aliases: {', '.join(version.aliases)})" if version.aliases else ""
    out.print(f"registered [bold]{version.ref}[/]{aliases}, served by the {version.runtime} runtime")
    for note in version.notes:
        out.print(f"  - {note}")


@app.command()
@_handled
def models() -> None:
    """List registered models."""
    with _registry() as registry:
        summaries = registry.models()
    if not summaries:
        out.print("no models registered yet: modelport register PATH --name NAME")
        return
    table = Table("name", "latest", "versions", "aliases", "updated", "description")
    for s in summaries:
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(s.aliases.items()))
        table.add_row(s.name, str(s.latest_version), str(s.version_count), aliases, _when(s.updated_at), s.description)
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
    from modelport.environment import compare

    with _registry() as registry:
        version = registry.get(ref)
    mismatches = compare(version.environment, runtime=version.runtime)
    if as_json:
        data = _version_dict(version)
        data["environment_mismatches"] = [m.message for m in mismatches]
        out.print_json(orjson.dumps(data).decode())
        return
    out.print(f"[bold]{version.ref}[/]  {version.description}")
    facts = Table.grid(padding=(0, 2))
    facts.add_row("runtime", version.runtime)
    facts.add_row("framework", version.framework)
    facts.add_row("aliases", ", ".join(version.aliases) or "-")
    facts.add_row("created", _when(version.created_at))
    facts.add_row("artifact", version.artifact)
    facts.add_row("trusted code", "yes (pickle or custom code)" if version.trusted_code else "no")
    for title, values in (("tags", version.tags), ("metrics", version.metrics), ("params", version.params)):
        if values:
            facts.add_row(title, ", ".join(f"{k}={v}" for k, v in values.items()))
    facts.add_row("environment", ", ".join(f"{k} {v}" for k, v in version.environment.items()))
    out.print(facts)
    sig = Table("", "name", "datatype", "shape", "features", title="signature", title_justify="left")
    for kind, specs in (("input", version.signature.inputs), ("output", version.signature.outputs)):
        for spec in specs:
            sig.add_row(kind, spec.name, spec.datatype, str(list(spec.shape)), ", ".join(spec.feature_names or ()))
    out.print(sig)
    for note in version.notes:
        out.print(f"note: {note}")
    for mismatch in mismatches:
        out.print(f"[yellow]{mismatch.severity}:[/] {mismatch.message}")


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
        "signature": version.signature.to_dict(),
    }


@app.command()
@_handled
def alias(
    ref: Annotated[str, typer.Argument(help="The version to point at (NAME@VERSION), or NAME with --remove.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="Alias name, e.g. production.")],
    remove: Annotated[bool, typer.Option("--remove", help="Remove the alias from model NAME instead.")] = False,
) -> None:
    """Point ALIAS at a version (moving it if it exists), or remove it."""
    with _registry() as registry:
        if remove:
            name = parse_reference(ref).name
            registry.remove_alias(name, alias_name)
            out.print(f"removed alias {alias_name!r} from {name}")
            return
        version = registry.set_alias(ref, alias_name)
    out.print(f"{version.name}@{alias_name} → version {version.version}")


@app.command()
@_handled
def delete(
    ref: Annotated[str, typer.Argument(help="The version to delete: NAME@VERSION or NAME@ALIAS.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete one version. Refused while an alias points to it."""
    if not yes and sys.stdin.isatty() and not typer.confirm(f"delete {ref}?"):
        raise typer.Exit(1)
    with _registry() as registry:
        version = registry.delete(ref)
    out.print(f"deleted {version.ref}")


@app.command()
@_handled
def serve(
    refs: Annotated[list[str], typer.Argument(metavar="REF...", help="Models to serve, e.g. iris@production churn@3.")],
    host: Annotated[str, typer.Option(help="Address to bind.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port to bind.")] = DEFAULT_PORT,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the port.")] = 1,
    threads: Annotated[int, typer.Option(min=0, help="Compute threads per worker (0: cores / workers).")] = 0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve models over the Open Inference Protocol (V2) and TF Serving REST APIs."""
    import uvicorn

    for ref in refs:
        parse_reference(ref)
    settings = Settings.from_env(host=host, port=port, workers=workers, threads=threads, log_level=log_level)
    settings = settings.with_(models=tuple(refs), threads=settings.compute_threads)
    with _registry() as registry:
        resolved = [registry.get(ref) for ref in refs]
    if host not in ("127.0.0.1", "localhost", "::1"):
        warning = f"binding {host}: the API has no authentication yet; anyone who reaches it can call it"
        err.print(f"[bold yellow]warning:[/] {warning}")
    base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    for ref, version in zip(refs, resolved, strict=True):
        out.print(f"serving [bold]{ref}[/] (version {version.version}, {version.runtime} runtime)")
    out.print(f"  docs: {base}/docs   V2: {base}/v2/models/<name>/infer   TF Serving: {base}/v1/models/<name>:predict")
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": log_level,
        "access_log": access_log,
        "timeout_graceful_shutdown": 30,
    }
    if workers == 1:
        from modelport.app import build_app

        uvicorn.run(build_app(settings), **common)
        return
    os.environ.update(settings.to_env())
    uvicorn.run("modelport.app:create_app", factory=True, workers=workers, **common)


@app.command()
@_handled
def predict(
    target: Annotated[str, typer.Argument(metavar="REF|URL", help="A model reference, or a served model's URL.")],
    input_: Annotated[str, typer.Option("--input", "-i", help="Inline JSON, or a .json / .csv / .npy file.")],
    output: Annotated[list[str] | None, typer.Option(help="Only these outputs (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outputs as JSON.")] = False,
) -> None:
    """Predict with a registered model in this process, or with a running server by URL.

    A URL names the model on a server: http://HOST:PORT/v2/models/NAME (Open Inference
    Protocol) or http://HOST:PORT/v1/models/NAME (TF Serving), optionally with /versions/V.
    """
    from modelport.client import predict_url

    data = read_data(input_)
    if target.startswith(("http://", "https://")):
        outputs = predict_url(target, data, outputs=output)
    else:
        from modelport.api import load

        with load(target) as model:
            outputs = model.predict(data, outputs=output)
    print_outputs(outputs, as_json=as_json)


def print_outputs(outputs: dict[str, np.ndarray], *, as_json: bool = False) -> None:
    if as_json:
        out.print_json(orjson.dumps({k: v.tolist() for k, v in outputs.items()}).decode())
        return
    table = Table("row", *outputs)
    rows = min(len(v) for v in outputs.values()) if outputs else 0
    for i in range(rows):
        table.add_row(str(i), *(_cell(v[i]) for v in outputs.values()))
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
    port: Annotated[int, typer.Option(help="Port to serve on.")] = DEFAULT_PORT,
    serve_forever: Annotated[bool, typer.Option("--serve/--no-serve", help="Keep serving until Ctrl-C.")] = True,
) -> None:
    """Train the bundled Iris example, register it as iris@production, serve it and predict."""
    from modelport.quickstart import run

    raise typer.Exit(run(port=port, serve_forever=serve_forever, console=out))


def main() -> None:
    app()
