"""A throwaway PostgreSQL cluster for tests (initdb + pg_ctl, trust auth, no fsync).

PostgreSQL cannot bind port 0 and report it, so the cluster starts on a random port below the
ephemeral range (where no client's outgoing connection takes it) and, if that port is taken
after all, on another one: a few attempts, each with PostgreSQL's own "address in use" check.

``postgres_url`` (session) starts one cluster and stops it at the end; ``fresh_database`` makes an
empty database in it per test. As root the server runs as the ``postgres`` user, as PostgreSQL
refuses to run as root. Tests skip only when the PostgreSQL binaries are not installed.
"""

from __future__ import annotations

import glob
import os
import pwd
import random
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name.split(".")[0]))
    candidates = [Path(p) for p in found if (Path(p) / "initdb").exists()]
    if candidates:
        return candidates[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_server_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if runuser is None:
        pytest.skip("running as root and no runuser to start PostgreSQL as the postgres user")
    return [runuser, "-u", "postgres", "--", *args]


def _run(args: list[str], *, check: bool = True) -> None:
    subprocess.run(_as_server_user(args), check=check, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of the ``postgres`` database of a fresh cluster: postgresql+psycopg://postgres@127.0.0.1:PORT/postgres."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH)")
    base = Path(tempfile.mkdtemp(prefix="modelport-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
    data = base / "data"
    try:
        _run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        port = _start(bindir, data, base)
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        log = (base / "log").read_text() if (base / "log").exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {getattr(exc, 'stderr', exc)}\n{log}") from exc
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(base, ignore_errors=True)


PORTS = range(20000, 32000)  # below Linux's ephemeral range (32768-60999)
ATTEMPTS = 8


def _start(bindir: Path, data: Path, base: Path) -> int:
    """Start the cluster on a free port of PORTS; return the port."""
    for port in random.sample(PORTS, ATTEMPTS):
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c max_connections=100"
        command = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o", options, "start"]
        try:
            _run(command)
            return port
        except subprocess.CalledProcessError:
            log = (base / "log").read_text() if (base / "log").exists() else ""
            if "already in use" not in log and "could not bind" not in log:
                raise
    raise RuntimeError(f"no free port for PostgreSQL after {ATTEMPTS} attempts in {PORTS}")


def fresh_database(server_url: str) -> str:
    """Create an empty database in the cluster and return its URL."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    base, _, _ = server_url.rpartition("/")
    conninfo = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    import psycopg  # the "postgres" extra

    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    return f"{base}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh registry database: SQLite, and (where the binaries exist) a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'registry.db'}"
    return fresh_database(request.getfixturevalue("postgres_url"))
