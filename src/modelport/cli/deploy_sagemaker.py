"""``modelport deploy sagemaker``: see :func:`register`.

:func:`register` adds the command to the ``deploy`` sub-app around the error handling the main
command line hands in, so this module does not import :mod:`modelport.cli.main`. The AWS work is
:class:`modelport.shipping.aws.endpoint.SageMakerDeployer`'s; this module reads the options, opens
the registry, makes the boto3 clients (``clients``, replaceable for tests) and builds the test
request from each version's signature, the way ``modelport bench`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape

from modelport.cli.common import Handled, open_registry, out
from modelport.errors import InvalidSetting, ModelportError
from modelport.types import ModelVersion

INSTALL_AWS = "pip install 'modelport[aws]'"


@dataclass(frozen=True, slots=True)
class AwsClients:
    sagemaker: Any
    s3: Any
    runtime: Any
    sts: Any


ClientFactory = Callable[[str | None], AwsClients]


def boto3_clients(region: str | None) -> AwsClients:
    """Real clients from the standard AWS environment and config files, in ``region`` if given."""
    try:
        import boto3
    except ImportError:
        raise ModelportError(f"deploying to SageMaker needs boto3: {INSTALL_AWS}") from None
    from modelport.shipping.aws import aws_errors

    with aws_errors():
        session = boto3.session.Session(region_name=region)
        return AwsClients(
            sagemaker=session.client("sagemaker"),
            s3=session.client("s3"),
            runtime=session.client("sagemaker-runtime"),
            sts=session.client("sts"),
        )


def invocation_body(version: ModelVersion) -> bytes:
    """The test request: the signature's example (or synthesized rows) as ``/invocations`` JSON."""
    from modelport.bench.load import build_payload

    rows = next((s.shape[0] for s in version.signature.inputs if s.shape and s.shape[0] > 0), 1)
    return orjson.dumps(build_payload(version.signature, "tfserving", rows_per_request=rows))


def default_location(clients: AwsClients, region: str | None) -> str:
    """``s3://sagemaker-REGION-ACCOUNT/modelport``, the SageMaker SDK's default bucket, created if missing."""
    from modelport.shipping.aws import aws_errors

    with aws_errors():
        account = clients.sts.get_caller_identity()["Account"]
        region = region or clients.s3.meta.region_name
        bucket = f"sagemaker-{region}-{account}"
        if bucket not in {b["Name"] for b in clients.s3.list_buckets().get("Buckets", [])}:
            where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            clients.s3.create_bucket(Bucket=bucket, **where)
    return f"s3://{bucket}/modelport"


def _versions(refs: list[str]) -> list[tuple[ModelVersion, Path]]:
    """Each version and its artifact directory, from the registry of the standard settings."""

    registry = open_registry()
    try:
        return [(version, registry.artifact_path(version)) for version in (registry.get(ref) for ref in refs)]
    finally:
        registry.close()


def _mode(refs: list[str], update: bool, delete: bool, multi_model: bool, promote: str | None, weights: bool) -> str:
    chosen = [name for name, on in (("update", update), ("delete", delete), ("multi-model", multi_model)) if on]
    chosen += ["promote"] if promote else []
    if len(chosen) > 1:
        raise InvalidSetting(f"give one of --update, --delete, --multi-model, --promote, not {' and '.join(chosen)}")
    mode = chosen[0] if chosen else ("shift" if weights and not refs else "deploy")
    needs_refs = mode in ("deploy", "update", "multi-model")
    if needs_refs and not refs:
        raise InvalidSetting(f"{mode} needs a REF (e.g. iris@production)" if mode != "deploy" else "give a REF")
    if not needs_refs and refs:
        raise InvalidSetting(f"--{mode} takes no REF (it works on the --endpoint)")
    if mode in ("deploy", "update") and len(refs) > 1:
        raise InvalidSetting("several REFs make a multi-model endpoint: add --multi-model")
    return mode


