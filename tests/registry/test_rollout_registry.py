"""Registry traffic: weighted alias targets, promote, rollback with history, shadows, the change counter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.errors import Conflict, InvalidReference, InvalidSetting, NotFound
from modelport.registry.registry import Registry
from modelport.registry.traffic import AliasTarget
from modelport.stores.local import LocalStore
from tests.support.rollout import FLIPPED, register_fake


@pytest.fixture
def registry(database_url: str, tmp_path: Path) -> Iterator[Registry]:
    registry = Registry(database_url, LocalStore(tmp_path / "artifacts"))
    register_fake(registry, tmp_path, aliases=("production",))
    register_fake(registry, tmp_path, weights=FLIPPED)
    register_fake(registry, tmp_path)
    yield registry
    registry.close()


def test_weight_splits_an_alias_and_a_plain_move_ends_the_split(registry: Registry) -> None:
    assert registry.split("iris@2", "production", 10) == {1: 90, 2: 10}
    assert registry.split("iris@3", "production", 5) == {1: 85, 2: 10, 3: 5}
    assert registry.routing()["iris"].aliases["production"] == AliasTarget(1, ((2, 10), (3, 5)))
    assert registry.split("iris@3", "production", 0) == {1: 90, 2: 10}
    registry.set_alias("iris@2", "production")
    assert registry.splits("iris@production") == {2: 100}


def test_split_refuses_what_cannot_be_split(registry: Registry) -> None:
    with pytest.raises(Conflict, match="already points at version 1"):
        registry.split("iris@1", "production", 10)
    with pytest.raises(NotFound, match="no alias 'staging' to split; point it first"):
        registry.split("iris@2", "staging", 10)
    with pytest.raises(InvalidSetting, match="from 0 to 99, got 100"):
        registry.split("iris@2", "production", 100)
    registry.split("iris@2", "production", 60)
    with pytest.raises(Conflict, match="would take 100%"):
        registry.split("iris@3", "production", 40)
    assert registry.splits("iris@production") == {1: 40, 2: 60}  # the refused write left nothing behind


def test_rollback_returns_to_the_version_before_the_last_move(registry: Registry) -> None:
    with pytest.raises(Conflict, match="no earlier version to roll back to"):
        registry.rollback("iris", "production")
    registry.set_alias("iris@3", "production")
    registry.promote("iris@2", "production")
    assert registry.rollback("iris", "production").version == 3
    moves = [(m.from_version, m.to_version) for m in registry.alias_history("iris", "production")]
    assert moves == [(2, 3), (3, 2), (1, 3), (None, 1)]


def test_promote_ends_the_split_and_the_promoted_versions_shadow(registry: Registry) -> None:
    registry.split("iris@2", "production", 10)
    registry.set_shadow("iris@production", "iris@3", 0.25)
    registry.set_shadow("iris@production", "iris@2", 0.5)
    registry.promote("iris@3", "production")
    target = registry.routing()["iris"].aliases["production"]
    assert target == AliasTarget(3, (), ((2, 0.5),))


def test_shadow_stats_add_up_across_flushes_and_show_per_alias(registry: Registry) -> None:
    registry.set_shadow("iris@production", "iris@2", 0.5)
    delta = {"requests": 2, "outputs": {"label": {"kind": "label", "equal": 3, "total": 4}}}
    registry.record_shadow_stats({("iris", "production", 2): delta})
    registry.record_shadow_stats({("iris", "production", 2): delta, ("iris", "production", 3): delta})
    (shadow,) = registry.shadows("iris@production")
    assert (shadow.version, shadow.fraction, shadow.stats["requests"]) == (2, 0.5, 4)
    assert shadow.stats["outputs"]["label"] == {"kind": "label", "equal": 6, "total": 8}
    with pytest.raises(Conflict, match="alias production \\(shadow\\) sends traffic to it"):
        registry.delete("iris@2")
    registry.remove_shadow("iris@production", "iris@2")
    assert registry.shadows("iris@production") == []
    registry.delete("iris@2")


def test_shadow_needs_an_alias_another_version_and_a_sane_fraction(registry: Registry) -> None:
    with pytest.raises(InvalidReference, match="give NAME@ALIAS"):
        registry.set_shadow("iris@1", "iris@2")
    with pytest.raises(Conflict, match="is version 1 already"):
        registry.set_shadow("iris@production", "iris@1")
    with pytest.raises(InvalidSetting, match="above 0 and at most 1"):
        registry.set_shadow("iris@production", "iris@2", 1.5)


def test_every_routing_write_bumps_the_change_counter_and_stats_do_not(registry: Registry, tmp_path: Path) -> None:
    seen = [registry.serial()]
    for write in (
        lambda: registry.set_alias("iris@2", "staging"),
        lambda: registry.split("iris@3", "staging", 10),
        lambda: registry.set_shadow("iris@staging", "iris@1"),
        lambda: registry.remove_alias("iris", "staging"),
        lambda: register_fake(registry, tmp_path),
        lambda: registry.delete("iris@4"),
    ):
        write()
        seen.append(registry.serial())
    assert seen == sorted(set(seen)), seen
    registry.record_shadow_stats({("iris", "production", 2): {"requests": 1}})
    assert registry.serial() == seen[-1]
    assert "staging" not in registry.routing()["iris"].aliases
