"""SQLite backend of the store: one WAL database plus a directory of encrypted blobs.

The store's rules live in ``aggregator.store.sql``; this module gives them a
SQLite connection, the schema and the blob files.

Transactions are ``BEGIN IMMEDIATE`` (the write lock is taken before the
first read), so the tree size read, the Merkle nodes appended and the rows
written cannot interleave with another writer, in this process or another.

Crash safety. A new blob is written to a temporary file, fsynced, renamed
and its directory fsynced *inside* the write transaction, before the row
that names it commits; a crash before the commit leaves a blob that no row
names, which the next ``open`` removes (under the write lock, so it never
races a live writer). A deleted module's row loses its wrapped data key in
the same transaction that appends ``module.deleted``; its blob file is
unlinked after the commit (or at the next open). ``secure_delete`` zeroes
freed database content and the WAL is checkpointed and truncated after a
deletion, so the wrapped key does not linger in the live files.

Reading beside a live serve. :meth:`SQLiteStore.open_read_only` (``aggregator
check``) opens with SQLite's ``mode=ro``: no schema upgrade, no clean-up, no
chmod and no write lock. The blob files lie outside a read transaction's
snapshot (``BLOBS_IN_SNAPSHOT`` false), so such a reader leaves them out of
``verify_integrity`` while ``serve`` runs.

Permissions. ``store.sqlite`` is created 0600 before SQLite opens it, and
SQLite gives its ``-wal`` and ``-shm`` files the database file's mode; a
database (or WAL/SHM) left 0644 by an earlier release is tightened at open,
with a warning. The blob directory is 0700.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aggregator.home import AggregatorHome, LogSigner
from aggregator.store.sites import SITES_SCHEMA
from aggregator.store.sql import SQLStore
from ffsecure.errors import ConfigError, StoreError
from ffsecure.files import create_private_file, fsync_dir, private_dir, restrict

log = logging.getLogger("aggregator.store")

SCHEMA_VERSION = "3"
#: Older schemas this release upgrades in place when it opens them, and what the upgrade adds.
#: The CREATE ... IF NOT EXISTS statements below add the missing tables; only the version is then
#: rewritten.
UPGRADES = {
    "1": "evaluations (sites' evaluation reports, classifier.evaluated entries) and "
    "site_activity (last contact and last refusal per site)",
    "2": "site_activity (last contact and last refusal per site)",
}
# A backslash at the end of a line inside the schema joins it to the next, so that the SQL text
# SQLite keeps in sqlite_master stays byte for byte what earlier releases wrote.
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries(idx INTEGER PRIMARY KEY, type TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS nodes(level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
                                 PRIMARY KEY(level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints(size INTEGER PRIMARY KEY, note TEXT NOT NULL, \
created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS modules(
    module_id TEXT PRIMARY KEY, site_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK(status IN ('active', 'deleted')),
    manifest BLOB NOT NULL, manifest_sha256 TEXT NOT NULL, package_meta BLOB NOT NULL,
    weights_sha256 TEXT NOT NULL, weights_size INTEGER NOT NULL,
    wrapped_dek BLOB, blob_name TEXT UNIQUE, blob_sha256 TEXT, kek_id TEXT,
    registered_index INTEGER NOT NULL REFERENCES entries(idx), \
deleted_index INTEGER REFERENCES entries(idx),
    created TEXT NOT NULL, deleted TEXT,
    CHECK((status = 'active') = (wrapped_dek IS NOT NULL AND blob_name IS NOT NULL)));
CREATE TABLE IF NOT EXISTS artifacts(
    kind TEXT NOT NULL, artifact_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK(status IN ('active', 'published', 'retired')),
    meta BLOB NOT NULL, wrapped_dek BLOB, blob_name TEXT UNIQUE, blob_sha256 TEXT, \
blob_size INTEGER,
    entry_index INTEGER NOT NULL REFERENCES entries(idx), \
updated_index INTEGER NOT NULL REFERENCES entries(idx),
    created TEXT NOT NULL, PRIMARY KEY(kind, artifact_id));
CREATE INDEX IF NOT EXISTS modules_status ON modules(status);
"""
    + """
CREATE TABLE IF NOT EXISTS evaluations(
    site_id TEXT NOT NULL, classifier_id TEXT NOT NULL, report BLOB NOT NULL, \
report_sha256 TEXT NOT NULL,
    salt TEXT NOT NULL, entry_index INTEGER NOT NULL UNIQUE REFERENCES entries(idx), \
created TEXT NOT NULL,
    PRIMARY KEY(site_id, classifier_id));
CREATE INDEX IF NOT EXISTS evaluations_classifier ON evaluations(classifier_id);
"""
    + SITES_SCHEMA
)


def _private_database(db_path: Path) -> None:
    """``store.sqlite`` 0600 before SQLite opens it (-wal/-shm inherit its mode); tighten old."""
    create_private_file(db_path)
    for suffix in ("-wal", "-shm", "-journal"):
        restrict(db_path.with_name(db_path.name + suffix))


