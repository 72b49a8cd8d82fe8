"""``modelport keys``: API keys in the registry or in a keys file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from modelport.cli.common import err, handled, opened_registry, out, when

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
    with opened_registry(create=create) as registry:
        yield KeyStore(registry.engine)


@handled
def create(
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


@handled
def list_(file: KeyFileOption = None) -> None:
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
        cells = (r.id, ", ".join(r.scopes), r.description, when(r.created_at), when(r.revoked_at), f"...{r.last4}")
        table.add_row(*map(escape, cells))
    out.print(table)


@handled
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (keys list shows it).")],
    file: KeyFileOption = None,
) -> None:
    """Revoke an API key; running servers refuse it within MODELPORT_POLL_SECONDS."""
    with _keys(file) as keys:
        record = keys.revoke(key_id)
    out.print(f"revoked API key {record.id} (scopes: {', '.join(record.scopes)})")


def commands() -> typer.Typer:
    """The ``keys`` group."""
    keys_app = typer.Typer(
        help="API keys: create (shown once, stored hashed), list, revoke.", no_args_is_help=True, add_completion=False
    )
    keys_app.command("create")(create)
    keys_app.command("list")(list_)
    keys_app.command("revoke")(revoke)
    return keys_app
