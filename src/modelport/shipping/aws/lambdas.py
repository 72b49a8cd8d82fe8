"""AWS Lambda behind API Gateway: the function (a container image) and its HTTP API.

:func:`deploy_function` creates the function from an image ``modelport build --target lambda`` made
(or moves an existing one to a new image and configuration) and waits until Lambda says it is
ready; :func:`ensure_http_api` gives it an HTTP API (API Gateway v2) whose ``$default`` route
sends every request to the function (``AWS_PROXY``, payload format 2.0) on an auto-deployed
``$default`` stage, and lets API Gateway invoke the function. Both take boto3 clients made by the
caller (tests hand in moto's or stubbed ones); boto3 itself is never imported here, and
:func:`aws_errors` turns botocore's errors into modelport's, one line each.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from modelport.errors import Conflict, InvalidSetting, ModelportError
from modelport.shipping import container
from modelport.shipping.aws import aws_errors

GUIDE = "docs/lambda.md"  # where the IAM permissions are listed

AUTH_MODES = ("app", "iam", "none")
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+")
API_INTEGRATION_TIMEOUT_MS = 30_000  # HTTP APIs wait at most 30 s for an integration


@dataclass(frozen=True, slots=True)
class LambdaOptions:
    """What ``modelport deploy lambda`` sets on the function.

    ``auth``: who decides who may call. ``iam`` (the default): API Gateway, which lets only
    SigV4-signed callers whose IAM policy allows ``execute-api:Invoke`` through; the function then
    serves what reaches it. ``app``: the function itself, with API keys or OAuth2 tokens
    configured through ``environment`` (``MODELPORT_API_KEYS_FILE``, ``MODELPORT_JWT_*``); without
    them it refuses to start. ``none``: anyone on the internet (``MODELPORT_INSECURE_OPEN=1``).
    """

    function: str
    image: str
    role: str
    memory: int = 2048
    timeout: int = 30
    architecture: str = "x86_64"
    auth: str = "iam"
    environment: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not _FUNCTION_NAME.fullmatch(self.function):
            raise InvalidSetting(
                f"--function {self.function!r}: a Lambda function name is 1 to 64 letters, digits, - or _"
            )
        if not _ROLE_ARN.fullmatch(self.role):
            raise InvalidSetting(
                f"--role {self.role!r}: give the ARN of an IAM role Lambda may assume, "
                "e.g. arn:aws:iam::123456789012:role/modelport-lambda"
            )
        if not self.image or any(c.isspace() for c in self.image):
            raise InvalidSetting(f"--image {self.image!r}: give the image URI in ECR, e.g. ACCOUNT.dkr.ecr.REGION...")
        if not 128 <= self.memory <= 10240:
            raise InvalidSetting(f"--memory {self.memory}: Lambda gives a function 128 to 10240 MB")
        if not 1 <= self.timeout <= 900:
            raise InvalidSetting(f"--timeout {self.timeout}: Lambda runs an event for 1 to 900 seconds")
        if self.architecture not in ARCHITECTURES:
            raise InvalidSetting(f"--arch {self.architecture!r}: give x86_64 or arm64, the image's architecture")
        if self.auth not in AUTH_MODES:
            raise InvalidSetting(f"--auth {self.auth!r}: give app, iam or none")

    def variables(self) -> dict[str, str]:
        """The function's environment: the image's home under /tmp, openness per ``auth``, then the user's."""
        variables = {"MODELPORT_HOME": container.HOME}
        if self.auth in ("iam", "none"):
            variables["MODELPORT_INSECURE_OPEN"] = "1"  # API Gateway decides (iam), or nobody does (none)
        return {**variables, **self.environment}


@dataclass(frozen=True, slots=True)
class FunctionDeployment:
    arn: str
    created: bool  # False: an existing function was moved to the new image and configuration


@dataclass(frozen=True, slots=True)
class HttpApi:
    api_id: str
    url: str
    created: bool


def function_name(model: str) -> str:
    """The default function name for a model: ``modelport-<slug>``."""
    return f"modelport-{container.slug(model)}"[:64]


def deploy_function(
    client: Any, options: LambdaOptions, *, delay: float = 2, attempts: int = 300
) -> FunctionDeployment:
    """Create the function, or update an existing one's image then configuration, and wait for it.

    An update is two calls Lambda refuses to overlap (the configuration waits for the code update to
    finish); each wait polls ``GetFunction`` every ``delay`` seconds, ``attempts`` times.
    """
    configuration: dict[str, Any] = {
        "Role": options.role,
        "MemorySize": options.memory,
        "Timeout": options.timeout,
        "Environment": {"Variables": options.variables()},
        "Description": options.description,
    }
    with aws_errors(GUIDE):
        try:
            client.get_function(FunctionName=options.function)
        except client.exceptions.ResourceNotFoundException:
            created = client.create_function(
                FunctionName=options.function,
                PackageType="Image",
                Code={"ImageUri": options.image},
                Architectures=[ARCHITECTURES[options.architecture]],
                **configuration,
            )
            _wait(client, "function_active_v2", options.function, delay, attempts)
            return FunctionDeployment(str(created["FunctionArn"]), created=True)
        client.update_function_code(FunctionName=options.function, ImageUri=options.image)
        _wait(client, "function_updated_v2", options.function, delay, attempts)
        updated = client.update_function_configuration(FunctionName=options.function, **configuration)
        _wait(client, "function_updated_v2", options.function, delay, attempts)
        return FunctionDeployment(str(updated["FunctionArn"]), created=False)


