"""``modelport init-ci``: a CI workflow for a user's model project.

:func:`register` adds the command to the main app around the error handling it hands in, so this
module does not import :mod:`modelport.cli.main`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelport.cli.common import Handled, out
from modelport.errors import Conflict, InvalidSetting

WHEELS = Path(".github/wheels")  # in the repository, where init-ci runs: a wheel of a modelport installed locally


def _this_modelport(extras: str) -> tuple[str, Path | None]:
    """The pip spec of the running modelport for CI, and the wheel to write where only this machine has it."""
    from modelport.shipping.wheel import extras_spec, origin, pip_spec, wheel_name

    wanted = extras_spec(extras)
    found = origin()
    spec = pip_spec(found, wanted)
    if spec is not None:
        return spec, None
    wheel = WHEELS / wheel_name(found.version)
    return f"./{wheel.as_posix()}{wanted}", wheel


def register(app: typer.Typer, handled: Handled) -> None:
    """Add ``init-ci`` to ``app``; ``handled`` turns the command's errors into one clear line."""

    @app.command("init-ci")
    @handled
    def init_ci(
        model: Annotated[
            str,
            typer.Option(
                "--model",
                "-m",
                help="Model the workflow trains, gates, builds and deploys: NAME (newest version) or NAME@ALIAS.",
            ),
        ],
        out_dir: Annotated[Path, typer.Option("--out", help="Directory to write modelport.yml into.")] = Path(
            ".github/workflows"
        ),
        force: Annotated[bool, typer.Option(help="Overwrite an existing modelport.yml.")] = False,
        train: Annotated[
            str, typer.Option(help="Command that trains and registers the model (modelport.register).")
        ] = "python train.py",
        test: Annotated[str, typer.Option(help="Command that runs the model's tests; '' for none.")] = "pytest",
        baseline: Annotated[
            str,
            typer.Option(help="Committed `modelport bench` results.json the gate compares with (skipped if absent)."),
        ] = "benchmarks/baseline.json",
        max_regression: Annotated[
            str, typer.Option(help="Allowed drop in req/s or rise in p99 before the gate fails.")
        ] = "10%",
        image: Annotated[
            str | None,
            typer.Option(help="Image repository, without tag (default: ghcr.io/OWNER/REPO of the repository)."),
        ] = None,
        modelport_spec: Annotated[
            str | None,
            typer.Option(
                help="What the workflow pip-installs for modelport, e.g. 'modelport[sklearn]==0.1.0' or a git URL "
                "(default: this modelport: its published version or git URL, else a wheel of it in .github/wheels/)."
            ),
        ] = None,
        extras: Annotated[
            str | None,
            typer.Option(
                help="modelport's extras the workflow installs, comma-separated; '' for none [default: sklearn]."
            ),
        ] = None,
        python: Annotated[str, typer.Option(help="Python version the job runs on.")] = "3.11",
        timeout_minutes: Annotated[int, typer.Option(help="The job's time limit in minutes.")] = 60,
    ) -> None:
        """Write a GitHub Actions workflow: train and register, test, bench gate, image, Kubernetes manifests."""
        from modelport.bench.load import parse_threshold
        from modelport.shipping.ci import FILENAME, CiOptions, needs_secrets, render, workflow

        parse_threshold(max_regression)  # the same check `modelport bench` makes, before anything is written
        if modelport_spec is not None and extras is not None:
            raise InvalidSetting(
                "give --extras or --modelport-spec, not both: a spec names its extras, e.g. 'modelport[sklearn]==0.1.0'"
            )
        vendored: Path | None = None
        if modelport_spec is None:
            modelport_spec, vendored = _this_modelport("sklearn" if extras is None else extras)
        options = CiOptions(
            model=model,
            train=train,
            test=test,
            baseline=baseline,
            image=image,
            modelport_spec=modelport_spec,
            python_version=python,
            max_regression=max_regression,
            timeout_minutes=timeout_minutes,
        )
        text = render(workflow(options))
        target = out_dir / FILENAME
        if target.exists() and not force:
            raise Conflict(f"{target} exists: pass --force to overwrite it")
        out_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

        out.print(f"wrote {escape(str(target))}")
        written = [str(target)]
        if vendored is not None:
            from modelport.shipping.wheel import write_wheel

            written.append(str(write_wheel(vendored.parent)))
            out.print(
                f"wrote {escape(written[-1])}: the workflow installs this modelport from it "
                "(installed here from a local file or folder, which CI cannot reach)"
            )
        else:
            out.print(f"the workflow installs modelport as {escape(modelport_spec)}")
        out.print("next:")
        out.print(f"  commit it: git add {escape(' '.join(written))} && git commit -m 'CI: train, gate, ship'")
        out.print(
            f"  turn the benchmark gate on: commit a `modelport bench` results.json as {escape(baseline)} "
            "(the workflow's bench-results artifact holds one)"
        )
        secrets = needs_secrets(options)
        if secrets:
            out.print(
                f"  set the repository secrets {' and '.join(secrets)} (Settings > Secrets and variables > Actions)"
            )
        else:
            out.print(
                "  no secrets needed: the job pushes to ghcr.io with its GITHUB_TOKEN (permissions: packages: write)"
            )
