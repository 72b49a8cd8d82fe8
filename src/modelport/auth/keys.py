"""API keys in the registry database: created once, stored hashed, listed, revoked.

A key reads ``mp_<id>_<secret>``. The id is public (it names the key in lists, logs and
``keys revoke``); the secret is 256 random bits that only the person who created the key ever
sees. The database keeps the SHA-256 of the secret (a fast hash is right for a random secret of
that length: there is nothing to guess), its last four characters as a hint, the scopes, a
description and when the key was created and revoked. Keys are revoked, never deleted, so a
list shows what existed.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, Row, insert, select, update

from modelport.auth.principal import KEY_PREFIX, hash_secret, parse_scopes
from modelport.errors import NotFound
from modelport.registry.database import api_keys, reading, writing

ID_BYTES = 6  # 12 hex characters: enough to tell keys apart, short enough to type in `keys revoke`
SECRET_BYTES = 32  # 256 bits


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key's record, never its secret."""

    id: str
    scopes: tuple[str, ...]
    description: str
    last4: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def hint(self) -> str:
        """How the key looks with its secret left out: ``mp_<id>_...<last 4>``."""
        return f"{KEY_PREFIX}{self.id}_...{self.last4}"


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key's record with the hash of its secret: what the authenticator checks against."""

    key: ApiKey
    secret_hash: str


class KeyStore:
    """API keys in the table ``modelport_api_keys`` of a registry database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, scopes: Iterable[str], description: str = "") -> tuple[ApiKey, str]:
        """A new key with ``scopes``: its record and the full key, which is shown this once only."""
        wanted = parse_scopes(scopes)
        key_id = secrets.token_hex(ID_BYTES)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        record = ApiKey(key_id, wanted, description, secret[-4:], datetime.now(UTC), None)
        with writing(self._engine) as conn:
            conn.execute(
                insert(api_keys).values(
                    id=record.id,
                    secret_hash=hash_secret(secret),
                    last4=record.last4,
                    scopes=list(record.scopes),
                    description=record.description,
                    created_at=record.created_at,
                    revoked_at=None,
                )
            )
        return record, f"{KEY_PREFIX}{key_id}_{secret}"

    def all(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        return [stored.key for stored in self.load()]

    def load(self) -> list[StoredKey]:
        """Every key with its hash, in one query (the authenticator's snapshot)."""
        with reading(self._engine) as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)).all()
        return [StoredKey(_record(row), row.secret_hash) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key by id (``mp_<id>_...`` and a full key are accepted too); revoking twice is harmless."""
        key_id = _bare_id(key_id)
        with writing(self._engine) as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one_or_none()
        if row is None:
            raise NotFound(f"no API key with id {key_id!r}; `modelport keys list` shows the ids")
        return _record(row)


def _bare_id(text: str) -> str:
    text = text.strip().removeprefix(KEY_PREFIX)
    return text.split("_", 1)[0]


def _record(row: Row[tuple[object, ...]]) -> ApiKey:
    return ApiKey(
        id=row.id,
        scopes=tuple(row.scopes),
        description=row.description,
        last4=row.last4,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )
