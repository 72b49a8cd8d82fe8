"""The manager follows a real registry: alias moves, failed loads, policies, drain, runtime load/unload."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelport.errors import InvalidModel, ModelNotReady, NotFound
from modelport.registry.registry import Registry
from modelport.registry.traffic import FULL
from modelport.serving.manager import ModelManager, VersionState, VersionStatus
from modelport.serving.plans import specs_from
from modelport.settings import Settings
from modelport.types import InferRequest
from tests.support.chance import Cycle
from tests.support.rollout import FLIPPED, ROWS, following, register_fake, register_python
from tests.support.waiting import eventually, until


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    registry = Registry.open(settings)
    yield registry
    registry.close()


def states(statuses: list[VersionStatus]) -> dict[int, str]:
    return {s.version: s.state.value for s in statuses}


async def version_of(manager: ModelManager, selector: str | None = "production", name: str = "iris") -> int:
    return (await manager.infer(name, selector, InferRequest({"input": ROWS}))).model_version


async def test_an_alias_move_loads_the_new_version_switches_and_unloads_the_old(
    registry: Registry, tmp_path: Path
) -> None:
    register_fake(registry, tmp_path, aliases=("production",))
    register_fake(registry, tmp_path, weights=FLIPPED)
    manager = following(registry)
    await manager.follow(specs_from(["iris@production"]))
    assert manager.ready()
    assert await version_of(manager) == 1
    old = manager.get("iris", "production")
    registry.set_alias("iris@2", "production")
    await manager.refresh()
    assert await version_of(manager) == 2
    assert await version_of(manager, None) == 2
    assert states(manager.status("iris")) == {1: "unloaded", 2: "ready"}
    assert old.state is VersionState.UNLOADED
    assert [m.version.ref for m in manager.served()] == ["iris@2"]
    manager.close()


async def test_a_version_that_fails_to_load_is_failed_and_the_old_one_keeps_serving(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "corrupt"
    register_fake(registry, tmp_path, aliases=("production",))
    register_python(registry, tmp_path, broken_if=str(marker))
    register_fake(registry, tmp_path, "wine", aliases=("production",))
    manager = following(registry)
    await manager.follow(specs_from([], serve_alias="production"))
    marker.write_text("the artifact is damaged from now on")
    registry.set_alias("iris@2", "production", allow_signature_change=True)  # outputs differ
    with caplog.at_level(logging.ERROR, logger="modelport"):
        await manager.refresh()
    assert "model iris@2 failed to load: cannot load iris@2 with the python runtime" in caplog.text
    (failed,) = [s for s in manager.status("iris") if s.version == 2]
    assert failed.state is VersionState.FAILED
    assert failed.error is not None
    assert "RuntimeError: weights file is corrupt (checksum mismatch)" in failed.error
    assert await version_of(manager) == 1
    assert await version_of(manager, name="wine") == 1
    assert manager.ready()  # every configured alias still has a ready version
    with pytest.raises(ModelNotReady, match="iris@2 is not ready: cannot load iris@2"):
        manager.get("iris", "2")
    marker.unlink()  # repaired: an explicit load retries it
    await manager.load_model("iris@2")
    assert await version_of(manager, "2") == 2
    manager.close()


async def test_not_ready_until_the_configured_alias_has_a_loaded_version(registry: Registry, tmp_path: Path) -> None:
    marker = tmp_path / "corrupt"
    marker.write_text("")
    register_python(registry, tmp_path, aliases=("production",), broken_if=str(marker))
    register_fake(registry, tmp_path)
    manager = following(registry)
    await manager.follow(specs_from(["iris@production"]))
    assert not manager.ready()
    with pytest.raises(ModelNotReady, match="iris@production is not ready: cannot load iris@1"):
        await version_of(manager)
    registry.set_alias("iris@2", "production", allow_signature_change=True)  # outputs differ
    await manager.refresh()
    assert manager.ready()
    assert await version_of(manager) == 2
    manager.close()


async def test_latest_two_serves_the_two_newest_and_picks_up_a_new_version(registry: Registry, tmp_path: Path) -> None:
    for _ in range(3):
        register_fake(registry, tmp_path)
    manager = following(registry)
    await manager.follow(specs_from([], version_policy="latest:2"))
    assert states(manager.status()) == {2: "ready", 3: "ready"}
    assert await version_of(manager, None) == 3
    assert await version_of(manager, "2") == 2
    register_fake(registry, tmp_path, weights=FLIPPED)
    await manager.refresh()
    assert states(manager.status()) == {2: "unloaded", 3: "ready", 4: "ready"}
    assert await version_of(manager, "latest") == 4
    manager.close()


async def test_specific_and_all_policies_choose_versions_per_model(registry: Registry, tmp_path: Path) -> None:
    for name in ("iris", "iris", "iris", "wine"):
        register_fake(registry, tmp_path, name)
    manager = following(registry)
    await manager.follow(specs_from([], version_policy="specific:1,3"))
    assert {(s.name, s.version) for s in manager.status()} == {("iris", 1), ("iris", 3), ("wine", 1)}
    manager.close()
    manager = following(registry)
    await manager.follow(specs_from([], version_policy="all"))
    assert len(manager.served()) == 4
    manager.close()


async def test_a_retired_version_drains_its_in_flight_requests_before_it_unloads(
    registry: Registry, tmp_path: Path
) -> None:
    register_python(registry, tmp_path, aliases=("production",), delay=0.3)
    register_fake(registry, tmp_path)
    manager = following(registry)
    await manager.follow(specs_from(["iris@production"]))
    slow = manager.get("iris", "production")
    request = asyncio.create_task(manager.infer("iris", "production", InferRequest({"input": ROWS})))
    await until(lambda: slow.drain.inflight == 1, "the request to reach the version")
    registry.set_alias("iris@2", "production", allow_signature_change=True)  # outputs differ
    await manager.refresh()  # returns after the drain and the unload
    result = await request
    assert result.model_version == 1
    assert list(result.outputs["label"]) == ["setosa", "virginica"]
    assert slow.state is VersionState.UNLOADED
    assert slow.drain.inflight == 0
    assert await version_of(manager) == 2
    manager.close()


async def test_load_model_and_unload_model_at_runtime(registry: Registry, tmp_path: Path) -> None:
    register_fake(registry, tmp_path, aliases=("production",))
    register_fake(registry, tmp_path, "wine")
    manager = following(registry)
    await manager.follow(specs_from(["iris@production"]))
    with pytest.raises(NotFound, match="model 'wine' is not served"):
        await manager.unload_model("wine")
    await manager.load_model("wine")
    assert await version_of(manager, None, "wine") == 1
    await manager.unload_model("wine")
    assert states(manager.status("wine")) == {1: "unloaded"}
    with pytest.raises(NotFound, match="model 'wine' is not served"):
        await version_of(manager, None, "wine")
    with pytest.raises(NotFound, match=r"no model|not found"):
        await manager.load_model("nope")
    assert manager.ready()
    assert await version_of(manager) == 1
    manager.close()


async def test_load_model_raises_the_load_error_and_leaves_serving_as_it_was(
    registry: Registry, tmp_path: Path
) -> None:
    marker = tmp_path / "corrupt"
    marker.write_text("")
    register_fake(registry, tmp_path, aliases=("production",))
    register_python(registry, tmp_path, "churn", broken_if=str(marker))
    manager = following(registry)
    await manager.follow(specs_from(["iris@production"]))
    with pytest.raises(InvalidModel, match="weights file is corrupt"):
        await manager.load_model("churn")
    assert manager.ready()
    assert states(manager.status("churn")) == {1: "failed"}
    manager.close()


async def test_sticky_key_always_gets_the_same_version_of_a_split_alias(registry: Registry, tmp_path: Path) -> None:
    register_fake(registry, tmp_path, aliases=("production",))
    register_fake(registry, tmp_path, weights=FLIPPED)
    registry.split("iris@2", "production", 50)
    manager = following(registry)
    await manager.follow(specs_from(["iris@production"]))

    async def served_by(selector: str | None, key: str) -> int:
        return (await manager.infer("iris", selector, InferRequest({"input": ROWS}), routing_key=key)).model_version

    for key in (f"customer-{i}" for i in range(40)):
        first = await served_by("production", key)
        for _ in range(5):
            assert await served_by("production", key) == first
        assert await served_by(None, key) == first  # the default route follows the same alias
    keys = {await served_by(None, str(i)) for i in range(40)}
    assert keys == {1, 2}  # different keys spread over both versions
    manager.close()


async def two_versions_of_production(registry: Registry, tmp_path: Path, rollout: Callable[[], object]) -> ModelManager:
    """iris@1 (production) and iris@2, ``rollout`` applied, followed with an exact chance."""
    register_fake(registry, tmp_path, aliases=("production",))
    register_fake(registry, tmp_path, weights=FLIPPED)
    rollout()
    manager = following(registry, chance=Cycle())
    await manager.follow(specs_from(["iris@production"]))
    return manager


async def test_a_split_sends_exactly_its_weight_to_each_version(registry: Registry, tmp_path: Path) -> None:
    manager = await two_versions_of_production(registry, tmp_path, lambda: registry.split("iris@2", "production", 10))
    served = Counter([await version_of(manager) for _ in range(2 * FULL)])
    assert served == {1: 180, 2: 20}
    manager.close()


async def test_a_shadow_mirrors_exactly_its_fraction_of_the_requests(registry: Registry, tmp_path: Path) -> None:
    manager = await two_versions_of_production(
        registry, tmp_path, lambda: registry.set_shadow("iris@production", "iris@2", 0.25)
    )
    for _ in range(FULL):
        assert await version_of(manager) == 1  # the caller only ever gets the primary's answer

    def mirrored() -> int:
        return int(manager.shadow_report("iris", "production")["shadows"][0]["requests"])

    await eventually(lambda: mirrored() == 25, "25 of 100 requests mirrored to the shadow")
    (report,) = manager.shadow_report("iris", "production")["shadows"]
    assert (report["version"], report["fraction"], report["requests"]) == (2, 0.25, 25)
    manager.close()


async def test_concurrent_changes_apply_one_at_a_time(registry: Registry, tmp_path: Path) -> None:
    register_fake(registry, tmp_path, aliases=("production",))
    register_fake(registry, tmp_path, "wine")
    register_fake(registry, tmp_path, "churn")
    manager = following(registry)
    await manager.follow(specs_from(["iris@production"]))
    registry.set_alias("iris@1", "staging")
    await asyncio.gather(manager.load_model("wine"), manager.load_model("churn"), manager.refresh())
    assert manager.names() == ["churn", "iris", "wine"]
    assert {(s.name, s.state) for s in manager.status()} == {
        ("iris", VersionState.READY),
        ("wine", VersionState.READY),
        ("churn", VersionState.READY),
    }
    await asyncio.gather(manager.unload_model("wine"), manager.unload_model("churn"))
    assert manager.names() == ["iris"]
    manager.close()
