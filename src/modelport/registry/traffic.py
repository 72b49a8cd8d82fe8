"""The registry's traffic tables: weighted alias targets, alias history, shadows, the change counter;
and the snapshot of them servers route by (:class:`ModelRouting` per model), and the shadow
statistics record they accumulate.

Functions here run inside the registry's transactions (:class:`~modelport.registry.registry.Registry`
opens them and locks the model's row); they only read and write rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from modelport.registry.database import alias_history, alias_splits, aliases, changes, models, shadows, versions

FULL = 100  # weights are percentages of an alias's traffic

Targets = tuple[tuple[int, int], ...]  # (version, weight) pairs; weights sum to FULL
Shadows = tuple[tuple[int, float], ...]  # (version, fraction of the alias's requests mirrored)


@dataclass(frozen=True, slots=True)
class AliasTarget:
    """Where an alias points: its primary version, extra weighted versions, and shadows."""

    version: int
    splits: Targets = ()  # (version, weight) besides the primary; the primary gets the rest
    shadows: Shadows = ()

    def weighted(self) -> Targets:
        rest = FULL - sum(weight for _, weight in self.splits)
        primary = ((self.version, rest),) if rest > 0 else ()
        return primary + tuple(self.splits)


@dataclass(frozen=True, slots=True)
class ModelRouting:
    """One model in a registry snapshot: its version numbers (ascending) and its aliases."""

    versions: tuple[int, ...]
    aliases: Mapping[str, AliasTarget] = field(default_factory=dict)


Snapshot = Mapping[str, ModelRouting]


# -- shadow statistics: what servers record and `modelport show` reports ----------------------


def empty() -> dict[str, Any]:
    return {"requests": 0, "errors": 0, "dropped": 0, "outputs": {}}


def merge(into: dict[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    """Add counts of ``delta`` (same shape as :func:`empty`) to ``into``; returns ``into``."""
    for counter in ("requests", "errors", "dropped"):
        into[counter] = into.get(counter, 0) + delta.get(counter, 0)
    outputs = into.setdefault("outputs", {})
    for name, entry in delta.get("outputs", {}).items():
        mine = outputs.setdefault(name, {k: (0 if k != "kind" else v) for k, v in entry.items()})
        for k, v in entry.items():
            if k == "max":
                mine[k] = max(mine[k], v)
            elif k != "kind":
                mine[k] += v
    return into


def summary(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Readable agreement: label agreement share, mean and max absolute difference per output."""
    result: dict[str, Any] = {k: stats.get(k, 0) for k in ("requests", "errors", "dropped")}
    outputs: dict[str, Any] = {}
    for name, entry in stats.get("outputs", {}).items():
        if entry["kind"] == "numeric":
            count = entry["count"]
            outputs[name] = {"mean_abs_diff": entry["sum"] / count if count else 0.0, "max_abs_diff": entry["max"]}
        else:
            total = entry["total"]
            outputs[name] = {"agreement": entry["equal"] / total if total else 0.0, "compared": total}
    result["outputs"] = outputs
    return result


@dataclass(frozen=True, slots=True)
class AliasMove:
    """One move of an alias: from one version to another (None: created or removed)."""

    alias: str
    from_version: int | None
    to_version: int | None
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class ShadowState:
    """A version mirrored for an alias: the share of requests, and the agreement counts so far."""

    version: int
    fraction: float
    stats: Mapping[str, Any]


def bump(conn: Connection) -> None:
    """Tell every polling server that routing may have changed."""
    if not conn.execute(update(changes).where(changes.c.id == 1).values(serial=changes.c.serial + 1)).rowcount:
        conn.execute(insert(changes).values(id=1, serial=1))


def serial(conn: Connection) -> int:
    return int(conn.execute(select(changes.c.serial).where(changes.c.id == 1)).scalar_one_or_none() or 0)


def _number(conn: Connection, version_id: int | None) -> int | None:
    if version_id is None:
        return None
    return int(conn.execute(select(versions.c.version).where(versions.c.id == version_id)).scalar_one())


