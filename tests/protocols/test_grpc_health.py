"""gRPC health checking (grpc.health.v1) and server reflection (v1, v1alpha) on real servers bound
to loopback port 0, called with real gRPC clients: the stubs generated from the same protocol
files, and for reflection a generic client that knows no modelport proto (as grpcurl works): it
builds the V2 messages from the descriptors the server sends and calls ModelInfer with them.
Readiness (gRPC health and /v2/health/ready) says a version failed for good, not "not loaded yet"."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.auth.keys import KeyStore
from modelport.registry.registry import Registry
from modelport.server.app import build_app
from modelport.settings import Settings
from tests.support.rollout import register_python
from tests.support.serving import register_iris, running

pytestmark = pytest.mark.slow

grpc = pytest.importorskip("grpc")
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

from modelport.protocols.grpc.proto import health_pb2 as health  # noqa: E402
from modelport.protocols.grpc.proto import reflection_v1_pb2 as reflection  # noqa: E402
from modelport.protocols.grpc.proto import reflection_v1alpha_pb2 as reflection_alpha  # noqa: E402
from modelport.protocols.grpc.proto.health_pb2_grpc import HealthStub  # noqa: E402
from modelport.protocols.grpc.proto.reflection_v1_pb2_grpc import ServerReflectionStub  # noqa: E402
from modelport.protocols.grpc.proto.reflection_v1alpha_pb2_grpc import (  # noqa: E402
    ServerReflectionStub as AlphaReflectionStub,
)

SERVING, NOT_SERVING = health.HealthCheckResponse.SERVING, health.HealthCheckResponse.NOT_SERVING
SERVICES = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "inference.GRPCInferenceService",
]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> tuple[Settings, tuple[tuple[str, str], ...]]:
    """A registry with iris@production and an API key (so authentication is on); the key as metadata."""
    settings = Settings(home=tmp_path_factory.mktemp("grpc-health") / "home")
    register_iris(settings, iris)
    with Registry.open(settings) as registry:
        key = KeyStore(registry.engine).create(["infer"])[1]
    return settings, (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
def channel(secured: tuple[Settings, Any]) -> Iterator[Any]:
    app = build_app(secured[0].with_(models=("iris@production",), grpc_port=0))
    with running(app), grpc.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        yield channel


def check(channel: Any, service: str, metadata: Any = None) -> int:
    return int(
        HealthStub(channel).Check(health.HealthCheckRequest(service=service), metadata=metadata, timeout=10).status
    )


def code_of(call: Any) -> Any:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_health_check_is_the_servers_readiness_for_everyone_and_a_models_for_its_callers(
    channel: Any, secured: tuple[Settings, Any]
) -> None:
    _, key = secured
    assert check(channel, "") == SERVING  # what Kubernetes' gRPC probe asks, without credentials
    assert check(channel, "inference.GRPCInferenceService") == SERVING
    assert check(channel, "iris", key) == SERVING
    assert code_of(lambda: check(channel, "iris"))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: check(channel, "cheese", key)) == (
        grpc.StatusCode.NOT_FOUND,
        "unknown service 'cheese': give '' (the server) or a served model's name",
    )
    listed = HealthStub(channel).List(health.HealthListRequest(), metadata=key, timeout=10)
    assert {name: status.status for name, status in listed.statuses.items()} == {
        "": SERVING,
        "inference.GRPCInferenceService": SERVING,
        "iris": SERVING,
    }


def reflect(stub: Any, metadata: Any, *requests: Any) -> list[Any]:
    return list(stub.ServerReflectionInfo(iter(requests), metadata=metadata, timeout=10))


def test_reflection_lets_a_client_without_the_proto_files_list_describe_and_call_the_v2_service(
    channel: Any, secured: tuple[Settings, Any]
) -> None:
    _, key = secured
    stub = ServerReflectionStub(channel)
    listed, described, method, unknown = reflect(
        stub,
        key,
        reflection.ServerReflectionRequest(list_services=""),
        reflection.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
        reflection.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService.ModelInfer"),
        reflection.ServerReflectionRequest(file_containing_symbol="inference.Cheese"),
    )
    assert sorted(s.name for s in listed.list_services_response.service) == SERVICES
    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert method.file_descriptor_response == described.file_descriptor_response
    # A generic client: messages built from the descriptors alone, as grpcurl builds them
    pool = descriptor_pool.DescriptorPool()
    for data in described.file_descriptor_response.file_descriptor_proto:
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(data))
    infer = pool.FindServiceByName("inference.GRPCInferenceService").methods_by_name["ModelInfer"]
    request_type = message_factory.GetMessageClass(infer.input_type)
    response_type = message_factory.GetMessageClass(infer.output_type)
    request = request_type(model_name="iris")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([5.9, 3.0, 5.1, 1.8])
    call = channel.unary_unary(
        f"/{infer.containing_service.full_name}/{infer.name}",
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    response = call(request, metadata=key, timeout=10)
    assert (response.model_name, [o.name for o in response.outputs]) == ("iris", ["label", "probabilities"])
    assert [v.decode() for v in response.outputs[0].contents.bytes_contents] == ["virginica"]
    (named,) = reflect(
        stub, key, reflection.ServerReflectionRequest(file_by_filename=infer.containing_service.file.name)
    )
    assert named.file_descriptor_response == described.file_descriptor_response
    (alpha,) = reflect(AlphaReflectionStub(channel), key, reflection_alpha.ServerReflectionRequest(list_services=""))
    assert sorted(s.name for s in alpha.list_services_response.service) == SERVICES
    refused = code_of(lambda: reflect(stub, None, reflection.ServerReflectionRequest(list_services="")))
    assert refused[0] == grpc.StatusCode.UNAUTHENTICATED  # as ServerMetadata: any valid credentials


def test_watch_sends_the_status_then_ends_with_not_serving_when_the_server_stops(
    secured: tuple[Settings, Any],
) -> None:
    app = build_app(secured[0].with_(models=("iris@production",), grpc_port=0))
    serving = running(app)
    serving.__enter__()
    channel = grpc.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    try:
        try:
            watching = HealthStub(channel).Watch(health.HealthCheckRequest(service=""), timeout=60)
            assert next(watching).status == SERVING
            started = time.monotonic()
        finally:
            serving.__exit__(None, None, None)  # the server stops with the Watch open
        stopped = time.monotonic() - started
        assert [message.status for message in watching] == [NOT_SERVING]
    finally:
        channel.close()
    assert stopped < 8, stopped  # an open Watch does not hold the stop for gRPC's 10 s grace period


def test_a_version_that_failed_for_good_is_said_to_have_failed_and_watch_sees_it_recover(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", poll_seconds=0.2)
    marker = tmp_path / "corrupt"
    marker.write_text("")
    with Registry.open(settings) as registry:
        register_python(registry, tmp_path, aliases=("production",), broken_if=str(marker))
        register_python(registry, tmp_path)  # version 2: loads
    app = build_app(settings.with_(serve_alias="production", grpc_port=0))
    with running(app) as address, grpc.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        ready = httpx.get(f"http://{address}/v2/health/ready", timeout=10)
        assert ready.status_code == 503
        reason = ready.json()["error"]
        assert reason.startswith("not ready: iris@production failed to load: cannot load iris@1"), reason
        assert "weights file is corrupt" in reason, reason
        assert "(not retried: fix it, then move the alias again or load it again)" in reason, reason
        assert check(channel, "") == NOT_SERVING
        watching = HealthStub(channel).Watch(health.HealthCheckRequest(service=""), timeout=30)
        assert next(watching).status == NOT_SERVING
        with Registry.open(settings) as registry:
            registry.set_alias("iris@2", "production")
        assert next(watching).status == SERVING  # sent when it changed, within the poll
        watching.cancel()
        assert httpx.get(f"http://{address}/v2/health/ready", timeout=10).status_code == 200
