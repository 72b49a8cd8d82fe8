"""API keys in a file (MODELPORT_API_KEYS_FILE): how a server without a registry of its own (an image
with baked models, keys from a mounted Kubernetes Secret) authenticates callers."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modelport.auth.keys import KeyFile
from modelport.cli.main import app
from modelport.errors import InvalidSetting, NotFound
from modelport.registry.export import export_version
from modelport.registry.registry import Registry
from modelport.server.app import build_app
from modelport.settings import Settings
from tests.support.serving import client_for, register_iris

V2_BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.9, 3.0, 5.1, 1.8]}]}


def test_a_key_file_keeps_hashes_only_readable_by_its_owner(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "secret" / "keys")
    record, key = keys.create(["infer:iris"], "batch scoring")
    text = keys.path.read_text()
    secret = key.split("_", 2)[2]
    assert secret not in text
    assert record.id in text
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600
    (loaded,) = keys.load()
    assert loaded.key == record
    assert keys.revoke(key).revoked  # a full key names its id too
    assert keys.all()[0].revoked
    assert keys.revoke(record.id).revoked  # twice is harmless
    with pytest.raises(NotFound, match="no API key with id 'ffff'"):
        keys.revoke("ffff")


def test_a_missing_or_malformed_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidSetting, match=r"cannot read the API keys file .* modelport keys create"):
        KeyFile(tmp_path / "nope").load()
    bad = tmp_path / "keys"
    bad.write_text('# comment\n\n{"id": "ab12", "hash": "short", "scopes": ["infer"], "created_at": "2026-01-01"}\n')
    with pytest.raises(InvalidSetting, match="keys, line 3: not an API key record"):
        KeyFile(bad).load()


@pytest.fixture
def baked(tmp_path: Path, iris: Any) -> tuple[Path, Path]:
    """The iris model exported as an image bakes it, and a keys file with one infer key."""
    settings = Settings(home=tmp_path / "home")
    version, _ = register_iris(settings, iris)
    with Registry.open(settings) as registry:
        export_version(version, registry.artifact_path(version), tmp_path / "model", archive=False)
    return tmp_path / "model", tmp_path / "keys"


async def test_a_baked_model_server_with_a_key_file_refuses_callers_without_a_key(
    baked: tuple[Path, Path],
) -> None:
    model_dir, path = baked
    record, key = KeyFile(path).create(["infer"], "client")
    settings = Settings.for_sagemaker(
        {"MODELPORT_SAGEMAKER_MODEL_DIR": str(model_dir), "MODELPORT_API_KEYS_FILE": str(path)}
    ).with_(poll_seconds=0.05)
    app_ = build_app(settings)
    async with client_for(app_) as client:
        refused = await client.post("/v2/models/iris/infer", json=V2_BODY)
        assert refused.status_code == 401
        assert (await client.post("/invocations", json={"instances": [[5.9, 3.0, 5.1, 1.8]]})).status_code == 401
        allowed = await client.post("/v2/models/iris/infer", json=V2_BODY, headers={"Authorization": f"Bearer {key}"})
        assert allowed.status_code == 200, allowed.text
        assert {o["name"]: o["data"] for o in allowed.json()["outputs"]}["label"] == ["virginica"]
        ping = await client.get("/ping")  # health stays open for the platform's probes
        assert (ping.status_code, ping.json()) == (200, {"status": "Healthy"})
        KeyFile(path).revoke(record.id)  # a Secret updated in place: the server re-reads the file
        for _ in range(200):
            answer = await client.post("/v2/models/iris/infer", json=V2_BODY, headers={"X-API-Key": key})
            if answer.status_code == 401:
                break
            await asyncio.sleep(0.05)
        assert answer.status_code == 401
        assert "revoked" in answer.json()["error"]


async def test_an_empty_key_file_locks_the_server_rather_than_opening_it(baked: tuple[Path, Path]) -> None:
    model_dir, path = baked
    KeyFile(path).create(["infer"])
    KeyFile(path).revoke(KeyFile(path).all()[0].id)
    settings = Settings.for_sagemaker(
        {"MODELPORT_SAGEMAKER_MODEL_DIR": str(model_dir), "MODELPORT_API_KEYS_FILE": str(path)}
    )
    async with client_for(build_app(settings)) as client:
        assert (await client.post("/v2/models/iris/infer", json=V2_BODY)).status_code == 401


def test_keys_cli_creates_lists_and_revokes_in_a_file_without_a_registry(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    env = {"MODELPORT_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    created = CliRunner().invoke(app, ["keys", "create", "--scope", "infer:iris", "--file", str(path)], env=env)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("mp_")
    record_id = json.loads(path.read_text().splitlines()[1])["id"]
    listed = CliRunner().invoke(app, ["keys", "list", "--file", str(path)], env=env)
    assert record_id in listed.stdout
    assert "infer:iris" in listed.stdout
    revoked = CliRunner().invoke(app, ["keys", "revoke", record_id, "--file", str(path)], env=env)
    assert revoked.exit_code == 0
    assert f"revoked API key {record_id}" in revoked.stdout
    assert not (tmp_path / "home").exists()  # no registry was opened
    missing = CliRunner().invoke(app, ["keys", "list", "--file", str(tmp_path / "none")], env=env)
    assert missing.exit_code != 0
    assert "cannot read the API keys file" in missing.output
    assert "Traceback" not in missing.output


async def test_registry_and_file_keys_are_both_accepted(tmp_path: Path, iris: Any) -> None:
    from modelport.auth.keys import KeyStore

    path = tmp_path / "keys"
    _, file_key = KeyFile(path).create(["infer"])
    settings = Settings(home=tmp_path / "home", models=("iris@production",), api_keys_file=path)
    register_iris(settings, iris)
    with Registry.open(settings) as registry:
        _, registry_key = KeyStore(registry.engine).create(["infer"])
    async with client_for(build_app(settings)) as client:
        for key in (file_key, registry_key):
            answer = await client.post("/v2/models/iris/infer", json=V2_BODY, headers={"X-API-Key": key})
            assert answer.status_code == 200, answer.text
            assert {o["name"]: o["data"] for o in answer.json()["outputs"]}["label"] == ["virginica"]
        assert (await client.post("/v2/models/iris/infer", json=V2_BODY)).status_code == 401
