"""``modelport bench`` and ``predict URL`` against a server that needs credentials: one line that
names --api-key, whether bench serves the reference itself or is given a URL, and a run with the key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from modelport.auth.keys import KeyStore
from modelport.cli.main import app as cli
from modelport.registry.registry import Registry
from modelport.server.app import build_app
from modelport.settings import Settings
from tests.support.serving import register_iris, running

pytestmark = pytest.mark.slow  # real servers on loopback sockets

HINT = "give an API key with --api-key KEY (or MODELPORT_API_KEY)"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> Iterator[tuple[Path, dict[str, str], str]]:
    """Iris in a registry that has API keys (so its servers require one), served by a real uvicorn;
    yields the home, keys by scope (infer, metrics) and the served model's URL."""
    settings = Settings(home=tmp_path_factory.mktemp("bench-auth") / "home")
    register_iris(settings, iris)
    with Registry.open(settings) as registry:
        keys = {scope: KeyStore(registry.engine).create([scope])[1] for scope in ("infer", "metrics")}
    with running(build_app(settings.with_(models=("iris@production",)))) as address:
        yield settings.home, keys, f"http://{address}/v2/models/iris"


def _bench(home: Path, *args: str) -> Any:
    env = {"MODELPORT_HOME": str(home), "COLUMNS": "300", "NO_COLOR": "1"}
    return CliRunner().invoke(cli, ["bench", *args], env=env)


def _one_error_line(result: Any) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert "request body" not in result.output, result.output
    return str(lines[0])


def test_bench_a_reference_without_a_key_names_api_key(keyed: tuple[Path, dict[str, str], str], tmp_path: Path) -> None:
    home, _, _ = keyed
    line = _one_error_line(_bench(home, "iris@production", "--requests", "5", "--output", str(tmp_path)))
    assert "answered 401" in line
    assert HINT in line


def test_bench_a_url_without_a_key_or_with_a_key_lacking_the_scope_names_api_key(
    keyed: tuple[Path, dict[str, str], str], tmp_path: Path
) -> None:
    home, keys, url = keyed
    line = _one_error_line(_bench(home, url, "--requests", "5", "--output", str(tmp_path)))
    assert "answered 401" in line
    assert HINT in line
    line = _one_error_line(
        _bench(home, url, "--requests", "5", "--output", str(tmp_path), "--api-key", keys["metrics"])
    )
    assert "answered 403" in line
    assert "give a key with the infer scope" in line
    assert "--api-key KEY (or MODELPORT_API_KEY)" in line


def test_bench_a_url_with_the_key_runs(keyed: tuple[Path, dict[str, str], str], tmp_path: Path) -> None:
    home, keys, url = keyed
    result = _bench(home, url, "--requests", "5", "-c", "1", "--output", str(tmp_path), "--api-key", keys["infer"])
    assert result.exit_code == 0, result.output
    stats = orjson.loads((tmp_path / "results.json").read_bytes())["stats"]
    assert (stats["requests"], stats["errors"]) == (5, 0)


def test_predict_a_url_with_a_key_lacking_the_scope_names_api_key(
    keyed: tuple[Path, dict[str, str], str], tmp_path: Path
) -> None:
    home, keys, url = keyed
    env = {"MODELPORT_HOME": str(home), "COLUMNS": "300", "NO_COLOR": "1"}
    args = ["predict", url, "--input", "[[5.1, 3.5, 1.4, 0.2]]", "--api-key", keys["metrics"]]
    line = _one_error_line(CliRunner().invoke(cli, args, env=env))
    assert "answered 403" in line
    assert "give a key with the infer scope, or infer:MODEL: --api-key or MODELPORT_API_KEY" in line