def primary_id(conn: Connection, model_id: int, alias: str) -> int | None:
    query = select(aliases.c.version_id).where(aliases.c.model_id == model_id, aliases.c.alias == alias)
    found = conn.execute(query).scalar_one_or_none()
    return None if found is None else int(found)


def move(conn: Connection, model_id: int, alias: str, version_id: int, now: datetime) -> None:
    """Point ``alias`` fully at ``version_id``: drop its splits and a shadow of that version; log the move."""
    before = primary_id(conn, model_id, alias)
    if before is None:
        conn.execute(insert(aliases).values(model_id=model_id, alias=alias, version_id=version_id, updated_at=now))
    elif before != version_id:
        conn.execute(
            update(aliases)
            .where(aliases.c.model_id == model_id, aliases.c.alias == alias)
            .values(version_id=version_id, updated_at=now)
        )
    conn.execute(delete(alias_splits).where(alias_splits.c.model_id == model_id, alias_splits.c.alias == alias))
    conn.execute(
        delete(shadows).where(
            shadows.c.model_id == model_id, shadows.c.alias == alias, shadows.c.version_id == version_id
        )
    )
    if before != version_id:
        record(conn, model_id, alias, _number(conn, before), _number(conn, version_id), now)
    bump(conn)


def record(conn: Connection, model_id: int, alias: str, old: int | None, new: int | None, now: datetime) -> None:
    conn.execute(
        insert(alias_history).values(model_id=model_id, alias=alias, from_version=old, to_version=new, changed_at=now)
    )


def set_split(conn: Connection, model_id: int, alias: str, version_id: int, weight: int) -> dict[int, int]:
    """Give ``version_id`` ``weight`` percent of the alias (0 removes it); returns version -> weight."""
    where = (alias_splits.c.model_id == model_id, alias_splits.c.alias == alias)
    conn.execute(delete(alias_splits).where(*where, alias_splits.c.version_id == version_id))
    if weight:
        conn.execute(insert(alias_splits).values(model_id=model_id, alias=alias, version_id=version_id, weight=weight))
    bump(conn)
    return splits(conn, model_id, alias)


def splits(conn: Connection, model_id: int, alias: str) -> dict[int, int]:
    query = (
        select(versions.c.version, alias_splits.c.weight)
        .join(versions, versions.c.id == alias_splits.c.version_id)
        .where(alias_splits.c.model_id == model_id, alias_splits.c.alias == alias)
        .order_by(versions.c.version)
    )
    return {int(v): int(w) for v, w in conn.execute(query)}


def forget_alias(conn: Connection, model_id: int, alias: str, old_version_id: int, now: datetime) -> None:
    """An alias was removed: drop its splits and shadows, log the removal."""
    conn.execute(delete(alias_splits).where(alias_splits.c.model_id == model_id, alias_splits.c.alias == alias))
    conn.execute(delete(shadows).where(shadows.c.model_id == model_id, shadows.c.alias == alias))
    record(conn, model_id, alias, _number(conn, old_version_id), None, now)
    bump(conn)


def history(conn: Connection, model_id: int, alias: str) -> list[AliasMove]:
    """The alias's moves, newest first."""
    query = (
        select(alias_history)
        .where(alias_history.c.model_id == model_id, alias_history.c.alias == alias)
        .order_by(alias_history.c.id.desc())
    )
    return [AliasMove(r.alias, r.from_version, r.to_version, r.changed_at) for r in conn.execute(query)]


def set_shadow(conn: Connection, model_id: int, alias: str, version_id: int, fraction: float, now: datetime) -> None:
    where = (shadows.c.model_id == model_id, shadows.c.alias == alias, shadows.c.version_id == version_id)
    if not conn.execute(update(shadows).where(*where).values(fraction=fraction, updated_at=now)).rowcount:
        conn.execute(
            insert(shadows).values(
                model_id=model_id, alias=alias, version_id=version_id, fraction=fraction, stats=empty(), updated_at=now
            )
        )
    bump(conn)


