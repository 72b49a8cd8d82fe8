from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from modelport.settings import ENVIRONMENT, Settings


def test_every_setting_has_an_environment_variable() -> None:
    assert set(ENVIRONMENT) == {f.name for f in fields(Settings)}


def test_settings_roundtrip_through_the_environment(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        threads=3,
        max_body_bytes=5 * 1024 * 1024,
        allow_env_mismatch=True,
        models=("iris@production", "churn@3"),
        grpc_port=9001,
        jwt_issuer="https://issuer.example",
        poll_seconds=0.25,
    )
    assert Settings.from_env(settings.to_env()) == settings


def test_defaults_keep_everything_local(tmp_path: Path) -> None:
    settings = Settings.from_env({"MODELPORT_HOME": str(tmp_path)})
    assert settings.host == "127.0.0.1"
    assert settings.loopback
    assert settings.database_url == f"sqlite:///{tmp_path / 'registry.db'}"
    assert settings.artifact_location == str(tmp_path / "artifacts")
    assert not settings.enable_management
    assert settings.grpc_port is None


def test_explicit_overrides_win_over_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env({"MODELPORT_HOME": str(tmp_path), "MODELPORT_PORT": "9000"}, port=9100, host=None)
    assert settings.port == 9100
    assert settings.host == "127.0.0.1"


def test_compute_threads_never_oversubscribe_cores() -> None:
    one = Settings(workers=1).compute_threads
    assert Settings(workers=2).compute_threads == max(1, one // 2)
    assert Settings(threads=5).compute_threads == 5
