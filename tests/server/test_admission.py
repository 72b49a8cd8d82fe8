"""One admission pipeline: every request, on every path and transport, passes the same steps and
the same error handler; protocol code maps no errors itself."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import modelport
from modelport.server.app import build_app
from modelport.server.guard import Access, Gate, Need
from modelport.serving.manager import ModelManager
from modelport.settings import Settings
from tests.support.serving import client_for

PROTOCOLS = Path(modelport.__file__).parent / "protocols"
BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


@pytest.fixture
def manager(fake_manager: ModelManager) -> ModelManager:
    return fake_manager


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/models/iris/infer"),  # the fast lane
        ("POST", "/v1/models/iris:predict"),  # the fast lane, TF Serving
        ("GET", "/v2/models/iris"),  # the router
        ("GET", "/v2/health/ready"),  # open
        ("GET", "/v3/nothing"),  # no route at all
    ],
)
async def test_every_answer_carries_a_request_id_and_a_sane_one_is_kept(
    manager: ModelManager, settings: Settings, method: str, path: str
) -> None:
    async with client_for(build_app(settings, manager=manager)) as client:
        body = BODY if "infer" in path else {"instances": [[1, 2, 3, 4]]} if "predict" in path else None
        fresh = await client.request(method, path, json=body)
        kept = await client.request(method, path, json=body, headers={"x-request-id": "abc-123"})
        odd = await client.request(method, path, json=body, headers={"x-request-id": "no spaces\tor tabs"})
    assert len(fresh.headers["x-request-id"]) == 16
    assert kept.headers["x-request-id"] == "abc-123"
    assert odd.headers["x-request-id"] != "no spaces\tor tabs"


async def test_malformed_json_to_the_repository_index_is_400_not_500(tmp_path: Path, iris: Any) -> None:
    from modelport.auth.keys import KeyStore
    from modelport.registry.registry import Registry
    from tests.support.serving import register_iris

    settings = Settings(home=tmp_path / "home")
    register_iris(settings, iris)
    with Registry.open(settings) as registry:
        _, key = KeyStore(registry.engine).create(["manage"], "test")
    app = build_app(settings.with_(models=("iris@production",), enable_management=True))
    async with client_for(app) as client:
        response = await client.post(
            "/v2/repository/index", content=b"{not json", headers={"Authorization": f"Bearer {key}"}
        )
    assert response.status_code == 400, response.text
    assert "not valid JSON" in response.json()["error"]


async def test_other_methods_on_the_inference_paths_are_405(manager: ModelManager, settings: Settings) -> None:
    async with client_for(build_app(settings, manager=manager)) as client:
        for path in ("/v2/models/iris/infer", "/v2/models/iris/versions/1/infer", "/v1/models/iris:predict"):
            response = await client.get(path)
            assert response.status_code == 405, (path, response.text)
            assert response.headers["allow"] == "POST"
            assert response.json() == {"error": f"no such endpoint: GET {path}"}


async def test_unknown_paths_answer_json_404(manager: ModelManager, settings: Settings) -> None:
    async with client_for(build_app(settings, manager=manager)) as client:
        response = await client.delete("/v3/anything")
    assert response.status_code == 404
    assert response.json() == {"error": "no such endpoint: DELETE /v3/anything"}


def test_protocol_modules_map_no_errors_themselves() -> None:
    """Domain errors reach the one handler of their transport: no protocol catches ModelportError."""
    catching = []
    for path in sorted(PROTOCOLS.rglob("*.py")):
        if "proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = [n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)]
                if "ModelportError" in names:
                    catching.append(f"{path.relative_to(PROTOCOLS)}:{node.lineno}")
    assert catching == []


def test_the_gate_remembers_a_bounded_number_of_paths(settings: Settings) -> None:
    """Paths are the caller's to choose: the policy cache may not grow with them."""
    gate = Gate(settings, lambda: None)
    for n in range(3 * Gate.CACHE_PATHS):
        assert gate.need(f"/v2/models/m{n}/infer") == Need(Access.INFER, f"m{n}")
        assert len(gate._needs) <= Gate.CACHE_PATHS
    assert gate.need("/v2/health/live") == Need(Access.OPEN)


# -- one policy over both transports ----------------------------------------------------------------

