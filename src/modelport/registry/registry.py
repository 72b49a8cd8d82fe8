"""The model registry: named models, immutable numbered versions, movable aliases.

Metadata lives in a SQL database (a SQLite file by default, PostgreSQL by URL), artifacts in an
:class:`~modelport.stores.base.ArtifactStore`. A registration stores the artifact first (atomic,
content-addressed, idempotent) and then writes the version in one transaction, so a process
killed in between leaves at most an unreferenced artifact, which :meth:`Registry.gc` removes.

Concurrency: version numbers come from one ``UPDATE ... RETURNING`` on the model's row inside
the transaction that inserts the version, so numbers are dense per model and never reused. On
SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (WAL mode, 30 s busy timeout), so
several processes queue instead of failing with "database is locked"; on PostgreSQL the
model's row lock and advisory locks order concurrent writers.

Clients keep calling an alias while it moves: a move, canary weight, shadow or registration with
an alias whose version would break what they send or read (:func:`compatibility.breaking_changes`)
is refused with the difference, unless ``allow_signature_change``. A rollback is never refused
(it returns to what clients had before the last move); it logs the difference.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    delete,
    func,
    insert,
    inspect,
    make_url,
    select,
    update,
)
from sqlalchemy.exc import ArgumentError, IntegrityError, InterfaceError, OperationalError

from modelport.errors import Conflict, InvalidModel, InvalidReference, InvalidSetting, ModelportError, NotFound
from modelport.reference import Reference, parse_name, parse_reference, validate_alias
from modelport.registry import compatibility, traffic
from modelport.registry.database import (
    VERSION_TABLE,
    connect,
    lock_artifact,
    models,
    reading,
    safe_url,
    upgrade,
    versions,
    writing,
)
from modelport.registry.database import aliases as alias_table
from modelport.registry.traffic import ModelRouting
from modelport.settings import Settings
from modelport.stores import open_store
from modelport.stores.base import ArtifactStore, CollectableStore
from modelport.types import Batching, ModelVersion, Signature, capture_rate_of, device_of, precision_of

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_GC_GRACE = 3600.0  # seconds an unreferenced artifact is spared (a registration may be in flight)
_LISTED = 20  # names shown in a "not found" message


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """One model with at least one version, as :meth:`Registry.models` lists it."""

    name: str
    latest_version: int
    version_count: int
    aliases: dict[str, int]
    description: str  # the latest version's description
    updated_at: datetime


class RegistryNotFound(NotFound):
    """There is no registry where the settings point, and nothing was created there."""


class Registry:
    """Models, versions and aliases over a SQL database and an artifact store."""

    def __init__(self, database_url: str, store: ArtifactStore, *, create: bool = True) -> None:
        """``create=False``: a database without the registry's tables is :class:`RegistryNotFound`, left as it is."""
        self.store = store
        self._engine = connect(database_url)
        try:
            if not create:
                with reading(self._engine) as conn:
                    if not inspect(conn).has_table(VERSION_TABLE):
                        raise RegistryNotFound(f"the database {safe_url(self._engine)} holds no modelport registry")
            upgrade(self._engine)
        except (OperationalError, InterfaceError) as exc:
            self._engine.dispose()
            first = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
            raise ModelportError(
                f"cannot open the registry database {safe_url(self._engine)}: {first[0] if first else exc}; "
                "check MODELPORT_DATABASE_URL and that the database server is running"
            ) from None
        except BaseException:
            self._engine.dispose()
            raise

    @classmethod
    def open(cls, settings: Settings, *, create: bool = True) -> Registry:
        """The registry that ``settings`` describe: its database URL and artifact store (a folder or a URL).

        ``create=False`` (for what only reads a registry, or changes what it holds) creates nothing:
        where there is no registry, :class:`RegistryNotFound` says where it looked and how to point
        elsewhere. ``create=True`` (registering) makes the home folder and the database's tables.
        """
        if create:
            settings.home.mkdir(parents=True, exist_ok=True)
        # the artifact store first: a store URL no store serves (or a missing bucket) is a setting to
        # fix whether or not a registry exists yet, and is said first
        store = open_store(
            settings.artifact_location, cache=settings.artifact_cache, cache_bytes=settings.artifact_cache_bytes
        )
        if not create:
            file = _sqlite_file(settings.database_url)
            if file is not None and not file.is_file():
                raise _not_found(settings, f"{file} does not exist")
        try:
            return cls(settings.database_url, store, create=create)
        except RegistryNotFound:
            shown = make_url(settings.database_url).render_as_string(hide_password=True)
            raise _not_found(settings, f"{shown} has none of its tables") from None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({safe_url(self._engine)!r}, {self.store!r})"

    def close(self) -> None:
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        """The metadata database, for other tables that live beside the registry's (API keys)."""
        return self._engine

    # -- writing -------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        artifact_dir: Path,
        *,
        runtime: str,
        framework: str,
        signature: Signature,
        environment: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        metrics: Mapping[str, float | str] | None = None,
        params: Mapping[str, float | str] | None = None,
        description: str = "",
        notes: Sequence[str] = (),
        trusted_code: bool = False,
        aliases: Sequence[str] = (),
        batching: Batching | None = None,
        capture_rate: float | None = None,
        device: str | None = None,
        precision: str | None = None,
        allow_signature_change: bool = False,
    ) -> ModelVersion:
        """Store ``artifact_dir`` and record it as the next version of ``name``.

        An alias in ``aliases`` whose version clients call is moved only if the new signature keeps
        what they send and read (else Conflict), or with ``allow_signature_change``."""
        parse_name(name)
        wanted_aliases = sorted({validate_alias(alias) for alias in aliases})
        row = {
            "runtime": _label("runtime", runtime),
            "framework": _label("framework", framework),
            "signature": _signature(signature),
            "environment": _strings("environment", environment),
            "tags": _strings("tags", tags),
            "metrics": _values("metrics", metrics),
            "params": _values("params", params),
            "notes": _notes(notes),
            "description": _text("description", description),
            "trusted_code": bool(trusted_code),
            "batching": _batching(batching),
            "capture_rate": _capture_rate(capture_rate),
            "device": _checked(device_of, device),
            "precision": _checked(precision_of, precision),
        }
        if not allow_signature_change and wanted_aliases:
            with reading(self._engine) as conn:  # before storing anything; checked again in the write
                self._check_aliases(conn, name, wanted_aliases, signature)
        key = self.store.put(Path(artifact_dir))
        now = datetime.now(UTC)
        with writing(self._engine) as conn:
            lock_artifact(conn, key)
            if not self.store.exists(key):  # a concurrent delete or gc removed it after our put
                key = self.store.put(Path(artifact_dir))
            model_id = _ensure_model(conn, name, now)
            if not allow_signature_change:
                self._check_aliases(conn, name, wanted_aliases, signature)
            version = (
                conn.execute(
                    update(models)
                    .where(models.c.id == model_id)
                    .values(next_version=models.c.next_version + 1, updated_at=now)
                    .returning(models.c.next_version)
                ).scalar_one()
                - 1
            )
            version_id = conn.execute(
                insert(versions)
                .values(model_id=model_id, version=version, artifact=key, created_at=now, **row)
                .returning(versions.c.id)
            ).scalar_one()
            for alias in wanted_aliases:
                _point_alias(conn, model_id, alias, version_id, now)
            traffic.bump(conn)  # servers with a version policy pick the new version up
            registered = self._find(conn, Reference(name, version=version))
            result = self._to_version(conn, name, registered)
        log.info("registered %s (artifact %s)", result.ref, key)
        return result

    def set_alias(
        self, ref: str | Reference, alias: str, *, create: bool = True, allow_signature_change: bool = False
    ) -> ModelVersion:
        """Point ``alias`` of the model at the version ``ref`` names: move it, or (``create``) make it.

        A move to a version whose signature would break the alias's clients is Conflict, unless
        ``allow_signature_change`` (see :mod:`modelport.registry.compatibility`)."""
        ref = _reference(ref)
        alias = validate_alias(alias)
        now = datetime.now(UTC)
        with writing(self._engine) as conn:
            model_id = self._lock_model(conn, ref.name, now)
            if not create and traffic.primary_id(conn, model_id, alias) is None:
                raise self._no_alias(conn, ref.name, model_id, alias)
            row = self._find(conn, ref)
            if not allow_signature_change:
                self._check_clients(conn, ref.name, model_id, alias, row, f"move {ref.name}@{alias} to")
            _point_alias(conn, model_id, alias, row.id, now)
            return self._to_version(conn, ref.name, row)

    def remove_alias(self, name: str, alias: str) -> None:
        parse_name(name)
        alias = validate_alias(alias)
        with writing(self._engine) as conn:
            now = datetime.now(UTC)
            model_id = self._lock_model(conn, name, now)
            old = traffic.primary_id(conn, model_id, alias)
            if old is None:
                raise self._no_alias(conn, name, model_id, alias)
            conn.execute(delete(alias_table).where(alias_table.c.model_id == model_id, alias_table.c.alias == alias))
            traffic.forget_alias(conn, model_id, alias, old, now)

    def delete(self, ref: str | Reference) -> ModelVersion:
        """Delete one version (never the model's numbering); refused while an alias points to it."""
        ref = _reference(ref)
        with writing(self._engine) as conn:
            model_id = self._lock_model(conn, ref.name, datetime.now(UTC))
            if ref.is_latest:
                numbers = _version_numbers(conn, model_id)
                example = f"{ref.name}@{numbers[-1] if numbers else 1}"
                raise InvalidReference(
                    f"name the version to delete, e.g. {example}; a bare model name {ref.name!r} is not enough"
                )
            row = self._find(conn, ref)
            pointing = conn.execute(
                select(alias_table.c.alias).where(alias_table.c.version_id == row.id).order_by(alias_table.c.alias)
            ).scalars()
            names = list(pointing)
            if names:
                which = f"alias {names[0]!r} points" if len(names) == 1 else f"aliases {_quoted(names)} point"
                raise Conflict(
                    f"cannot delete {ref.name}@{row.version}: {which} to it; move or remove the alias first "
                    f"(modelport alias {ref.name}@N {names[0]})"
                )
            using = traffic.users(conn, row.id)
            if using:
                raise Conflict(
                    f"cannot delete {ref.name}@{row.version}: alias {', '.join(using)} sends traffic to it; "
                    f"remove that first (modelport alias {ref.name}@{row.version} ALIAS --weight 0, "
                    f"or modelport alias {ref.name}@ALIAS --shadow {ref.name}@{row.version} --remove)"
                )
            traffic.bump(conn)
            deleted = self._to_version(conn, ref.name, row)
            conn.execute(delete(versions).where(versions.c.id == row.id))
        self._release(deleted.artifact)
        log.info("deleted %s", deleted.ref)
        return deleted

    def gc(self, grace: float = DEFAULT_GC_GRACE) -> list[str]:
        """Delete stored artifacts that no version references and that are older than ``grace`` seconds.

        Returns the deleted keys. Needs a store that knows its artifacts' ages (LocalStore,
        MemoryStore, S3Store). Also removes leftovers of interrupted puts older than ``grace``.
        """
        store = self.store
        if not isinstance(store, CollectableStore):
            raise ModelportError(
                f"the artifact store {store!r} cannot tell how old an artifact is, so unreferenced artifacts "
                "cannot be told apart from registrations in flight; clean it with the store's own tools"
            )
        with reading(self._engine) as conn:
            referenced = set(conn.execute(select(versions.c.artifact).distinct()).scalars())
        removed = [key for key in list(store.keys()) if key not in referenced and self._release(key, grace)]
        for leftover in store.purge_incomplete(grace):
            log.info("removed leftover of an interrupted store operation: %s", leftover)
        return removed

    # -- reading -------------------------------------------------------------------------------

    def get(self, ref: str | Reference) -> ModelVersion:
        """The version ``ref`` names: ``iris@3``, ``iris@production``, ``iris`` or ``iris@latest``."""
        ref = _reference(ref)
        with reading(self._engine) as conn:
            return self._to_version(conn, ref.name, self._find(conn, ref))

    def versions(self, name: str) -> list[ModelVersion]:
        """Every existing version of ``name``, oldest first (empty when all were deleted)."""
        parse_name(name)
        with reading(self._engine) as conn:
            model_id = self._model_id(conn, name)
            rows = conn.execute(
                select(versions).where(versions.c.model_id == model_id).order_by(versions.c.version)
            ).all()
            by_version: dict[int, list[str]] = {}
            for alias, version_id in conn.execute(
                select(alias_table.c.alias, alias_table.c.version_id).where(alias_table.c.model_id == model_id)
            ):
                by_version.setdefault(version_id, []).append(alias)
            return [_model_version(name, row, by_version.get(row.id, [])) for row in rows]

    def models(self) -> list[ModelSummary]:
        """Every model with at least one version, by name."""
        stats = (
            select(
                versions.c.model_id,
                func.max(versions.c.version).label("latest"),
                func.count().label("n"),
            )
            .group_by(versions.c.model_id)
            .subquery()
        )
        query = (
            select(models.c.id, models.c.name, models.c.updated_at, stats.c.latest, stats.c.n, versions.c.description)
            .join(stats, stats.c.model_id == models.c.id)
            .join(versions, (versions.c.model_id == models.c.id) & (versions.c.version == stats.c.latest))
            .order_by(models.c.name)
        )
        with reading(self._engine) as conn:
            rows = conn.execute(query).all()
            named: dict[int, dict[str, int]] = {}
            for model_id, alias, version in conn.execute(
                select(alias_table.c.model_id, alias_table.c.alias, versions.c.version)
                .join(versions, versions.c.id == alias_table.c.version_id)
                .order_by(alias_table.c.alias)
            ):
                named.setdefault(model_id, {})[alias] = version
        return [
            ModelSummary(
                name=row.name,
                latest_version=row.latest,
                version_count=row.n,
                aliases=named.get(row.id, {}),
                description=row.description,
                updated_at=row.updated_at,
            )
            for row in rows
        ]

    def artifact_path(self, version: ModelVersion) -> Path:
        """A local directory with the version's artifact files."""
        return self.store.fetch(version.artifact)

    # -- traffic: weighted aliases, promote and rollback, shadows -----------------------------------

    def split(
        self, ref: str | Reference, alias: str, weight: int, *, allow_signature_change: bool = False
    ) -> dict[int, int]:
        """Send ``weight`` percent of ``alias``'s traffic to the version ``ref`` names (0 stops it).

        The alias's own version keeps the rest. Returns every target's weight, version -> percent.
        A version whose signature would break the alias's clients is Conflict, unless ``allow_signature_change``.
        """
        ref, alias = _reference(ref), validate_alias(alias)
        if not 0 <= weight < 100:
            raise InvalidSetting(f"--weight is a percentage of the alias's traffic from 0 to 99, got {weight}")
        with writing(self._engine) as conn:
            model_id = self._lock_model(conn, ref.name, datetime.now(UTC))
            row = self._find(conn, ref)
            primary = traffic.primary_id(conn, model_id, alias)
            if primary is None:
                raise NotFound(
                    f"model {ref.name!r} has no alias {alias!r} to split; point it first: modelport alias REF {alias}"
                )
            if primary == row.id:
                raise Conflict(f"{ref.name}@{alias} already points at version {row.version}; split to another version")
            if weight and not allow_signature_change:
                self._check_clients(conn, ref.name, model_id, alias, row, f"send {weight}% of {ref.name}@{alias} to")
            weights = traffic.set_split(conn, model_id, alias, row.id, weight)
            rest = 100 - sum(weights.values())
            if rest < 1:
                raise Conflict(
                    f"the weighted versions of {ref.name}@{alias} would take {100 - rest}% of its traffic; "
                    "leave the alias's own version at least 1%"
                )
            current = int(conn.execute(select(versions.c.version).where(versions.c.id == primary)).scalar_one())
            return {current: rest, **weights}

    def promote(
        self, ref: str | Reference, alias: str, *, create: bool = False, allow_signature_change: bool = False
    ) -> ModelVersion:
        """Point an existing ``alias`` fully at ``ref``'s version: its weighted targets and that
        version's shadow go. A misspelled alias is :class:`NotFound` (naming the model's aliases)
        unless ``create``; a signature that would break its clients is Conflict, as for :meth:`set_alias`."""
        return self.set_alias(ref, alias, create=create, allow_signature_change=allow_signature_change)

    def rollback(self, name: str, alias: str) -> ModelVersion:
        """Point ``alias`` back at the version it pointed at before its last move.

        Never refused for its signature (it returns to what clients had before that move): a
        difference is logged as a warning."""
        parse_name(name)
        alias = validate_alias(alias)
        now = datetime.now(UTC)
        with writing(self._engine) as conn:
            model_id = self._lock_model(conn, name, now)
            if traffic.primary_id(conn, model_id, alias) is None:
                raise self._no_alias(conn, name, model_id, alias)
            moves = traffic.history(conn, model_id, alias)
            if not moves or moves[0].from_version is None:
                raise Conflict(f"{name}@{alias} has no earlier version to roll back to")
            row = self._find(conn, Reference(name, version=moves[0].from_version))
            changes = self._client_breaks(conn, model_id, alias, Signature.from_dict(row.signature))
            if changes:
                log.warning(
                    "rolling %s@%s back to version %s changes its signature: %s", name, alias, row.version, changes[1]
                )
            traffic.move(conn, model_id, alias, row.id, now)
            return self._to_version(conn, name, row)

    def alias_history(self, name: str, alias: str) -> list[traffic.AliasMove]:
        """The alias's moves, newest first."""
        with reading(self._engine) as conn:
            return traffic.history(conn, self._model_id(conn, parse_name(name)), validate_alias(alias))

    def set_shadow(
        self,
        ref: str | Reference,
        shadow: str | Reference,
        fraction: float = 1.0,
        *,
        allow_signature_change: bool = False,
    ) -> ModelVersion:
        """Mirror ``fraction`` of the requests for alias ``ref`` (NAME@ALIAS) to version ``shadow``.

        A version that would not take the alias's requests (another input name, datatype, shape, ...)
        is Conflict, unless ``allow_signature_change``; its outputs may differ (no client reads them)."""
        ref, target = _reference(ref), _reference(shadow)
        if ref.alias is None:
            raise InvalidReference(
                f"shadow an alias's traffic: give NAME@ALIAS (e.g. {ref.name}@production), not {ref}"
            )
        if target.name != ref.name:
            raise InvalidReference(f"a shadow must be a version of {ref.name!r}, got {target}")
        if not 0 < fraction <= 1:
            raise InvalidSetting(f"--fraction is the share of requests mirrored, above 0 and at most 1, got {fraction}")
        now = datetime.now(UTC)
        with writing(self._engine) as conn:
            model_id = self._lock_model(conn, ref.name, now)
            primary = self._find(conn, ref)
            row = self._find(conn, target)
            if row.id == primary.id:
                raise Conflict(f"{ref} is version {row.version} already; shadow it with another version")
            if not allow_signature_change:
                self._check_clients(conn, ref.name, model_id, ref.alias, row, f"mirror {ref} to", outputs=False)
            traffic.set_shadow(conn, model_id, ref.alias, row.id, fraction, now)
            return self._to_version(conn, ref.name, row)

    def remove_shadow(self, ref: str | Reference, shadow: str | Reference) -> None:
        ref, target = _reference(ref), _reference(shadow)
        with writing(self._engine) as conn:
            model_id = self._lock_model(conn, ref.name, datetime.now(UTC))
            row = self._find(conn, target)
            if ref.alias is None or not traffic.remove_shadow(conn, model_id, ref.alias, row.id):
                raise NotFound(f"{ref} has no shadow {ref.name}@{row.version}")

    def shadows(self, ref: str | Reference) -> list[traffic.ShadowState]:
        """The versions mirrored for alias ``ref`` (NAME@ALIAS), with agreement counts from every server."""
        ref = _reference(ref)
        if ref.alias is None:
            return []
        with reading(self._engine) as conn:
            return traffic.shadow_states(conn, self._model_id(conn, ref.name), ref.alias)

    def splits(self, ref: str | Reference) -> dict[int, int]:
        """Version -> percent of alias ``ref``'s traffic (one entry of 100 when it is not split)."""
        ref = _reference(ref)
        if ref.alias is None:
            return {}
        with reading(self._engine) as conn:
            model_id = self._model_id(conn, ref.name)
            row = self._find(conn, ref)
            weights = traffic.splits(conn, model_id, ref.alias)
            return {row.version: 100 - sum(weights.values()), **weights}

    def record_shadow_stats(self, deltas: Mapping[tuple[str, str, int], Mapping[str, Any]]) -> None:
        """Add agreement counts a server gathered, keyed by (model, alias, shadow version)."""
        if deltas:
            with writing(self._engine) as conn:
                traffic.add_stats(conn, deltas, datetime.now(UTC))

    def serial(self) -> int:
        """A counter every alias, split, shadow or version write bumps: one cheap query to poll."""
        with reading(self._engine) as conn:
            return traffic.serial(conn)

    def routing(self) -> dict[str, ModelRouting]:
        """Every model's version numbers and aliases with weighted targets and shadows."""
        with reading(self._engine) as conn:
            return traffic.snapshot(conn)

    # -- internals -----------------------------------------------------------------------------

    def _release(self, key: str, grace: float = 0.0) -> bool:
        """Delete ``key`` from the store if no version references it (and it is old enough)."""
        with writing(self._engine) as conn:
            lock_artifact(conn, key)
            used = conn.execute(select(func.count()).select_from(versions).where(versions.c.artifact == key))
            if used.scalar_one():
                return False
            if grace > 0 and isinstance(self.store, CollectableStore):
                try:
                    if self.store.age(key) < grace:
                        return False
                except NotFound:
                    return False
            self.store.delete(key)
            log.info("deleted unreferenced artifact %s", key)
            return True

    def _lock_model(self, conn: Connection, name: str, now: datetime) -> int:
        """Touch the model's row (locking it on PostgreSQL); NotFound with the known names if absent."""
        parse_name(name)
        model_id = conn.execute(
            update(models).where(models.c.name == name).values(updated_at=now).returning(models.c.id)
        ).scalar_one_or_none()
        if model_id is None:
            raise _unknown_model(conn, name)
        return int(model_id)

    def _model_id(self, conn: Connection, name: str) -> int:
        model_id = conn.execute(select(models.c.id).where(models.c.name == name)).scalar_one_or_none()
        if model_id is None:
            raise _unknown_model(conn, name)
        return int(model_id)

    def _find(self, conn: Connection, ref: Reference) -> Row[Any]:
        model_id = self._model_id(conn, ref.name)
        query = select(versions).where(versions.c.model_id == model_id)
        if ref.version is not None:
            row = conn.execute(query.where(versions.c.version == ref.version)).first()
        elif ref.alias is not None:
            target = select(alias_table.c.version_id).where(
                alias_table.c.model_id == model_id, alias_table.c.alias == ref.alias
            )
            row = conn.execute(query.where(versions.c.id == target.scalar_subquery())).first()
            if row is None:
                raise self._no_alias(conn, ref.name, model_id, ref.alias)
        else:
            row = conn.execute(query.order_by(versions.c.version.desc()).limit(1)).first()
        if row is None:
            numbers = _version_numbers(conn, model_id)
            if ref.version is None:
                raise NotFound(f"model {ref.name!r} has no versions (all were deleted); register a new one")
            raise NotFound(f"model {ref.name!r} has no version {ref.version} (versions: {_ranges(numbers)})")
        return row

    def _check_aliases(self, conn: Connection, name: str, aliases: Sequence[str], signature: Signature) -> None:
        """Refuse (Conflict) registering ``signature`` with ``aliases`` that would break their clients."""
        model_id = conn.execute(select(models.c.id).where(models.c.name == name)).scalar_one_or_none()
        if model_id is None:  # a new model: no alias has clients yet
            return
        for alias in aliases:
            found = self._client_breaks(conn, int(model_id), alias, signature)
            if found:
                _refuse(f"point {name}@{alias} at the new version", "the new version", name, alias, found)

    def _check_clients(
        self,
        conn: Connection,
        name: str,
        model_id: int,
        alias: str,
        row: Row[Any],
        action: str,
        *,
        outputs: bool = True,
    ) -> None:
        """Refuse (Conflict) ``action`` + version ``row`` when its signature would break ``alias``'s clients."""
        signature = Signature.from_dict(row.signature)
        found = self._client_breaks(conn, model_id, alias, signature, skip=row.id, outputs=outputs)
        if found:
            _refuse(f"{action} version {row.version}", f"version {row.version}", name, alias, found)

    def _client_breaks(
        self,
        conn: Connection,
        model_id: int,
        alias: str,
        signature: Signature,
        *,
        skip: int | None = None,
        outputs: bool = True,
    ) -> tuple[int, str] | None:
        """The version ``alias`` points at and what ``signature`` would break for its clients; None when nothing."""
        current = traffic.primary_id(conn, model_id, alias)
        if current is None or current == skip:
            return None
        old = conn.execute(select(versions.c.version, versions.c.signature).where(versions.c.id == current)).one()
        changes = compatibility.breaking_changes(Signature.from_dict(old.signature), signature, outputs=outputs)
        return (int(old.version), "; ".join(changes)) if changes else None

    def _no_alias(self, conn: Connection, name: str, model_id: int, alias: str) -> NotFound:
        known = conn.execute(
            select(alias_table.c.alias).where(alias_table.c.model_id == model_id).order_by(alias_table.c.alias)
        ).scalars()
        return NotFound(f"model {name!r} has no alias {alias!r} (aliases: {', '.join(known) or 'none'})")

    def _to_version(self, conn: Connection, name: str, row: Row[Any]) -> ModelVersion:
        names = conn.execute(
            select(alias_table.c.alias).where(alias_table.c.version_id == row.id).order_by(alias_table.c.alias)
        ).scalars()
        return _model_version(name, row, list(names))


