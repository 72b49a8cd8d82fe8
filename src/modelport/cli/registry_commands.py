"""The registry commands: register, models, show, alias, promote, rollback, delete, export and drift."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.table import Column, Table

from modelport.cli.common import UsageError, err, handled, opened_registry, out, read_data, when
from modelport.reference import parse_reference
from modelport.types import Batching, ModelVersion

# register --alias, alias and promote: what lets a move change the signature clients depend on
AllowSignatureChange = Annotated[
    bool,
    typer.Option(
        "--allow-signature-change",
        help="Move the alias even if the version's inputs or outputs differ from what its clients send and read.",
    ),
]


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


@handled
def register(
    path: Annotated[
        Path,
        typer.Argument(
            help="Model file (.onnx, .skops, .pkl/.joblib, XGBoost .json/.ubj, LightGBM .txt, PyTorch "
            ".pt2/.pt/.pth, .keras), a TensorFlow SavedModel directory or a custom model directory."
        ),
    ],
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
            "XGBoost/LightGBM/PyTorch/TensorFlow: onnx or xgboost, lightgbm, torch, tensorflow (native); "
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


@handled
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
    with opened_registry() as registry:
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
        cells = (s.name, str(s.latest_version), str(s.version_count), aliases, when(s.updated_at), s.description)
        table.add_row(*map(escape, cells))
    out.print(table)


def _model_versions(name: str, *, as_json: bool) -> None:
    """``models NAME``: every version of NAME, oldest first."""
    from modelport.reference import parse_name

    if "@" in name:
        raise UsageError(f"models takes a model NAME, not {name!r}; for one version: modelport show {name}")
    parse_name(name)
    with opened_registry() as registry:
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
        cells = (str(v.version), ", ".join(v.aliases), v.runtime, metrics, when(v.created_at), v.description)
        table.add_row(*map(escape, cells))
    out.print(table)


@handled
def show(
    ref: Annotated[str, typer.Argument(help="Model reference: NAME, NAME@VERSION or NAME@ALIAS.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show one version: runtime, aliases, signature, metrics, environment and notes."""
    from modelport.registry.environment import compare

    parse_reference(ref)  # a malformed reference is a usage error, registry or not
    with opened_registry() as registry:
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
    facts.add_row("created", when(version.created_at))
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


@handled
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
    with opened_registry() as registry:
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


@handled
def promote(
    ref: Annotated[str, typer.Argument(help="The version to promote, e.g. iris@5.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="Alias name, e.g. production.")],
    create: Annotated[bool, typer.Option("--create", help="Create ALIAS if the model has no such alias yet.")] = False,
    allow_signature_change: AllowSignatureChange = False,
) -> None:
    """Move ALIAS fully to REF's version, ending its split and that version's shadow."""
    parse_reference(ref)
    with opened_registry() as registry:
        version = registry.promote(ref, alias_name, create=create, allow_signature_change=allow_signature_change)
    out.print(f"{version.name}@{alias_name} → version {version.version} (promoted)")


@handled
def rollback(
    ref: Annotated[str, typer.Argument(help="The alias to roll back, e.g. iris@production.")],
) -> None:
    """Point an alias back at the version it pointed at before its last move."""
    parsed = parse_reference(ref)
    if parsed.alias is None:
        raise UsageError(f"roll back an alias: give NAME@ALIAS (e.g. {parsed.name}@production), not {ref}")
    with opened_registry() as registry:
        version = registry.rollback(parsed.name, parsed.alias)
    out.print(f"{version.name}@{parsed.alias} → version {version.version} (rolled back)")


@handled
def delete(
    ref: Annotated[str, typer.Argument(help="The version to delete: NAME@VERSION or NAME@ALIAS.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete one version. Refused while an alias points to it."""
    parse_reference(ref)
    if not yes and sys.stdin.isatty() and not typer.confirm(f"delete {ref}?"):
        raise typer.Exit(1)
    with opened_registry() as registry:
        version = registry.delete(ref)
    out.print(f"deleted {version.ref}")


@handled
def export(
    ref: Annotated[str, typer.Argument(help="The version to export: NAME@VERSION or NAME@ALIAS.")],
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="A new or empty directory to write.")],
) -> None:
    """Write a model directory that serves without the registry (SageMaker's /opt/ml/model) and its model.tar.gz."""
    from modelport.registry.export import export_version

    parse_reference(ref)
    with opened_registry() as registry:
        version = registry.get(ref)
        archive = export_version(version, registry.artifact_path(version), directory)
    out.print(f"exported [bold]{version.ref}[/] ({version.runtime} runtime) to {escape(str(directory))}")
    out.print(f"  {escape(str(archive))}: {archive.stat().st_size} bytes, the model data to upload to S3 for SageMaker")
    out.print(f"  serve it here: MODELPORT_SAGEMAKER_MODEL_DIR={escape(str(directory))} modelport serve")


@handled
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
