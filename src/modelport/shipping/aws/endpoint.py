"""Deploying exported versions to SageMaker endpoints, through boto3 clients handed in.

The path is the classic one: the export's ``model.tar.gz`` in S3, a SageMaker model (the image,
the data URL, the role), an endpoint configuration (production variants, data capture), an
endpoint, a wait until it is in service, and one test invocation. :class:`SageMakerDeployer`
does each step with the ``sagemaker``, ``s3`` and ``sagemaker-runtime`` clients it is given (the
command line makes real ones; tests pass moto- or Stubber-backed ones), reporting progress as it
goes, and turns AWS errors into modelport errors (:func:`aws_errors`).

Names and plans come from :mod:`modelport.shipping.aws.endpoint_plan`. Models and endpoint
configurations carry the tag ``modelport:endpoint``, by which :meth:`SageMakerDeployer.delete`
also finds those an update left behind. boto3 and botocore are imported only inside functions:
the ``aws`` extra is optional.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelport.errors import Conflict, InvalidSetting, ModelportError, NotFound
from modelport.registry.export import export_version
from modelport.shipping.aws import aws_errors
from modelport.shipping.aws.endpoint_plan import (
    EndpointSpec,
    Invocation,
    S3Location,
    check_weights,
    plan_weights,
    resource_name,
    single_model_key,
    target_model,
    variant_name,
)
from modelport.types import ModelVersion

GUIDE = "docs/sagemaker.md"  # where the IAM permissions are listed


def _absent(exc: BaseException) -> bool:
    return isinstance(exc, NotFound) or "Could not find" in str(exc)


TAG = "modelport:endpoint"
REF_TAG = "modelport:ref"
JSON = "application/json"
_KEPT = (  # ProductionVariant fields copied from a current configuration into the next one
    "VariantName",
    "ModelName",
    "InitialInstanceCount",
    "InstanceType",
    "AcceleratorType",
    "ServerlessConfig",
    "VolumeSizeInGB",
    "ModelDataDownloadTimeoutInSeconds",
    "ContainerStartupHealthCheckTimeoutInSeconds",
    "RoutingConfig",
)

Report = Callable[[str], None]


# -- deployer -----------------------------------------------------------------------------------


class SageMakerDeployer:
    """Deploy, update, shift, promote and delete SageMaker endpoints with the clients given.

    ``report`` gets one line per step; ``sleep``, ``clock`` and ``now`` are injectable for tests.
    """

    def __init__(
        self,
        sagemaker: Any,
        s3: Any,
        runtime: Any,
        *,
        report: Report,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sagemaker, self.s3, self.runtime = sagemaker, s3, runtime
        self.report, self.sleep, self.clock, self.now = report, sleep, clock, now

    # -- building blocks --

    def stamp(self) -> str:
        return self.now().strftime("%y%m%d%H%M%S")

    def upload_export(self, version: ModelVersion, artifact: Path, location: S3Location, key: str) -> str:
        """Export ``version`` and put its ``model.tar.gz`` at ``key`` (unless the same bytes are there)."""
        uri = location.uri(key)
        with tempfile.TemporaryDirectory(prefix="modelport-sagemaker-") as scratch:
            archive = export_version(version, artifact, Path(scratch) / "export")
            size = archive.stat().st_size
            with aws_errors(GUIDE):
                if self._object_size(location.bucket, key) == size:
                    self.report(f"{uri} already holds {version.ref} ({size} bytes): not uploaded again")
                    return uri
                self.report(f"uploading {version.ref} ({size} bytes) to {uri}")
                self.s3.upload_file(str(archive), location.bucket, key)
        return uri

    def _object_size(self, bucket: str, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(self.s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound", "403"):
                return None  # 403: no s3:ListBucket, so S3 will not say; PutObject then tells
            raise

    def create_model(
        self, name: str, spec: EndpointSpec, data_url: str, tags: list[dict[str, str]], *, multi_model: bool = False
    ) -> None:
        container: dict[str, Any] = {"Image": spec.image, "ModelDataUrl": data_url}
        environment = dict(spec.environment)
        if multi_model:
            container["Mode"] = "MultiModel"
            environment["SAGEMAKER_MULTI_MODEL"] = "true"  # what modelport's container reads
        if environment:
            container["Environment"] = environment
        with aws_errors(GUIDE):
            self.sagemaker.create_model(
                ModelName=name, PrimaryContainer=container, ExecutionRoleArn=spec.role, Tags=tags
            )
        self.report(f"created model {name} ({spec.image}, {data_url})")

    def create_config(
        self, name: str, variants: list[dict[str, Any]], capture: Mapping[str, Any] | None, tags: list[dict[str, str]]
    ) -> None:
        params: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": variants, "Tags": tags}
        if capture:
            params["DataCaptureConfig"] = dict(capture)
        with aws_errors(GUIDE):
            self.sagemaker.create_endpoint_config(**params)
        shares = ", ".join(
            f"{v['VariantName']} ({v['ModelName']}) weight {v['InitialVariantWeight']:g}" for v in variants
        )
        self.report(f"created endpoint configuration {name}: {shares}")

    def describe(self, endpoint: str) -> dict[str, Any] | None:
        """DescribeEndpoint's answer, or None when there is no such endpoint."""
        try:
            with aws_errors(GUIDE):
                return dict(self.sagemaker.describe_endpoint(EndpointName=endpoint))
        except ModelportError as exc:
            if _absent(exc):
                return None
            raise

    def in_service(self, endpoint: str) -> dict[str, Any]:
        """DescribeEndpoint's answer for an endpoint that is InService (others are refused)."""
        described = self.describe(endpoint)
        if described is None:
            raise NotFound(f"no SageMaker endpoint {endpoint}: deploy it first (without --update)")
        status = described.get("EndpointStatus")
        if status != "InService":
            raise Conflict(f"endpoint {endpoint} is {status}, not InService: wait for it, then try again")
        return described

    def current_variants(self, endpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The endpoint (in service) and its configuration."""
        described = self.in_service(endpoint)
        with aws_errors(GUIDE):
            config = self.sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
        return described, dict(config)

    def wait(self, endpoint: str, timeout_s: float, poll_s: float = 30.0) -> None:
        """Wait with the ``endpoint_in_service`` waiter, one poll at a time, reporting each status."""
        from botocore.exceptions import WaiterError

        waiter = self.sagemaker.get_waiter("endpoint_in_service")
        deadline = self.clock() + timeout_s
        started = self.clock()
        while True:
            try:
                with aws_errors(GUIDE):
                    waiter.wait(EndpointName=endpoint, WaiterConfig={"Delay": 1, "MaxAttempts": 1})
            except WaiterError as exc:
                answer = exc.last_response or {}
                if "Max attempts exceeded" not in str(exc):
                    reason = answer.get("FailureReason") or answer.get("Error", {}).get("Message") or exc.reason
                    raise ModelportError(
                        f"endpoint {endpoint} did not come into service: {answer.get('EndpointStatus', '')} {reason}"
                    ) from None
                status = str(answer.get("EndpointStatus", "?"))
                elapsed = self.clock() - started
                self.report(f"endpoint {endpoint}: {status} ({elapsed:.0f}s)")
                if self.clock() + poll_s > deadline:
                    raise ModelportError(
                        f"endpoint {endpoint} is still {status} after {elapsed:.0f}s (--timeout {timeout_s:g}); "
                        f"it goes on in AWS: aws sagemaker describe-endpoint --endpoint-name {endpoint}"
                    ) from None
                self.sleep(poll_s)
                continue
            self.report(f"endpoint {endpoint} is InService ({self.clock() - started:.0f}s)")
            return

    def invoke(self, endpoint: str, invocation: Invocation, target_variant: str | None = None) -> str:
        """One InvokeEndpoint with the test body; the answer as text."""
        params: dict[str, Any] = {"EndpointName": endpoint, "ContentType": JSON, "Accept": JSON}
        params["Body"] = invocation.body
        if invocation.target_model:
            params["TargetModel"] = invocation.target_model
        if target_variant:
            params["TargetVariant"] = target_variant
        with aws_errors(GUIDE):
            answer = self.runtime.invoke_endpoint(**params)
            body = answer["Body"].read()
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body)
        where = "".join(f" {k}={params[k]}" for k in ("TargetModel", "TargetVariant") if k in params)
        self.report(f"test invocation of {endpoint}{where}: {text}")
        return text

    def _capture(self, spec: EndpointSpec) -> dict[str, Any] | None:
        if spec.data_capture is None:
            return None
        S3Location.parse(spec.data_capture)
        if not 0 < spec.capture_percent <= 100:
            raise InvalidSetting(f"--capture-percent must be between 1 and 100, not {spec.capture_percent}")
        return {
            "EnableCapture": True,
            "InitialSamplingPercentage": spec.capture_percent,
            "DestinationS3Uri": spec.data_capture,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": [JSON], "CsvContentTypes": ["text/csv"]},
        }

    @staticmethod
    def variant(name: str, model: str, instance_type: str, count: int, weight: float) -> dict[str, Any]:
        return {
            "VariantName": name,
            "ModelName": model,
            "InstanceType": instance_type,
            "InitialInstanceCount": count,
            "InitialVariantWeight": weight,
        }

    @staticmethod
    def tags(endpoint: str, ref: str) -> list[dict[str, str]]:
        return [{"Key": TAG, "Value": endpoint}, {"Key": REF_TAG, "Value": ref[:256]}]

    def _finish(
        self, endpoint: str, wait: bool, timeout_s: float, tests: Sequence[Invocation], variant: str | None
    ) -> None:
        if not wait:
            self.report(f"not waiting: aws sagemaker wait endpoint-in-service --endpoint-name {endpoint}")
            return
        self.wait(endpoint, timeout_s)
        for invocation in tests:
            self.invoke(endpoint, invocation, variant)

    # -- commands --

    def deploy(
        self,
        versions: Sequence[tuple[ModelVersion, Path]],
        *,
        endpoint: str,
        spec: EndpointSpec,
        location: S3Location,
        tests: Sequence[Invocation],
        multi_model: bool = False,
        wait: bool = True,
        timeout_s: float = 1800.0,
    ) -> None:
        """A new endpoint serving one version, or (``multi_model``) every version given by target model."""
        if not spec.instance_type:
            raise InvalidSetting("--instance-type is needed to create an endpoint (e.g. ml.m5.large)")
        if not versions or (len(versions) > 1 and not multi_model):
            raise InvalidSetting("give one REF (several only with --multi-model)")
        capture = self._capture(spec)
        if self.describe(endpoint) is not None:
            raise Conflict(
                f"endpoint {endpoint} exists: move it to this version with --update, or remove it with --delete"
            )
        first, _ = versions[0]
        if multi_model:
            for version, artifact in versions:
                self.upload_export(version, artifact, location, location.key(f"{endpoint}/{target_model(version)}"))
            data_url = location.uri(location.key(f"{endpoint}/"))
            label, variant = "mme", "multi-model"
        else:
            data_url = self.upload_export(first, versions[0][1], location, single_model_key(location, first))
            label, variant = f"{first.name}-v{first.version}", variant_name(first)
        name = resource_name(endpoint, label, self.stamp())
        tags = self.tags(endpoint, ", ".join(v.ref for v, _ in versions))
        self.create_model(name, spec, data_url, tags, multi_model=multi_model)
        count = spec.instance_count or 1
        self.create_config(name, [self.variant(variant, name, spec.instance_type, count, 1.0)], capture, tags)
        with aws_errors(GUIDE):
            self.sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=name, Tags=tags[:1])
        self.report(f"created endpoint {endpoint} (configuration {name}); it takes several minutes to start")
        self._finish(endpoint, wait, timeout_s, tests, None)

    def update(
        self,
        version: ModelVersion,
        artifact: Path,
        *,
        endpoint: str,
        spec: EndpointSpec,
        location: S3Location,
        test: Invocation,
        weights: Mapping[str, float] | None = None,
        canary_percent: int | None = None,
        wait: bool = True,
        timeout_s: float = 1800.0,
    ) -> None:
        """Blue/green: a new model and configuration for ``version`` (plus the variants kept), UpdateEndpoint."""
        described, config = self.current_variants(endpoint)
        current = [dict(v) for v in config["ProductionVariants"]]
        live = {str(v["VariantName"]): float(v.get("CurrentWeight", 0.0)) for v in described["ProductionVariants"]}
        new = variant_name(version)
        plan = plan_weights(live, new, weights or {}, canary_percent)
        capture = self._capture(spec) or config.get("DataCaptureConfig")
        primary = max(current, key=lambda v: live.get(str(v["VariantName"]), 0.0))
        instance_type = spec.instance_type or primary.get("InstanceType")
        if not instance_type:
            raise InvalidSetting(f"endpoint {endpoint}'s variant has no instance type to reuse: give --instance-type")
        data_url = self.upload_export(version, artifact, location, single_model_key(location, version))
        name = resource_name(endpoint, f"{version.name}-v{version.version}", self.stamp())
        tags = self.tags(endpoint, version.ref)
        self.create_model(name, spec, data_url, tags)
        count = spec.instance_count or int(primary.get("InitialInstanceCount", 1))
        variants = [
            {**{k: v[k] for k in _KEPT if k in v}, "InitialVariantWeight": plan[str(v["VariantName"])]}
            for v in current
            if str(v["VariantName"]) in plan
        ]
        variants.append(self.variant(new, name, str(instance_type), count, plan[new]))
        self.create_config(name, variants, capture, tags)
        with aws_errors(GUIDE):
            self.sagemaker.update_endpoint(
                EndpointName=endpoint, EndpointConfigName=name, RetainAllVariantProperties=False
            )
        previous = config["EndpointConfigName"]
        self.report(
            f"updating endpoint {endpoint} to configuration {name} (blue/green; SageMaker switches once the new "
            f"instances are healthy). Roll back: aws sagemaker update-endpoint --endpoint-name {endpoint} "
            f"--endpoint-config-name {previous}"
        )
        if len(plan) > 1:
            self.report(
                f"shift traffic: modelport deploy sagemaker --endpoint {endpoint} --weight {new}=W ...; "
                f"promote: modelport deploy sagemaker --endpoint {endpoint} --promote {new} --role ... --image ..."
            )
        self._finish(endpoint, wait, timeout_s, [test], new if len(plan) > 1 else None)

    def shift(
        self, endpoint: str, weights: Mapping[str, float], *, wait: bool = True, timeout_s: float = 600.0
    ) -> None:
        """Move traffic between the endpoint's variants in place (UpdateEndpointWeightsAndCapacities)."""
        check_weights(weights)
        described = self.in_service(endpoint)
        names = [str(v["VariantName"]) for v in described.get("ProductionVariants", [])]
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise InvalidSetting(f"endpoint {endpoint} has no variant {', '.join(unknown)} (it has {', '.join(names)})")
        desired = [{"VariantName": name, "DesiredWeight": float(weight)} for name, weight in weights.items()]
        with aws_errors(GUIDE):
            self.sagemaker.update_endpoint_weights_and_capacities(
                EndpointName=endpoint, DesiredWeightsAndCapacities=desired
            )
        shares = ", ".join(f"{name}={weight:g}" for name, weight in weights.items())
        self.report(f"shifting traffic on {endpoint}: {shares}")
        if wait:
            self.wait(endpoint, timeout_s, poll_s=10.0)

    def promote(self, endpoint: str, variant: str, *, wait: bool = True, timeout_s: float = 1800.0) -> None:
        """A configuration with ``variant`` alone, all traffic, same model and machines; UpdateEndpoint."""
        _, config = self.current_variants(endpoint)
        chosen = [dict(v) for v in config["ProductionVariants"] if v["VariantName"] == variant]
        if not chosen:
            names = ", ".join(str(v["VariantName"]) for v in config["ProductionVariants"])
            raise InvalidSetting(f"endpoint {endpoint} has no variant {variant} (it has {names})")
        kept = {**{k: chosen[0][k] for k in _KEPT if k in chosen[0]}, "InitialVariantWeight": 1.0}
        name = resource_name(endpoint, f"{variant}-only", self.stamp())
        tags = self.tags(endpoint, variant)
        self.create_config(name, [kept], config.get("DataCaptureConfig"), tags)
        with aws_errors(GUIDE):
            self.sagemaker.update_endpoint(
                EndpointName=endpoint, EndpointConfigName=name, RetainAllVariantProperties=False
            )
        self.report(f"promoting {variant} on {endpoint}: configuration {name}, all traffic")
        if wait:
            self.wait(endpoint, timeout_s)

    def delete(self, endpoint: str) -> None:
        """Delete the endpoint, its configuration(s) and model(s); absent ones are reported, not errors."""
        configs: list[str] = []
        described = self.describe(endpoint)
        if described is None:
            self.report(f"no endpoint {endpoint} (already deleted)")
        else:
            configs.append(str(described["EndpointConfigName"]))
            with aws_errors(GUIDE):
                self.sagemaker.delete_endpoint(EndpointName=endpoint)
            self.report(f"deleted endpoint {endpoint}")
        configs += [c for c in self._tagged("list_endpoint_configs", "EndpointConfigs", endpoint) if c not in configs]
        models: list[str] = []
        for config in configs:
            try:
                with aws_errors(GUIDE):
                    found = self.sagemaker.describe_endpoint_config(EndpointConfigName=config)
                    self.sagemaker.delete_endpoint_config(EndpointConfigName=config)
            except ModelportError as exc:
                if not _absent(exc):
                    raise
                self.report(f"no endpoint configuration {config} (already deleted)")
                continue
            self.report(f"deleted endpoint configuration {config}")
            models += [str(v["ModelName"]) for v in found["ProductionVariants"] if v["ModelName"] not in models]
        models += [m for m in self._tagged("list_models", "Models", endpoint) if m not in models]
        for model in models:
            try:
                with aws_errors(GUIDE):
                    self.sagemaker.delete_model(ModelName=model)
            except ModelportError as exc:
                if not _absent(exc):
                    raise
                self.report(f"no model {model} (already deleted)")
                continue
            self.report(f"deleted model {model}")
        if not configs and not models and described is None:
            self.report(f"nothing of endpoint {endpoint} is left in SageMaker")
        self.report("the model data in S3 is kept (delete it with aws s3 rm if no longer wanted)")

    def _tagged(self, operation: str, key: str, endpoint: str) -> list[str]:
        """Names of models or configurations whose name holds ``endpoint`` and whose tag says it."""
        kind = "EndpointConfig" if key == "EndpointConfigs" else "Model"
        names = []
        with aws_errors(GUIDE):
            for page in self.sagemaker.get_paginator(operation).paginate(NameContains=endpoint):
                for item in page.get(key, []):
                    name = str(item[f"{kind}Name"])
                    if endpoint not in name:
                        continue
                    tags = self.sagemaker.list_tags(ResourceArn=item[f"{kind}Arn"]).get("Tags", [])
                    if {"Key": TAG, "Value": endpoint} in tags:
                        names.append(name)
        return names