def register(app: typer.Typer, handled: Handled, *, clients: ClientFactory = boto3_clients) -> None:
    """Add ``sagemaker`` to the ``deploy`` sub-app ``app``; ``clients`` makes the AWS clients for a region."""

    @app.command("sagemaker")
    @handled
    def sagemaker(
        refs: Annotated[
            list[str] | None,
            typer.Argument(metavar="REF", help="Registered model(s), e.g. iris@production (several: --multi-model)."),
        ] = None,
        role: Annotated[str | None, typer.Option(metavar="ARN", help="IAM role SageMaker runs the model as.")] = None,
        image: Annotated[
            str | None, typer.Option(metavar="URI", help="ECR image serving the model (modelport build ... --push).")
        ] = None,
        instance_type: Annotated[
            str | None, typer.Option(metavar="T", help="e.g. ml.m5.large (on --update: default the current one's).")
        ] = None,
        instance_count: Annotated[
            int | None, typer.Option(min=1, metavar="N", help="Instances (default 1; on --update the current one's).")
        ] = None,
        endpoint: Annotated[
            str | None, typer.Option(metavar="NAME", help="Endpoint name (default: modelport-MODEL).")
        ] = None,
        bucket: Annotated[
            str | None,
            typer.Option(
                metavar="S3URI", help="Where model data goes (default: s3://sagemaker-REGION-ACCOUNT/modelport)."
            ),
        ] = None,
        data_capture: Annotated[
            str | None, typer.Option(metavar="S3URI", help="Capture requests and answers to this S3 location.")
        ] = None,
        capture_percent: Annotated[int, typer.Option(min=1, max=100, help="Share of requests captured.")] = 100,
        workers: Annotated[
            int | None, typer.Option(min=1, help="Worker processes per instance (SAGEMAKER_MODEL_SERVER_WORKERS).")
        ] = None,
        env: Annotated[
            list[str] | None, typer.Option(metavar="KEY=VALUE", help="More container environment, repeatable.")
        ] = None,
        wait: Annotated[
            bool, typer.Option("--wait/--no-wait", help="Wait until in service, then send a test request.")
        ] = True,
        timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the endpoint.")] = 1800,
        region: Annotated[str | None, typer.Option(help="AWS region (default: the AWS config's).")] = None,
        update: Annotated[
            bool, typer.Option("--update", help="Move the existing endpoint to REF (blue/green, new configuration).")
        ] = False,
        canary_percent: Annotated[
            int | None,
            typer.Option(min=1, max=99, help="With --update: keep the current variant at 100-P, the new one at P."),
        ] = None,
        weight: Annotated[
            list[str] | None,
            typer.Option(
                metavar="VARIANT=W",
                help="With --update: the next configuration's variants and weights (the new one: 'new'). "
                "Without REF: shift traffic on the running endpoint. Repeatable.",
            ),
        ] = None,
        promote: Annotated[
            str | None,
            typer.Option(metavar="VARIANT", help="Give VARIANT all traffic and drop the others (new configuration)."),
        ] = None,
        delete: Annotated[
            bool, typer.Option("--delete", help="Delete the endpoint, its configurations and models.")
        ] = False,
        multi_model: Annotated[
            bool, typer.Option("--multi-model", help="One multi-model endpoint serving every REF by TargetModel.")
        ] = False,
    ) -> None:
        """Deploy registered models to a SageMaker endpoint: S3, model, configuration, endpoint, test request."""
        from modelport.shipping.aws.endpoint import SageMakerDeployer
        from modelport.shipping.aws.endpoint_plan import (
            EndpointSpec,
            Invocation,
            S3Location,
            default_endpoint,
            parse_weights,
            target_model,
        )

        refs = refs or []
        mode = _mode(refs, update, delete, multi_model, promote, bool(weight))
        weights = parse_weights(weight or [])
        if weights and mode not in ("update", "shift"):
            raise InvalidSetting("--weight goes with --update REF, or alone (with --endpoint) to shift traffic")
        if canary_percent is not None and mode != "update":
            raise InvalidSetting("--canary-percent goes with --update")
        if mode in ("delete", "shift", "promote") and not endpoint:
            raise InvalidSetting(f"--{mode} needs --endpoint NAME")
        environment = dict(item.partition("=")[::2] for item in env or [])
        if any(not key for key in environment) or any("=" not in item for item in env or []):
            raise InvalidSetting("--env expects KEY=VALUE")
        if workers is not None:
            environment["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(workers)
        location = S3Location.parse(bucket) if bucket else None  # bad options stop before AWS is called

        aws = clients(region)
        deployer = SageMakerDeployer(aws.sagemaker, aws.s3, aws.runtime, report=lambda line: out.print(escape(line)))
        if mode == "delete":
            deployer.delete(str(endpoint))
            return
        if mode == "shift":
            deployer.shift(str(endpoint), weights, wait=wait, timeout_s=timeout)
            return
        if mode == "promote":
            deployer.promote(str(endpoint), str(promote), wait=wait, timeout_s=timeout)
            return
        if not role or not image:
            raise InvalidSetting("--role ARN and --image URI are needed to create a SageMaker model")
        versions = _versions(refs)
        name = endpoint or default_endpoint(versions[0][0])
        spec = EndpointSpec(
            role=role,
            image=image,
            instance_type=instance_type,
            instance_count=instance_count,
            data_capture=data_capture,
            capture_percent=capture_percent,
            environment=environment,
        )
        location = location or S3Location.parse(default_location(aws, region))
        if mode == "update":
            version, artifact = versions[0]
            deployer.update(
                version,
                artifact,
                endpoint=name,
                spec=spec,
                location=location,
                test=Invocation(invocation_body(version)),
                weights=weights,
                canary_percent=canary_percent,
                wait=wait,
                timeout_s=timeout,
            )
            return
        tests = [
            Invocation(invocation_body(version), target_model(version) if multi_model else None)
            for version, _ in versions
        ]
        deployer.deploy(
            versions,
            endpoint=name,
            spec=spec,
            location=location,
            tests=tests,
            multi_model=multi_model,
            wait=wait,
            timeout_s=timeout,
        )
