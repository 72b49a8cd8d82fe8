"""The same request through every transport (V2 REST, TF Serving REST, SageMaker /invocations and
V2 gRPC) against one real server, recorded the same way: the answer, the capture line (with the
request id the client got back), the metrics, the access-log line, the trace spans, and the outcome
of a deadline (a ``modelport-timeout`` header or a gRPC deadline)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

pytest.importorskip("opentelemetry.sdk")
grpc = pytest.importorskip("grpc")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

from modelport.protocols.grpc.proto import grpc_predict_v2_pb2 as pb  # noqa: E402
from modelport.protocols.grpc.proto.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub  # noqa: E402
from modelport.server.app import ModelportApp, build_app  # noqa: E402
from modelport.settings import Settings  # noqa: E402
from tests.observability.test_metrics import samples, value  # noqa: E402
from tests.support.models import export_sleepy_model  # noqa: E402
from tests.support.serving import running  # noqa: E402

pytestmark = pytest.mark.slow

ROWS = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]  # answered at once: totals 6 and 15
SLOW = [[1.0, 2.0, 300.0]]  # the model sleeps 1.5 s on a value over 100
PROTOCOLS = ("v2", "tfserving", "sagemaker", "grpc")
STEPS = ["decode", "queue", "inference", "encode"]
Send = Callable[[list[list[float]], str, float | None], tuple[Any, str, float]]  # -> (outcome, request id, seconds)


@contextmanager
def http_and_grpc(app: ModelportApp) -> Iterator[tuple[str, httpx.Client, GRPCInferenceServiceStub]]:
    """``app`` served by a real uvicorn and its gRPC port; yields its address, an HTTP client and a V2 gRPC stub."""
    with (
        running(app) as address,
        httpx.Client(base_url=f"http://{address}", timeout=30) as client,
        grpc.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel,
    ):
        yield address, client, GRPCInferenceServiceStub(channel)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def server(
    tmp_path: Path, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> Iterator[tuple[str, dict[str, Send], Settings]]:
    """One SageMaker-mode server (so /invocations is served beside V2 and TF Serving) with gRPC,
    capture of every request, the JSON access log and tracing on; a sender per transport."""
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(
        home=tmp_path / "home",
        sagemaker=True,
        sagemaker_model_dir=export_sleepy_model(tmp_path, 1.5, over=100),
        trust_exported_code=True,
        request_timeout=30,
        grpc_port=0,
        access_log=True,
        log_format="json",
        capture_rate=1.0,
    )
    app = build_app(settings, tracer_provider=provider)
    with caplog.at_level("INFO", logger="modelport.access"), http_and_grpc(app) as (address, client, stub):

        def rest(path: str, body: Callable[[list[list[float]]], Any]) -> Send:
            def send(rows: list[list[float]], rid: str, timeout: float | None) -> tuple[Any, str, float]:
                headers = {"x-request-id": rid} | ({} if timeout is None else {"modelport-timeout": str(timeout)})
                started = time.perf_counter()
                answer = client.post(path, json=body(rows), headers=headers)
                return answer, answer.headers["x-request-id"], time.perf_counter() - started

            return send

        def over_grpc(rows: list[list[float]], rid: str, timeout: float | None) -> tuple[Any, str, float]:
            request = pb.ModelInferRequest(model_name="slow")
            tensor = request.inputs.add(name="input", datatype="FP64", shape=[len(rows), 3])
            tensor.contents.fp64_contents.extend(np.ravel(rows).tolist())
            started = time.perf_counter()
            try:
                response, call = stub.ModelInfer.with_call(request, metadata=(("x-request-id", rid),), timeout=timeout)
            except grpc.RpcError as error:
                # the client's own deadline may end the call before the server's trailing metadata arrives
                given = dict(error.trailing_metadata() or ()).get("x-request-id", rid)
                return error, given, time.perf_counter() - started
            return response, dict(call.trailing_metadata())["x-request-id"], time.perf_counter() - started

        v2 = rest(
            "/v2/models/slow/infer",
            lambda rows: {"inputs": [{"name": "input", "shape": [len(rows), 3], "datatype": "FP64", "data": rows}]},
        )
        senders = {
            "v2": v2,
            "tfserving": rest("/v1/models/slow:predict", lambda rows: {"instances": rows}),
            "sagemaker": rest("/invocations", lambda rows: rows),
            "grpc": over_grpc,
        }
        yield address, senders, settings
        time.sleep(1.6)  # the abandoned slow calls finish before the server stops
    provider.shutdown()


def totals(protocol: str, outcome: Any) -> list[float]:
    if protocol == "grpc":
        return list(outcome.outputs[0].contents.fp64_contents)
    assert outcome.status_code == 200, outcome.text
    doc = outcome.json()
    if protocol == "v2":
        return list(doc["outputs"][0]["data"])
    return list(doc["predictions"])


def access_lines(caplog: pytest.LogCaptureFixture) -> dict[str, dict[str, Any]]:
    return {vars(r)["access"]["request_id"]: vars(r)["access"] for r in caplog.records if r.name == "modelport.access"}


def scrape(address: str, caplog: pytest.LogCaptureFixture) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The server's metrics samples, once the scrape's own access line is logged: the server writes
    it after answering, and one written as the test ends would go to pytest's closed log capture."""
    rid = f"scrape-{time.monotonic_ns()}"
    text = httpx.get(f"http://{address}/metrics", headers={"x-request-id": rid}, timeout=10).text
    for _ in range(1000):  # a bound, not a wait
        if rid in access_lines(caplog):
            break
        time.sleep(0.01)
    return samples(text)


