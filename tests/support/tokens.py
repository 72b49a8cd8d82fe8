"""A real signing side for OAuth2 tests: RSA/EC keys made here, JWTs signed with them, PEM and JWKS files."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://issuer.modelport.test/"
AUDIENCE = "modelport"


@dataclass
class Signer:
    """An identity provider's key pair: signs tokens, publishes its public key as PEM or JWKS."""

    private: Any
    algorithm: str
    kid: str

    @classmethod
    def rsa(cls, kid: str = "rsa-1") -> Signer:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", kid)

    @classmethod
    def ec(cls, kid: str = "ec-1") -> Signer:
        return cls(ec.generate_private_key(ec.SECP256R1()), "ES256", kid)

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def write_pem(self, path: Path) -> Path:
        path.write_bytes(self.public_pem())
        return path

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.RSAAlgorithm if self.algorithm == "RS256" else jwt.algorithms.ECAlgorithm
        data: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**data, "kid": self.kid, "use": "sig"}

    def token(
        self,
        *,
        scope: str | list[str] | None = "infer",
        expires_in: float = 300,
        issuer: str | None = ISSUER,
        audience: str | None = AUDIENCE,
        subject: str = "client-42",
        kid: bool = True,
        **extra: Any,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + int(expires_in), **extra}
        if scope is not None:
            claims["scope"] = scope
        if issuer is not None:
            claims["iss"] = issuer
        if audience is not None:
            claims["aud"] = audience
        headers = {"kid": self.kid} if kid else None
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers=headers)


def write_jwks(path: Path, *signers: Signer) -> Path:
    path.write_text(json.dumps({"keys": [s.jwk() for s in signers]}))
    return path
