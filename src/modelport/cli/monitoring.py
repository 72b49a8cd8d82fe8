"""``modelport monitoring``: Prometheus and Grafana files for a modelport deployment.

The commands are built by :func:`commands` around the error handling the main command line
hands in (one line and an exit code, tracebacks only with ``--debug``), so this module does not
import :mod:`modelport.cli.main`, which registers it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelport.cli.common import Handled, out


def commands(handled: Handled) -> typer.Typer:
    """The ``monitoring`` sub-app; ``handled`` turns a command's errors into one clear line."""
    app = typer.Typer(
        help="Prometheus scrape configs and alert rules, and a Grafana dashboard, for modelport's /metrics.",
        no_args_is_help=True,
        add_completion=False,
    )

    @app.command("export")
    @handled
    def export(
        directory: Annotated[
            Path, typer.Argument(metavar="DIR", help="Directory to write into (created; earlier exports replaced).")
        ],
        job: Annotated[str, typer.Option(help="Prometheus job name of the modelport targets.")] = "modelport",
        target: Annotated[str, typer.Option(help="HOST:PORT of the server, for the static scrape config.")] = (
            "127.0.0.1:8080"
        ),
        slo_p99_seconds: Annotated[
            float, typer.Option(help="Latency SLO: alert when a model's p99 stays above it for 10 minutes.")
        ] = 0.5,
        error_rate: Annotated[
            float, typer.Option(help="Alert when a model's share of 5xx answers stays above it for 5 minutes.")
        ] = 0.01,
        credentials_file: Annotated[
            str | None,
            typer.Option(help="File holding a key with scope metrics, sent as a bearer credential when scraping."),
        ] = None,
        prometheus_url: Annotated[
            str, typer.Option(help="Where Grafana reaches Prometheus (its provisioned data source).")
        ] = "http://localhost:9090",
    ) -> None:
        """Write prometheus/ (scrape configs, alerts.yml, its promtool tests) and grafana/ (dashboard, provisioning)."""
        from modelport.shipping.monitoring.expressions import MonitoringOptions
        from modelport.shipping.monitoring.files import export as write

        options = MonitoringOptions(
            job=job,
            target=target,
            slo_p99_seconds=slo_p99_seconds,
            error_rate=error_rate,
            credentials_file=credentials_file,
            prometheus_url=prometheus_url,
        )
        written = write(directory, options)
        out.print(f"wrote {len(written)} files into {escape(str(directory))}:")
        for path in written:
            out.print(f"  {escape(str(path.relative_to(directory)))}")
        rules = escape(str(directory / "prometheus" / "alerts_test.yml"))
        out.print(f"check the alerts: promtool test rules {rules}")

    return app