def ensure_http_api(
    apis: Any, functions: Any, function_arn: str, *, name: str, auth: str = "iam", timeout: int = 30
) -> HttpApi:
    """An HTTP API named ``name`` (made, or the one that exists) whose ``$default`` route and stage send
    every request to ``function_arn``; API Gateway is allowed to invoke the function."""
    region, account = _arn_parts(function_arn)
    authorization = "AWS_IAM" if auth == "iam" else "NONE"
    with aws_errors(GUIDE):
        found = [api for api in _pages(apis, "get_apis", "Items") if api.get("Name") == name]
        if len(found) > 1:
            ids = ", ".join(str(api["ApiId"]) for api in found)
            raise Conflict(f"{len(found)} HTTP APIs are named {name!r} ({ids}); give --api-name to choose another name")
        api = found[0] if found else apis.create_api(Name=name, ProtocolType="HTTP", Tags={"modelport": name})
        api_id = str(api["ApiId"])
        integration_id = _integration(apis, api_id, function_arn, timeout)
        target = f"integrations/{integration_id}"
        routes = [r for r in _pages(apis, "get_routes", "Items", ApiId=api_id) if r.get("RouteKey") == "$default"]
        if routes:
            apis.update_route(
                ApiId=api_id, RouteId=routes[0]["RouteId"], Target=target, AuthorizationType=authorization
            )
        else:
            apis.create_route(ApiId=api_id, RouteKey="$default", Target=target, AuthorizationType=authorization)
        stages = _pages(apis, "get_stages", "Items", ApiId=api_id)
        if not any(stage.get("StageName") == "$default" for stage in stages):
            apis.create_stage(ApiId=api_id, StageName="$default", AutoDeploy=True)
        _allow_invoke(functions, function_arn, f"arn:aws:execute-api:{region}:{account}:{api_id}/*", api_id)
    url = str(api.get("ApiEndpoint") or f"https://{api_id}.execute-api.{region}.amazonaws.com")
    return HttpApi(api_id, url, created=not found)


def _integration(apis: Any, api_id: str, function_arn: str, timeout: int) -> str:
    """The API's Lambda proxy integration to ``function_arn`` (made if missing), payload format 2.0."""
    wanted = {
        "IntegrationType": "AWS_PROXY",
        "IntegrationUri": function_arn,
        "PayloadFormatVersion": "2.0",
        "TimeoutInMillis": min(API_INTEGRATION_TIMEOUT_MS, timeout * 1000),
    }
    for item in _pages(apis, "get_integrations", "Items", ApiId=api_id):
        if item.get("IntegrationUri") == function_arn and item.get("IntegrationType") == "AWS_PROXY":
            if any(item.get(key) != value for key, value in wanted.items()):
                apis.update_integration(ApiId=api_id, IntegrationId=item["IntegrationId"], **wanted)
            return str(item["IntegrationId"])
    return str(apis.create_integration(ApiId=api_id, IntegrationMethod="POST", **wanted)["IntegrationId"])


def _allow_invoke(functions: Any, function_arn: str, source_arn: str, api_id: str) -> None:
    """Let API Gateway (this API only) invoke the function; a statement that exists already is kept."""
    with suppress(functions.exceptions.ResourceConflictException):  # deployed before: the statement is there
        functions.add_permission(
            FunctionName=function_arn,
            StatementId=f"modelport-apigateway-{api_id}",
            Action="lambda:InvokeFunction",
            Principal="apigateway.amazonaws.com",
            SourceArn=source_arn,
        )


def _pages(client: Any, operation: str, key: str, **arguments: Any) -> list[dict[str, Any]]:
    """Every item of a ``NextToken``-paged API Gateway v2 listing (it has no boto3 paginators for all)."""
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = getattr(client, operation)(**arguments, **({"NextToken": token} if token else {}))
        items += page.get(key, [])
        token = page.get("NextToken")
        if not token:
            return items


def _wait(client: Any, waiter: str, function: str, delay: float, attempts: int) -> None:
    from botocore.exceptions import WaiterError

    try:
        client.get_waiter(waiter).wait(FunctionName=function, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})
    except WaiterError as exc:
        last = exc.last_response or {}
        configuration = last.get("Configuration") or {}  # the waiters poll GetFunction
        reason = configuration.get("StateReason") or configuration.get("LastUpdateStatusReason") or str(exc)
        if "Error" in last:
            reason = last["Error"].get("Message") or reason
        what = "become active" if waiter == "function_active_v2" else "finish updating"
        raise ModelportError(f"Lambda function {function} did not {what}: {' '.join(str(reason).split())}") from None


def _arn_parts(arn: str) -> tuple[str, str]:
    parts = arn.split(":")
    if len(parts) < 7 or parts[2] != "lambda":
        raise InvalidSetting(f"{arn!r} is not a Lambda function ARN")
    return parts[3], parts[4]
