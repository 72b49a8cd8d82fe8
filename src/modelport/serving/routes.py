"""The routing table: where each name + selector goes, built from plans and the loaded versions.

A :class:`RoutingTable` is immutable; the manager builds a new one with :func:`build_table` and
replaces the old one in one assignment, so a request sees either the old table or the new one.
A :class:`Route` picks one of its weighted versions per request (:func:`pick`): by a stable hash
of a routing key, else with the manager's ``Chance`` (a ``random.Random`` of its own unless a
test injects an exact one).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate
from types import MappingProxyType
from typing import Protocol

from modelport.registry.traffic import Targets
from modelport.serving.plans import Plan
from modelport.serving.versions import ServingModel

Key = tuple[str, int]
Selector = tuple[str, str | None]  # (name, selector); a None selector is the model's default
NOT_LOADED = "not loaded yet"  # why a required route is unmet while none of its versions failed


class Chance(Protocol):
    """Where traffic splits and shadow sampling draw from: :mod:`random`, or a test's exact sequence."""

    def randrange(self, stop: int, /) -> int: ...

    def random(self) -> float: ...


def pick(bounds: Sequence[int], key: str | None, chance: Chance) -> int:
    """The index of the target that serves a request: by weight, at random or by a sticky key.

    ``bounds`` are cumulative weights. A key always maps to the same target (a stable hash, the
    same in every process); no key draws from ``chance``.
    """
    total = bounds[-1]
    point = zlib.crc32(key.encode()) % total if key is not None else chance.randrange(total)
    for index, bound in enumerate(bounds):
        if point < bound:
            return index
    return len(bounds) - 1  # pragma: no cover - point < total == bounds[-1]


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """Where one name + selector goes: weighted loaded versions, and shadows mirrored to."""

    models: tuple[ServingModel, ...]
    bounds: tuple[int, ...]  # cumulative weights
    chance: Chance = field(repr=False)  # draws the weighted pick when there is no routing key
    shadows: tuple[tuple[ServingModel, float], ...] = ()
    label: str = ""  # the alias shadow statistics are recorded under

    @property
    def primary(self) -> ServingModel:
        return self.models[0]

    def pick(self, key: str | None) -> ServingModel:
        models = self.models
        return models[0] if len(models) == 1 else models[pick(self.bounds, key, self.chance)]


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Every route by (name, selector), and why each required route has no ready version."""

    routes: Mapping[Selector, Route] = field(default_factory=dict)
    unmet: Mapping[Selector, str] = field(default_factory=dict)

    def get(self, name: str, selector: str | None) -> Route | None:
        return self.routes.get((name, selector))

    def names(self) -> list[str]:
        return sorted({name for name, _ in self.routes})

    def aliases(self, name: str) -> list[str]:
        """The aliases ``name`` is routed by (not numbers, not ``latest``)."""
        return sorted(s for (n, s) in self.routes if n == name and s and not s.isdigit() and s != "latest")

    def used(self) -> set[Key]:
        """Every version a route sends requests or shadow copies to."""
        return {m.key for route in self.routes.values() for m in (*route.models, *(s for s, _ in route.shadows))}


def build_table(
    plans: Mapping[str, Plan],
    unmet: Mapping[Selector, str],
    loaded: Mapping[Key, ServingModel],
    errors: Mapping[Key, str],
    old: RoutingTable,
    chance: Chance,
) -> RoutingTable:
    """The table for ``plans`` over the ``loaded`` versions. A route whose targets are not all
    loaded keeps its ``old`` route while that one's versions are loaded; a required route left
    without any version is unmet, with the load ``errors`` of its targets as the reason."""
    routes: dict[Selector, Route] = {}
    why = dict(unmet)
    for name, plan in plans.items():
        for selector, targets in plan.routes.items():
            route = _route(name, selector, targets, plan, loaded, old, chance)
            if route is not None:
                routes[(name, selector)] = route
            elif selector in plan.required:
                reasons = [errors[(name, v)] for v, _ in targets if (name, v) in errors]
                why[(name, selector)] = "; ".join(reasons) or NOT_LOADED
    return RoutingTable(routes, MappingProxyType(why))


def _route(
    name: str,
    selector: str | None,
    targets: Targets,
    plan: Plan,
    loaded: Mapping[Key, ServingModel],
    old: RoutingTable,
    chance: Chance,
) -> Route | None:
    shadows = tuple(
        (loaded[(name, v)], fraction) for v, fraction in plan.shadows.get(selector, ()) if (name, v) in loaded
    )
    label = plan.labels.get(selector, "")
    ready = [(loaded[(name, v)], w) for v, w in targets if (name, v) in loaded]
    if len(ready) < len(targets):  # a target failed or is loading: keep the old route while it works
        previous = old.get(name, selector)
        if previous is not None and all(m.key in loaded for m in previous.models):
            return replace(previous, shadows=shadows, label=label)
    if not ready:
        return None
    models = tuple(m for m, _ in ready)
    return Route(models, tuple(accumulate(w for _, w in ready)), chance, shadows, label)
