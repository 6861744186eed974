"""A real PostgreSQL server for the store tests, started by the test session itself.

``initdb`` into a temporary directory (trust authentication, no TCP:
``listen_addresses=''``, a Unix socket in that directory), ``pg_ctl start
-w``, one fresh database per test (:func:`pg_dsn`), ``pg_ctl stop -m
immediate`` at the end of the session. The binaries come from ``PATH`` or
Debian's ``/usr/lib/postgresql/<version>/bin`` (package ``postgresql``, which
``make test`` installs when it can: scripts/ensure-postgresql.sh). Without
them the PostgreSQL tests are skipped with a message saying what to install.

PostgreSQL refuses to run as root; under root (containers, CI) the server
runs as the unprivileged ``postgres`` account (or ``nobody``), and the tests
connect over the socket as the server's bootstrap superuser.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or in "
    "/usr/lib/postgresql/*/bin: install Debian's `postgresql` package "
    "(`make test` does it when it may) to run the PostgreSQL store tests"
)


def find_bin(name: str) -> str | None:
    """``name`` on PATH, else in the newest ``/usr/lib/postgresql/<version>/bin``."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0,
    )
    return candidates[-1] if candidates else None


def _server_account() -> tuple[int, int, str] | None:
    """(uid, gid, name) to run the server as when we are root; None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid, name
    raise RuntimeError("running as root and no unprivileged account to run PostgreSQL as")


@dataclass
class PgCluster:
    """A running test server: its socket directory, superuser name and binaries."""

    root: Path
    socket_dir: Path
    user: str
    pg_ctl: str
    account: tuple[int, int, str] | None
    _names: Iterator[int] = itertools.count(1)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port=5432 user={self.user} dbname={dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its DSN."""
        name = f"{prefix}{next(self._names)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.dsn(name)

    def stop(self) -> None:
        """``pg_ctl stop -m immediate`` and remove the directory."""
        self.run(self.pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        if self.account is not None:
            kwargs = {"user": self.account[0], "group": self.account[1], "extra_groups": []}
        return subprocess.run(
            args, capture_output=True, text=True, timeout=120, cwd=self.root, **kwargs
        )


def start_cluster() -> PgCluster:
    """A server in a new short temporary directory (Unix socket paths are short); ``stop()`` it.

    Skips the calling test (``pytest.skip``) when the binaries are missing.
    """
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip(MISSING)
    root = Path(tempfile.mkdtemp(prefix="ffpg-"))
    account = _server_account()
    data = root / "data"
    if account is not None:
        os.chown(root, account[0], account[1])
    user = account[2] if account else pwd.getpwuid(os.geteuid()).pw_name
    cluster = PgCluster(root, root, user, pg_ctl, account)
    done = cluster.run(
        initdb, "-D", str(data), "-A", "trust", "-U", user, "-E", "UTF8", "--no-sync"
    )
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")
    options = f"-c listen_addresses='' -c unix_socket_directories='{root}' -c max_connections=60"
    done = cluster.run(
        pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-o", options, "-w", "start"
    )
    if done.returncode != 0:
        log = (root / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"pg_ctl start failed: {done.stderr[-1000:]} {log}")
    return cluster


def use_postgres(config_path: Path, dsn: str) -> None:
    """Add a ``[store]`` table naming ``dsn`` to an aggregator.toml that has none (or create it)."""
    config_path = Path(config_path)
    text = config_path.read_text() if config_path.exists() else ""
    assert "[store]" not in text, config_path
    config_path.write_text(text + f'\n[store]\nbackend = "postgres"\ndsn = "{dsn}"\n')


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL server for the session."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> str:
    """The DSN of a fresh database on the session's server."""
    return pg_cluster.new_database()
