"""``modelport deploy lambda``: see :func:`register`.

:func:`register` adds the command to the ``deploy`` sub-app around the error handling the main
command line hands in, so this module does not import :mod:`modelport.cli.main`. The AWS work is
:mod:`modelport.shipping.aws.lambdas`'; this module reads the options, checks the reference against
the registry and makes the boto3 clients from the standard AWS environment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any

import typer
from rich.markup import escape

from modelport.cli.common import Handled, open_registry, out

Clients = Callable[[str | None], tuple[Any, Any]]  # region -> (lambda client, apigatewayv2 client)


def register(app: typer.Typer, handled: Handled, clients: Clients | None = None) -> None:
    """Add ``lambda`` to the ``deploy`` sub-app ``app``; ``clients`` makes the boto3 clients (default:
    :func:`boto3_clients`; tests hand in stubbed ones)."""
    make_clients = clients or boto3_clients

    @app.command("lambda")
    @handled
    def deploy_lambda(
        ref: Annotated[
            str, typer.Argument(metavar="REF", help="Registered model the image serves, e.g. iris@production.")
        ],
        image: Annotated[
            str,
            typer.Option(
                metavar="URI",
                help="The image in ECR, built with modelport build --target lambda, e.g. "
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/iris:1-lambda.",
            ),
        ],
        role: Annotated[
            str,
            typer.Option(metavar="ARN", help="Execution role Lambda assumes (AWSLambdaBasicExecutionRole is enough)."),
        ],
        function: Annotated[
            str | None, typer.Option(metavar="NAME", help="Function name (default: modelport-NAME).")
        ] = None,
        memory: Annotated[
            int, typer.Option(metavar="MB", help="Memory in MB, 128 to 10240 (CPU grows with it: 1769 MB is one vCPU).")
        ] = 2048,
        timeout: Annotated[int, typer.Option(metavar="S", help="Seconds one event may run, 1 to 900.")] = 30,
        region: Annotated[
            str | None, typer.Option(metavar="R", help="AWS region (default: AWS_REGION or the AWS config's).")
        ] = None,
        api: Annotated[
            bool,
            typer.Option(
                "--api/--no-api",
                help="Create (or reuse) an HTTP API whose $default route sends every request to the function.",
            ),
        ] = True,
        api_name: Annotated[
            str | None, typer.Option(metavar="NAME", help="Name of the HTTP API (default: the function's name).")
        ] = None,
        auth: Annotated[
            str,
            typer.Option(
                metavar="MODE",
                help="Who decides who may call: iam (API Gateway lets only SigV4-signed callers with "
                "execute-api:Invoke through), app (the function's own API keys or OAuth2 tokens, configured "
                "with --env MODELPORT_API_KEYS_FILE=... or MODELPORT_JWT_*=...), none (anyone: open to the internet).",
            ),
        ] = "iam",
        arch: Annotated[
            str, typer.Option(metavar="ARCH", help="The image's architecture: x86_64 or arm64.")
        ] = "x86_64",
        env: Annotated[
            list[str] | None,
            typer.Option(
                "--env",
                metavar="NAME=VALUE",
                help="Set a variable of the function (repeatable), e.g. MODELPORT_LOG_LEVEL=debug.",
            ),
        ] = None,
    ) -> None:
        """Create or update an AWS Lambda function running the image, behind an HTTP API; prints its URL."""
        from modelport.errors import InvalidSetting
        from modelport.reference import parse_reference
        from modelport.shipping.aws.lambdas import LambdaOptions, deploy_function, ensure_http_api, function_name

        variables: dict[str, str] = {}
        for item in env or []:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise InvalidSetting(f"--env {item!r}: give NAME=VALUE")
            variables[name.strip()] = value
        reference = parse_reference(ref)
        options = LambdaOptions(  # bad options stop here, before the registry or AWS is reached
            function=function or function_name(reference.name),
            image=image,
            role=role,
            memory=memory,
            timeout=timeout,
            architecture=arch,
            auth=auth,
            environment=variables,
        )
        version = _registered(ref)
        options = replace(options, description=f"modelport: {version.ref} ({ref})"[:256])
        functions, apis = make_clients(region)
        deployed = deploy_function(functions, options)
        verb = "created" if deployed.created else "updated"
        out.print(f"{verb} Lambda function [bold]{escape(options.function)}[/] ({escape(deployed.arn)})")
        if not api:
            out.print(f"invoke it: aws lambda invoke --function-name {escape(options.function)} ...")
            return
        http = ensure_http_api(
            apis, functions, deployed.arn, name=api_name or options.function, auth=options.auth, timeout=timeout
        )
        out.print(f"{'created' if http.created else 'updated'} HTTP API {escape(http.api_id)} ($default route)")
        out.print(f"invoke URL: {escape(http.url)}")
        if options.auth == "iam":
            out.print("  callers sign with SigV4 (service execute-api) and need execute-api:Invoke on the API")
        else:
            out.print(f"  try it: curl {escape(http.url)}/v2/health/ready")


def _registered(ref: str) -> Any:

    registry = open_registry()
    try:
        return registry.get(ref)
    finally:
        registry.close()


def boto3_clients(region: str | None) -> tuple[Any, Any]:
    """Lambda and API Gateway v2 clients from the standard AWS environment and config files."""
    from modelport.errors import ModelportError
    from modelport.shipping.aws import INSTALL_AWS, aws_errors

    try:
        import boto3
    except ImportError:
        raise ModelportError(f"deploying to AWS Lambda needs boto3: {INSTALL_AWS}") from None
    with aws_errors():
        session = boto3.session.Session(region_name=region)
        return session.client("lambda"), session.client("apigatewayv2")
