"""The registry's database: tables (SQLAlchemy Core), engine set-up, transactions, migrations.

The Alembic migrations in ``modelport/registry/migrations`` create the tables; :func:`upgrade` runs them.

Tables carry a ``modelport_`` prefix so the registry can share a PostgreSQL database. JSON
documents are stored as text, so NaN in a signature example or a metric round-trips on every
backend (PostgreSQL's ``json`` type rejects NaN).
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.types import TypeDecorator

from modelport.errors import InvalidSetting, ModelportError

log = logging.getLogger("modelport")

VERSION_TABLE = "modelport_alembic_version"
SCHEMA_REVISION = "0006"  # the head of modelport/registry/migrations/versions; a test keeps them equal
MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT = 30.0  # seconds a SQLite writer waits for another process's transaction
_MIGRATION_LOCK = 0x6D6F64656C706F72  # "modelpor": the PostgreSQL advisory lock that serializes upgrades

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONText(TypeDecorator[Any]):
    """A JSON document kept as text (NaN and infinity allowed)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


metadata = MetaData(naming_convention=NAMING)

models = Table(
    "modelport_models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    # The number the next registered version gets; only ever grows, so numbers are never reused.
    Column("next_version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("name"),
)

versions = Table(
    "modelport_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("modelport_models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("runtime", String(64), nullable=False),
    Column("framework", String(64), nullable=False),
    Column("artifact", String(80), nullable=False),
    Column("signature", JSONText, nullable=False),
    Column("environment", JSONText, nullable=False),
    Column("tags", JSONText, nullable=False),
    Column("metrics", JSONText, nullable=False),
    Column("params", JSONText, nullable=False),
    Column("notes", JSONText, nullable=False),
    Column("description", Text, nullable=False),
    Column("trusted_code", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("batching", JSONText, nullable=False, server_default="{}"),  # the version's own settings
    Column("capture_rate", Float, nullable=True),  # its own payload-capture rate; NULL: the server's
    Column("device", String(16), nullable=True),  # cpu, cuda, cuda:N; NULL: the server's device
    Column("precision", String(8), nullable=True),  # fp16 / bf16 opt-in; NULL: fp32
    UniqueConstraint("model_id", "version"),
    Index("ix_modelport_versions_artifact", "artifact"),
)

aliases = Table(
    "modelport_aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("modelport_models.id"), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version_id", Integer, ForeignKey("modelport_versions.id"), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_modelport_aliases_version_id", "version_id"),
)

# API keys: the key itself is never stored, only the SHA-256 of its random secret (see modelport.auth.authenticator).
api_keys = Table(
    "modelport_api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("secret_hash", String(64), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("scopes", JSONText, nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

# Traffic: an alias's extra weighted versions (the primary in modelport_aliases gets the rest),
# its moves (for rollback), the versions mirrored for it (shadows, with agreement counts), and
# one change counter every alias or version write bumps, so servers poll one row.
alias_splits = Table(
    "modelport_alias_splits",
    metadata,
    Column("model_id", Integer, ForeignKey("modelport_models.id"), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version_id", Integer, ForeignKey("modelport_versions.id"), primary_key=True),
    Column("weight", Integer, nullable=False),
    Index("ix_modelport_alias_splits_version_id", "version_id"),
)

alias_history = Table(
    "modelport_alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("modelport_models.id"), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("from_version", Integer, nullable=True),  # version numbers, so deleting a version keeps history
    Column("to_version", Integer, nullable=True),
    Column("changed_at", UTCDateTime, nullable=False),
    Index("ix_modelport_alias_history_model_id", "model_id", "alias"),
)

shadows = Table(
    "modelport_shadows",
    metadata,
    Column("model_id", Integer, ForeignKey("modelport_models.id"), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version_id", Integer, ForeignKey("modelport_versions.id"), primary_key=True),
    Column("fraction", Float, nullable=False),
    Column("stats", JSONText, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_modelport_shadows_version_id", "version_id"),
)

changes = Table(
    "modelport_changes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("serial", Integer, nullable=False),
)


# -- engine, transactions, migrations -------------------------------------------------------------


def connect(url: str) -> Engine:
    """An engine for the registry database at ``url`` (SQLite set up for several processes).

    :class:`~modelport.errors.InvalidSetting` for a URL that is not one, or names a driver that
    is not installed.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidSetting(
            f"MODELPORT_DATABASE_URL={_hidden(url)!r} is not a database URL; give e.g. sqlite:////srv/modelport/"
            "registry.db or postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"
        ) from None
    try:
        return _engine(parsed)
    except NoSuchModuleError as exc:
        raise InvalidSetting(
            f"MODELPORT_DATABASE_URL names the database driver {parsed.drivername!r}, which is not installed ({exc}); "
            "for PostgreSQL: pip install 'modelport[postgres]' and postgresql+psycopg://..."
        ) from None
    except ModuleNotFoundError as exc:
        raise InvalidSetting(
            f"the database driver for {parsed.drivername!r} is not installed ({exc.name}); "
            "for PostgreSQL: pip install 'modelport[postgres]'"
        ) from None


def _hidden(url: str) -> str:
    """``url`` with any password replaced, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _engine(parsed: URL) -> Engine:
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is the driver we ship with
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        _private_file(Path(database).expanduser())
    engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (it holds API key hashes); SQLite gives its
    WAL and shared-memory files the same permissions. An existing file readable by others is
    reported, not changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        mode = path.stat().st_mode
        if mode & stat.S_IROTH:
            log.warning(
                "the registry database %s is readable by every user of this machine (mode %o); "
                "it holds API key hashes: chmod 600 it",
                path,
                stat.S_IMODE(mode),
            )


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The pysqlite recipe: let SQLAlchemy's "begin" event emit BEGIN, so writers can say IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get("modelport_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction: on SQLite ``BEGIN IMMEDIATE``, so writers queue instead of deadlocking."""
    with engine.connect() as conn:
        conn.execution_options(modelport_write=True)
        with conn.begin():
            yield conn


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read transaction: one consistent view, never blocking writers (WAL)."""
    with engine.connect() as conn, conn.begin():
        yield conn


def lock_artifact(conn: Connection, key: str) -> None:
    """Order writers that add or drop references to one artifact (SQLite's writers queue anyway)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(key.removeprefix("sha256:")[:15], 16)})


def safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def upgrade(engine: Engine) -> None:
    """Bring the schema to the head revision; a plain read (no Alembic import) when it is there.

    Concurrent upgrades serialize: on SQLite through the write transaction, on PostgreSQL through
    an advisory lock; the second process then finds the schema at head.
    """
    with reading(engine) as conn:
        if inspect(conn).has_table(VERSION_TABLE):
            current = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
            if current == [SCHEMA_REVISION]:
                return
    from alembic import command  # imported only when there is migrating to do
    from alembic.config import Config
    from alembic.util.exc import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    with writing(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = conn
        try:
            command.upgrade(config, "head")
        except CommandError as exc:
            raise ModelportError(
                f"cannot upgrade the registry database {safe_url(engine)}: {exc}; "
                "was it written by a newer modelport? Upgrade modelport"
            ) from exc
