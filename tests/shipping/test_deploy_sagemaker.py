"""``modelport deploy sagemaker``: against moto in-process and botocore's Stubber, never AWS.

moto serves S3, STS and SageMaker's CreateModel / CreateEndpointConfig / CreateEndpoint /
Describe* / Delete* / List* and the ``endpoint_in_service`` waiter's polls, and InvokeEndpoint
(with a canned answer). botocore's Stubber, on real clients whose service models validate every
request and response, stands in for what moto lacks (UpdateEndpoint) and for exact request
assertions and error answers. The test request's body is proven against the real container:
the modelport server started the way SageMaker starts it answers it 200.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import typer
from botocore.config import Config
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws
from typer.testing import CliRunner

from modelport.cli.common import handled
from modelport.cli.deploy_sagemaker import AwsClients, invocation_body, register
from modelport.cli.main import app as main_app
from modelport.errors import Conflict, InvalidSetting, ModelportError
from modelport.registry.export import ARCHIVE, RECORD, export_version, read_export
from modelport.registry.registry import Registry
from modelport.settings import Settings
from modelport.shipping.aws.endpoint import SageMakerDeployer
from modelport.shipping.aws.endpoint_plan import (
    EndpointSpec,
    Invocation,
    S3Location,
    artifact_hex,
    plan_weights,
    target_model,
)
from modelport.types import ModelVersion
from tests.support.sagemaker import sagemaker_serve
from tests.support.serving import register_iris

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/modelport-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/modelport-iris:1"
BUCKET = "models-bucket"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
STAMP = "260102030405"


@dataclass
class Registered:
    home: Path
    v1: ModelVersion
    v2: ModelVersion
    artifacts: dict[int, Path]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> Registered:
    """Two real Iris versions (different fits) in a registry of their own."""
    home = tmp_path_factory.mktemp("sagemaker-deploy") / "home"
    settings = Settings(home=home)
    v1, _ = register_iris(settings, iris, aliases=(), strength=1.0)
    v2, _ = register_iris(settings, iris, aliases=(), strength=0.01)
    with Registry.open(settings) as registry:
        artifacts = {v.version: registry.artifact_path(v) for v in (v1, v2)}
    return Registered(home, v1, v2, artifacts)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and region; no config files, no instance metadata: nothing reaches AWS."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def moto(aws_env: None) -> Iterator[AwsClients]:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        yield AwsClients(
            sagemaker=boto3.client("sagemaker", region_name=REGION),
            s3=s3,
            runtime=boto3.client("sagemaker-runtime", region_name=REGION),
            sts=boto3.client("sts", region_name=REGION),
        )


def cli(registered: Registered, *args: str, app: typer.Typer = main_app) -> Any:
    env = {"MODELPORT_HOME": str(registered.home), "COLUMNS": "250", "NO_COLOR": "1"}
    return CliRunner().invoke(app, list(args), env=env)


def one_line_error(result: Any, code: int, *fragments: str) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return str(lines[0])


def extract(s3: Any, key: str, into: Path) -> list[str]:
    """Download ``key``, unpack it into ``into``; the archive's member names."""
    data = s3.get_object(Bucket=BUCKET if not key.startswith("sagemaker-") else key.split("/")[0], Key=key)
    with tarfile.open(fileobj=io.BytesIO(data["Body"].read()), mode="r:gz") as tar:
        names = tar.getnames()
        tar.extractall(into, filter="data")
    return names


# -- moto: deploy, re-deploy, delete, multi-model ------------------------------------------------


