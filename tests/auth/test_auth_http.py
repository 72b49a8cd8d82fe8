"""The auth matrix over HTTP, per protocol (V2 REST, TF Serving REST), against a real registry and model."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from modelport.auth.authenticator import build_authenticator
from modelport.auth.keys import KeyStore
from modelport.registry.registry import Registry
from modelport.server.app import build_app
from modelport.serving.manager import ModelManager
from modelport.settings import Settings
from tests.support.serving import DirectorySource, client_for, fake_version, register_iris
from tests.support.tokens import AUDIENCE, ISSUER, Signer

IrisData = tuple[pd.DataFrame, np.ndarray]
ROW = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}
V2_BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": list(ROW.values())}]}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: object = None


# Each protocol's inference call and model metadata call for model "iris".
PROTOCOLS = {
    "v2": (Call("POST", "/v2/models/iris/infer", V2_BODY), Call("GET", "/v2/models/iris")),
    "tfserving": (
        Call("POST", "/v1/models/iris:predict", {"instances": [ROW]}),
        Call("GET", "/v1/models/iris/metadata"),
    ),
}


@dataclass(frozen=True)
class World:
    settings: Settings
    signer: Signer
    keys: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, iris: tuple[pd.DataFrame, np.ndarray]) -> World:
    root = tmp_path_factory.mktemp("auth-http")
    signer = Signer.rsa()
    settings = Settings(
        home=root / "home",
        models=("iris@production",),
        poll_seconds=0.1,
        jwt_public_key=signer.write_pem(root / "issuer.pem"),
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    register_iris(settings, iris)
    with Registry.open(settings) as registry:
        store = KeyStore(registry.engine)
        keys = {scope: store.create([scope], f"test {scope}")[1] for scope in ("infer", "infer:iris", "infer:other")}
        keys["manage"] = store.create(["manage"], "ops")[1]
        keys["metrics"] = store.create(["metrics"], "prometheus")[1]
    return World(settings, signer, keys)


async def send(client: httpx.AsyncClient, call: Call, headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.request(call.method, call.path, json=call.body, headers=headers)


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def assert_unauthenticated(response: httpx.Response, message: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert message in response.json()["error"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_health_is_open_and_inference_without_credentials_is_401(world: World, protocol: str) -> None:
    infer, metadata = PROTOCOLS[protocol]
    async with client_for(build_app(world.settings)) as client:
        live, ready = await client.get("/v2/health/live"), await client.get("/v2/health/ready")
        assert (live.status_code, live.json()) == (200, {"live": True})
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        assert_unauthenticated(await send(client, infer), "this endpoint needs credentials")
        assert_unauthenticated(await send(client, metadata), "this endpoint needs credentials")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unknown_or_malformed_key_is_401(world: World, protocol: str) -> None:
    infer, _ = PROTOCOLS[protocol]
    good = world.keys["infer"]
    wrong_secret = good[:-2] + ("xx" if not good.endswith("xx") else "yy")
    async with client_for(build_app(world.settings)) as client:
        assert_unauthenticated(await send(client, infer, bearer(wrong_secret)), "invalid API key")
        assert_unauthenticated(await send(client, infer, {"X-API-Key": wrong_secret}), "invalid API key")
        assert_unauthenticated(await send(client, infer, {"X-API-Key": "letmein"}), "malformed API key")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_key_for_another_model_is_403_on_inference_and_metadata(world: World, protocol: str) -> None:
    async with client_for(build_app(world.settings)) as client:
        for call in PROTOCOLS[protocol]:
            response = await send(client, call, bearer(world.keys["infer:other"]))
            assert response.status_code == 403, response.text
            assert "needs scope 'infer' or 'infer:iris'" in response.json()["error"]
            assert "www-authenticate" not in response.headers


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("credential", ["infer", "infer:iris", "manage", "jwt", "jwt-list-scope"])
async def test_valid_key_or_token_with_the_scope_is_200(world: World, protocol: str, credential: str) -> None:
    if credential == "jwt":
        headers = bearer(world.signer.token(scope="openid infer:iris"))
    elif credential == "jwt-list-scope":
        headers = bearer(world.signer.token(scope=["infer"]))
    elif credential == "infer:iris":
        headers = {"X-API-Key": world.keys[credential]}
    else:
        headers = bearer(world.keys[credential])
    async with client_for(build_app(world.settings)) as client:
        for call in PROTOCOLS[protocol]:
            response = await send(client, call, headers)
            assert response.status_code == 200, response.text
        assert response.headers.get("modelport-model-version") in (None, "1")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("token_args", "message"),
    [({"expires_in": -600}, "has expired"), ({"issuer": "https://evil.test/"}, "not issued by")],
    ids=["expired", "wrong-issuer"],
)
async def test_expired_or_foreign_token_is_401(
    world: World, protocol: str, token_args: dict[str, object], message: str
) -> None:
    infer, _ = PROTOCOLS[protocol]
    token = world.signer.token(scope="infer", **token_args)  # type: ignore[arg-type]
    async with client_for(build_app(world.settings)) as client:
        assert_unauthenticated(await send(client, infer, bearer(token)), message)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_revoked_key_is_refused_within_the_poll_period(world: World, protocol: str) -> None:
    infer, _ = PROTOCOLS[protocol]
    with Registry.open(world.settings) as registry:
        store = KeyStore(registry.engine)
        record, key = store.create(["infer"], "to be revoked")
        async with client_for(build_app(world.settings)) as client:
            assert (await send(client, infer, bearer(key))).status_code == 200
            store.revoke(record.id)
            revoked_at = time.monotonic()
            deadline = revoked_at + 20 * world.settings.poll_seconds + 10  # generous on a loaded machine
            while (response := await send(client, infer, bearer(key))).status_code == 200:
                assert time.monotonic() < deadline, "the revoked key still works"
                await asyncio.sleep(0.02)
            assert_unauthenticated(response, f"API key {record.id} was revoked")


async def test_server_metadata_and_docs_need_any_valid_credentials(world: World) -> None:
    async with client_for(build_app(world.settings)) as client:
        for path in ("/v2", "/openapi.json", "/docs"):
            assert_unauthenticated(await client.get(path), "needs credentials")
            assert (await client.get(path, headers=bearer(world.keys["infer:other"]))).status_code == 200


async def test_management_endpoints_are_404_unless_enabled_even_for_a_manage_key(world: World) -> None:
    async with client_for(build_app(world.settings)) as client:
        for headers in (None, bearer(world.keys["manage"])):
            response = await client.post("/v2/repository/index", json={}, headers=headers)
            assert response.status_code == 404, response.text
            assert "--enable-management" in response.json()["error"]


async def test_management_endpoints_need_the_manage_scope(world: World) -> None:
    settings = world.settings.with_(enable_management=True)
    async with client_for(build_app(settings)) as client:
        assert_unauthenticated(await client.post("/v2/repository/index", json={}), "needs credentials")
        for scope in ("infer", "infer:iris"):
            response = await client.post("/v2/repository/index", json={}, headers=bearer(world.keys[scope]))
            assert response.status_code == 403, response.text
            assert "need scope 'manage'" in response.json()["error"]
        token = world.signer.token(scope="infer")
        assert (await client.post("/v2/repository/index", json={}, headers=bearer(token))).status_code == 403
        response = await client.post("/v2/repository/index", json={}, headers=bearer(world.keys["manage"]))
        assert response.status_code == 200, response.text
        assert any(entry["name"] == "iris" for entry in response.json())


async def test_key_material_never_reaches_the_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    infer, _ = PROTOCOLS["v2"]
    key = world.keys["infer"]
    secret = key.split("_", 2)[2]
    wrong = key[:-4] + "abcd"
    token = world.signer.token(scope="infer")
    expired = world.signer.token(scope="infer", expires_in=-600)
    caplog.set_level(logging.DEBUG)
    async with client_for(build_app(world.settings.with_(log_level="debug"))) as client:
        for headers in (bearer(key), {"X-API-Key": key}, bearer(wrong), bearer(token), bearer(expired)):
            await send(client, infer, headers)
            await client.get("/v2/models/nope", headers=headers)
        await client.post("/v1/models/iris:predict", content=b"{not json", headers=bearer(key))
    logged = caplog.text + " ".join(str(record.args) for record in caplog.records)
    assert "refused POST /v2/models/iris/infer" in logged, "refusals are logged (without the credentials)"
    for material in (secret, wrong.split("_", 2)[2], token, token.split(".")[2], expired.split(".")[2]):
        assert material not in logged


async def test_loopback_server_without_keys_is_open_until_a_key_appears(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", poll_seconds=0.1)
    source = DirectorySource([fake_version(tmp_path)])
    manager = ModelManager(source)
    await manager.load(["iris"])
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.9, 3.0, 5.1, 1.8]}]}
    try:
        with Registry.open(settings) as registry:
            authenticator = build_authenticator(settings, registry)
            app = build_app(settings, manager=manager, authenticator=authenticator)
            async with client_for(app) as client:
                assert (await client.post("/v2/models/iris/infer", json=body)).status_code == 200
                record, key = KeyStore(registry.engine).create(["infer"])
                deadline = time.monotonic() + 10
                while (response := await client.post("/v2/models/iris/infer", json=body)).status_code == 200:
                    assert time.monotonic() < deadline, "a new key did not switch authentication on"
                    await asyncio.sleep(0.02)
                assert_unauthenticated(response, "needs credentials")
                assert (await client.post("/v2/models/iris/infer", json=body, headers=bearer(key))).status_code == 200
                KeyStore(registry.engine).revoke(record.id)
                authenticator.refresh()
                assert authenticator.enabled
                assert (await client.post("/v2/models/iris/infer", json=body)).status_code == 401
    finally:
        manager.close()


async def test_openapi_shows_a_key_scoped_to_one_model_only_that_model(tmp_path: Path, iris: IrisData) -> None:
    from sklearn.linear_model import LogisticRegression

    from modelport.api import register

    settings = Settings(home=tmp_path / "home", models=("iris", "other"))
    register_iris(settings, iris)
    frame, labels = iris
    register(
        LogisticRegression(max_iter=300).fit(frame, labels), name="other", sample_input=frame.head(5), settings=settings
    )
    with Registry.open(settings) as registry:
        store = KeyStore(registry.engine)
        keys = {scope: store.create([scope])[1] for scope in ("infer:iris", "infer:other", "infer")}
    async with client_for(build_app(settings)) as client:
        docs = {scope: (await client.get("/openapi.json", headers=bearer(key))).json() for scope, key in keys.items()}
    for scope, shown in (("infer:iris", {"iris"}), ("infer:other", {"other"}), ("infer", {"iris", "other"})):
        doc = docs[scope]
        models = {
            path.split("/")[3].split(":")[0] for path in doc["paths"] if path.startswith(("/v1/models/", "/v2/models/"))
        }
        assert models == shown, scope
        assert {name.split(".")[0] for name in doc["components"]["schemas"] if "." in name} == shown, scope
        hidden = {"iris", "other"} - shown
        assert not any(f"{name}@" in doc["info"]["description"] for name in hidden), scope
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        infer = doc["paths"][f"/v2/models/{next(iter(shown))}/infer"]["post"]
        assert {"401", "403"} <= set(infer["responses"])


async def test_metrics_need_the_metrics_scope_and_count_callers_and_refusals(world: World) -> None:
    from tests.observability.test_metrics import samples, value

    infer, _ = PROTOCOLS["v2"]
    async with client_for(build_app(world.settings)) as client:
        assert_unauthenticated(await client.get("/metrics"), "this endpoint needs credentials")
        refused = await client.get("/metrics", headers=bearer(world.keys["infer"]))
        assert refused.status_code == 403
        assert "needs scope 'metrics' or 'manage'" in refused.json()["error"]
        scraper = bearer(world.keys["metrics"])
        assert (await send(client, infer, scraper)).status_code == 403  # a scraping key cannot call a model
        assert (await send(client, infer, bearer(world.keys["infer"]))).status_code == 200
        assert (await send(client, infer, bearer(world.keys["infer"]))).status_code == 200
        assert (await send(client, infer, bearer(world.keys["infer"] + "x"))).status_code == 401
        assert (await client.get("/metrics", headers=bearer(world.keys["manage"]))).status_code == 200
        scrape = await client.get("/metrics", headers=scraper)
    assert scrape.status_code == 200
    found = samples(scrape.text)
    infer_id = world.keys["infer"].split("_")[1]
    metrics_id = world.keys["metrics"].split("_")[1]
    assert value(found, "modelport_client_requests_total", client=infer_id) == 2  # refused calls are not the client's
    manage_id = world.keys["manage"].split("_")[1]
    assert value(found, "modelport_client_requests_total", client=manage_id) == 1
    # the scraper's refused call is not counted as its request, and this scrape is not done yet
    assert ("modelport_client_requests_total", (("client", metrics_id),)) not in found
    assert value(found, "modelport_auth_failures_total", reason="missing") == 1
    assert value(found, "modelport_auth_failures_total", reason="invalid") == 1
    assert value(found, "modelport_auth_failures_total", reason="forbidden") == 2
    assert value(found, "modelport_auth_failures_total", reason="not_loopback") == 0
    assert all(world.keys["infer"] not in line for line in scrape.text.splitlines())  # ids, never keys