def _refuse(action: str, target: str, name: str, alias: str, found: tuple[int, str]) -> NoReturn:
    version, changes = found
    raise Conflict(
        f"cannot {action}: {target} would break the clients of {name}@{alias} (version {version}): {changes}. "
        "Change the clients first, then pass --allow-signature-change (CLI) or allow_signature_change=True (Python)"
    )


def _ensure_model(conn: Connection, name: str, now: datetime) -> int:
    model_id = conn.execute(select(models.c.id).where(models.c.name == name)).scalar_one_or_none()
    if model_id is not None:
        return int(model_id)
    try:
        with conn.begin_nested():
            return int(
                conn.execute(
                    insert(models)
                    .values(name=name, next_version=1, created_at=now, updated_at=now)
                    .returning(models.c.id)
                ).scalar_one()
            )
    except IntegrityError:  # another process created it a moment ago
        return int(conn.execute(select(models.c.id).where(models.c.name == name)).scalar_one())


def _point_alias(conn: Connection, model_id: int, alias: str, version_id: int, now: datetime) -> None:
    traffic.move(conn, model_id, alias, version_id, now)  # also drops its splits, logs the move, bumps


def _unknown_model(conn: Connection, name: str) -> NotFound:
    names = list(
        conn.execute(
            select(models.c.name)
            .where(select(versions.c.id).where(versions.c.model_id == models.c.id).exists())
            .order_by(models.c.name)
            .limit(_LISTED + 1)
        ).scalars()
    )
    if not names:
        return NotFound(f"model {name!r} not found (no models are registered)")
    shown = ", ".join(names[:_LISTED]) + (", ..." if len(names) > _LISTED else "")
    return NotFound(f"model {name!r} not found (registered: {shown})")