def test_deploy_uploads_the_export_creates_model_config_endpoint_and_delete_removes_them(
    moto: AwsClients, registered: Registered, tmp_path: Path
) -> None:
    v1 = registered.v1
    deploy = ("deploy", "sagemaker", v1.ref, "--role", ROLE, "--image", IMAGE, "--instance-type", "ml.m5.large")
    result = cli(
        registered,
        *deploy,
        *("--instance-count", "2", "--bucket", f"s3://{BUCKET}/team/models", "--region", REGION),
        *("--data-capture", f"s3://{BUCKET}/capture", "--capture-percent", "20", "--workers", "3"),
    )
    assert result.exit_code == 0, result.output
    assert "endpoint modelport-iris is InService" in result.output
    assert "test invocation of modelport-iris: body" in result.output  # moto's canned answer, printed

    key = f"team/models/iris/v1-{artifact_hex(v1)}/model.tar.gz"
    names = extract(moto.s3, key, tmp_path / "model")
    assert read_export(tmp_path / "model") == v1  # checked against the artifact key
    assert names == sorted([RECORD, *(p.name for p in registered.artifacts[1].iterdir())])

    endpoint = moto.sagemaker.describe_endpoint(EndpointName="modelport-iris")
    assert endpoint["EndpointStatus"] == "InService"
    config_name = endpoint["EndpointConfigName"]
    assert config_name.startswith("modelport-iris-iris-v1-")
    assert config_name in result.output
    config = moto.sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
    (variant,) = config["ProductionVariants"]
    assert variant["VariantName"] == "iris-v1"
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.m5.large", 2)
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"]
    assert capture["InitialSamplingPercentage"] == 20
    assert capture["DestinationS3Uri"] == f"s3://{BUCKET}/capture"
    model = moto.sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["ExecutionRoleArn"] == ROLE
    assert model["PrimaryContainer"]["Image"] == IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == f"s3://{BUCKET}/{key}"
    assert model["PrimaryContainer"]["Environment"] == {"SAGEMAKER_MODEL_SERVER_WORKERS": "3"}

    again = cli(registered, *deploy, "--bucket", f"s3://{BUCKET}/team/models", "--no-wait")
    one_line_error(again, 1, "endpoint modelport-iris exists", "--update")
    other = cli(registered, *deploy, "--bucket", f"s3://{BUCKET}/team/models", "--endpoint", "other", "--no-wait")
    assert other.exit_code == 0, other.output
    assert "already holds iris@1" in other.output
    assert "not uploaded again" in other.output
    assert "test invocation" not in other.output

    deleted = cli(registered, "deploy", "sagemaker", "--delete", "--endpoint", "modelport-iris")
    assert deleted.exit_code == 0, deleted.output
    assert "deleted endpoint modelport-iris" in deleted.output
    assert f"deleted endpoint configuration {config_name}" in deleted.output
    assert f"deleted model {variant['ModelName']}" in deleted.output
    assert [e["EndpointName"] for e in moto.sagemaker.list_endpoints()["Endpoints"]] == ["other"]
    assert len(moto.sagemaker.list_models()["Models"]) == 1  # "other"'s
    with pytest.raises(moto.sagemaker.exceptions.ClientError, match="Could not find"):
        moto.sagemaker.describe_endpoint_config(EndpointConfigName=config_name)

    twice = cli(registered, "deploy", "sagemaker", "--delete", "--endpoint", "modelport-iris")
    assert twice.exit_code == 0, twice.output
    assert "no endpoint modelport-iris (already deleted)" in twice.output
    assert "nothing of endpoint modelport-iris is left" in twice.output