def server_spans(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    spans = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER]
    return {str(dict(span.attributes or {}).get("modelport.request_id")): span for span in spans}


def steps(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[str]:
    found = [
        span
        for span in exporter.get_finished_spans()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]
    return [span.name for span in sorted(found, key=lambda span: (span.start_time or 0, STEPS.index(span.name)))]


def test_one_request_is_captured_counted_logged_and_traced_alike_on_every_transport(
    server: tuple[str, dict[str, Send], Settings], exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    address, senders, settings = server
    ids = {}
    for protocol, send in senders.items():
        outcome, ids[protocol], _ = send(ROWS, f"same-{protocol}", None)
        assert ids[protocol] == f"same-{protocol}"  # the caller's id, given back
        assert totals(protocol, outcome) == [6.0, 15.0], protocol
    found = scrape(address, caplog)
    for protocol in PROTOCOLS:
        labels = {"protocol": protocol, "model": "slow", "version": "1"}
        assert value(found, "modelport_requests_total", **labels, code="2xx") == 1, protocol
        assert value(found, "modelport_request_duration_seconds_count", **labels) == 1, protocol
    for _ in range(3000):  # the capture thread writes soon after; a bound, not a wait
        seen = scrape(address, caplog)
        if value(seen, "modelport_capture_samples_total", model="slow", version="1") == 4:
            break
        time.sleep(0.01)
    folder = settings.capture_root / "slow" / "1"
    lines = [orjson.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_bytes().splitlines()]
    assert all(line["inputs"] == {"input": ROWS} and line["outputs"] == {"total": [6.0, 15.0]} for line in lines)
    captured = {line["request_id"] for line in lines}
    logged, spans = access_lines(caplog), server_spans(exporter)
    recorded = {}
    for protocol, rid in ids.items():
        line, span = logged[rid], spans.get(rid)
        attributes = dict(span.attributes or {}) if span is not None else {}
        recorded[protocol] = {
            "captured with its id": rid in captured,
            "access log": (line["protocol"], line["model"], line["version"], line["rows"], line["status"]),
            "span": tuple(attributes.get(f"modelport.{key}") for key in ("protocol", "version", "rows")),
            "steps": steps(exporter, span) if span is not None else [],
        }
    assert recorded == {
        protocol: {
            "captured with its id": True,  # gRPC's captured payloads lacked it
            "access log": (protocol, "slow", 1, 2, 200),  # the inputs' rows, on every transport
            "span": (protocol, 1, 2),
            "steps": STEPS,  # SageMaker's requests were not traced through serving
        }
        for protocol in PROTOCOLS
    }


def test_a_deadline_ends_the_request_the_same_way_on_every_transport(
    server: tuple[str, dict[str, Send], Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """A 0.3 s deadline (the ``modelport-timeout`` header, or the gRPC deadline) on a 1.5 s
    prediction: answered at the deadline (504 / DEADLINE_EXCEEDED), logged and counted as 504 with
    the version and rows decoded, on every transport."""
    address, senders, _ = server
    ids, answers = {}, {}
    for protocol, send in senders.items():
        outcome, ids[protocol], seconds = send(SLOW, f"late-{protocol}", 0.3)
        if protocol == "grpc":
            answer = 504 if outcome.code() is grpc.StatusCode.DEADLINE_EXCEEDED else outcome.code()
        else:
            answer = outcome.status_code
            assert answer != 504 or "deadline of 0.3 s (the request's own timeout)" in outcome.json()["error"]
        answers[protocol] = (answer, seconds < 1.0)  # at the deadline, not when the model returns (1.5 s)
    for _ in range(1000):  # the client's own gRPC deadline may fire before the server has logged the call
        logged = access_lines(caplog)
        if set(ids.values()) <= set(logged):
            break
        time.sleep(0.01)
    found = scrape(address, caplog)
    recorded = {
        protocol: {
            "answer": answers[protocol],
            "access log": tuple(logged.get(rid, {}).get(key) for key in ("protocol", "version", "rows", "status")),
            "5xx": found.get(
                (
                    "modelport_requests_total",
                    (("code", "5xx"), ("model", "slow"), ("protocol", protocol), ("version", "1")),
                )
            ),
        }
        for protocol, rid in ids.items()
    }
    assert recorded == {
        protocol: {
            "answer": (504, True),  # SageMaker ignored the header: 200 after 1.5 s
            "access log": (protocol, 1, 1, 504),  # gRPC noted no version nor rows for a call that failed
            "5xx": 1.0,
        }
        for protocol in PROTOCOLS
    }
