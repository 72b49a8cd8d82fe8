"""OAuth2/OIDC bearer tokens: JWTs verified against a public key, a JWKS file, or the issuer's
JWKS found by OpenID Connect discovery.

Only asymmetric signatures are accepted (RS256 with an RSA key, ES256 with a P-256 key), each
key verifying only its own algorithm, so neither ``alg: none`` nor an HMAC signature made with
the public key as secret can pass. ``exp`` is required; ``iss`` and ``aud`` are enforced when
configured. Scopes come from one claim (``scope`` by default), a space-separated string or a
list. Needs PyJWT with cryptography (``pip install 'modelport[jwt]'``).

Keys come from a :class:`KeySet`: :class:`StaticKeys` (a PEM key or a JWKS file, read once) or
:class:`RemoteKeys` (an issuer's JWKS, fetched by a function the caller passes in, since the
core makes no HTTP calls: :class:`modelport.auth.oidc.Discovery` over HTTPS). Remote keys
are cached; an unknown ``kid`` (the issuer rotated its keys) refetches them, at most once per
``min_interval`` seconds, and a failed fetch keeps the last good keys.

A verified token's :class:`Principal` is cached (:class:`TokenCache`, keyed by the token's
SHA-256) until the token's ``exp`` or a short maximum age, whichever comes first, so a client
sending the same token again is not verified again. A new key set empties the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from modelport.auth.principal import Principal
from modelport.errors import ModelportError, Unauthenticated
from modelport.settings import Settings

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256")
LEEWAY_SECONDS = 30  # clock skew tolerated between the identity provider and this server
CACHE_SIZE = 10_000  # verified tokens remembered; the oldest is dropped past that
CACHE_SECONDS = 60.0  # longest a verified token is remembered, however far its exp

Clock = Callable[[], float]
JwksFetch = Callable[[], Any]  # returns a JWKS document ({"keys": [...]}); raises ModelportError


@dataclass(frozen=True, slots=True)
class _Key:
    key: Any  # a cryptography public key object
    algorithm: str


def _jwt() -> Any:
    try:
        import jwt
    except ImportError:
        raise ModelportError("verifying OAuth2 tokens needs PyJWT: pip install 'modelport[jwt]'") from None
    return jwt


class KeySet(Protocol):
    """Where verification keys come from."""

    @property
    def generation(self) -> int:
        """Changes whenever the keys change (verified tokens cached before then are checked again)."""
        ...

    def key_for(self, kid: str | None) -> _Key:
        """The key for a token's ``kid`` header; :class:`Unauthenticated` when there is none."""
        ...

    def refresh(self) -> None:
        """Off the request path (the server calls it every poll period): refetch keys that are stale."""
        ...


def _pick(keys: Mapping[str | None, _Key], kid: str | None) -> _Key | None:
    """The key for ``kid``; None when the key set has no such key."""
    if kid in keys:
        return keys[kid]
    if None in keys and len(keys) == 1:
        return keys[None]  # a PEM key (or a JWKS of one key without a kid) verifies any token
    if kid is None and len(keys) == 1:
        return next(iter(keys.values()))
    if kid is None:
        raise Unauthenticated("the bearer token names no key ('kid' header) and the JWKS has several")
    return None


def _shown(kid: str | None) -> str:
    return repr(kid[:64]) if kid is not None else "(none)"


class StaticKeys:
    """Keys read once: a PEM public key, or a JWKS file."""

    generation = 0

    def __init__(self, keys: Mapping[str | None, _Key]) -> None:
        if not keys:
            raise ModelportError("no usable JWT verification key: give an RSA or P-256 EC public key")
        self._keys = dict(keys)

    def key_for(self, kid: str | None) -> _Key:
        key = _pick(self._keys, kid)
        if key is None:
            raise Unauthenticated(f"the bearer token's key id {_shown(kid)} is not in the configured JWKS")
        return key

    def refresh(self) -> None:
        return None


