"""OAuth2/OIDC bearer tokens: JWTs verified against a configured public key or JWKS file.

Only asymmetric signatures are accepted (RS256 with an RSA key, ES256 with a P-256 key), each
key verifying only its own algorithm, so neither ``alg: none`` nor an HMAC signature made with
the public key as secret can pass. ``exp`` is required; ``iss`` and ``aud`` are enforced when
configured. Scopes come from one claim (``scope`` by default), a space-separated string or a
list. Needs PyJWT with cryptography (``pip install 'modelport[jwt]'``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.auth import Principal
from modelport.errors import ModelportError, Unauthenticated
from modelport.settings import Settings

ALGORITHMS = ("RS256", "ES256")
LEEWAY_SECONDS = 30  # clock skew tolerated between the identity provider and this server


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


class TokenVerifier:
    """Verifies JWT bearer tokens and turns their claims into a :class:`Principal`."""

    def __init__(
        self,
        keys: Mapping[str | None, _Key],
        *,
        issuer: str | None = None,
        audience: str | None = None,
        scope_claim: str = "scope",
    ) -> None:
        if not keys:
            raise ModelportError("no usable JWT verification key: give an RSA or P-256 EC public key")
        self._keys = dict(keys)
        self._issuer = issuer
        self._audience = audience
        self._scope_claim = scope_claim

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        if settings.jwt_public_key is not None and settings.jwt_jwks is not None:
            raise ModelportError(
                "set a JWT public key or a JWKS file, not both (MODELPORT_JWT_PUBLIC_KEY, MODELPORT_JWT_JWKS)"
            )
        keys: dict[str | None, _Key]
        if settings.jwt_public_key is not None:
            keys = {None: _pem_key(settings.jwt_public_key)}
        else:
            assert settings.jwt_jwks is not None
            keys = _jwks_keys(settings.jwt_jwks)
        return cls(
            keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience, scope_claim=settings.jwt_scope_claim
        )

    def verify(self, token: str) -> Principal:
        jwt = _jwt()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed bearer token: neither a modelport API key nor a JWT") from None
        key = self._key_for(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the bearer token has expired; get a new one from your identity provider") from None
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
        subject = claims.get("sub") or claims.get("client_id") or claims.get("azp") or "token"
        return Principal(f"token:{subject}", frozenset(_scopes(claims.get(self._scope_claim))))

    def _key_for(self, kid: Any) -> _Key:
        kid = kid if isinstance(kid, str) else None
        if kid in self._keys:
            return self._keys[kid]
        if None in self._keys and len(self._keys) == 1:
            return self._keys[None]  # a PEM key (or a JWKS of one key without a kid) verifies any token
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if kid is None:
            raise Unauthenticated("the bearer token names no key ('kid' header) and the JWKS has several")
        raise Unauthenticated(f"the bearer token's key id {kid[:64]!r} is not in the configured JWKS")


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


def _jwks_keys(path: Path) -> dict[str | None, _Key]:
    jwt = _jwt()
    try:
        document = json.loads(path.read_text())
        keyset = jwt.PyJWKSet.from_dict(document)
    except OSError as exc:
        raise ModelportError(f"cannot read the JWKS file {path}: {exc.strerror}") from None
    except (ValueError, AttributeError, jwt.PyJWTError) as exc:
        raise ModelportError(f'{path} is not a usable JWKS document ({{"keys": [...]}}): {exc}') from None
    keys = {
        jwk.key_id: _Key(jwk.key, jwk.algorithm_name)
        for jwk in keyset
        if jwk.algorithm_name in ALGORITHMS and jwk.public_key_use in (None, "sig")
    }
    if not keys:
        raise ModelportError(f"{path} holds no RS256 or ES256 key; symmetric (oct) keys are never accepted")
    return keys
