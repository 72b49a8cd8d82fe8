"""Whether the clients of one version can use another: :func:`breaking_changes`, the one rule the
registry checks every alias move, canary weight, shadow and registration with an alias by.

Clients depend on what they send (input names, datatypes, shapes, feature names, NaN and bytes)
and on what they read (output names, datatypes, shapes). A change is a break when a request
valid for the old version would be refused by the new one, or an output a client reads would
be missing or of another type or size:

- an input removed or renamed; an input added (modelport has no optional inputs: every input is
  required, so requests without the new one would be refused; an optional input, were there
  such a thing, would not be a break);
- an input's datatype changed; its shape taking fewer values (another rank, or a dimension that
  was free or of another size now fixed: ``[-1, 4]`` to ``[-1, 5]``, ``[-1, -1]`` to ``[-1, 8]``;
  a fixed dimension made free is not a break);
- an input's feature names changed, reordered or dropped (requests by feature name, and columns
  sent in their order, would mean something else); feature names added are not a break;
- NaN refused where it was accepted; bytes taken as UTF-8 text where they were taken as binary;
- an output removed or renamed, its datatype changed, or its shape changed other than a free
  dimension made fixed (``[-1, 3]`` to ``[-1, 4]`` is a break: a client reads three
  probabilities); an output added is not a break.

A shadow is judged by its inputs only: it must answer the alias's requests, but no client reads
its outputs (the agreement report compares the outputs both versions give).
"""

from __future__ import annotations

from modelport.types import Signature, TensorSpec


def breaking_changes(old: Signature, new: Signature, *, outputs: bool = True) -> tuple[str, ...]:
    """What ``new`` would break for clients of ``old``, one phrase each (empty: compatible).

    ``outputs=False`` judges the inputs only: for a shadow, whose answers no client reads."""
    changes: list[str] = []
    takes = ", ".join(spec.name for spec in new.inputs) or "none"
    for spec in old.inputs:
        now = new.input(spec.name)
        if now is None:
            changes.append(f"input {spec.name!r} removed (the new version takes: {takes})")
        else:
            changes.extend(_input_change(spec, now))
    for spec in new.inputs:
        if old.input(spec.name) is None:
            changes.append(f"input {spec.name!r} added (every input is required: requests without it are refused)")
    gives = ", ".join(spec.name for spec in new.outputs) or "none"
    for spec in old.outputs if outputs else ():
        now = new.output(spec.name)
        if now is None:
            changes.append(f"output {spec.name!r} removed (the new version gives: {gives})")
        elif now.datatype != spec.datatype:
            changes.append(f"output {spec.name!r}: datatype {spec.datatype} -> {now.datatype}")
        elif not _narrower(now.shape, spec.shape):
            changes.append(f"output {spec.name!r}: shape {_shape(spec.shape)} -> {_shape(now.shape)}")
    return tuple(changes)


def _input_change(old: TensorSpec, new: TensorSpec) -> list[str]:
    name = old.name
    if new.datatype != old.datatype:
        return [f"input {name!r}: datatype {old.datatype} -> {new.datatype}"]
    changes = []
    if not _narrower(old.shape, new.shape):
        changes.append(f"input {name!r}: shape {_shape(old.shape)} -> {_shape(new.shape)}")
    if old.feature_names is not None and new.feature_names != old.feature_names:
        after = ", ".join(new.feature_names) if new.feature_names is not None else "none"
        changes.append(f"input {name!r}: feature names {', '.join(old.feature_names)} -> {after}")
    if old.allow_nan and not new.allow_nan:
        changes.append(f"input {name!r}: NaN no longer accepted")
    if old.binary and not new.binary:
        changes.append(f"input {name!r}: takes UTF-8 text now, not binary data (other bytes are refused)")
    return changes


def _narrower(shape: tuple[int, ...], than: tuple[int, ...]) -> bool:
    """Whether every tensor of ``shape`` is one of ``than`` (-1: any size)."""
    return len(shape) == len(than) and all(wide in (-1, dim) for dim, wide in zip(shape, than, strict=True))


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(dim) for dim in shape) + "]"
