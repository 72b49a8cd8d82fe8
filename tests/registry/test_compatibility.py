"""Signature compatibility: the rule (``breaking_changes``) and the registry refusing alias moves,
canary weights, shadows and registrations with an alias that would break an alias's clients,
unless allowed; a rollback is never refused. Real registries (SQLite, local store) holding
fake-runtime classifiers whose recorded signatures differ."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelport.cli.main import app as cli
from modelport.errors import Conflict
from modelport.registry.compatibility import breaking_changes
from modelport.registry.registry import Registry
from modelport.runtimes.fake import write_artifact
from modelport.settings import Settings
from modelport.types import ModelVersion, Signature, TensorSpec
from tests.support.serving import BIAS, CLASSES, FEATURES, WEIGHTS


def spec(name: str, datatype: str = "FP32", shape: tuple[int, ...] = (-1, 4), **more: object) -> TensorSpec:
    return TensorSpec(name, datatype, shape, **more)  # type: ignore[arg-type]


BASE = Signature((spec("input", feature_names=("a", "b", "c", "d")),), (spec("label", "INT64", (-1,)), spec("p")))


def changed(**what: object) -> Signature:
    return replace(BASE, **what)  # type: ignore[arg-type]


def test_the_same_signature_and_widenings_break_nothing() -> None:
    assert breaking_changes(BASE, BASE) == ()
    wider = Signature(
        (spec("input", shape=(-1, -1), feature_names=("a", "b", "c", "d"), allow_nan=True),), BASE.outputs
    )
    assert breaking_changes(BASE, wider) == ()  # a fixed input dimension made free, NaN now accepted
    more = Signature(BASE.inputs, (*BASE.outputs, spec("score", "FP64", (-1,))))
    assert breaking_changes(BASE, more) == ()  # an output added
    unnamed = Signature((spec("input"),), BASE.outputs)
    assert breaking_changes(unnamed, BASE) == ()  # feature names added
    free = Signature(BASE.inputs, (spec("label", "INT64", (-1,)), spec("p", shape=(-1, -1))))
    assert breaking_changes(free, BASE) == ()  # an output's free dimension made fixed
    assert breaking_changes(BASE, Signature(BASE.inputs, ()), outputs=False) == ()  # a shadow's outputs


@pytest.mark.parametrize(
    ("new", "difference"),
    [
        (Signature((spec("x", feature_names=("a", "b", "c", "d")),), BASE.outputs), "input 'input' removed"),
        (
            Signature((*BASE.inputs, spec("mask", "BOOL")), BASE.outputs),
            "input 'mask' added (every input is required",
        ),
        (Signature((spec("input", "FP64", feature_names=("a", "b", "c", "d")),), BASE.outputs), "FP32 -> FP64"),
        (Signature((spec("input", shape=(-1, 5), feature_names=None),), BASE.outputs), "shape [-1, 4] -> [-1, 5]"),
        (Signature((spec("input", shape=(-1, 4, 1), feature_names=None),), BASE.outputs), "-> [-1, 4, 1]"),
        (
            Signature((spec("input", feature_names=("a", "c", "b", "d")),), BASE.outputs),
            "feature names a, b, c, d -> a, c, b, d",
        ),
        (Signature((spec("input"),), BASE.outputs), "feature names a, b, c, d -> none"),
        (Signature(BASE.inputs, (spec("p"),)), "output 'label' removed (the new version gives: p)"),
        (Signature(BASE.inputs, (spec("label", "BYTES", (-1,)), spec("p"))), "output 'label': datatype INT64 -> BYTES"),
        (Signature(BASE.inputs, (spec("label", "INT64", (-1,)), spec("p", shape=(-1, 5)))), "[-1, 4] -> [-1, 5]"),
        (Signature(BASE.inputs, (spec("label", "INT64", (-1,)), spec("p", shape=(-1, -1)))), "[-1, 4] -> [-1, -1]"),
    ],
)
def test_each_break_is_named(new: Signature, difference: str) -> None:
    (found,) = [change for change in breaking_changes(BASE, new) if difference in change]
    assert found


def test_a_free_input_dimension_made_fixed_nan_refused_and_bytes_made_text_are_breaks() -> None:
    free = Signature((spec("input", shape=(-1, -1), allow_nan=True),), ())
    fixed = Signature((spec("input"),), ())
    assert breaking_changes(free, fixed) == (
        "input 'input': shape [-1, -1] -> [-1, 4]",
        "input 'input': NaN no longer accepted",
    )
    binary = Signature((spec("png", "BYTES", (-1,), binary=True),), ())
    assert breaking_changes(binary, Signature((spec("png", "BYTES", (-1,)),), ())) == (
        "input 'png': takes UTF-8 text now, not binary data (other bytes are refused)",
    )
    assert breaking_changes(Signature((spec("png", "BYTES", (-1,)),), ()), binary) == ()


# --- the registry -----------------------------------------------------------------------------


def register(registry: Registry, workdir: Path, input_name: str = "input", **more: object) -> ModelVersion:
    """A fake-runtime iris classifier whose recorded input is called ``input_name``."""
    directory = workdir / f"fake-{time.monotonic_ns()}"
    signature = write_artifact(directory, WEIGHTS, bias=BIAS, classes=CLASSES, feature_names=FEATURES)
    signature = Signature(tuple(replace(s, name=input_name) for s in signature.inputs), signature.outputs)
    return registry.register("iris", directory, runtime="fake", framework="fake", signature=signature, **more)  # type: ignore[arg-type]


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry.open(Settings(home=tmp_path / "home")) as registry:
        register(registry, tmp_path, "keras_tensor_6", aliases=("production",))  # version 1
        register(registry, tmp_path, "input")  # version 2: the same model, its input renamed
        register(registry, tmp_path, "keras_tensor_6")  # version 3: what version 1 takes
        yield registry


def test_alias_move_to_a_version_with_other_input_names_is_refused_with_the_difference(registry: Registry) -> None:
    refused = (
        r"cannot move iris@production to version 2: version 2 would break the clients of iris@production "
        r"\(version 1\): input 'keras_tensor_6' removed \(the new version takes: input\); input 'input' added .*"
        r"pass --allow-signature-change \(CLI\) or allow_signature_change=True \(Python\)"
    )
    for move in (registry.set_alias, registry.promote):
        with pytest.raises(Conflict, match=refused):
            move("iris@2", "production")
    with pytest.raises(Conflict, match=r"cannot send 10% of iris@production to version 2: .*'keras_tensor_6' removed"):
        registry.split("iris@2", "production", 10)
    with pytest.raises(Conflict, match=r"cannot mirror iris@production to version 2: .*'keras_tensor_6' removed"):
        registry.set_shadow("iris@production", "iris@2")
    routing = registry.routing()["iris"].aliases["production"]
    assert (routing.version, routing.splits, routing.shadows) == (1, (), ())  # nothing was written
    assert registry.set_alias("iris@3", "production").version == 3  # the same signature moves freely
    assert registry.split("iris@1", "production", 10) == {3: 90, 1: 10}
    assert registry.set_alias("iris@2", "staging").version == 2  # a new alias has no clients yet


def test_alias_move_with_a_signature_change_is_allowed_with_the_flag(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    assert registry.split("iris@2", "production", 10, allow_signature_change=True) == {1: 90, 2: 10}
    assert registry.set_shadow("iris@production", "iris@2", 0.5, allow_signature_change=True).version == 2
    assert registry.promote("iris@2", "production", allow_signature_change=True).version == 2
    assert registry.get("iris@production").signature.inputs[0].name == "input"
    with caplog.at_level(logging.WARNING, "modelport.registry.registry"):
        assert registry.rollback("iris", "production").version == 1  # an undo is never refused
    assert "rolling iris@production back to version 1 changes its signature: input 'input' removed" in caplog.text


def test_registration_with_an_alias_whose_clients_it_would_break_is_refused(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(Conflict, match=r"cannot point iris@production at the new version: the new version would break"):
        register(registry, tmp_path, "input", aliases=("production",))
    assert [v.version for v in registry.versions("iris")] == [1, 2, 3]  # nothing registered
    assert register(registry, tmp_path, "input", aliases=("production",), allow_signature_change=True).version == 4


def test_cli_alias_and_promote_refuse_a_signature_change_unless_allowed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Registry.open(Settings(home=home)) as registry:
        register(registry, tmp_path, "keras_tensor_6", aliases=("production",))
        register(registry, tmp_path, "input")
    env = {"MODELPORT_HOME": str(home), "COLUMNS": "300", "NO_COLOR": "1"}
    runner = CliRunner()
    for command in (["alias", "iris@2", "production"], ["promote", "iris@2", "production"]):
        result = runner.invoke(cli, command, env=env)
        assert result.exit_code == 1, result.output
        assert "input 'keras_tensor_6' removed (the new version takes: input)" in " ".join(result.output.split())
    result = runner.invoke(cli, ["alias", "iris@2", "production", "--weight", "5"], env=env)
    assert result.exit_code == 1, result.output
    assert "--allow-signature-change" in result.output
    result = runner.invoke(cli, ["promote", "iris@2", "production", "--allow-signature-change"], env=env)
    assert result.exit_code == 0, result.output
    assert "iris@production → version 2" in result.output