class SQLiteStore(SQLStore):
    """The default store: ``store.sqlite`` (WAL) and ``blobs/``."""

    SCHEMA_VERSION = SCHEMA_VERSION
    UPGRADES = UPGRADES

    def __init__(
        self,
        conn: sqlite3.Connection,
        blob_dir: Path,
        *,
        origin: str,
        kek: bytes,
        signer: LogSigner,
    ):
        super().__init__(origin=origin, kek=kek, signer=signer)
        self._conn = conn
        self._blobs = blob_dir
        self._lock = threading.RLock()
        self._new_files: list[Path] = []
        self._doomed_files: list[Path] = []

    # -- opening ---------------------------------------------------------
    @classmethod
    def open(
        cls,
        home: str | os.PathLike | AggregatorHome | None = None,
        *,
        db_path: str | os.PathLike | None = None,
        blob_dir: str | os.PathLike | None = None,
        origin: str,
        kek: bytes,
        log_signer: LogSigner,
    ) -> SQLiteStore:
        """Open (creating if needed) the store of an aggregator home, or of explicit paths."""
        if home is not None:
            h = home if isinstance(home, AggregatorHome) else AggregatorHome.at(home)
            h.ensure_dirs()
            db_path, blob_dir = db_path or h.store_db, blob_dir or h.blobs
        if db_path is None or blob_dir is None:
            raise ConfigError(
                "the store needs a home directory or both db_path and blob_dir", code="E_CONFIG"
            )
        blob_dir = private_dir(blob_dir)
        _private_database(Path(db_path))
        conn = sqlite3.connect(
            str(db_path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            store = cls(conn, blob_dir, origin=origin, kek=kek, signer=log_signer)
            store._init_schema()
            store._recover()
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def open_read_only(
        cls, home: AggregatorHome, *, kek: bytes, log_signer: LogSigner
    ) -> SQLiteStore:
        """Open an existing store for reading only (``aggregator check``), next to a live serve.

        SQLite's ``mode=ro``: no schema upgrade, no orphan-blob removal, no chmod and no
        write lock, so a running ``serve`` is never delayed; any write raises. The meta rows
        must name this release's schema, this log key and this KEK, as for :meth:`open`.
        """
        if not home.store_db.is_file():
            raise ConfigError(
                f"{home.store_db} does not exist",
                code="E_CONFIG",
                hint="run step 2 of `aggregator init`, which creates the store",
            )
        conn = sqlite3.connect(
            f"{home.store_db.resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=30.0,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            store = cls(conn, home.blobs, origin=log_signer.name, kek=kek, signer=log_signer)
            store._check_stored_meta()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(
                f"{home.store_db} cannot be read as a store: {exc}",
                code="E_STORE_CORRUPT",
                hint="run `aggregator ledger verify` and restore the store from a backup if it "
                "fails",
            ) from None
        except BaseException:
            conn.close()
            raise
        return store

    def _schema_statements(self) -> list[str]:
        return [statement for statement in _SCHEMA.split(";") if statement.strip()]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- transactions ----------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._new_files = []
            self._doomed_files = []
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                for path in self._new_files:
                    path.unlink(missing_ok=True)
                raise
            doomed, self._doomed_files = self._doomed_files, []
            for path in doomed:
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:  # committed already; the next open removes the orphan
                    log.warning("could not remove destroyed blob %s now: %s", path.name, exc)
            if doomed:
                fsync_dir(self._blobs)
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as exc:  # another reader holds the WAL; it is truncated later
                    log.warning("WAL checkpoint after deletion did not complete: %s", exc)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    # -- blob files ------------------------------------------------------
    def _put_blob(self, conn: object, name: str, data: bytes) -> None:
        final = self._blobs / name
        tmp = self._blobs / f".{name}.{secrets.token_hex(6)}.tmp"
        self._new_files += [tmp, final]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fsync_dir(self._blobs)

    def _load_blob(self, conn: object, name: str) -> bytes | None:
        try:
            return (self._blobs / name).read_bytes()
        except FileNotFoundError:
            return None

    def _drop_blob(self, conn: object, name: str) -> None:
        self._doomed_files.append(self._blobs / name)

    def _blob_exists(self, conn: object, name: str) -> bool:
        return (self._blobs / name).is_file()

    def _stray_blobs(self, conn: object, named: set[str]) -> list[str]:
        return [p.name for p in self._blobs.iterdir() if p.is_file() and p.name not in named]

    def _remove_orphan_blobs(self, conn: object, named: set[str]) -> int:
        removed = 0
        for path in self._blobs.iterdir():
            if path.is_file() and path.name not in named:
                path.unlink()
                removed += 1
        if removed:
            fsync_dir(self._blobs)
        return removed
