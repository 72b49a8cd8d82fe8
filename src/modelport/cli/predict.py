"""Using a model from the command line: predict, quickstart and bench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
import typer
from rich.markup import escape
from rich.table import Table

from modelport.cli.common import handled, out, read_data
from modelport.settings import declared_default


@handled
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


@handled
def quickstart(
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to serve on (0: one the system picks).")
    ] = declared_default("port"),
    serve_forever: Annotated[bool, typer.Option("--serve/--no-serve", help="Keep serving until Ctrl-C.")] = True,
) -> None:
    """Train the bundled Iris example, register it as iris@production, serve it and predict."""
    from modelport.cli.quickstart import run

    raise typer.Exit(run(port=port, serve_forever=serve_forever, console=out))


@handled
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
