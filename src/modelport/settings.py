"""Settings, read once from the environment (``MODELPORT_*``) and passed down explicitly."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def _bool(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable. ``Settings.from_env()`` is the only reader of the environment.

    home: where the default registry lives (``MODELPORT_HOME``, default ``./.modelport``).
    database_url: SQLAlchemy URL of the metadata DB (``MODELPORT_DATABASE_URL``); default a
        SQLite file in ``home``. PostgreSQL works by URL
        (``postgresql+psycopg://user@host:5432/db``).
    artifacts: directory of the local content-addressed artifact store (``MODELPORT_ARTIFACTS``).
    threads: compute threads per worker process (``MODELPORT_THREADS``); 0 means cores / workers.
    max_body_bytes: largest request body accepted (``MODELPORT_MAX_BODY_MB``, default 32).
    allow_env_mismatch: load native pickled models even when library versions differ
        (``MODELPORT_ALLOW_ENV_MISMATCH``).
    models: references the server loads at start (``MODELPORT_MODELS``, comma-separated), so
        every worker process of ``modelport serve --workers N`` builds the same app.
    """

    home: Path = field(default_factory=lambda: Path(".modelport"))
    database_url: str = ""
    artifacts: Path | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    threads: int = 0
    max_body_bytes: int = 32 * 1024 * 1024
    allow_env_mismatch: bool = False
    log_level: str = "info"
    models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        home = Path(self.home).expanduser().absolute()
        object.__setattr__(self, "home", home)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{home / 'registry.db'}")
        if self.artifacts is None:
            object.__setattr__(self, "artifacts", home / "artifacts")

    @property
    def artifact_dir(self) -> Path:
        assert self.artifacts is not None  # set in __post_init__
        return Path(self.artifacts)

    @property
    def compute_threads(self) -> int:
        """Threads for one worker's runtimes, so workers x threads never exceeds the cores."""
        if self.threads > 0:
            return self.threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // max(1, self.workers))

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if "MODELPORT_HOME" in env:
            values["home"] = Path(env["MODELPORT_HOME"])
        if "MODELPORT_DATABASE_URL" in env:
            values["database_url"] = env["MODELPORT_DATABASE_URL"]
        if "MODELPORT_ARTIFACTS" in env:
            values["artifacts"] = Path(env["MODELPORT_ARTIFACTS"])
        if "MODELPORT_THREADS" in env:
            values["threads"] = int(env["MODELPORT_THREADS"])
        if "MODELPORT_MAX_BODY_MB" in env:
            values["max_body_bytes"] = int(float(env["MODELPORT_MAX_BODY_MB"]) * 1024 * 1024)
        if "MODELPORT_ALLOW_ENV_MISMATCH" in env:
            values["allow_env_mismatch"] = _bool(env["MODELPORT_ALLOW_ENV_MISMATCH"])
        if env.get("MODELPORT_MODELS"):
            values["models"] = tuple(r.strip() for r in env["MODELPORT_MODELS"].split(",") if r.strip())
        if "MODELPORT_LOG_LEVEL" in env:
            values["log_level"] = env["MODELPORT_LOG_LEVEL"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