def _version_numbers(conn: Connection, model_id: int) -> list[int]:
    query = select(versions.c.version).where(versions.c.model_id == model_id).order_by(versions.c.version)
    return list(conn.execute(query).scalars())


def _ranges(numbers: Sequence[int]) -> str:
    """``1-3, 5, 7-8`` for [1, 2, 3, 5, 7, 8]; ``none`` for []."""
    parts: list[str] = []
    start = 0
    while start < len(numbers):
        end = start
        while end + 1 < len(numbers) and numbers[end + 1] == numbers[end] + 1:
            end += 1
        parts.append(str(numbers[start]) if start == end else f"{numbers[start]}-{numbers[end]}")
        start = end + 1
    return ", ".join(parts) or "none"


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL; None for another database, an in-memory one, or not a URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None  # connecting says what is wrong with it
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().absolute()


def _not_found(settings: Settings, why: str) -> RegistryNotFound:
    """No registry where ``settings`` point: where that was, and how to point elsewhere."""
    if settings.database_url == f"sqlite:///{settings.home / 'registry.db'}":
        where = f"in {settings.home} (MODELPORT_HOME; default: .modelport in the current directory)"
    else:
        where = "in the database MODELPORT_DATABASE_URL names"
    return RegistryNotFound(
        f"no modelport registry {where}: {why}; run this where the registry's .modelport folder is, point "
        "MODELPORT_HOME (or MODELPORT_DATABASE_URL) at it, or register a model first: "
        "modelport register PATH --name NAME"
    )