def remove_shadow(conn: Connection, model_id: int, alias: str, version_id: int) -> bool:
    where = (shadows.c.model_id == model_id, shadows.c.alias == alias, shadows.c.version_id == version_id)
    removed = bool(conn.execute(delete(shadows).where(*where)).rowcount)
    bump(conn)
    return removed


def shadow_states(conn: Connection, model_id: int, alias: str) -> list[ShadowState]:
    query = (
        select(versions.c.version, shadows.c.fraction, shadows.c.stats)
        .join(versions, versions.c.id == shadows.c.version_id)
        .where(shadows.c.model_id == model_id, shadows.c.alias == alias)
        .order_by(versions.c.version)
    )
    return [ShadowState(int(v), float(f), s) for v, f, s in conn.execute(query)]


def add_stats(conn: Connection, deltas: Mapping[tuple[str, str, int], Mapping[str, Any]], now: datetime) -> None:
    """Add agreement counts gathered by a server to the shadows that still exist (no change bump)."""
    for (name, alias, number), delta in deltas.items():
        query = (
            select(shadows.c.model_id, shadows.c.version_id, shadows.c.stats)
            .join(models, models.c.id == shadows.c.model_id)
            .join(versions, versions.c.id == shadows.c.version_id)
            .where(models.c.name == name, shadows.c.alias == alias, versions.c.version == number)
        )
        row = conn.execute(query).first()
        if row is None:
            continue
        stats = merge(dict(row.stats or empty()), delta)
        conn.execute(
            update(shadows)
            .where(shadows.c.model_id == row.model_id, shadows.c.alias == alias, shadows.c.version_id == row.version_id)
            .values(stats=stats, updated_at=now)
        )


def users(conn: Connection, version_id: int) -> list[str]:
    """Aliases that split traffic to, or shadow, the version (they block its deletion)."""
    split = select(alias_splits.c.alias).where(alias_splits.c.version_id == version_id)
    mirrored = select(shadows.c.alias).where(shadows.c.version_id == version_id)
    found = [f"{a} (weighted target)" for a in conn.execute(split).scalars()]
    return found + [f"{a} (shadow)" for a in conn.execute(mirrored).scalars()]


def snapshot(conn: Connection) -> dict[str, ModelRouting]:
    """Every model's version numbers and aliases (primary, weighted targets, shadows), in four queries."""
    numbers: dict[str, list[int]] = {}
    for name, number in conn.execute(
        select(models.c.name, versions.c.version)
        .join(versions, versions.c.model_id == models.c.id)
        .order_by(models.c.name, versions.c.version)
    ):
        numbers.setdefault(name, []).append(int(number))
    primary: dict[tuple[str, str], int] = {}
    for name, alias, number in conn.execute(
        select(models.c.name, aliases.c.alias, versions.c.version)
        .join(aliases, aliases.c.model_id == models.c.id)
        .join(versions, versions.c.id == aliases.c.version_id)
    ):
        primary[(name, alias)] = int(number)
    weighted: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for name, alias, number, weight in conn.execute(
        select(models.c.name, alias_splits.c.alias, versions.c.version, alias_splits.c.weight)
        .join(alias_splits, alias_splits.c.model_id == models.c.id)
        .join(versions, versions.c.id == alias_splits.c.version_id)
        .order_by(versions.c.version)
    ):
        weighted.setdefault((name, alias), []).append((int(number), int(weight)))
    mirrored: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for name, alias, number, fraction in conn.execute(
        select(models.c.name, shadows.c.alias, versions.c.version, shadows.c.fraction)
        .join(shadows, shadows.c.model_id == models.c.id)
        .join(versions, versions.c.id == shadows.c.version_id)
        .order_by(versions.c.version)
    ):
        mirrored.setdefault((name, alias), []).append((int(number), float(fraction)))
    result: dict[str, ModelRouting] = {}
    for name, listed in numbers.items():
        targets = {
            alias: AliasTarget(v, tuple(weighted.get((n, alias), ())), tuple(mirrored.get((n, alias), ())))
            for (n, alias), v in primary.items()
            if n == name
        }
        result[name] = ModelRouting(tuple(listed), targets)
    return result
