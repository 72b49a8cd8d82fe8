"""``modelport deploy lambda`` against mocks of AWS, never AWS itself.

moto (in-process ``mock_aws``) plays Lambda, API Gateway v2 and IAM for the whole flow: create,
then update, the function, and the HTTP API with its integration, route, stage and permission.
Where moto differs from AWS, botocore's Stubber on a real client stands in, so the real service
model still checks every request's and response's shape: a permission statement that exists
(moto accepts a duplicate; Lambda answers ResourceConflictException), an update still in progress
or failed (moto's updates finish at once), and an AccessDeniedException (moto's comes back in a
shape the real service never uses).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import typer
from botocore.stub import ANY, Stubber
from moto import mock_aws
from typer.testing import CliRunner

from modelport.cli.common import handled
from modelport.cli.deploy_lambda import register
from modelport.cli.main import app
from modelport.errors import Forbidden, InvalidSetting, ModelportError
from modelport.settings import Settings
from modelport.shipping.aws.lambdas import LambdaOptions, deploy_function, ensure_http_api, function_name
from tests.support.serving import register_iris

REGION = "us-east-1"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/iris:1-lambda"
ARN = f"arn:aws:lambda:{REGION}:123456789012:function:modelport-iris"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's AWS with fake credentials and region (no network, no real account); yields an execution role's ARN."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    with mock_aws():
        role = boto3.client("iam").create_role(RoleName="modelport-lambda", AssumeRolePolicyDocument=json.dumps(TRUST))
        yield str(role["Role"]["Arn"])


def options(role: str, **changes: Any) -> LambdaOptions:
    return LambdaOptions(**{"function": "modelport-iris", "image": IMAGE, "role": role, **changes})


def test_function_is_created_then_updated_with_image_role_memory_timeout_and_environment(aws: str) -> None:
    client = boto3.client("lambda", region_name=REGION)
    first = deploy_function(client, options(aws, memory=1024, timeout=20, environment={"MODELPORT_LOG_LEVEL": "debug"}))
    assert first.created
    made = client.get_function(FunctionName="modelport-iris")
    config = made["Configuration"]
    assert config["PackageType"] == "Image"
    assert made["Code"]["ImageUri"] == IMAGE
    assert (config["Role"], config["MemorySize"], config["Timeout"]) == (aws, 1024, 20)
    assert config["State"] == "Active"
    assert config["Environment"]["Variables"] == {
        "MODELPORT_HOME": "/tmp/modelport",
        "MODELPORT_INSECURE_OPEN": "1",  # --auth iam (the default): API Gateway decides who calls
        "MODELPORT_LOG_LEVEL": "debug",
    }
    second = deploy_function(client, options(aws, image=IMAGE.replace(":1-", ":2-"), memory=3008, auth="app"))
    assert not second.created
    assert second.arn == first.arn
    updated = client.get_function(FunctionName="modelport-iris")
    assert updated["Code"]["ImageUri"] == IMAGE.replace(":1-", ":2-")
    assert (updated["Configuration"]["MemorySize"], updated["Configuration"]["Timeout"]) == (3008, 30)
    assert updated["Configuration"]["Environment"]["Variables"] == {"MODELPORT_HOME": "/tmp/modelport"}
    assert updated["Configuration"]["LastUpdateStatus"] == "Successful"


def test_http_api_sends_every_request_to_the_function_and_is_reused(aws: str) -> None:
    functions = boto3.client("lambda", region_name=REGION)
    apis = boto3.client("apigatewayv2", region_name=REGION)
    arn = deploy_function(functions, options(aws)).arn
    made = ensure_http_api(apis, functions, arn, name="modelport-iris", auth="iam", timeout=60)
    assert made.created
    assert made.url == f"https://{made.api_id}.execute-api.{REGION}.amazonaws.com"
    api = apis.get_api(ApiId=made.api_id)
    assert (api["Name"], api["ProtocolType"]) == ("modelport-iris", "HTTP")
    (integration,) = apis.get_integrations(ApiId=made.api_id)["Items"]
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert integration["IntegrationUri"] == arn
    assert integration["PayloadFormatVersion"] == "2.0"
    assert integration["TimeoutInMillis"] == 30_000  # an HTTP API waits 30 s at most, whatever the function's timeout
    (route,) = apis.get_routes(ApiId=made.api_id)["Items"]
    assert route["RouteKey"] == "$default"
    assert route["Target"] == f"integrations/{integration['IntegrationId']}"
    assert route["AuthorizationType"] == "AWS_IAM"
    (stage,) = apis.get_stages(ApiId=made.api_id)["Items"]
    assert (stage["StageName"], stage["AutoDeploy"]) == ("$default", True)
    (statement,) = json.loads(functions.get_policy(FunctionName="modelport-iris")["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert statement["Action"] == "lambda:InvokeFunction"
    source = f"arn:aws:execute-api:{REGION}:123456789012:{made.api_id}/*"
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == source

    again = ensure_http_api(apis, functions, arn, name="modelport-iris", auth="none", timeout=10)
    assert not again.created
    assert again.api_id == made.api_id
    assert len(apis.get_apis()["Items"]) == 1
    (integration,) = apis.get_integrations(ApiId=made.api_id)["Items"]
    assert integration["TimeoutInMillis"] == 10_000  # brought in line with the new function timeout
    (route,) = apis.get_routes(ApiId=made.api_id)["Items"]
    assert route["AuthorizationType"] == "NONE"
    assert len(apis.get_stages(ApiId=made.api_id)["Items"]) == 1


def test_an_existing_permission_statement_is_kept_not_an_error() -> None:
    """Lambda answers a second AddPermission with the same statement id ResourceConflictException (moto
    accepts it): a second deploy keeps the statement. Stubbed: every call's shape is the service model's."""
    apis = boto3.client("apigatewayv2", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    functions = boto3.client("lambda", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    api = {
        "ApiId": "a1b2c3",
        "Name": "modelport-iris",
        "ApiEndpoint": "https://a1b2c3.execute-api.us-east-1.amazonaws.com",
        "ProtocolType": "HTTP",
        "RouteSelectionExpression": "$request.method $request.path",
    }
    integration = {
        "IntegrationId": "i1",
        "IntegrationType": "AWS_PROXY",
        "IntegrationUri": ARN,
        "PayloadFormatVersion": "2.0",
        "TimeoutInMillis": 30_000,
    }
    with Stubber(apis) as stub_apis, Stubber(functions) as stub_functions:
        stub_apis.add_response("get_apis", {"Items": [api]}, {})
        stub_apis.add_response("get_integrations", {"Items": [integration]}, {"ApiId": "a1b2c3"})
        route = {"RouteId": "r1", "RouteKey": "$default", "Target": "integrations/i1"}
        stub_apis.add_response("get_routes", {"Items": [route]}, {"ApiId": "a1b2c3"})
        stub_apis.add_response(
            "update_route",
            {},
            {"ApiId": "a1b2c3", "RouteId": "r1", "Target": "integrations/i1", "AuthorizationType": "AWS_IAM"},
        )
        stub_apis.add_response("get_stages", {"Items": [{"StageName": "$default"}]}, {"ApiId": "a1b2c3"})
        stub_functions.add_client_error(
            "add_permission",
            service_error_code="ResourceConflictException",
            service_message="The statement id (modelport-apigateway-a1b2c3) provided already exists.",
            http_status_code=409,
            expected_params={
                "FunctionName": ARN,
                "StatementId": "modelport-apigateway-a1b2c3",
                "Action": "lambda:InvokeFunction",
                "Principal": "apigateway.amazonaws.com",
                "SourceArn": "arn:aws:execute-api:us-east-1:123456789012:a1b2c3/*",
            },
        )
        found = ensure_http_api(apis, functions, ARN, name="modelport-iris")
        stub_apis.assert_no_pending_responses()
        stub_functions.assert_no_pending_responses()
    assert (found.api_id, found.created) == ("a1b2c3", False)
    assert found.url == api["ApiEndpoint"]


def _configuration(status: str, reason: str = "") -> dict[str, Any]:
    answer: dict[str, Any] = {"FunctionName": "modelport-iris", "FunctionArn": ARN, "State": "Active"}
    answer["LastUpdateStatus"] = status
    if reason:
        answer["LastUpdateStatusReason"] = reason
    return answer


def _stub_update(stub: Stubber) -> None:
    stub.add_response(
        "get_function", {"Configuration": _configuration("Successful")}, {"FunctionName": "modelport-iris"}
    )
    stub.add_response(
        "update_function_code", _configuration("InProgress"), {"FunctionName": "modelport-iris", "ImageUri": IMAGE}
    )


def test_an_update_waits_while_lambda_says_in_progress_then_configures() -> None:
    """moto's updates finish at once; Lambda's take a while (the waiter polls GetFunction), and Lambda
    refuses a configuration change during one."""
    client = boto3.client("lambda", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    role = "arn:aws:iam::123456789012:role/modelport-lambda"
    with Stubber(client) as stub:
        _stub_update(stub)
        waited = {"FunctionName": "modelport-iris"}
        stub.add_response("get_function", {"Configuration": _configuration("InProgress")}, waited)
        stub.add_response("get_function", {"Configuration": _configuration("Successful")}, waited)
        stub.add_response(
            "update_function_configuration",
            _configuration("InProgress"),
            {
                "FunctionName": "modelport-iris",
                "Role": role,
                "MemorySize": 2048,
                "Timeout": 30,
                "Environment": {"Variables": {"MODELPORT_HOME": "/tmp/modelport", "MODELPORT_INSECURE_OPEN": "1"}},
                "Description": "",
            },
        )
        stub.add_response("get_function", {"Configuration": _configuration("Successful")}, waited)
        deployed = deploy_function(client, options(role), delay=0, attempts=5)
        stub.assert_no_pending_responses()
    assert (deployed.arn, deployed.created) == (ARN, False)


def test_a_failed_update_is_one_line_with_lambdas_reason() -> None:
    client = boto3.client("lambda", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    role = "arn:aws:iam::123456789012:role/modelport-lambda"
    with Stubber(client) as stub:
        _stub_update(stub)
        reason = "Image manifest for the image URI is not supported: linux/arm64 on an x86_64 function"
        stub.add_response("get_function", {"Configuration": _configuration("Failed", reason)}, {"FunctionName": ANY})
        with pytest.raises(ModelportError, match=r"did not finish updating: Image manifest .* x86_64 function"):
            deploy_function(client, options(role), delay=0, attempts=5)


def test_options_are_checked_before_aws_is_reached() -> None:
    role = "arn:aws:iam::123456789012:role/modelport-lambda"
    with pytest.raises(InvalidSetting, match="ARN of an IAM role"):
        options("modelport-lambda")
    with pytest.raises(InvalidSetting, match="128 to 10240 MB"):
        options(role, memory=64)
    with pytest.raises(InvalidSetting, match="1 to 900 seconds"):
        options(role, timeout=901)
    with pytest.raises(InvalidSetting, match="give app, iam or none"):
        options(role, auth="open")
    with pytest.raises(InvalidSetting, match="1 to 64 letters"):
        options(role, function="my function")
    assert function_name("Iris.v2") == "modelport-iris-v2-" + function_name("Iris.v2").rsplit("-", 1)[1]
    assert function_name("iris") == "modelport-iris"


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture
def registry_home(tmp_path: Path, iris: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    register_iris(Settings(home=home), iris)
    monkeypatch.setenv("MODELPORT_HOME", str(home))
    return home


@pytest.mark.slow
def test_cli_creates_then_updates_and_prints_the_invoke_url(aws: str, registry_home: Path) -> None:
    arguments = ["deploy", "lambda", "iris@production", "--image", IMAGE, "--role", aws, "--region", REGION]
    created = CliRunner().invoke(app, [*arguments, "--auth", "none"], env={"COLUMNS": "200"})
    assert created.exit_code == 0, created.output
    (api,) = boto3.client("apigatewayv2", region_name=REGION).get_apis()["Items"]
    assert "created Lambda function modelport-iris" in created.output
    assert f"invoke URL: {api['ApiEndpoint']}" in created.output
    assert f"curl {api['ApiEndpoint']}/v2/health/ready" in created.output
    config = boto3.client("lambda", region_name=REGION).get_function(FunctionName="modelport-iris")["Configuration"]
    assert config["Description"] == "modelport: iris@1 (iris@production)"

    updated = CliRunner().invoke(
        app, [*arguments, "--memory", "4096", "--env", "MODELPORT_LOG_LEVEL=debug"], env={"COLUMNS": "200"}
    )
    assert updated.exit_code == 0, updated.output
    assert "updated Lambda function modelport-iris" in updated.output
    assert f"updated HTTP API {api['ApiId']}" in updated.output
    assert "SigV4" in updated.output
    config = boto3.client("lambda", region_name=REGION).get_function(FunctionName="modelport-iris")["Configuration"]
    assert config["MemorySize"] == 4096
    assert config["Environment"]["Variables"]["MODELPORT_LOG_LEVEL"] == "debug"


def test_cli_access_denied_is_one_line_and_a_non_zero_exit(tmp_path: Path, iris: Any) -> None:
    home = tmp_path / "home"
    register_iris(Settings(home=home), iris)
    client = boto3.client("lambda", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    sub = typer.Typer()
    sub.callback()(lambda: None)  # keep "lambda" a sub-command, as under modelport deploy
    register(sub, handled, clients=lambda region: (client, None))
    role = "arn:aws:iam::123456789012:role/modelport-lambda"
    with Stubber(client) as stub:
        stub.add_client_error(
            "get_function",
            service_error_code="AccessDeniedException",
            service_message="User: arn:aws:iam::123456789012:user/ci is not authorized to perform: "
            "lambda:GetFunction on resource: arn:aws:lambda:us-east-1:123456789012:function:modelport-iris "
            "because no identity-based policy allows the lambda:GetFunction action",
            http_status_code=403,
        )
        result = CliRunner().invoke(
            sub,
            ["lambda", "iris@production", "--image", IMAGE, "--role", role],
            env={"MODELPORT_HOME": str(home), "COLUMNS": "200"},
        )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "AWS denied GetFunction: AccessDeniedException: User: arn:aws:iam::123456789012:user/ci" in lines[0]
    assert "Traceback" not in result.output


def test_cli_refuses_bad_options_before_the_registry_or_aws(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["deploy", "lambda", "iris@production", "--image", IMAGE, "--role", "nope", "--env", "A=1"],
        env={"MODELPORT_HOME": str(tmp_path / "home")},
    )
    assert result.exit_code == 2
    assert "ARN of an IAM role" in result.output
    assert not (tmp_path / "home").exists()
    bad_env = CliRunner().invoke(
        app,
        ["deploy", "lambda", "iris@1", "--image", IMAGE, "--role", "arn:aws:iam::123456789012:role/r", "--env", "X"],
    )
    assert bad_env.exit_code == 2
    assert "give NAME=VALUE" in bad_env.output


def test_cli_help_exits_zero_and_names_every_option() -> None:
    result = CliRunner().invoke(app, ["deploy", "lambda", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in (
        "--image",
        "--role",
        "--function",
        "--memory",
        "--timeout",
        "--region",
        "--api",
        "--no-api",
        "--auth",
    ):
        assert option in result.output


def test_forbidden_is_the_error_for_denied_calls() -> None:
    from botocore.exceptions import ClientError

    from modelport.shipping.aws import client_error

    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "CreateFunction")
    assert isinstance(client_error(denied), Forbidden)
