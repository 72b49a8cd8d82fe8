from __future__ import annotations

import importlib.util
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from modelport.errors import InvalidSetting
from modelport.settings import (
    CHOICES,
    DECLARED,
    ENVIRONMENT,
    GROUPS,
    SAGEMAKER_ENVIRONMENT,
    SAGEMAKER_HELP,
    Settings,
    declarations,
    declared_default,
    setting,
    shown_default,
)

ROOT = Path(__file__).resolve().parents[2]


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
        body_timeout=12.5,
        capture_rate=0.05,
        capture_redact=("ssn", "email"),
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


def test_capture_is_off_by_default_and_writes_under_the_home(tmp_path: Path) -> None:
    settings = Settings.from_env({"MODELPORT_HOME": str(tmp_path)})
    assert (settings.capture_rate, settings.capture_redact) == (0.0, ())
    assert settings.capture_root == tmp_path / "capture"
    chosen = Settings.from_env({"MODELPORT_CAPTURE_RATE": "0.1", "MODELPORT_CAPTURE_REDACT": " ssn, ,email "})
    assert (chosen.capture_rate, chosen.capture_redact) == (0.1, ("ssn", "email"))


@pytest.mark.parametrize("text", ["1.01", "-0.5", "nan", "ten percent", ""])
def test_a_capture_rate_outside_0_to_1_is_refused_naming_the_variable(text: str) -> None:
    with pytest.raises(
        InvalidSetting, match=r"MODELPORT_CAPTURE_RATE=.* is not valid: give a number from 0 \(off\) to 1"
    ):
        Settings.from_env({"MODELPORT_CAPTURE_RATE": text})


@pytest.mark.parametrize("rate", [1.5, -1, float("inf"), True])
def test_a_capture_rate_given_in_code_is_checked_too(rate: float) -> None:
    with pytest.raises(InvalidSetting, match=r"MODELPORT_CAPTURE_RATE=.* is not valid: give the share of requests"):
        Settings(capture_rate=rate)


def test_the_body_timeout_is_30_seconds_unless_the_environment_says_otherwise() -> None:
    assert Settings().body_timeout == 30.0
    assert Settings.from_env({"MODELPORT_BODY_TIMEOUT": "2.5"}).body_timeout == 2.5


@pytest.mark.parametrize("variable", ["MODELPORT_HEADER_TIMEOUT", "MODELPORT_BODY_TIMEOUT"])
@pytest.mark.parametrize("text", ["0", "-1", "nan"])
def test_a_read_timeout_must_be_seconds_above_0(variable: str, text: str) -> None:
    with pytest.raises(InvalidSetting, match=rf"{variable}=.* is not valid: give seconds, > 0"):
        Settings.from_env({variable: text})


def test_a_field_without_a_declaration_is_refused() -> None:
    @dataclass(frozen=True)
    class Undeclared:
        port: int = setting(8080, variable="MODELPORT_PORT", group="server", doc="port to bind")
        new_knob: int = 3

    with pytest.raises(TypeError, match=r"Undeclared.new_knob has no declaration: make it with setting\("):
        declarations(Undeclared)
    assert set(declarations(Settings)) == {f.name for f in fields(Settings)}


def test_every_table_is_derived_from_the_declarations() -> None:
    assert {name: d.variable for name, d in DECLARED.items()} == {name: e[0] for name, e in ENVIRONMENT.items()}
    assert {"log_level": DECLARED["log_level"].choices, "log_format": ("text", "json")} == CHOICES
    assert SAGEMAKER_ENVIRONMENT["SAGEMAKER_MODEL_SERVER_TIMEOUT"][0] == "request_timeout"
    assert set(SAGEMAKER_HELP) == set(SAGEMAKER_ENVIRONMENT)
    assert all(d.doc and d.group in GROUPS for d in DECLARED.values())


@pytest.mark.parametrize(
    ("variable", "text", "message"),
    [
        ("MODELPORT_PORT", "eighty", "give a whole number"),
        ("MODELPORT_MAX_BODY_MB", "big", "give a number"),
        ("MODELPORT_BATCHING", "maybe", r"give a switch \(on or off\)"),
        ("MODELPORT_ARTIFACT_CACHE_MB", "lots", "give a value"),
        ("MODELPORT_LOG_FORMAT", "xml", "choose text, json"),
    ],
)
def test_a_bad_value_is_refused_saying_what_to_give(variable: str, text: str, message: str) -> None:
    with pytest.raises(InvalidSetting, match=rf"^{variable}='{text}' is not valid: {message}"):
        Settings.from_env({variable: text})


def test_a_bad_sagemaker_variable_is_refused_saying_what_to_give() -> None:
    with pytest.raises(InvalidSetting, match=r"^SAGEMAKER_BIND_TO_PORT='0' is not valid: give a port number from 1"):
        Settings.for_sagemaker({"SAGEMAKER_BIND_TO_PORT": "0"})
    assert Settings.for_sagemaker({"SAGEMAKER_MODEL_SERVER_TIMEOUT": "5"}).request_timeout == 5.0


def test_the_settings_tables_in_the_docs_are_the_declared_ones() -> None:
    spec = importlib.util.spec_from_file_location("settings_docs", ROOT / "scripts" / "settings_docs.py")
    assert spec
    assert spec.loader
    docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs)
    tables = 0
    for name in docs.FILES:
        text = (ROOT / name).read_text(encoding="utf-8")
        tables += text.count("<!-- settings table: ")
        assert docs.regenerate(text) == text, (
            f"{name}: settings table differs from the declarations; run: {docs.COMMAND}"
        )
    assert tables >= 3
    assert "| `MODELPORT_MAX_BODY_MB` | 32 |" in docs.table("all")


def test_shown_defaults_are_the_declared_ones() -> None:
    assert (shown_default("max_batch_size"), shown_default("max_queue_wait_ms"), shown_default("batching")) == (
        "64",
        "1000",
        "on",
    )
    assert declared_default("home") == Path(".modelport")
    assert shown_default("max_body_bytes") == "32"
