"""OpenTelemetry tracing with the real SDK and its in-memory exporter: the span tree of an
inference request over V2 and TF Serving (batched or not), errors on the spans, W3C trace context
continued and returned, gRPC, and nothing at all when tracing is off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from modelport.errors import InvalidSetting
from modelport.server.app import build_app
from modelport.serving.batching import BatchSettings
from modelport.serving.manager import ModelManager
from modelport.settings import Settings
from tests.support.serving import ExplodingSource, client_for, fake_version

BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
TWO_ROWS = {"instances": [[1, 2, 3, 4], [4, 3, 2, 1]]}
STEPS = ["decode", "queue", "inference", "encode"]
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture(params=[False, True], ids=["unbatched", "batched"])
async def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    batching = BatchSettings() if request.param else None
    manager = ModelManager(ExplodingSource([fake_version(tmp_path)]), batching=batching)
    await manager.load(["iris"])
    assert (manager.get("iris").batcher is not None) is request.param
    yield manager
    manager.close()


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER]


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    found = [
        span
        for span in exporter.get_finished_spans()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]
    return sorted(found, key=lambda span: (span.start_time or 0, STEPS.index(span.name)))


def only_server_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = server_spans(exporter)
    return span


def traceparent_of(span: ReadableSpan) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def assert_steps_in_order(server: ReadableSpan, steps: list[ReadableSpan]) -> None:
    """Each step inside the server span, one after the other (decode ends when queueing starts...)."""
    assert server.start_time is not None
    assert server.end_time is not None
    moment = server.start_time
    for step in steps:
        assert step.start_time is not None
        assert step.end_time is not None
        assert step.context.trace_id == server.context.trace_id
        assert moment <= step.start_time <= step.end_time <= server.end_time, step.name
        moment = step.end_time


async def test_a_v2_inference_is_a_server_span_with_its_four_steps(
    manager: ModelManager, settings: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with client_for(build_app(settings, manager=manager, tracer_provider=provider)) as client:
        response = await client.post("/v2/models/iris/infer", json=BODY)
    assert response.status_code == 200
    server = only_server_span(exporter)
    assert server.name == "POST /v2/models/{name}/infer"
    assert server.status.status_code is StatusCode.UNSET
    attributes = dict(server.attributes or {})
    assert attributes["modelport.model"] == "iris"
    assert attributes["modelport.version"] == 1
    assert attributes["modelport.protocol"] == "v2"
    assert attributes["modelport.rows"] == 1
    assert attributes["modelport.request_id"] == response.headers["x-request-id"]
    assert attributes["http.response.status_code"] == 200
    assert attributes["http.route"] == "/v2/models/{name}/infer"
    assert server.parent is None  # no caller's trace: a root
    steps = children(exporter, server)
    assert [step.name for step in steps] == STEPS
    assert_steps_in_order(server, steps)
    assert steps[2].attributes is not None
    assert steps[2].attributes["modelport.batch_rows"] == 1
    assert all(step.status.status_code is StatusCode.UNSET for step in steps)
    assert response.headers["traceparent"] == traceparent_of(server)
    assert len(exporter.get_finished_spans()) == 5


async def test_tf_serving_predict_is_traced_with_a_bounded_name(
    manager: ModelManager, settings: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with client_for(build_app(settings, manager=manager, tracer_provider=provider)) as client:
        assert (await client.post("/v1/models/iris:predict", json=TWO_ROWS)).status_code == 200
        assert (await client.post("/v1/models/iris/versions/1:predict", json=TWO_ROWS)).status_code == 200
        missing = await client.post("/v1/models/other-7/versions/9:predict", json=TWO_ROWS)
    assert missing.status_code == 404
    first, second, third = sorted(server_spans(exporter), key=lambda span: span.start_time or 0)
    assert first.name == "POST /v1/models/{name}:predict"
    assert second.name == "POST /v1/models/{name}/versions/{version}:predict"
    assert third.name == "POST /v1/models/{name}/versions/{version}:predict"  # the caller's text is an attribute
    assert dict(first.attributes or {})["modelport.rows"] == 2
    assert dict(first.attributes or {})["modelport.protocol"] == "tfserving"
    assert dict(third.attributes or {})["modelport.model"] == "other-7"
    for span in (first, second):
        steps = children(exporter, span)
        assert [step.name for step in steps] == STEPS
        assert_steps_in_order(span, steps)


async def test_concurrent_requests_each_get_their_own_tree(
    manager: ModelManager, settings: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    import asyncio

    async with client_for(build_app(settings, manager=manager, tracer_provider=provider)) as client:
        answers = await asyncio.gather(*(client.post("/v2/models/iris/infer", json=BODY) for _ in range(8)))
    assert [answer.status_code for answer in answers] == [200] * 8
    servers = server_spans(exporter)
    assert len({span.context.trace_id for span in servers}) == 8
    assert {answer.headers["traceparent"] for answer in answers} == {traceparent_of(span) for span in servers}
    for server in servers:
        steps = children(exporter, server)
        assert [step.name for step in steps] == STEPS
        assert_steps_in_order(server, steps)
        inference = steps[2]
        assert inference.attributes is not None
        assert 1 <= int(str(inference.attributes["modelport.batch_rows"])) <= 8


async def test_a_caller_s_traceparent_is_continued_and_the_answer_names_the_server_span(
    manager: ModelManager, settings: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    headers = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "tracestate": "vendor=opaque"}
    async with client_for(build_app(settings, manager=manager, tracer_provider=provider)) as client:
        response = await client.post("/v2/models/iris/versions/1/infer", json=BODY, headers=headers)
        bad = await client.post("/v2/models/iris/infer", json=BODY, headers={"traceparent": "00-nonsense"})
    continued, fresh = sorted(server_spans(exporter), key=lambda span: span.start_time or 0)
    assert continued.name == "POST /v2/models/{name}/versions/{version}/infer"
    assert f"{continued.context.trace_id:032x}" == CALLER_TRACE
    assert continued.parent is not None
    assert f"{continued.parent.span_id:016x}" == CALLER_SPAN
    assert continued.parent.is_remote
    assert dict(continued.context.trace_state) == {"vendor": "opaque"}
    assert response.headers["traceparent"] == f"00-{CALLER_TRACE}-{continued.context.span_id:016x}-01"
    assert all(step.context.trace_id == continued.context.trace_id for step in children(exporter, continued))
    # an invalid traceparent starts a new trace rather than failing the request
    assert bad.status_code == 200
    assert fresh.parent is None
    assert f"{fresh.context.trace_id:032x}" != CALLER_TRACE


async def test_errors_are_on_the_server_span_and_on_the_step_that_failed(
    manager: ModelManager, settings: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    negative = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [-1, 2, 3, 4]}]}
    async with client_for(build_app(settings, manager=manager, tracer_provider=provider)) as client:
        bad = await client.post("/v2/models/iris/infer", json={"inputs": [{"name": "input"}]})
        failed = await client.post("/v2/models/iris/infer", json=negative)
    assert (bad.status_code, failed.status_code) == (400, 500)
    client_error, server_error = sorted(server_spans(exporter), key=lambda span: span.start_time or 0)
    # 400: the caller's fault: status left unset, the code and error.type say it; decoding failed
    attributes = dict(client_error.attributes or {})
    assert (attributes["http.response.status_code"], attributes["error.type"]) == (400, "400")
    assert client_error.status.status_code is StatusCode.UNSET
    (decode,) = children(exporter, client_error)
    assert (decode.name, decode.status.status_code) == ("decode", StatusCode.ERROR)
    assert bad.headers["traceparent"] == traceparent_of(client_error)  # error answers carry it too
    # 500: the model raised: ERROR on the server span, the exception recorded, inference failed
    attributes = dict(server_error.attributes or {})
    assert (attributes["http.response.status_code"], attributes["error.type"]) == (500, "PredictionFailed")
    assert server_error.status.status_code is StatusCode.ERROR
    assert [event.name for event in server_error.events] == ["exception"]
    steps = children(exporter, server_error)
    assert [step.name for step in steps] == ["decode", "queue", "inference"]
    assert [step.status.status_code for step in steps] == [StatusCode.UNSET, StatusCode.UNSET, StatusCode.ERROR]
    assert failed.headers["traceparent"] == traceparent_of(server_error)


async def test_other_paths_are_named_by_route_and_probes_are_not_traced(
    manager: ModelManager, settings: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with client_for(build_app(settings, manager=manager, tracer_provider=provider)) as client:
        ready = await client.get("/v2/health/ready")
        metadata = await client.get("/v2/models/iris")
        nowhere = await client.get("/no/such/path/123")
        scrape = await client.get("/metrics")
    assert "traceparent" not in ready.headers
    assert "traceparent" not in scrape.headers
    routed, missing = sorted(server_spans(exporter), key=lambda span: span.start_time or 0)
    assert routed.name == "GET /v2/models/{name}"
    assert metadata.headers["traceparent"] == traceparent_of(routed)
    assert children(exporter, routed) == []
    assert missing.name == "GET"  # no route: the method only, never the caller's path
    assert dict(missing.attributes or {})["http.response.status_code"] == 404
    assert nowhere.headers["traceparent"] == traceparent_of(missing)


async def test_tracing_off_makes_no_span_and_sends_no_traceparent(
    manager: ModelManager, settings: Settings, exporter: InMemorySpanExporter
) -> None:
    app = build_app(settings, manager=manager)
    assert app.watchers.tracing is None
    async with client_for(app) as client:
        response = await client.post("/v2/models/iris/infer", json=BODY)
    assert response.status_code == 200
    assert "traceparent" not in response.headers
    assert exporter.get_finished_spans() == ()
    # and nothing process-wide was set, by either app
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


async def test_tracing_from_settings_builds_its_own_provider_from_the_otel_variables(
    manager: ModelManager, settings: Settings
) -> None:
    app = build_app(settings.with_(tracing=True, tracing_exporter="none"), manager=manager)
    assert app.watchers.tracing is not None
    assert app.watchers.tracing.owned
    async with client_for(app) as client:
        response = await client.post("/v2/models/iris/infer", json=BODY)
    assert response.headers["traceparent"].startswith("00-")
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    with pytest.raises(
        InvalidSetting, match=r"OTEL_TRACES_EXPORTER=otlp-nowhere.*pip install opentelemetry-exporter-otlp"
    ):
        build_app(settings.with_(tracing=True, tracing_exporter="otlp-nowhere"), manager=manager)
    assert Settings.from_env({"MODELPORT_TRACING": "1", "OTEL_TRACES_EXPORTER": "Console"}).tracing_exporter == (
        "console"
    )


@pytest.mark.slow
async def test_grpc_calls_are_traced_from_and_to_metadata(
    manager: ModelManager, settings: Settings, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    grpc = pytest.importorskip("grpc")
    from modelport.protocols.grpc.proto import grpc_predict_v2_pb2 as pb
    from modelport.protocols.grpc.proto.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
    from tests.support.serving import running
    from tests.support.waiting import eventually

    app = build_app(settings.with_(grpc_port=0), manager=manager, tracer_provider=provider)
    request = pb.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[3, 4])
    tensor.contents.fp32_contents.extend([1.0] * 12)
    metadata = (("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),)
    with running(app), grpc.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        response, call = stub.ModelInfer.with_call(request, metadata=metadata)
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        with pytest.raises(grpc.RpcError) as missing:
            stub.ModelInfer(pb.ModelInferRequest(model_name="nothing"))
        await eventually(lambda: len(server_spans(exporter)) == 2, "two gRPC server spans")
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    assert response.model_version == "1"
    served, refused = sorted(server_spans(exporter), key=lambda span: span.start_time or 0)
    assert served.name == refused.name == "inference.GRPCInferenceService/ModelInfer"
    attributes = dict(served.attributes or {})
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.grpc.status_code"] == 0
    assert (attributes["modelport.protocol"], attributes["modelport.model"]) == ("grpc", "iris")
    assert (attributes["modelport.version"], attributes["modelport.rows"]) == (1, 3)
    assert f"{served.context.trace_id:032x}" == CALLER_TRACE
    trailing = dict(call.trailing_metadata())
    assert trailing["traceparent"] == f"00-{CALLER_TRACE}-{served.context.span_id:016x}-01"
    assert attributes["modelport.request_id"] == trailing["x-request-id"]
    steps = children(exporter, served)
    assert [step.name for step in steps] == STEPS
    assert_steps_in_order(served, steps)
    assert dict(refused.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert dict(refused.attributes or {})["error.type"] == "404"


async def test_a_request_the_sampler_leaves_out_makes_no_span_but_answers_its_trace_context(
    manager: ModelManager, settings: Settings, exporter: InMemorySpanExporter
) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with client_for(build_app(settings, manager=manager, tracer_provider=provider)) as client:
        response = await client.post("/v2/models/iris/infer", json=BODY)
    provider.shutdown()
    assert response.status_code == 200
    assert exporter.get_finished_spans() == ()
    flags = int(response.headers["traceparent"].rpartition("-")[2], 16)
    assert flags & 1 == 0  # not sampled, and said so: the caller may still correlate