def _reference(ref: str | Reference) -> Reference:
    return ref if isinstance(ref, Reference) else parse_reference(ref)


def _model_version(name: str, row: Row[Any], alias_names: Sequence[str]) -> ModelVersion:
    return ModelVersion(
        name=name,
        version=row.version,
        runtime=row.runtime,
        framework=row.framework,
        artifact=row.artifact,
        signature=Signature.from_dict(row.signature),
        created_at=row.created_at,
        aliases=tuple(sorted(alias_names)),
        environment=row.environment,
        tags=row.tags,
        metrics=row.metrics,
        params=row.params,
        description=row.description,
        notes=tuple(row.notes),
        trusted_code=row.trusted_code,
        batching=Batching.from_dict(row.batching),
        capture_rate=row.capture_rate,
        device=row.device,
        precision=row.precision,
    )


# -- validation of what register() stores -----------------------------------------------------------


def _label(field: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise InvalidModel(f"{field} must be a short non-empty string such as 'onnx' or 'sklearn', got {value!r}")
    return value


def _text(field: str, value: str) -> str:
    if not isinstance(value, str):
        raise InvalidModel(f"{field} must be a string, got {type(value).__name__}")
    return value


def _strings(field: str, mapping: Mapping[str, str] | None) -> dict[str, str]:
    result = dict(mapping or {})
    for key, value in result.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidModel(f"{field} map strings to strings; {key!r} maps to {type(value).__name__} {value!r}")
    return result


def _values(field: str, mapping: Mapping[str, float | str] | None) -> dict[str, float | str]:
    result = dict(mapping or {})
    for key, value in result.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InvalidModel(
                f"{field} map names to numbers or strings; {key!r} maps to {type(value).__name__} {value!r}"
            )
    return result


def _batching(batching: Batching | None) -> dict[str, Any]:
    if batching is not None and not isinstance(batching, Batching):
        raise InvalidModel(f"batching must be a modelport.types.Batching, got {type(batching).__name__}")
    return batching.to_dict() if batching is not None else {}


def _capture_rate(rate: float | None) -> float | None:
    return _checked(capture_rate_of, rate)


def _checked(check: Callable[[Any], T], value: Any) -> T:
    try:
        return check(value)
    except ValueError as exc:
        raise InvalidModel(str(exc)) from None


def _notes(notes: Sequence[str]) -> list[str]:
    if isinstance(notes, str) or not all(isinstance(note, str) for note in notes):
        raise InvalidModel(f"notes must be a sequence of strings, got {notes!r}")
    return list(notes)


def _signature(signature: Signature) -> dict[str, Any]:
    if not isinstance(signature, Signature):
        raise InvalidModel(f"signature must be a modelport.types.Signature, got {type(signature).__name__}")
    document = signature.to_dict()
    try:
        json.dumps(document)
    except (TypeError, ValueError) as exc:
        raise InvalidModel(
            f"the signature's example is not JSON data ({exc}); give lists of numbers or strings"
        ) from None
    return document
