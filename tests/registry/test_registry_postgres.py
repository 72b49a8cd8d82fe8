"""The registry on a real PostgreSQL under concurrent processes.

The behaviour tests in test_registry.py run against PostgreSQL too (their ``database_url``
fixture is parametrized over both backends); these add what only several processes show.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.registry.registry import Registry
from modelport.stores.local import LocalStore
from tests.registry.test_registry_concurrency import check_registry_consistent, register_concurrently
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.postgres


def test_processes_registering_at_once_get_distinct_consecutive_versions(postgres_url: str, tmp_path: Path) -> None:
    url = fresh_database(postgres_url)
    with Registry(url, LocalStore(tmp_path / "store")):
        pass  # schema in place, so the workers race on registrations only
    numbers = register_concurrently(url, tmp_path, processes=4, count=5)
    assert sorted(numbers) == list(range(1, 21))
    with Registry(url, LocalStore(tmp_path / "store")) as registry:
        assert [v.version for v in registry.versions("shared")] == list(range(1, 21))
        check_registry_consistent(registry)


def test_processes_creating_the_schema_and_model_at_once_all_succeed(postgres_url: str, tmp_path: Path) -> None:
    url = fresh_database(postgres_url)
    numbers = register_concurrently(url, tmp_path, processes=4, count=2, mode="open-at-go")
    assert sorted(numbers) == list(range(1, 9))
    with Registry(url, LocalStore(tmp_path / "store")) as registry:
        check_registry_consistent(registry)
        assert [m.name for m in registry.models()] == ["shared"]