class RemoteKeys:
    """An issuer's JWKS, fetched by ``fetch``, cached and refetched.

    - :meth:`load` fetches the keys once (at startup; its error stops the server);
    - :meth:`refresh` refetches them when they are older than ``max_age`` seconds;
    - a token whose ``kid`` is not among the keys refetches them on the spot: key rotation;
    - whatever the reason, at most one fetch starts per ``min_interval`` seconds, so tokens
      with made-up key ids cannot turn into a flood of requests to the identity provider;
    - a fetch that fails (or gives no usable key) keeps the last good keys and logs a warning.

    The fetch on an unknown ``kid`` runs in the caller's thread (bounded by the fetch's own
    timeout); one fetch at a time.
    """

    def __init__(
        self,
        fetch: JwksFetch,
        *,
        source: str,
        max_age: float = 3600.0,
        min_interval: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._source = source  # where the keys come from, for messages
        self._max_age = max_age
        self._min_interval = min_interval
        self._clock = clock
        self._keys: dict[str | None, _Key] = {}
        self._generation = 0
        self._fetched_at = -math.inf  # last fetch that installed keys
        self._attempted_at = -math.inf  # last fetch started, successful or not
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self._generation

    def load(self) -> None:
        """The first fetch; :class:`ModelportError` saying why it failed."""
        with self._lock:
            self._attempted_at = self._clock()
            self._install(_keys_from_jwks(self._fetch(), self._source))

    def key_for(self, kid: str | None) -> _Key:
        key = _pick(self._keys, kid)
        if key is None and self._update(f"a token names the unknown key id {_shown(kid)}"):
            key = _pick(self._keys, kid)
        if key is None:
            raise Unauthenticated(
                f"the bearer token's key id {_shown(kid)} is not among the keys of {self._source} "
                f"(they are refetched for an unknown key id at most every {self._min_interval:g} s)"
            )
        return key

    def refresh(self) -> None:
        if self._clock() - self._fetched_at >= self._max_age:
            self._update("the keys are older than the maximum age")

    def _update(self, why: str) -> bool:
        """Fetch the keys unless a fetch ran less than ``min_interval`` ago or runs now; True
        when new keys were installed."""
        if not self._lock.acquire(blocking=False):
            return False  # another thread is fetching
        try:
            now = self._clock()
            if now - self._attempted_at < self._min_interval:
                return False
            self._attempted_at = now
            log.info("fetching the JWT keys from %s: %s", self._source, why)
            try:
                keys = _keys_from_jwks(self._fetch(), self._source)
            except Exception as exc:  # the identity provider's trouble must not lose the keys we have
                log.warning(
                    "cannot refresh the JWT keys from %s, keeping the %d last good key(s): %s",
                    self._source,
                    len(self._keys),
                    exc if isinstance(exc, ModelportError) else f"{type(exc).__name__}: {exc}",
                )
                return False
            self._install(keys)
            return True
        finally:
            self._lock.release()

    def _install(self, keys: dict[str | None, _Key]) -> None:
        self._keys = keys  # one assignment: readers see the old or the new keys
        self._fetched_at = self._attempted_at
        self._generation += 1


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    expires_at: float
    generation: int


class TokenCache:
    """Principals of verified tokens by the token's SHA-256, each until its ``expires_at``.

    Bounded: past ``size`` entries the oldest is dropped. ``hits`` counts answers from the cache.
    """

    def __init__(self, size: int = CACHE_SIZE, max_age: float = CACHE_SECONDS) -> None:
        self.size = size
        self.max_age = max_age
        self.hits = 0
        self._entries: dict[bytes, _Cached] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes, now: float, generation: int) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if now >= entry.expires_at or entry.generation != generation:
            self._entries.pop(digest, None)
            return None
        self.hits += 1
        return entry.principal

    def put(self, digest: bytes, principal: Principal, now: float, exp: float, generation: int) -> None:
        """Remember ``principal`` until ``exp`` (the token's), at most ``max_age`` seconds."""
        expires_at = min(exp, now + self.max_age)
        if expires_at <= now or self.size < 1:
            return
        while len(self._entries) >= self.size:
            try:
                del self._entries[next(iter(self._entries))]
            except (KeyError, StopIteration, RuntimeError):  # another thread changed it meanwhile
                break
        self._entries[digest] = _Cached(principal, expires_at, generation)


