"""V2 repository extension (index, load, unload; manage scope only) and how protocols show FAILED versions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from modelport.auth.keys import KeyStore
from modelport.registry.registry import Registry
from modelport.server.app import build_app
from modelport.settings import Settings
from tests.support.rollout import ROWS, register_fake, register_python
from tests.support.serving import client_for

BODY = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": ROWS.ravel().tolist()}]}


@pytest.fixture
def world(tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    settings = Settings(home=tmp_path / "home", models=("iris@production",), enable_management=True, poll_seconds=0.1)
    marker = tmp_path / "corrupt"
    marker.write_text("")
    with Registry.open(settings) as registry:
        register_fake(registry, tmp_path, aliases=("production",))
        register_fake(registry, tmp_path, "wine")
        register_python(registry, tmp_path, "churn", broken_if=str(marker))
        store = KeyStore(registry.engine)
        keys = {scope: store.create([scope], f"test {scope}")[1] for scope in ("infer", "manage")}
    return settings, keys


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_repository_index_load_and_unload_with_the_manage_scope(world: tuple[Settings, dict[str, str]]) -> None:
    settings, keys = world
    manage = auth(keys["manage"])
    async with client_for(build_app(settings)) as client:
        index = await client.post("/v2/repository/index", headers=manage)
        assert index.status_code == 200, index.text
        assert index.json() == [{"name": "iris", "version": "1", "state": "READY", "reason": ""}]
        loaded = await client.post("/v2/repository/models/wine/load", headers=manage)
        assert loaded.status_code == 200, loaded.text
        infer = await client.post("/v2/models/wine/infer", json=BODY, headers=auth(keys["infer"]))
        assert infer.status_code == 200
        assert infer.json()["model_version"] == "1"
        unloaded = await client.post("/v2/repository/models/wine/unload", headers=manage)
        assert unloaded.status_code == 200, unloaded.text
        gone = await client.post("/v2/models/wine/infer", json=BODY, headers=auth(keys["infer"]))
        assert gone.status_code == 404
        index = (await client.post("/v2/repository/index", json={}, headers=manage)).json()
        assert {"name": "wine", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"} in index
        ready_only = (await client.post("/v2/repository/index", json={"ready": True}, headers=manage)).json()
        assert [entry["name"] for entry in ready_only] == ["iris"]
        missing = await client.post("/v2/repository/models/nope/load", headers=manage)
        assert missing.status_code == 404
        assert "nope" in missing.json()["error"]
        forbidden = await client.post("/v2/repository/index", headers=auth(keys["infer"]))
        assert forbidden.status_code == 403
        assert (await client.post("/v2/repository/index")).status_code == 401


async def test_repository_endpoints_do_not_exist_without_enable_management(
    world: tuple[Settings, dict[str, str]],
) -> None:
    settings, keys = world
    async with client_for(build_app(settings.with_(enable_management=False))) as client:
        response = await client.post("/v2/repository/index", headers=auth(keys["manage"]))
        assert response.status_code == 404


async def test_a_failed_load_shows_in_index_v2_ready_metadata_and_tf_serving_status(
    world: tuple[Settings, dict[str, str]],
) -> None:
    settings, keys = world
    manage, infer = auth(keys["manage"]), auth(keys["infer"])
    async with client_for(build_app(settings)) as client:
        failed = await client.post("/v2/repository/models/churn/load", headers=manage)
        assert failed.status_code == 500
        assert "weights file is corrupt" in failed.json()["error"]
        index = (await client.post("/v2/repository/index", headers=manage)).json()
        (entry,) = [e for e in index if e["name"] == "churn"]
        assert entry["state"] == "UNAVAILABLE"
        assert "Model.load raised: RuntimeError: weights file is corrupt" in entry["reason"]
        for path in ("/v2/models/churn/versions/1/ready", "/v2/models/churn/versions/1"):
            response = await client.get(path, headers=infer)
            assert response.status_code == 503, path
            assert "churn@1 is not ready: cannot load churn@1" in response.json()["error"]
        status = await client.get("/v1/models/churn", headers=infer)
        assert status.status_code == 200
        (version,) = status.json()["model_version_status"]
        assert version["state"] == "END"
        assert version["status"]["error_code"] == "UNKNOWN"
        assert "weights file is corrupt" in version["status"]["error_message"]
        assert (await client.get("/v2/health/ready")).status_code == 200  # churn was never configured


async def test_server_follows_an_alias_move_made_by_another_process(world: tuple[Settings, dict[str, str]]) -> None:
    settings, keys = world
    infer = auth(keys["infer"])
    async with client_for(build_app(settings)) as client:
        with Registry.open(settings) as registry:
            register_fake(registry, settings.home, aliases=("production",))

        async def version() -> str:
            response = await client.post("/v2/models/iris/versions/production/infer", json=BODY, headers=infer)
            return str(response.json()["model_version"])

        assert await version() in {"1", "2"}
        for _ in range(300):
            if await version() == "2":
                break
            await asyncio.sleep(0.02)
        assert await version() == "2"
        status = (await client.get("/v1/models/iris", headers=infer)).json()["model_version_status"]
        assert {s["version"]: s["state"] for s in status} == {"1": "END", "2": "AVAILABLE"}
