"""The ``modelport`` command line: the root app, its options, and where each command comes from.
The only module that reads argv (``main``); the commands live in the modules of ``modelport.cli``
by room, sharing ``modelport.cli.common``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from modelport.cli import keys, monitoring
from modelport.cli.build import register as register_build
from modelport.cli.ci import register as register_ci
from modelport.cli.common import CliState, configure_cli_logging, handled, out
from modelport.cli.deploy import commands as deploy_commands
from modelport.cli.predict import bench, predict, quickstart
from modelport.cli.registry_commands import alias, delete, drift, export, models, promote, register, rollback, show
from modelport.cli.serve import serve
from modelport.version import __version__

app = typer.Typer(
    name="modelport",
    help="Register trained models as versioned artifacts and serve them over a fast HTTP API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"modelport {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
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
    ctx.obj = CliState(debug=debug)
    configure_cli_logging(debug)


COMMANDS = (register, models, show, alias, promote, rollback, delete, serve, export, drift, predict, quickstart, bench)
for command in COMMANDS:
    app.command()(command)
app.add_typer(keys.commands(), name="keys")
app.add_typer(monitoring.commands(handled), name="monitoring")
register_build(app, handled)
app.add_typer(deploy_commands(handled), name="deploy")
register_ci(app, handled)


def main() -> None:
    app()
