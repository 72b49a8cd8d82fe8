"""API keys: created once, stored hashed, listed, revoked; in the registry database or in a file.

A key reads ``mp_<id>_<secret>``. The id is public (it names the key in lists, logs and
``keys revoke``); the secret is 256 random bits that only the person who created the key ever
sees. The database keeps the SHA-256 of the secret (a fast hash is right for a random secret of
that length: there is nothing to guess), its last four characters as a hint, the scopes, a
description and when the key was created and revoked. Keys are revoked, never deleted, so a
list shows what existed.

:class:`KeyStore` keeps them in the registry's database; :class:`KeyFile` in a file of JSON lines
holding the same records (hashes, never secrets), for servers without a registry of their own:
an image with baked models reads it from a mounted Kubernetes Secret (``MODELPORT_API_KEYS_FILE``).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, Row, insert, select, update

from modelport.auth.principal import KEY_PREFIX, hash_secret, parse_scopes
from modelport.errors import InvalidSetting, NotFound
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
        stored, key = new_key(scopes, description)
        record = stored.key
        with writing(self._engine) as conn:
            conn.execute(
                insert(api_keys).values(
                    id=record.id,
                    secret_hash=stored.secret_hash,
                    last4=record.last4,
                    scopes=list(record.scopes),
                    description=record.description,
                    created_at=record.created_at,
                    revoked_at=None,
                )
            )
        return record, key

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


def new_key(scopes: Iterable[str], description: str = "") -> tuple[StoredKey, str]:
    """A fresh key with ``scopes``: its stored form and the full key (``mp_<id>_<secret>``)."""
    wanted = parse_scopes(scopes)
    key_id = secrets.token_hex(ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    record = ApiKey(key_id, wanted, description, secret[-4:], datetime.now(UTC), None)
    return StoredKey(record, hash_secret(secret)), f"{KEY_PREFIX}{key_id}_{secret}"


class KeyFile:
    """API keys in a file, one JSON object per line (id, hash, scopes, ...): what ``--file`` writes.

    The same verbs as :class:`KeyStore`. Writes replace the file atomically (mode 0600); the file
    holds hashes only, yet which keys exist is still worth keeping private.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def create(self, scopes: Iterable[str], description: str = "") -> tuple[ApiKey, str]:
        stored, key = new_key(scopes, description)
        existing = self.load() if self.path.exists() else []
        self._write([*existing, stored])
        return stored.key, key

    def all(self) -> list[ApiKey]:
        return [stored.key for stored in self.load()]

    def load(self) -> list[StoredKey]:
        try:
            lines = self.path.read_text().splitlines()
        except OSError as exc:
            raise InvalidSetting(
                f"cannot read the API keys file {self.path} ({exc.strerror or exc}); create it with "
                f"modelport keys create --scope infer --file {self.path}"
            ) from None
        keys = []
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                data = json.loads(line)
                record = ApiKey(
                    id=str(data["id"]),
                    scopes=parse_scopes(data["scopes"]),
                    description=str(data.get("description", "")),
                    last4=str(data.get("last4", "")),
                    created_at=datetime.fromisoformat(data["created_at"]),
                    revoked_at=datetime.fromisoformat(data["revoked_at"]) if data.get("revoked_at") else None,
                )
                secret_hash = str(data["hash"])
                if not record.id.isalnum() or len(secret_hash) != 64:
                    raise ValueError("id or hash malformed")
            except Exception as exc:
                raise InvalidSetting(
                    f"{self.path}, line {number}: not an API key record ({type(exc).__name__}: {exc}); "
                    "write the file with modelport keys create --file"
                ) from None
            keys.append(StoredKey(record, secret_hash))
        return keys

    def revoke(self, key_id: str) -> ApiKey:
        key_id = _bare_id(key_id)
        stored = self.load()
        found = next((s for s in stored if s.key.id == key_id), None)
        if found is None:
            raise NotFound(f"no API key with id {key_id!r} in {self.path}; `modelport keys list --file` shows the ids")
        if found.key.revoked:
            return found.key
        revoked = replace(found, key=replace(found.key, revoked_at=datetime.now(UTC)))
        self._write([revoked if s is found else s for s in stored])
        return revoked.key

    def _write(self, keys: list[StoredKey]) -> None:
        lines = [
            json.dumps(
                {
                    "id": s.key.id,
                    "hash": s.secret_hash,
                    "scopes": list(s.key.scopes),
                    "description": s.key.description,
                    "last4": s.key.last4,
                    "created_at": s.key.created_at.isoformat(),
                    "revoked_at": s.key.revoked_at.isoformat() if s.key.revoked_at else None,
                }
            )
            for s in keys
        ]
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(handle, "w") as out:
                out.write("# modelport API keys (hashes only): modelport keys create|list|revoke --file THIS\n")
                out.write("".join(line + "\n" for line in lines))
            os.chmod(temp, 0o600)
            os.replace(temp, self.path)
        except BaseException:
            os.unlink(temp)
            raise


class Keys:
    """Several key sources read as one (the registry's and a file's)."""

    def __init__(self, sources: Iterable[KeyStore | KeyFile]) -> None:
        self.sources = list(sources)

    def load(self) -> list[StoredKey]:
        return [stored for source in self.sources for stored in source.load()]


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
