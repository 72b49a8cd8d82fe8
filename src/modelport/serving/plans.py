"""What a server serves and where each name + selector goes: specs + a registry snapshot -> plans.

An operator asks for *specs*: references (``iris@production``, ``churn@3``, ``iris``), an alias
for every model (``--alias production``), or a version policy (``latest:2``, ``all``,
``specific:1,3``). The registry answers with a *snapshot*: per model its version numbers and
its aliases, each with a primary version, weighted extra targets and shadows. :func:`build_plans`
combines them into one :class:`Plan` per model: for each selector (``None`` is the model's
default, then ``"3"``, ``"production"``, ``"latest"``) the weighted versions it routes to. The
manager loads what the plans name and swaps its routing table
(:mod:`modelport.serving.routes`) in one assignment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from modelport.errors import InvalidSetting
from modelport.reference import LATEST, Reference, parse_reference, validate_alias
from modelport.registry.traffic import FULL, AliasTarget, ModelRouting, Shadows, Snapshot, Targets


@dataclass(frozen=True, slots=True)
class Policy:
    """A TF Serving style version policy: ``latest`` (N newest), ``all`` or ``specific``."""

    kind: str
    count: int = 1
    numbers: tuple[int, ...] = ()

    def choose(self, versions: Sequence[int]) -> list[int]:
        if self.kind == "all":
            return list(versions)
        if self.kind == "specific":
            return [v for v in versions if v in self.numbers]
        return list(versions[-self.count :])


POLICY_HELP = "a version policy is latest, latest:N, all or specific:V1,V2 (e.g. latest:2, specific:1,3)"


def parse_policy(text: str) -> Policy:
    kind, _, arg = text.strip().partition(":")
    try:
        if kind == "latest":
            count = int(arg) if arg else 1
            if count >= 1:
                return Policy("latest", count=count)
        elif kind == "all" and not arg:
            return Policy("all")
        elif kind == "specific":
            numbers = tuple(sorted({int(n) for n in arg.split(",") if n.strip()}))
            if numbers and numbers[0] >= 1:
                return Policy("specific", numbers=numbers)
    except ValueError:
        pass
    raise InvalidSetting(f"invalid version policy {text!r}: {POLICY_HELP}")


@dataclass(frozen=True, slots=True)
class Spec:
    """One thing an operator asked to serve: a reference, an alias for every model, or a policy."""

    ref: Reference | None = None
    alias: str | None = None
    policy: Policy | None = None

    def __str__(self) -> str:
        if self.ref is not None:
            return str(self.ref)
        return f"alias {self.alias}" if self.alias is not None else f"policy {self.policy}"


def specs_from(models: Iterable[str], serve_alias: str | None = None, version_policy: str = "") -> list[Spec]:
    """The specs settings ask for: references, else ``--alias``, else ``--policy``."""
    specs = [Spec(ref=parse_reference(text)) for text in models]
    if serve_alias:
        specs.append(Spec(alias=validate_alias(serve_alias)))
    if version_policy:
        specs.append(Spec(policy=parse_policy(version_policy)))
    return specs


@dataclass(slots=True)
class Plan:
    """One model's routing: selector -> weighted versions, and which selectors must be served."""

    routes: dict[str | None, Targets] = field(default_factory=dict)
    shadows: dict[str | None, Shadows] = field(default_factory=dict)
    labels: dict[str | None, str] = field(default_factory=dict)  # selector -> alias its shadows belong to
    required: set[str | None] = field(default_factory=set)

    def versions(self) -> set[int]:
        wanted = {v for targets in self.routes.values() for v, _ in targets}
        return wanted | {v for shadows in self.shadows.values() for v, _ in shadows}

    def _set(self, selector: str | None, targets: Targets, *, required: bool = False) -> None:
        self.routes.setdefault(selector, targets)
        if required:
            self.required.add(selector)

    def _alias(self, alias: str, target: AliasTarget, *, default: bool) -> None:
        for selector in (alias, None) if default else (alias,):
            if selector not in self.routes:
                self._set(selector, target.weighted(), required=True)
                if target.shadows:
                    self.shadows[selector] = target.shadows
                    self.labels[selector] = alias


def build_plans(
    specs: Sequence[Spec], snapshot: Snapshot, exclude: Iterable[str] = ()
) -> tuple[dict[str, Plan], list[str]]:
    """Plans for every model the specs name, and the specs that name nothing in the snapshot."""
    plans: dict[str, Plan] = {}
    missing: list[str] = []
    skipped = set(exclude)
    for spec in specs:
        if spec.ref is not None:
            ref = spec.ref
            if ref.name in skipped:
                continue
            model = snapshot.get(ref.name)
            plan = plans.setdefault(ref.name, Plan())
            if model is None or not model.versions:
                missing.append(str(ref))
            elif ref.alias is not None:
                if ref.alias in model.aliases:
                    plan._alias(ref.alias, model.aliases[ref.alias], default=True)
                else:
                    missing.append(str(ref))
            elif ref.version is not None:
                if ref.version in model.versions:
                    plan._set(str(ref.version), ((ref.version, FULL),), required=True)
                    plan._set(None, ((ref.version, FULL),))
                else:
                    missing.append(str(ref))
            else:
                newest = model.versions[-1]
                plan._set(None, ((newest, FULL),), required=True)
                plan._set(str(newest), ((newest, FULL),))
        for name, model in snapshot.items():
            if name in skipped or not model.versions:
                continue
            if spec.alias is not None and spec.alias in model.aliases:
                plans.setdefault(name, Plan())._alias(spec.alias, model.aliases[spec.alias], default=True)
            elif spec.policy is not None:
                chosen = spec.policy.choose(model.versions)
                if chosen:
                    plan = plans.setdefault(name, Plan())
                    for number in chosen:
                        plan._set(str(number), ((number, FULL),), required=True)
                    plan._set(None, ((chosen[-1], FULL),))
    for name, plan in plans.items():
        _complete(plan, snapshot.get(name))
    return plans, missing


def _complete(plan: Plan, model: ModelRouting | None) -> None:
    """Route every served version by number, ``latest`` to the newest, and aliases already covered."""
    served = sorted({v for targets in plan.routes.values() for v, _ in targets})
    if not served:
        return
    for number in served:
        plan._set(str(number), ((number, FULL),))
    plan._set(LATEST, ((served[-1], FULL),))
    if plan.routes.get(None) is None:
        plan.routes[None] = ((served[-1], FULL),)
    for alias, target in (model.aliases if model is not None else {}).items():
        weighted = target.weighted()
        if alias not in plan.routes and all(v in served for v, _ in weighted):
            plan.routes[alias] = weighted
