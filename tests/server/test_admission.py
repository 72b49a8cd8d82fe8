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
