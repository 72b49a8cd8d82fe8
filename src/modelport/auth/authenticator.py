"""Who is calling and what they may do: API keys and OAuth2/OIDC bearer tokens (JWT).

No wire format here: a protocol hands over the ``Authorization`` and ``X-API-Key`` values (HTTP
headers or gRPC metadata) and maps :class:`~modelport.errors.Unauthenticated` (401) and
:class:`~modelport.errors.Forbidden` (403) to its own status codes.

Scopes:

- ``infer``: inference and metadata of every model;
- ``infer:<model>``: the same for one model;
- ``manage``: management (load, unload, repository index). It includes ``infer``: whoever may
  load any model may also call it.

API keys are checked against an in-memory snapshot of the key table that :meth:`Authenticator.refresh`
reloads (the server does so every ``poll_seconds``), so no request touches the database. Nothing
here logs or repeats key material or tokens in a message.
"""

from __future__ import annotations

import hmac
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from modelport.auth.keys import KeyFile, Keys, KeyStore, StoredKey
from modelport.auth.principal import KEY_PREFIX, Principal, hash_secret, split_key
from modelport.auth.tokens import JwksFetch, TokenVerifier
from modelport.errors import InvalidSetting, Unauthenticated
from modelport.settings import Settings

if TYPE_CHECKING:
    from modelport.registry.registry import Registry

log = logging.getLogger(__name__)

CREDENTIALS_HELP = "send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>', or an OAuth2 bearer token"


@dataclass(frozen=True, slots=True)
class _Entry:
    secret_hash: str
    principal: Principal
    revoked: bool


class KeySource(Protocol):
    """Where keys come from (:class:`modelport.auth.keys.KeyStore`)."""

    def load(self) -> list[StoredKey]: ...


class Authenticator:
    """Checks credentials against the key snapshot and the configured token verifier.

    ``enabled`` is True once any active API key exists or JWT keys are configured, and it
    stays True for the life of the object: revoking the last key locks the server rather than
    opening it.
    """

    def __init__(
        self, keys: KeySource | None = None, tokens: TokenVerifier | None = None, *, required: bool = False
    ) -> None:
        self._source = keys
        self._tokens = tokens
        self._keys: dict[str, _Entry] = {}
        self._enabled = tokens is not None or required
        self._lock = threading.Lock()  # refreshes from several threads apply one at a time

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def active_keys(self) -> int:
        return sum(not entry.revoked for entry in self._keys.values())

    def refresh(self) -> None:
        """Reload the key snapshot (one query); requests keep using the old one until it is swapped.

        Also refetches an OIDC issuer's signing keys once they are older than their maximum age.
        """
        if self._tokens is not None:
            self._tokens.refresh()  # keeps the last good keys (and logs) when the issuer cannot be reached
        if self._source is None:
            return
        with self._lock:
            stored = self._source.load()
            snapshot = {
                s.key.id: _Entry(s.secret_hash, Principal(f"key:{s.key.id}", frozenset(s.key.scopes)), s.key.revoked)
                for s in stored
            }
            self._keys = snapshot  # one assignment: readers see the old or the new snapshot, never a mix
            self._enabled = self._enabled or any(not entry.revoked for entry in snapshot.values())

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal | None:
        """The caller, None when no credentials were sent; :class:`Unauthenticated` for bad ones.

        ``api_key`` (``X-API-Key``) wins over ``authorization``. A bearer value that starts with
        ``mp_`` is checked as an API key, anything else as a JWT when JWT is configured.
        """
        if api_key:
            return self._check_key(api_key.strip())
        if not authorization:
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            raise Unauthenticated(f"unsupported Authorization header (scheme {scheme[:20]!r}): {CREDENTIALS_HELP}")
        if credentials.startswith(KEY_PREFIX):
            return self._check_key(credentials)
        if self._tokens is None:
            raise Unauthenticated(
                "the bearer value is not a modelport API key (mp_...) and this server verifies no OAuth2 tokens "
                "(no JWT public key or JWKS configured)"
            )
        return self._tokens.verify(credentials)

    def _check_key(self, text: str) -> Principal:
        key_id, secret = split_key(text)
        entry = self._keys.get(key_id)
        digest = hash_secret(secret)
        if entry is None or not hmac.compare_digest(entry.secret_hash, digest):
            raise Unauthenticated("invalid API key: no active key matches; `modelport keys list` shows the keys")
        if entry.revoked:
            raise Unauthenticated(f"API key {key_id} was revoked; create a new one: modelport keys create --scope ...")
        return entry.principal


MANAGEMENT_NEEDS_AUTH = (
    "management endpoints need authentication: modelport keys create --scope manage "
    "(or configure OAuth2 tokens: --jwt-public-key / --jwt-jwks / --jwt-discovery)"
)


def check_exposure(settings: Settings, authenticator: Authenticator) -> None:
    """The startup rules: :class:`InvalidSetting` when the server must not start as configured.

    Management endpoints need authentication; a non-loopback bind needs authentication unless
    ``insecure_open`` says to serve openly anyway.
    """
    if settings.enable_management and not authenticator.enabled:
        raise InvalidSetting(MANAGEMENT_NEEDS_AUTH)
    if not settings.loopback and not authenticator.enabled and not settings.insecure_open:
        raise InvalidSetting(
            f"refusing to serve on {settings.host} without authentication: anyone who can reach it could call it; "
            "create an API key (modelport keys create --scope infer), or configure OAuth2 tokens "
            "(--jwt-public-key / --jwt-jwks / --jwt-discovery), or pass --insecure-open to serve openly anyway"
        )


def build_authenticator(
    settings: Settings, registry: Registry | None, jwks_fetch: JwksFetch | None = None
) -> Authenticator:
    """The authenticator for ``settings``: keys from ``registry``'s database and the API keys file,
    tokens per the JWT settings.

    Loads the key snapshot once; raises :class:`~modelport.errors.ModelportError` when a
    configured JWT key file cannot be used. With ``jwt_discovery``, ``jwks_fetch`` fetches the
    issuer's keys (:func:`modelport.auth.oidc.jwks_fetcher`); they are fetched here once, and
    a failure stops the server.
    """
    tokens = None
    if settings.jwt_public_key is not None or settings.jwt_jwks is not None or settings.jwt_discovery:
        tokens = TokenVerifier.from_settings(settings, jwks_fetch)
    sources: list[KeyStore | KeyFile] = []
    if registry is not None:
        sources.append(KeyStore(registry.engine))
    if settings.api_keys_file is not None:
        sources.append(KeyFile(settings.api_keys_file))
    keys = Keys(sources) if sources else None
    # a keys file is named to turn authentication on: an empty one locks the server, never opens it
    authenticator = Authenticator(keys, tokens, required=settings.api_keys_file is not None)
    authenticator.refresh()
    return authenticator
