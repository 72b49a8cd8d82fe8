"""``modelport build``: a container image that serves registered models.

:func:`register` adds the command to the main app around the error handling it hands in (one
line and an exit code, tracebacks only with ``--debug``), so this module does not import
:mod:`modelport.cli.main`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelport.cli.common import Handled, open_registry, out
from modelport.shipping import container


def register(app: typer.Typer, handled: Handled) -> None:
    """Add ``build`` to ``app``; ``handled`` turns the command's errors into one clear line."""

    @app.command()
    @handled
    def build(
        refs: Annotated[
            list[str], typer.Argument(metavar="REF...", help="Models to serve, e.g. iris@production churn@3.")
        ],
        tag: Annotated[
            str | None,
            typer.Option(
                "--tag",
                "-t",
                help="Image name[:tag] (default: localhost/modelport-NAME:VERSION; :registry with --models registry).",
            ),
        ] = None,
        base_image: Annotated[
            str | None,
            typer.Option(
                help="Base image with Python of this minor version and venv (default: python:3.X-slim, "
                "X as the Python running modelport)."
            ),
        ] = None,
        engine: Annotated[
            str | None, typer.Option(help="docker or podman (default: docker if its daemon answers, else podman).")
        ] = None,
        context: Annotated[
            Path | None,
            typer.Option(
                help="Write the build context into this new directory and keep it; alone (no --tag), "
                "write it without building."
            ),
        ] = None,
        push: Annotated[bool, typer.Option("--push", help="Push the image to its registry after building.")] = False,
        platform: Annotated[
            str | None, typer.Option(help="Target platform, linux/amd64 or linux/arm64 (default: this machine's).")
        ] = None,
        models: Annotated[
            str,
            typer.Option(
                help="baked: the models go into the image. registry: no models; the image serves REF... from "
                "the registry MODELPORT_DATABASE_URL and MODELPORT_ARTIFACTS name, following alias moves."
            ),
        ] = "baked",
        with_: Annotated[
            list[str] | None,
            typer.Option(
                "--with",
                metavar="PACKAGE",
                help="Also install this installed distribution (repeatable), e.g. the one a custom runtime comes from.",
            ),
        ] = None,
        target: Annotated[
            str,
            typer.Option(
                metavar="TARGET",
                help="sagemaker (the default; 'default' is the same): the server image, which already meets "
                "SageMaker's bring-your-own container contract (`<image> serve`, /ping, /invocations, port 8080, "
                "/opt/ml/model). lambda: an AWS Lambda image, awslambdaric running modelport.serverless.handler "
                "behind API Gateway (needs modelport[aws] installed here; tag default ...:VERSION-lambda).",
            ),
        ] = "sagemaker",
    ) -> None:
        """Build a container image serving REF... on port 8080 (V2, TF Serving, SageMaker /ping and /invocations).

        The image runs as a non-root user, works with a read-only root filesystem (it writes only
        under /tmp), has a HEALTHCHECK and runs unchanged as a SageMaker container (`<image> serve`):
        --target sagemaker is this image. --target lambda builds the same environment and models for
        AWS Lambda instead (see docs/lambda.md). Dependencies are pinned to what the models recorded at
        registration and installed from wheels put in the build context, so the build needs no network.
        """
        from modelport.errors import InvalidSetting
        from modelport.shipping.container import default_image
        from modelport.shipping.engine import find_engine
        from modelport.shipping.image import DEFAULT_BASE_IMAGE, TARGETS, ImageSpec, write_context

        def progress(line: str) -> None:
            out.print(f"[dim]{escape(line)}[/]")

        if target not in (*TARGETS, "default"):
            raise InvalidSetting(f"--target {target!r}: give sagemaker (the default) or lambda")
        build_it = tag is not None or context is None or push
        chosen = find_engine(engine) if build_it else None  # a missing engine is said before any work
        started = time.monotonic()
        registry = open_registry()
        try:
            versions = [registry.get(ref) for ref in refs]
            spec = ImageSpec(
                versions=[(v, registry.artifact_path(v)) for v in versions],
                refs=list(refs),
                tag=tag or default_image(versions[0], models) + ("-lambda" if target == "lambda" else ""),
                models=models,
                base_image=base_image or DEFAULT_BASE_IMAGE,
                platform=platform,
                extra=list(with_ or []),
                target=target,
            )
            directory = context or Path(tempfile.mkdtemp(prefix="modelport-build-"))
            try:
                requirements = write_context(spec, directory, progress)
            except BaseException:
                if context is None:
                    shutil.rmtree(directory, ignore_errors=True)
                raise
        finally:
            registry.close()
        out.print(
            f"build context for {', '.join(v.ref for v in versions)} in {escape(str(directory))} "
            f"({len(requirements.pins)} pinned distributions)"
        )
        if chosen is None:
            out.print(f"  build it: docker build --tag {escape(spec.tag)} {escape(str(directory))}")
            return
        try:
            out.print(f"building [bold]{escape(spec.tag)}[/] with {chosen.name} (base {escape(spec.base_image)})")
            chosen.build(directory, spec.tag, platform=platform, progress=progress)
        finally:
            if context is None:
                shutil.rmtree(directory, ignore_errors=True)
        size = chosen.size(spec.tag)
        out.print(f"built [bold]{escape(spec.tag)}[/]: {size / 1e6:.0f} MB, in {time.monotonic() - started:.0f} s")
        if push:
            out.print(f"pushing {escape(spec.tag)}")
            chosen.push(spec.tag, progress)
            out.print(f"pushed {escape(spec.tag)}")
        if spec.target == "lambda":
            out.print(
                f"  push it to ECR, then: modelport deploy lambda {escape(refs[0])} --image <ECR URI> --role <ARN>"
            )
            out.print("  (see docs/lambda.md; the image answers Lambda events, not HTTP)")
            return
        publish = f"127.0.0.1:{container.PORT}:{container.PORT}"
        out.print(f"  run it: {chosen.name} run --rm --read-only -p {publish} {escape(spec.tag)}")
        out.print(f"  then:   curl http://127.0.0.1:{container.PORT}{container.READY_PATH}")