POLICY = [  # (credentials, what the caller asks for, HTTP status) -- gRPC must answer the same
    (None, "infer", 401),
    ("mp_0123456789ab_not-the-secret", "infer", 401),
    ("churn key", "infer", 403),
    ("churn key", "metadata", 200),  # any valid credentials read the server's metadata
    ("iris key", "infer", 200),
    (None, "ready", 200),  # open
]


@pytest.fixture
def keyed(tmp_path: Path, iris: Any) -> tuple[Settings, dict[str, str]]:
    """Iris registered, and API keys: one for iris, one for another model, one to scrape metrics."""
    from modelport.auth.keys import KeyStore
    from modelport.registry.registry import Registry
    from tests.support.serving import register_iris

    settings = Settings(home=tmp_path / "home")
    register_iris(settings, iris)
    with Registry.open(settings) as registry:
        keys = KeyStore(registry.engine)
        secrets = {
            name: keys.create([scope])[1]
            for name, scope in [("iris key", "infer:iris"), ("churn key", "infer:churn"), ("scraper", "metrics")]
        }
    return settings, secrets


@pytest.mark.slow
def test_one_admission_policy_answers_http_and_grpc_alike(
    keyed: tuple[Settings, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    """Each case through V2 REST and V2 gRPC against one server: the same outcome (gRPC's code is
    the HTTP status's), the same message, the refusal logged with the request id and counted by
    reason, the request counted and written to the access log once per transport."""
    grpc = pytest.importorskip("grpc")
    from modelport.protocols.grpc.proto import grpc_predict_v2_pb2 as pb
    from modelport.server.grpc import _CODES
    from tests.observability.test_metrics import samples, value
    from tests.server.test_transports import http_and_grpc

    settings, secrets = keyed
    codes = {code: status for status, code in _CODES.items() if status != 429} | {grpc.StatusCode.OK: 200}
    app = build_app(settings.with_(models=("iris@production",), grpc_port=0, access_log=True, log_format="json"))
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([5.1, 3.5, 1.4, 0.2])
    http_calls = {
        "infer": ("POST", "/v2/models/iris/infer"),
        "metadata": ("GET", "/v2"),
        "ready": ("GET", "/v2/health/ready"),
    }
    outcomes: dict[str, list[tuple[int, str]]] = {"http": [], "grpc": []}
    with caplog.at_level("INFO", logger="modelport"), http_and_grpc(app) as (_, client, stub):

        def over_grpc(asked: str, metadata: tuple[tuple[str, str], ...]) -> None:
            if asked == "infer":
                stub.ModelInfer(request, metadata=metadata)
            elif asked == "metadata":
                stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=metadata)
            else:
                stub.ServerReady(pb.ServerReadyRequest(), metadata=metadata)

        for number, (credential, asked, _) in enumerate(POLICY):
            secret = secrets.get(credential, credential) if credential is not None else None
            auth = {} if secret is None else {"authorization": f"Bearer {secret}"}
            method, path = http_calls[asked]
            headers = {"x-request-id": f"http-{number}", **auth}
            answer = client.request(method, path, json=BODY if method == "POST" else None, headers=headers)
            outcomes["http"].append((answer.status_code, answer.json().get("error", "")))
            metadata = (("x-request-id", f"grpc-{number}"), *auth.items())
            try:
                over_grpc(asked, metadata)
                outcomes["grpc"].append((200, ""))
            except grpc.RpcError as error:
                outcomes["grpc"].append((codes[error.code()], error.details()))
        found = samples(client.get("/metrics", headers={"authorization": f"Bearer {secrets['scraper']}"}).text)
    assert [status for status, _ in outcomes["http"]] == [status for _, _, status in POLICY]
    assert outcomes["grpc"] == outcomes["http"]
    for number, (_, _, status) in enumerate(POLICY):
        for transport in ("http", "grpc"):
            refusal = f"(request {transport}-{number}): "
            assert any(refusal in r.getMessage() for r in caplog.records if r.name == "modelport") == (status >= 400)
    lines = [vars(r)["access"] for r in caplog.records if r.name == "modelport.access"]
    logged = {line["request_id"]: line["status"] for line in lines if "-" in line["request_id"]}
    assert logged == {f"{t}-{n}": status for n, (_, _, status) in enumerate(POLICY) for t in ("http", "grpc")}
    assert value(found, "modelport_auth_failures_total", reason="missing") == 2
    assert value(found, "modelport_auth_failures_total", reason="invalid") == 2
    assert value(found, "modelport_auth_failures_total", reason="forbidden") == 2
