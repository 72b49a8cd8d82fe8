"""Registry behaviour on SQLite and on a real PostgreSQL (each test runs against both)."""

from __future__ import annotations

import logging
import math
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text

from modelport.errors import Conflict, InvalidModel, InvalidReference, ModelportError, NotFound
from modelport.reference import Reference
from modelport.registry import registry as registry_module
from modelport.registry.database import SCHEMA_REVISION, VERSION_TABLE, metadata, writing
from modelport.registry.registry import Registry
from modelport.settings import Settings
from modelport.signature import example_of, input_specs, output_specs, sample_arrays
from modelport.stores.local import LocalStore, content_key
from modelport.types import Batching, ModelVersion, Signature


@pytest.fixture
def registry(database_url: str, tmp_path: Path) -> Iterator[Registry]:
    with Registry(database_url, LocalStore(tmp_path / "artifacts")) as reg:
        yield reg


def _signature(sepal_width: list[float]) -> Signature:
    """The signature of a classifier over three named float features, from a sample DataFrame."""
    frame = pd.DataFrame({"sepal_length": [5.1, 4.9, 6.2], "sepal_width": sepal_width, "petal_length": [1.4, 1.4, 4.3]})
    arrays, names = sample_arrays(frame)
    return Signature(
        inputs=input_specs(arrays, names),
        outputs=output_specs({"label": np.array(["setosa", "setosa", "versicolor"], dtype=object)}),
        example=example_of(arrays),
    )


@pytest.fixture(scope="module")
def signature() -> Signature:
    return _signature([3.5, 3.0, 2.9])