class TokenVerifier:
    """Verifies JWT bearer tokens and turns their claims into a :class:`Principal`.

    ``clock`` gives the time (seconds since 1970) that ``exp`` and the cache are checked against.
    """

    def __init__(
        self,
        keys: KeySet,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        scope_claim: str = "scope",
        cache: TokenCache | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._scope_claim = scope_claim
        self._cache = TokenCache() if cache is None else cache
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, fetch: JwksFetch | None = None) -> TokenVerifier:
        """The verifier ``settings`` configure. With ``jwt_discovery``, ``fetch`` gets the issuer's
        JWKS (:class:`modelport.auth.oidc.Discovery`); the keys are fetched here once."""
        sources = [
            name
            for name, given in (
                ("--jwt-public-key (MODELPORT_JWT_PUBLIC_KEY)", settings.jwt_public_key is not None),
                ("--jwt-jwks (MODELPORT_JWT_JWKS)", settings.jwt_jwks is not None),
                ("--jwt-discovery (MODELPORT_JWT_DISCOVERY)", settings.jwt_discovery),
            )
            if given
        ]
        if len(sources) > 1:
            raise ModelportError(f"give one source of JWT keys, not several: {', '.join(sources)}")
        keys: KeySet
        if settings.jwt_public_key is not None:
            keys = StaticKeys({None: _pem_key(settings.jwt_public_key)})
        elif settings.jwt_jwks is not None:
            keys = StaticKeys(_jwks_file(settings.jwt_jwks))
        else:
            if not settings.jwt_issuer:
                raise ModelportError(
                    "--jwt-discovery finds the keys from the issuer's URL: give it with --jwt-issuer "
                    "(MODELPORT_JWT_ISSUER), e.g. https://login.example.com/"
                )
            if fetch is None:
                raise ModelportError("OIDC discovery needs a fetch function (modelport.auth.oidc.Discovery)")
            remote = RemoteKeys(
                fetch,
                source=f"the JWKS of {settings.jwt_issuer}",
                max_age=settings.jwt_jwks_max_age,
                min_interval=settings.jwt_jwks_refetch_seconds,
            )
            remote.load()
            keys = remote
        return cls(
            keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience, scope_claim=settings.jwt_scope_claim
        )

    @property
    def cache(self) -> TokenCache:
        return self._cache

    def refresh(self) -> None:
        """Refetch remote keys that are stale (off the request path)."""
        self._keys.refresh()

    def verify(self, token: str) -> Principal:
        now = self._clock()
        digest = hashlib.sha256(token.encode()).digest()
        generation = self._keys.generation
        principal = self._cache.get(digest, now, generation)
        if principal is not None:
            return principal
        jwt = _jwt()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed bearer token: neither a modelport API key nor a JWT") from None
        kid = header.get("kid")
        key = self._keys.key_for(kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=LEEWAY_SECONDS,
                # exp is checked below, against self._clock like the cache
                options={"require": ["exp"], "verify_aud": self._audience is not None, "verify_exp": False},
            )
        except jwt.InvalidIssuerError:
            raise Unauthenticated(
                f"the bearer token was not issued by {self._issuer!r}, the issuer this server trusts"
            ) from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(f"the bearer token is not meant for audience {self._audience!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the bearer token has no {exc.claim!r} claim, which this server requires") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthenticated(f"the bearer token must be signed with {key.algorithm}") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid bearer token: {exc}") from None
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise Unauthenticated("the bearer token's 'exp' claim must be a number (seconds since 1970)")
        if exp <= now - LEEWAY_SECONDS:
            raise Unauthenticated("the bearer token has expired; get a new one from your identity provider")
        subject = claims.get("sub") or claims.get("client_id") or claims.get("azp") or "token"
        principal = Principal(f"token:{subject}", frozenset(_scopes(claims.get(self._scope_claim))))
        self._cache.put(digest, principal, now, float(exp), generation)
        return principal


def _scopes(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list | tuple):
        return [item for item in value if isinstance(item, str)]
    return []


def _pem_key(path: Path) -> _Key:
    _jwt()  # PyJWT and cryptography come together in the extra
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ModelportError(f"cannot read the JWT public key {path}: {exc.strerror}") from None
    except ValueError:
        raise ModelportError(f"{path} is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if isinstance(key, rsa.RSAPublicKey):
        return _Key(key, "RS256")
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return _Key(key, "ES256")
    raise ModelportError(f"{path}: use an RSA (RS256) or P-256 EC (ES256) public key for JWT verification")


def _jwks_file(path: Path) -> dict[str | None, _Key]:
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise ModelportError(f"cannot read the JWKS file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ModelportError(f'{path} is not a usable JWKS document ({{"keys": [...]}}): {exc}') from None
    return _keys_from_jwks(document, str(path))


def _keys_from_jwks(document: Any, source: str) -> dict[str | None, _Key]:
    """The RS256 and ES256 signing keys of a JWKS document, by ``kid``."""
    jwt = _jwt()
    try:
        keyset = jwt.PyJWKSet.from_dict(document)
    except (ValueError, AttributeError, jwt.PyJWTError) as exc:
        raise ModelportError(f'{source} is not a usable JWKS document ({{"keys": [...]}}): {exc}') from None
    keys = {
        jwk.key_id: _Key(jwk.key, jwk.algorithm_name)
        for jwk in keyset
        if jwk.algorithm_name in ALGORITHMS and jwk.public_key_use in (None, "sig")
    }
    if not keys:
        raise ModelportError(f"{source} holds no RS256 or ES256 key; symmetric (oct) keys are never accepted")
    return keys
