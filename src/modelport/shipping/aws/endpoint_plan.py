"""What a SageMaker deploy creates, decided before any AWS call: names, S3 locations, the
endpoint's specification, the test invocation and traffic weights across variants.

Names: models and endpoint configurations are ``ENDPOINT-NAME-vVERSION-STAMP`` (a UTC stamp, so
each deploy or update makes new ones and the previous stay for a rollback); a variant is
``NAME-vVERSION``. The S3 key holds the version and the artifact key's hex, so deploying the same
content again uploads nothing. :mod:`modelport.shipping.aws.endpoint` makes the calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from modelport.errors import Conflict, InvalidSetting
from modelport.types import ModelVersion

NEW = "new"  # in weights: the variant an update adds
_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


# -- names and locations ------------------------------------------------------------------------


def safe_name(text: str, limit: int = 63) -> str:
    """``text`` as a SageMaker resource name: letters, digits and single hyphens, at most ``limit``."""
    cleaned = _UNSAFE.sub("-", text).strip("-")[:limit].rstrip("-")
    if not cleaned:
        raise InvalidSetting(f"{text!r} holds no letter or digit to make a SageMaker name from")
    return cleaned


def default_endpoint(version: ModelVersion) -> str:
    return safe_name(f"modelport-{version.name}")


def variant_name(version: ModelVersion) -> str:
    return safe_name(f"{version.name}-v{version.version}")


def resource_name(endpoint: str, label: str, stamp: str) -> str:
    """``ENDPOINT-LABEL-STAMP`` in 63 characters: the endpoint part is shortened, never the rest."""
    tail = f"-{safe_name(label, 40)}-{stamp}"
    return safe_name(endpoint, 63 - len(tail)) + tail


def artifact_hex(version: ModelVersion, length: int = 16) -> str:
    return version.artifact.rpartition(":")[2][:length]


@dataclass(frozen=True, slots=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing slash; may be empty)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?", uri.strip())
        if not match:
            raise InvalidSetting(f"{uri!r} is not an S3 location: give s3://BUCKET or s3://BUCKET/PREFIX")
        return cls(match[1], (match[2] or "").strip("/"))

    def key(self, rest: str) -> str:
        return f"{self.prefix}/{rest}" if self.prefix else rest

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def single_model_key(location: S3Location, version: ModelVersion) -> str:
    return location.key(f"{version.name}/v{version.version}-{artifact_hex(version)}/model.tar.gz")


def target_model(version: ModelVersion) -> str:
    """A multi-model endpoint's name for ``version``: new content, new name (SageMaker caches by name)."""
    return f"{version.name}-v{version.version}-{artifact_hex(version, 12)}.tar.gz"


# -- what to create -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """The container and the machines. On an update, an empty instance type or count keeps the current one's."""

    role: str
    image: str
    instance_type: str | None = None
    instance_count: int | None = None
    data_capture: str | None = None  # s3:// URI
    capture_percent: int = 100
    environment: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Invocation:
    """One test request: its JSON body and, on a multi-model endpoint, the target model."""

    body: bytes
    target_model: str | None = None


def plan_weights(
    current: Mapping[str, float], new: str, weights: Mapping[str, float], canary_percent: int | None
) -> dict[str, float]:
    """The next configuration's variants and weights: ``new`` plus the current variants kept.

    ``current`` maps the endpoint's variants to their weights now.
    No weights and no canary: ``new`` alone (blue/green replacement). A canary keeps the current
    variant with the most weight at ``100 - P`` and adds ``new`` at ``P``. Weights name current
    variants (others are dropped) and ``new`` (or :data:`NEW`); ``new`` must be among them.
    """
    names = list(current)
    if new in names and (weights or canary_percent is not None):
        raise Conflict(
            f"variant {new} already serves on this endpoint; deploy another version beside it, "
            "or shift traffic with --weight and no REF"
        )
    if canary_percent is not None:
        if weights:
            raise InvalidSetting("give --canary-percent or --weight, not both")
        if not 0 < canary_percent < 100:
            raise InvalidSetting(f"--canary-percent must be between 1 and 99, not {canary_percent}")
        primary = max(names, key=lambda name: current[name])
        return {primary: float(100 - canary_percent), new: float(canary_percent)}
    if not weights:
        return {new: 1.0}
    plan = {(new if name.lower() == NEW else name): float(w) for name, w in weights.items()}
    unknown = sorted(set(plan) - set(names) - {new})
    if unknown:
        raise InvalidSetting(
            f"--weight names {', '.join(unknown)}, not a variant of the endpoint "
            f"(its variants: {', '.join(names)}; the new one: {new} or {NEW})"
        )
    if new not in plan:
        raise InvalidSetting(f"give the new variant's weight too: --weight {new}=W (or --weight {NEW}=W)")
    check_weights(plan)
    return plan


def check_weights(weights: Mapping[str, float]) -> None:
    if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
        raise InvalidSetting("weights must be zero or more, and at least one above zero")


def parse_weights(items: Sequence[str]) -> dict[str, float]:
    """``["a=90", "b=10"]`` -> ``{"a": 90.0, "b": 10.0}``."""
    weights: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise InvalidSetting(f"--weight expects VARIANT=WEIGHT (a number), got {item!r}")
    return weights
