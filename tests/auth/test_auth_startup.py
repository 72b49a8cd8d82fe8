"""Startup rules as a user meets them (real `modelport serve` processes), and the `keys` commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from modelport.cli.main import app as cli
from modelport.errors import InvalidSetting
from modelport.server.app import build_app
from modelport.server.spawn import serving
from modelport.settings import Settings
from tests.support.serving import client_for, register_iris

ROW = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, iris: tuple[pd.DataFrame, np.ndarray]) -> Path:
    """A home with iris@production registered and no API keys (copy it before adding keys)."""
    home = tmp_path_factory.mktemp("auth-startup") / "home"
    register_iris(Settings(home=home), iris)
    return home


@pytest.fixture
def home(registered: Path, tmp_path: Path) -> Path:
    """A private copy of the registered home, free to get keys."""
    return Path(shutil.copytree(registered, tmp_path / "home"))


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "MODELPORT_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}


def serve(home: Path, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "modelport", "serve", "iris@production", "--port", "0", *args]
    return subprocess.Popen(command, env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "refusing to serve on 0.0.0.0 without authentication"),
        (["--enable-management"], "management endpoints need authentication: modelport keys create --scope manage"),
    ],
    ids=["public-bind", "management"],
)
def test_serve_without_authentication_refuses_to_start_with_exit_code_2(
    registered: Path, args: list[str], message: str
) -> None:
    process = serve(registered, *args)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    assert message in output
    assert "--insecure-open" in output or "manage" in output


@pytest.mark.slow
def test_insecure_open_starts_on_a_public_bind_and_warns_loudly(registered: Path) -> None:
    with serving(["iris@production", "--insecure-open"], host="0.0.0.0", env=env_for(registered)) as server:
        response = httpx.post(f"{server.base}/v1/models/iris:predict", json={"instances": [ROW]})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"] == "virginica"
    output = server.output.text
    assert "WARNING: serving 0.0.0.0 WITHOUT AUTHENTICATION (--insecure-open)" in output
    assert "WITHOUT authentication (insecure open)" in output  # the server's own log line, for log collectors


@pytest.mark.slow
def test_public_bind_with_an_api_key_starts_and_demands_the_key(home: Path) -> None:
    created = CliRunner().invoke(cli, ["keys", "create", "--scope", "infer:iris"], env=env_for(home))
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    with serving(["iris@production"], host="0.0.0.0", env=env_for(home)) as server:
        url = f"{server.base}/v1/models/iris:predict"
        assert httpx.post(url, json={"instances": [ROW]}).status_code == 401
        ok = httpx.post(url, json={"instances": [ROW]}, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["predictions"][0]["label"] == "virginica"
    output = server.output.text
    assert "WITHOUT" not in output
    assert key.split("_", 2)[2] not in output


async def test_build_app_refuses_a_public_bind_without_authentication(registered: Path) -> None:
    settings = Settings(home=registered, host="0.0.0.0", models=("iris@production",))
    with pytest.raises(InvalidSetting, match="refusing to serve on"):
        async with client_for(build_app(settings)):
            pass
    async with client_for(build_app(settings.with_(insecure_open=True))) as client:
        ready = await client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_keys_create_list_revoke_and_only_the_hash_is_stored(home: Path) -> None:
    runner = CliRunner()
    env = env_for(home)
    created = runner.invoke(cli, ["keys", "create", "-s", "infer:iris", "-s", "manage", "--description", "ci"], env=env)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("mp_")
    assert len(key.splitlines()) == 1, "stdout holds the key alone, so KEY=$(modelport keys create ...) works"
    key_id, secret = key.split("_", 2)[1:]
    assert "shown once" in created.stderr

    listed = runner.invoke(cli, ["keys", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert key_id in listed.output
    assert "infer:iris, manage" in listed.output
    assert "ci" in listed.output
    assert secret not in listed.output
    assert f"...{secret[-4:]}" in listed.output

    engine = create_engine(Settings(home=home).database_url)
    try:
        with engine.connect() as conn:
            rows = [tuple(row) for row in conn.execute(text("SELECT * FROM modelport_api_keys"))]
    finally:
        engine.dispose()
    assert len(rows) == 1
    assert secret not in repr(rows)

    revoked = runner.invoke(cli, ["keys", "revoke", key_id], env=env)
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked API key {key_id}" in revoked.output
    listed = runner.invoke(cli, ["keys", "list"], env=env)
    assert listed.output.count("UTC") == 2  # created and revoked times

    assert runner.invoke(cli, ["keys", "revoke", "0123456789ab"], env=env).exit_code == 1
    bad = runner.invoke(cli, ["keys", "create", "--scope", "admin"], env=env)
    assert bad.exit_code == 2
    assert "invalid scope 'admin'" in bad.output