class Artifacts:
    """Makes artifact directories with distinct content."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def make(self, content: bytes | None = None) -> Path:
        self.count += 1
        folder = self.root / f"artifact{self.count}"
        (folder / "extra").mkdir(parents=True)
        (folder / "model.onnx").write_bytes(content if content is not None else f"model {self.count}".encode())
        (folder / "extra" / "labels.txt").write_text("setosa\nversicolor\n")
        return folder


@pytest.fixture
def artifacts(tmp_path: Path) -> Artifacts:
    return Artifacts(tmp_path / "src")


def _register(
    registry: Registry, artifacts: Artifacts, signature: Signature, name: str = "iris", **extra: object
) -> ModelVersion:
    return registry.register(
        name,
        artifacts.make(),
        runtime="onnx",
        framework="sklearn",
        signature=signature,
        **extra,  # type: ignore[arg-type]
    )


def test_versions_are_numbered_from_one_per_model(
    registry: Registry, artifacts: Artifacts, signature: Signature
) -> None:
    assert [_register(registry, artifacts, signature).version for _ in range(3)] == [1, 2, 3]
    assert _register(registry, artifacts, signature, name="wine").version == 1
    assert [v.ref for v in registry.versions("iris")] == ["iris@1", "iris@2", "iris@3"]


def test_get_by_version_alias_and_latest(registry: Registry, artifacts: Artifacts, signature: Signature) -> None:
    first = _register(registry, artifacts, signature, aliases=["production"])
    second = _register(registry, artifacts, signature)
    assert registry.get("iris@1") == first
    assert registry.get(Reference("iris", version=2)) == second
    assert registry.get("iris@production").version == 1
    assert registry.get("iris").version == 2
    assert registry.get("iris@latest").version == 2


def test_latest_is_the_highest_existing_version_after_a_delete(
    registry: Registry, artifacts: Artifacts, signature: Signature
) -> None:
    for _ in range(3):
        _register(registry, artifacts, signature)
    registry.delete("iris@3")
    assert registry.get("iris").version == 2
    assert _register(registry, artifacts, signature).version == 4
    assert registry.get("iris@latest").version == 4


@pytest.mark.parametrize("ref", ["iris@", "@1", "iris@Prod!", "iris@0", "bad name", "iris@1@2"])
def test_malformed_references_raise_invalid_reference(registry: Registry, ref: str) -> None:
    with pytest.raises(InvalidReference, match="invalid model reference"):
        registry.get(ref)


def test_unknown_model_message_lists_registered_models(
    registry: Registry, artifacts: Artifacts, signature: Signature
) -> None:
    with pytest.raises(NotFound, match=r"^model 'iris' not found \(no models are registered\)$"):
        registry.get("iris")
    _register(registry, artifacts, signature, name="wine")
    _register(registry, artifacts, signature, name="digits")
    with pytest.raises(NotFound) as caught:
        registry.get("iris@2")
    assert str(caught.value) == "model 'iris' not found (registered: digits, wine)"
    with pytest.raises(NotFound, match="registered: digits, wine"):
        registry.versions("iris")


def test_unknown_version_message_lists_existing_versions(
    registry: Registry, artifacts: Artifacts, signature: Signature
) -> None:
    for _ in range(5):
        _register(registry, artifacts, signature)
    registry.delete("iris@4")
    with pytest.raises(NotFound) as caught:
        registry.get("iris@7")
    assert str(caught.value) == "model 'iris' has no version 7 (versions: 1-3, 5)"


def test_unknown_alias_message_lists_aliases(registry: Registry, artifacts: Artifacts, signature: Signature) -> None:
    _register(registry, artifacts, signature, aliases=["staging", "production"])
    with pytest.raises(NotFound) as caught:
        registry.get("iris@prod")
    assert str(caught.value) == "model 'iris' has no alias 'prod' (aliases: production, staging)"


def test_set_alias_creates_and_moves_an_alias(registry: Registry, artifacts: Artifacts, signature: Signature) -> None:
    for _ in range(3):
        _register(registry, artifacts, signature)
    assert registry.set_alias("iris@1", "production").aliases == ("production",)
    moved = registry.set_alias("iris@3", "production")
    assert moved.version == 3
    assert moved.aliases == ("production",)
    assert registry.get("iris@1").aliases == ()
    assert registry.get("iris@production").version == 3
    promoted = registry.set_alias("iris@production", "staging")
    assert (promoted.version, promoted.aliases) == (3, ("production", "staging"))


def test_alias_names_are_validated(registry: Registry, artifacts: Artifacts, signature: Signature) -> None:
    _register(registry, artifacts, signature)
    for bad in ("latest", "Prod", "1st", "a_b"):
        with pytest.raises(InvalidReference, match="invalid alias"):
            registry.set_alias("iris@1", bad)
    with pytest.raises(InvalidReference, match="'latest' is reserved"):
        _register(registry, artifacts, signature, aliases=["latest"])
    assert [v.version for v in registry.versions("iris")] == [1]


def test_aliases_belong_to_one_model(registry: Registry, artifacts: Artifacts, signature: Signature) -> None:
    _register(registry, artifacts, signature, name="iris", aliases=["production"])
    _register(registry, artifacts, signature, name="wine")
    _register(registry, artifacts, signature, name="wine", aliases=["production"])
    assert registry.get("iris@production").ref == "iris@1"
    assert registry.get("wine@production").ref == "wine@2"


def test_register_with_an_existing_alias_moves_it(
    registry: Registry, artifacts: Artifacts, signature: Signature
) -> None:
    _register(registry, artifacts, signature, aliases=["staging"])
    second = _register(registry, artifacts, signature, aliases=["staging"])
    assert second.aliases == ("staging",)
    assert registry.get("iris@1").aliases == ()


def test_remove_alias(registry: Registry, artifacts: Artifacts, signature: Signature) -> None:
    _register(registry, artifacts, signature, aliases=["staging", "production"])
    registry.remove_alias("iris", "staging")
    assert registry.get("iris@1").aliases == ("production",)
    with pytest.raises(NotFound, match=r"model 'iris' has no alias 'staging' \(aliases: production\)"):
        registry.remove_alias("iris", "staging")
    with pytest.raises(NotFound, match="model 'wine' not found"):
        registry.remove_alias("wine", "staging")


def test_delete_is_refused_while_an_alias_points_to_the_version(
    registry: Registry, artifacts: Artifacts, signature: Signature
) -> None:
    _register(registry, artifacts, signature)
    _register(registry, artifacts, signature)
    _register(registry, artifacts, signature, aliases=["production"])
    with pytest.raises(Conflict) as caught:
        registry.delete("iris@3")
    assert str(caught.value) == (
        "cannot delete iris@3: alias 'production' points to it; move or remove the alias first "
        "(modelport alias iris@N production)"
    )
    with pytest.raises(Conflict, match="cannot delete iris@3"):
        registry.delete("iris@production")
    assert registry.get("iris@3").aliases == ("production",)
    registry.set_alias("iris@2", "production")
    assert registry.delete("iris@3").version == 3


def test_delete_needs_a_version_not_a_bare_name(registry: Registry, artifacts: Artifacts, signature: Signature) -> None:
    _register(registry, artifacts, signature)
    _register(registry, artifacts, signature)
    for ref in ("iris", "iris@latest"):
        with pytest.raises(InvalidReference, match=r"name the version to delete, e\.g\. iris@2"):
            registry.delete(ref)
    assert len(registry.versions("iris")) == 2


def test_numbers_are_never_reused_after_deleting_every_version(
    registry: Registry, artifacts: Artifacts, signature: Signature
) -> None:
    _register(registry, artifacts, signature)
    _register(registry, artifacts, signature)
    registry.delete("iris@2")
    registry.delete("iris@1")
    assert registry.versions("iris") == []
    assert registry.models() == []
    with pytest.raises(NotFound, match="model 'iris' has no versions"):
        registry.get("iris")
    with pytest.raises(NotFound, match=r"has no version 1 \(versions: none\)"):
        registry.get("iris@1")
    assert _register(registry, artifacts, signature).version == 3


def test_delete_removes_the_artifact_only_when_no_version_uses_it(
    registry: Registry, artifacts: Artifacts, signature: Signature
) -> None:
    shared = artifacts.make(b"same bytes")
    one = registry.register("iris", shared, runtime="onnx", framework="onnx", signature=signature)
    two = registry.register(
        "wine", artifacts.make(b"same bytes"), runtime="onnx", framework="onnx", signature=signature
    )
    assert one.artifact == two.artifact
    registry.delete("iris@1")
    assert registry.store.exists(two.artifact)
    assert content_key(registry.artifact_path(two)) == two.artifact
    registry.delete("wine@1")
    assert not registry.store.exists(two.artifact)


def test_metadata_roundtrips(registry: Registry, artifacts: Artifacts, signature: Signature) -> None:
    before = datetime.now(UTC)
    with_nan = _signature([3.5, math.nan, 2.9])
    registered = _register(
        registry,
        artifacts,
        with_nan,
        environment={"python": "3.11.7", "scikit-learn": "1.9.0"},
        tags={"team": "search", "dataset": "iris-2024"},
        metrics={"accuracy": 0.97, "rows": 150, "loss": math.inf, "note": "holdout"},
        params={"C": 1.0, "kernel": "rbf", "max_iter": 200},
        description="Iris classifier",
        notes=["converted to ONNX; max |Δp| 3e-8 on the sample"],
        trusted_code=True,
        batching=Batching(max_batch_size=8, max_wait_ms=2.5),
        capture_rate=0.125,
    )
    loaded = registry.get("iris@1")
    assert loaded.batching == Batching(max_batch_size=8, max_wait_ms=2.5)
    assert loaded.capture_rate == 0.125
    assert registry.versions("iris")[0].capture_rate == 0.125
    assert _register(registry, artifacts, signature).capture_rate is None
    assert loaded.signature.inputs == with_nan.inputs
    assert loaded.signature.outputs == with_nan.outputs
    assert loaded.signature.inputs[0].allow_nan
    example = loaded.signature.example["input"]  # type: ignore[index]
    assert math.isnan(example[1][1])
    assert example[0] == [5.1, 3.5, 1.4]
    assert (loaded.artifact, loaded.aliases, loaded.ref) == (registered.artifact, (), "iris@1")
    assert loaded.environment == {"python": "3.11.7", "scikit-learn": "1.9.0"}
    assert loaded.tags == {"team": "search", "dataset": "iris-2024"}
    assert loaded.metrics == {"accuracy": 0.97, "rows": 150, "loss": math.inf, "note": "holdout"}
    assert loaded.params == {"C": 1.0, "kernel": "rbf", "max_iter": 200}
    assert (loaded.description, loaded.notes, loaded.trusted_code) == (
        "Iris classifier",
        ("converted to ONNX; max |Δp| 3e-8 on the sample",),
        True,
    )
    assert (loaded.runtime, loaded.framework) == ("onnx", "sklearn")
    assert loaded.created_at.tzinfo is not None
    assert loaded.created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= loaded.created_at <= datetime.now(UTC) + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tags", {"team": 3}, "tags map strings to strings"),
        ("environment", {"numpy": None}, "environment map strings to strings"),
        ("metrics", {"ok": True}, "metrics map names to numbers or strings"),
        ("params", {"layers": [1, 2]}, "params map names to numbers or strings"),
        ("runtime", "", "runtime must be a short non-empty string"),
        ("notes", "one note", "notes must be a sequence of strings"),
        ("batching", {"max_batch_size": 8}, "batching must be a modelport.types.Batching"),
        ("capture_rate", 1.5, "capture_rate is the share of requests captured, a number from 0 to 1"),
        ("capture_rate", True, "capture_rate is the share of requests captured"),
        ("capture_rate", "0.1", "capture_rate is the share of requests captured"),
    ],
)
def test_invalid_metadata_is_refused_before_anything_is_stored(
    registry: Registry, artifacts: Artifacts, signature: Signature, field: str, value: object, message: str
) -> None:
    extra = {"runtime": "onnx", "framework": "sklearn", field: value}
    with pytest.raises(InvalidModel, match=message):
        registry.register("iris", artifacts.make(), signature=signature, **extra)  # type: ignore[arg-type]
    assert list(registry.store.keys()) == []
    assert registry.models() == []


def test_register_refuses_a_missing_artifact_directory(
    registry: Registry, tmp_path: Path, signature: Signature
) -> None:
    with pytest.raises(InvalidModel, match="is not a directory"):
        registry.register("iris", tmp_path / "nope", runtime="onnx", framework="onnx", signature=signature)
    with pytest.raises(InvalidReference):
        registry.register("bad name", tmp_path, runtime="onnx", framework="onnx", signature=signature)


def test_models_summarizes_each_model(registry: Registry, artifacts: Artifacts, signature: Signature) -> None:
    _register(registry, artifacts, signature, name="wine", description="old")
    _register(registry, artifacts, signature, name="iris", aliases=["production"])
    _register(registry, artifacts, signature, name="iris", description="better", aliases=["staging"])
    _register(registry, artifacts, signature, name="iris")
    registry.delete("iris@3")
    summaries = registry.models()
    assert [s.name for s in summaries] == ["iris", "wine"]
    iris = summaries[0]
    assert (iris.latest_version, iris.version_count) == (2, 2)
    assert iris.aliases == {"production": 1, "staging": 2}
    assert iris.description == "better"
    assert iris.updated_at.tzinfo is not None
    assert (summaries[1].latest_version, summaries[1].aliases, summaries[1].description) == (1, {}, "old")


def test_artifact_path_holds_the_registered_files(
    registry: Registry, artifacts: Artifacts, signature: Signature
) -> None:
    version = _register(registry, artifacts, signature)
    path = registry.artifact_path(version)
    assert (path / "model.onnx").read_bytes() == b"model 1"
    assert (path / "extra" / "labels.txt").read_text() == "setosa\nversicolor\n"
    assert content_key(path) == version.artifact


def test_a_reopened_registry_sees_what_was_registered(
    database_url: str, tmp_path: Path, artifacts: Artifacts, signature: Signature
) -> None:
    with Registry(database_url, LocalStore(tmp_path / "artifacts")) as first:
        registered = _register(first, artifacts, signature, aliases=["production"])
    with Registry(database_url, LocalStore(tmp_path / "artifacts")) as again:
        assert again.get("iris@production") == registered
        assert _register(again, artifacts, signature).version == 2


def test_open_uses_settings_home(settings: Settings, artifacts: Artifacts, signature: Signature) -> None:
    assert not settings.home.exists()
    with Registry.open(settings) as registry:
        version = _register(registry, artifacts, signature)
        assert registry.artifact_path(version).is_relative_to(settings.artifact_location)
    assert (settings.home / "registry.db").is_file()


def test_gc_removes_unreferenced_artifacts_older_than_the_grace_period(
    registry: Registry, artifacts: Artifacts, signature: Signature
) -> None:
    kept = _register(registry, artifacts, signature)
    orphan = registry.store.put(artifacts.make(b"never registered"))
    assert registry.gc() == []
    assert registry.store.exists(orphan)
    assert registry.gc(grace=0) == [orphan]
    assert list(registry.store.keys()) == [kept.artifact]


def test_gc_needs_a_store_that_knows_artifact_ages(database_url: str, tmp_path: Path) -> None:
    class AgelessStore:
        """A store without ``age``: puts and fetches through a LocalStore."""

        def __init__(self, root: Path) -> None:
            self._inner = LocalStore(root)
            self.put, self.fetch, self.exists = self._inner.put, self._inner.fetch, self._inner.exists
            self.delete, self.keys = self._inner.delete, self._inner.keys

    with (
        Registry(database_url, AgelessStore(tmp_path / "a")) as registry,
        pytest.raises(ModelportError, match="cannot tell how old an artifact is"),
    ):
        registry.gc()


def test_migrations_create_exactly_the_schema_of_the_metadata(registry: Registry, database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
            assert compare_metadata(context, metadata) == []
            assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one() == SCHEMA_REVISION
    finally:
        engine.dispose()


def _migrate(engine: Engine, direction: str, target: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(registry_module.__file__).with_name("migrations")))
    config.set_main_option("path_separator", "os")
    with writing(engine) as conn:
        config.attributes["connection"] = conn
        getattr(command, direction)(config, target)


def test_the_capture_migration_adds_a_nullable_rate_to_existing_versions_and_takes_it_back(
    database_url: str, tmp_path: Path, artifacts: Artifacts, signature: Signature
) -> None:
    store = LocalStore(tmp_path / "artifacts")
    with Registry(database_url, store) as registry:
        _register(registry, artifacts, signature, capture_rate=0.5)
        _migrate(registry.engine, "downgrade", "0004")
        columns = {c["name"] for c in inspect(registry.engine).get_columns("modelport_versions")}
        assert "batching" in columns
        assert "capture_rate" not in columns
    with Registry(database_url, store) as upgraded:  # opening brings the schema back to the head
        assert upgraded.get("iris@1").capture_rate is None  # a version from before 0005 takes the server's rate
        assert _register(upgraded, artifacts, signature, capture_rate=0.0).capture_rate == 0.0
        assert upgraded.get("iris@2").capture_rate == 0.0


def test_schema_revision_is_the_head_of_the_shipped_migrations() -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(registry_module.__file__).with_name("migrations")))
    config.set_main_option("path_separator", "os")
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_REVISION]


def test_a_database_from_a_newer_modelport_is_refused(registry: Registry, database_url: str, tmp_path: Path) -> None:
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    finally:
        engine.dispose()
    with pytest.raises(ModelportError, match="newer modelport"):
        Registry(database_url, LocalStore(tmp_path / "artifacts"))


def test_the_sqlite_database_is_created_readable_by_its_owner_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Registry.open(Settings(home=tmp_path / "home")).close()
    assert stat.S_IMODE((tmp_path / "home" / "registry.db").stat().st_mode) == 0o600
    shared = tmp_path / "shared" / "registry.db"
    shared.parent.mkdir()
    shared.touch(mode=0o644)
    shared.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="modelport"):
        Registry.open(Settings(home=tmp_path / "shared")).close()
    assert "readable by every user of this machine (mode 644)" in caplog.text
