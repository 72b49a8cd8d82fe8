"""The vocabulary of authorization: scopes, the API key format, and :class:`Principal`, the
authenticated caller. Shared by the authenticator, the key store and the token verifier, and
importing none of them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from modelport.errors import InvalidReference, InvalidScope, Unauthenticated
from modelport.reference import parse_name

KEY_PREFIX = "mp_"
INFER = "infer"
MANAGE = "manage"
METRICS = "metrics"
SCOPE_HELP = (
    f"a scope is {INFER!r} (every model), '{INFER}:<model>' (one model), {MANAGE!r} or {METRICS!r} (scraping /metrics)"
)


def parse_scope(text: str) -> str:
    """A valid scope, or :class:`InvalidScope` saying what a scope looks like."""
    scope = text.strip()
    if scope in (INFER, MANAGE, METRICS):
        return scope
    kind, sep, model = scope.partition(":")
    if kind == INFER and sep:
        try:
            return f"{INFER}:{parse_name(model)}"
        except InvalidReference:
            pass
    raise InvalidScope(f"invalid scope {text!r}: {SCOPE_HELP}, e.g. --scope infer:iris")


def parse_scopes(items: Iterable[str]) -> tuple[str, ...]:
    """Valid, distinct, sorted scopes; at least one."""
    scopes = tuple(sorted({parse_scope(item) for item in items}))
    if not scopes:
        raise InvalidScope(f"give at least one scope: {SCOPE_HELP}")
    return scopes


def hash_secret(secret: str) -> str:
    """The stored form of a key's secret: SHA-256, hex (the secret is 256 random bits)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(text: str) -> tuple[str, str]:
    """``mp_<id>_<secret>`` -> (id, secret); :class:`Unauthenticated` when it is not shaped so."""
    key_id, sep, secret = text.removeprefix(KEY_PREFIX).partition("_")
    if not text.startswith(KEY_PREFIX) or not sep or not key_id.isalnum() or not secret:
        raise Unauthenticated("malformed API key: modelport keys look like mp_<id>_<secret>")
    return key_id, secret


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a subject (``key:<id>`` or a token's ``sub``) and its scopes."""

    subject: str
    scopes: frozenset[str]

    def may_infer(self, model: str) -> bool:
        """Inference and metadata of ``model``: scope ``infer``, ``infer:<model>`` or ``manage``."""
        return INFER in self.scopes or MANAGE in self.scopes or f"{INFER}:{model}" in self.scopes

    def may_infer_any(self) -> bool:
        """Inference where the request names no model (SageMaker ``/invocations``): ``infer`` or ``manage``."""
        return INFER in self.scopes or MANAGE in self.scopes

    def may_manage(self) -> bool:
        return MANAGE in self.scopes

    def may_scrape(self) -> bool:
        """``GET /metrics``: scope ``metrics`` or ``manage``."""
        return METRICS in self.scopes or MANAGE in self.scopes