def test_multi_model_endpoint_serves_each_tarball_under_one_prefix(
    moto: AwsClients, registered: Registered, tmp_path: Path
) -> None:
    v1, v2 = registered.v1, registered.v2
    result = cli(
        registered,
        *("deploy", "sagemaker", v1.ref, v2.ref, "--multi-model", "--endpoint", "many"),
        *("--role", ROLE, "--image", IMAGE, "--instance-type", "ml.c5.xlarge"),
    )  # no --bucket: the SageMaker SDK's default bucket, created
    assert result.exit_code == 0, result.output
    bucket = "sagemaker-us-east-1-123456789012"  # moto's account
    (config_name,) = [c["EndpointConfigName"] for c in moto.sagemaker.list_endpoint_configs()["EndpointConfigs"]]
    (variant,) = moto.sagemaker.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
    container = moto.sagemaker.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"
    assert container["ModelDataUrl"] == f"s3://{bucket}/modelport/many/"
    assert container["Environment"] == {"SAGEMAKER_MULTI_MODEL": "true"}
    listed = moto.s3.list_objects_v2(Bucket=bucket, Prefix="modelport/many/")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(f"modelport/many/{target_model(v)}" for v in (v1, v2))
    for version in (v1, v2):
        data = moto.s3.get_object(Bucket=bucket, Key=f"modelport/many/{target_model(version)}")["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(tmp_path / str(version.version), filter="data")
        assert read_export(tmp_path / str(version.version)) == version
        assert f"TargetModel={target_model(version)}: body" in result.output
    assert target_model(v1) != target_model(v2)


# -- Stubber: update (moto lacks UpdateEndpoint), shift, promote, waiting ------------------------


def stubbed(service: str) -> tuple[Any, Stubber]:
    client = boto3.client(service, region_name=REGION)
    return client, Stubber(client)


def endpoint_answer(status: str, variants: dict[str, float], config: str = "cfg-old", **extra: Any) -> dict[str, Any]:
    return {
        "EndpointName": "ep",
        "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
        "ProductionVariants": [
            {"VariantName": name, "CurrentWeight": weight, "DesiredWeight": weight, "CurrentInstanceCount": 2}
            for name, weight in variants.items()
        ],
        **extra,
    }


def config_answer(variants: list[tuple[str, str]], name: str = "cfg-old") -> dict[str, Any]:
    return {
        "EndpointConfigName": name,
        "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/{name}",
        "CreationTime": NOW,
        "ProductionVariants": [
            {
                "VariantName": variant,
                "ModelName": model,
                "InitialInstanceCount": 2,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": 1.0,
            }
            for variant, model in variants
        ],
    }


def runtime_answer(text: bytes) -> dict[str, Any]:
    return {"Body": StreamingBody(io.BytesIO(text), len(text)), "ContentType": "application/json"}


@pytest.mark.parametrize(
    ("options", "weights"),
    [
        ({}, [("iris-v2", 1.0)]),
        ({"canary_percent": 10}, [("iris-v1", 90.0), ("iris-v2", 10.0)]),
        ({"weights": {"iris-v1": 70, "new": 30}}, [("iris-v1", 70.0), ("iris-v2", 30.0)]),
    ],
    ids=["replace", "canary", "weights"],
)
def test_update_is_blue_green_through_a_new_model_and_configuration(
    moto: AwsClients, registered: Registered, options: dict[str, Any], weights: list[tuple[str, float]]
) -> None:
    sagemaker, stub = stubbed("sagemaker")
    runtime, runtime_stub = stubbed("sagemaker-runtime")
    v2 = registered.v2
    name = f"ep-iris-v2-{STAMP}"
    data_url = f"s3://{BUCKET}/iris/v2-{artifact_hex(v2)}/model.tar.gz"
    tags = [{"Key": "modelport:endpoint", "Value": "ep"}, {"Key": "modelport:ref", "Value": "iris@2"}]
    stub.add_response("describe_endpoint", endpoint_answer("InService", {"iris-v1": 1.0}), {"EndpointName": "ep"})
    stub.add_response(
        "describe_endpoint_config", config_answer([("iris-v1", "model-old")]), {"EndpointConfigName": "cfg-old"}
    )
    stub.add_response(
        "create_model",
        {"ModelArn": f"arn:aws:sagemaker:us-east-1:123456789012:model/{name}"},
        {
            "ModelName": name,
            "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": data_url},
            "ExecutionRoleArn": ROLE,
            "Tags": tags,
        },
    )
    variants = {
        "iris-v1": {"VariantName": "iris-v1", "ModelName": "model-old", "InitialInstanceCount": 2},
        "iris-v2": {"VariantName": "iris-v2", "ModelName": name, "InitialInstanceCount": 2},
    }
    expected_variants = [
        {**variants[variant], "InstanceType": "ml.m5.large", "InitialVariantWeight": weight}
        for variant, weight in weights
    ]
    stub.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/{name}"},
        {"EndpointConfigName": name, "ProductionVariants": expected_variants, "Tags": tags},
    )
    stub.add_response(
        "update_endpoint",
        {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"},
        {"EndpointName": "ep", "EndpointConfigName": name, "RetainAllVariantProperties": False},
    )
    after = dict(weights)
    stub.add_response("describe_endpoint", endpoint_answer("Updating", {"iris-v1": 1.0}), {"EndpointName": "ep"})
    stub.add_response("describe_endpoint", endpoint_answer("InService", after, config=name), {"EndpointName": "ep"})
    body = invocation_body(v2)
    invoked: dict[str, Any] = {"EndpointName": "ep", "ContentType": "application/json", "Accept": "application/json"}
    invoked["Body"] = body
    if len(weights) > 1:
        invoked["TargetVariant"] = "iris-v2"  # a canary's test request goes to the new variant
    runtime_stub.add_response("invoke_endpoint", runtime_answer(b'{"predictions": ["setosa"]}'), invoked)

    lines: list[str] = []
    slept: list[float] = []
    deployer = SageMakerDeployer(
        sagemaker, moto.s3, runtime, report=lines.append, sleep=slept.append, clock=lambda: 0.0, now=lambda: NOW
    )
    with stub, runtime_stub:
        deployer.update(
            v2,
            registered.artifacts[2],
            endpoint="ep",
            spec=EndpointSpec(role=ROLE, image=IMAGE),
            location=S3Location(BUCKET),
            test=Invocation(body),
            **options,
        )
        stub.assert_no_pending_responses()
        runtime_stub.assert_no_pending_responses()
    text = "\n".join(lines)
    assert f"updating endpoint ep to configuration {name}" in text
    assert "--endpoint-config-name cfg-old" in text  # the rollback command
    assert "endpoint ep: Updating" in text
    assert slept == [30.0]
    assert "test invocation of ep" in text
    assert '{"predictions": ["setosa"]}' in text
    assert moto.s3.head_object(Bucket=BUCKET, Key=data_url.split(f"{BUCKET}/")[1])["ContentLength"] > 0


def test_shift_moves_weights_in_place_and_promote_keeps_one_variant(moto: AwsClients) -> None:
    sagemaker, stub = stubbed("sagemaker")
    two = {"iris-v1": 90.0, "iris-v2": 10.0}
    stub.add_response("describe_endpoint", endpoint_answer("InService", two), {"EndpointName": "ep"})
    stub.add_response(
        "update_endpoint_weights_and_capacities",
        {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"},
        {
            "EndpointName": "ep",
            "DesiredWeightsAndCapacities": [
                {"VariantName": "iris-v1", "DesiredWeight": 50.0},
                {"VariantName": "iris-v2", "DesiredWeight": 50.0},
            ],
        },
    )
    for _ in range(3):  # the wait after the shift, the refused shift, the promotion
        stub.add_response("describe_endpoint", endpoint_answer("InService", two), {"EndpointName": "ep"})
    stub.add_response(
        "describe_endpoint_config",
        config_answer([("iris-v1", "model-old"), ("iris-v2", "model-new")]),
        {"EndpointConfigName": "cfg-old"},
    )
    promoted = f"ep-iris-v2-only-{STAMP}"
    stub.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/{promoted}"},
        {
            "EndpointConfigName": promoted,
            "ProductionVariants": [
                {
                    "VariantName": "iris-v2",
                    "ModelName": "model-new",
                    "InitialInstanceCount": 2,
                    "InstanceType": "ml.m5.large",
                    "InitialVariantWeight": 1.0,
                }
            ],
            "Tags": [{"Key": "modelport:endpoint", "Value": "ep"}, {"Key": "modelport:ref", "Value": "iris-v2"}],
        },
    )
    stub.add_response(
        "update_endpoint",
        {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"},
        {"EndpointName": "ep", "EndpointConfigName": promoted, "RetainAllVariantProperties": False},
    )
    lines: list[str] = []
    deployer = SageMakerDeployer(sagemaker, moto.s3, None, report=lines.append, sleep=lambda _: None, now=lambda: NOW)
    with stub:
        deployer.shift("ep", {"iris-v1": 50, "iris-v2": 50})
        with pytest.raises(InvalidSetting, match="no variant nope"):
            deployer.shift("ep", {"nope": 100})  # checked before anything changes
        deployer.promote("ep", "iris-v2", wait=False)
        stub.assert_no_pending_responses()
    assert "shifting traffic on ep: iris-v1=50, iris-v2=50" in lines
    assert f"promoting iris-v2 on ep: configuration {promoted}, all traffic" in lines


def test_waiting_reports_a_failed_endpoint_and_gives_up_at_the_timeout(moto: AwsClients) -> None:
    sagemaker, stub = stubbed("sagemaker")
    failed = endpoint_answer("Failed", {"v": 1.0}, FailureReason="The primary container did not pass the ping check")
    stub.add_response("describe_endpoint", endpoint_answer("Creating", {"v": 1.0}), {"EndpointName": "ep"})
    stub.add_response("describe_endpoint", failed, {"EndpointName": "ep"})
    for _ in range(4):  # at 0, 30, 60 and 90 seconds; the next poll would be past the timeout
        stub.add_response("describe_endpoint", endpoint_answer("Creating", {"v": 1.0}), {"EndpointName": "ep"})
    now = [0.0]
    lines: list[str] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    deployer = SageMakerDeployer(sagemaker, moto.s3, None, report=lines.append, sleep=sleep, clock=lambda: now[0])
    with stub:
        with pytest.raises(ModelportError, match="did not come into service: Failed The primary container"):
            deployer.wait("ep", timeout_s=600)
        now[0] = 0.0
        with pytest.raises(ModelportError, match=r"still Creating after 90s \(--timeout 90\)"):
            deployer.wait("ep", timeout_s=90)
        stub.assert_no_pending_responses()
    assert lines[:1] == ["endpoint ep: Creating (0s)"]


def test_weights_plan_canary_keeps_the_heaviest_variant_and_refuses_unknown_names() -> None:
    now = {"a": 20.0, "b": 80.0}
    assert plan_weights(now, "c", {}, 5) == {"b": 95.0, "c": 5.0}
    assert plan_weights(now, "c", {"a": 1, "NEW": 3}, None) == {"a": 1.0, "c": 3.0}
    with pytest.raises(InvalidSetting, match="not a variant"):
        plan_weights(now, "c", {"x": 1, "c": 1}, None)
    with pytest.raises(InvalidSetting, match="the new variant's weight"):
        plan_weights(now, "c", {"a": 1}, None)
    with pytest.raises(Conflict, match="already serves"):
        plan_weights(now, "b", {}, 10)


# -- errors through the command line -------------------------------------------------------------


def command_with(factory: Any) -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def deploy() -> None:
        """The deploy sub-app, with the command's AWS clients given."""

    register(app, handled, clients=factory)
    return app


def test_access_denied_is_one_line_and_a_failing_exit(aws_env: None, registered: Registered) -> None:
    sagemaker, stub = stubbed("sagemaker")
    stub.add_client_error(
        "describe_endpoint",
        service_error_code="AccessDeniedException",
        service_message="User: arn:aws:iam::123456789012:user/ci is not authorized to perform: "
        "sagemaker:DescribeEndpoint",
        http_status_code=400,
        expected_params={"EndpointName": "modelport-iris"},
    )
    app = command_with(lambda region: AwsClients(sagemaker, None, None, None))
    args = ("sagemaker", "iris@1", "--role", ROLE, "--image", IMAGE, "--instance-type", "ml.m5.large")
    with stub:
        result = cli(registered, *args, "--bucket", f"s3://{BUCKET}", app=app)
        stub.assert_no_pending_responses()
    one_line_error(result, 1, "AWS denied DescribeEndpoint: AccessDeniedException", "not authorized")


def test_missing_credentials_and_unreachable_aws_are_one_line(
    aws_env: None, registered: Registered, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    result = cli(registered, "deploy", "sagemaker", "--delete", "--endpoint", "ep", "--region", REGION)
    one_line_error(result, 2, "no AWS credentials found")

    def unreachable(region: str | None) -> AwsClients:
        config = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2)
        client = boto3.client(
            "sagemaker", region_name=REGION, endpoint_url="http://127.0.0.1:9", config=config,
            aws_access_key_id="a", aws_secret_access_key="b",
        )  # fmt: skip
        return AwsClients(client, None, None, None)

    result = cli(registered, "sagemaker", "--delete", "--endpoint", "ep", app=command_with(unreachable))
    one_line_error(result, 1, "cannot reach AWS", "check --region")


def test_bad_option_combinations_stop_before_aws(aws_env: None, registered: Registered) -> None:
    def never(region: str | None) -> AwsClients:
        raise AssertionError("AWS clients made for a bad command line")

    app = command_with(never)
    one_line_error(cli(registered, "sagemaker", "iris@1", "--delete", "--endpoint", "e", app=app), 2, "takes no REF")
    one_line_error(cli(registered, "sagemaker", "iris@1", "iris@2", app=app), 2, "--multi-model")
    one_line_error(cli(registered, "sagemaker", "--delete", app=app), 2, "--endpoint NAME")
    one_line_error(cli(registered, "sagemaker", "iris@1", "--canary-percent", "5", app=app), 2, "with --update")
    bad = cli(registered, "sagemaker", "iris@1", "--role", ROLE, "--image", IMAGE, "--bucket", "http://x", app=app)
    one_line_error(bad, 2, "not an S3 location")


def test_help_exits_zero() -> None:
    result = CliRunner().invoke(main_app, ["deploy", "sagemaker", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in ("--role", "--image", "--update", "--canary-percent", "--delete", "--multi-model", "--promote"):
        assert option in result.output


# -- the test request against the real container contract ----------------------------------------


@pytest.mark.slow
def test_the_test_request_is_answered_by_the_real_sagemaker_container(registered: Registered, tmp_path: Path) -> None:
    """The exact bytes deploy sends with InvokeEndpoint, POSTed to `modelport serve` run as SageMaker runs it."""
    version = registered.v1
    export_version(version, registered.artifacts[1], tmp_path / "model")
    assert (tmp_path / "model" / ARCHIVE).is_file()
    body = invocation_body(version)
    with sagemaker_serve(MODELPORT_SAGEMAKER_MODEL_DIR=str(tmp_path / "model")) as base:
        response = httpx.post(
            f"{base}/invocations",
            content=body,
            headers={"content-type": "application/json", "accept": "application/json"},
        )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) >= 1
