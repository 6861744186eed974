"""PostgreSQL backend of the store (psycopg 3): modules, blobs and the ledger in one database.

The store's rules live in ``aggregator.store.sql``; this module gives them a
PostgreSQL connection, the schema and a ``blobs`` table. Blobs live in the
database (not in files) so that several ``aggregator serve`` processes on
several machines share them, and a blob commits in the transaction of its row.

Serialized appends. Every write transaction (READ COMMITTED) first takes
``pg_advisory_xact_lock(LOCK_CLASS, hashtext(current_schema()))``: one lock
per log, held until commit or rollback, so the tree size read, the Merkle
nodes appended and the rows written cannot interleave with a writer in any
other process sharing the database. Each statement after the lock sees every
transaction committed before it (READ COMMITTED takes a new snapshot per
statement). ``entries.idx`` is the primary key: even a writer that skipped
the lock could not give one index two entries; its insert would fail.
Reads run REPEATABLE READ, READ ONLY: one snapshot per read.

Durability. A transaction commits (with the server's ``synchronous_commit``,
on by default) before the caller acknowledges anything, so a SIGKILL of
``serve`` loses no acknowledged write; an interrupted transaction leaves
nothing.

Crypto-shredding. A deletion sets the module's ``wrapped_dek`` to NULL and
deletes its blob row in the transaction that appends ``module.deleted``.
Under MVCC the old row version stays in the table file as a dead tuple
until vacuumed, so after the commit the store runs ``VACUUM FULL`` on
``modules`` and ``artifacts`` (rewriting them into new files without the
dead versions) and a plain ``VACUUM`` on ``blobs``. The write-ahead log and
any backup taken before the deletion still hold the wrapped key until they
are recycled or expire (docs/operator-guide.md, "PostgreSQL store").

Secrets. The DSN's password is never logged: errors name the DSN with its
password replaced (:func:`redact_dsn`).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from aggregator.config import check_dsn
from aggregator.home import LogSigner
from aggregator.store.sites import SITES_SCHEMA
from aggregator.store.sql import Conn, SQLStore
from ffsecure.errors import StoreError

log = logging.getLogger("aggregator.store")

SCHEMA_VERSION = "pg-2"
#: Older schemas this release upgrades in place when it opens them (under the log's lock), and
#: what the upgrade adds: the CREATE ... IF NOT EXISTS statements add the missing tables, then only
#: the version is rewritten.
UPGRADES = {"pg-1": "site_activity (last contact and last refusal per site)"}
#: The first key of the log's advisory lock ("ffse"); the second is the schema's hash.
LOCK_CLASS = 0x66667365
_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))"
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS entries(idx BIGINT PRIMARY KEY CHECK(idx >= 0), "
    "type TEXT NOT NULL, data BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS nodes(level INTEGER NOT NULL, idx BIGINT NOT NULL, "
    "hash BYTEA NOT NULL, PRIMARY KEY(level, idx))",
    "CREATE TABLE IF NOT EXISTS checkpoints(size BIGINT PRIMARY KEY, note TEXT NOT NULL, "
    "created TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS blobs(name TEXT PRIMARY KEY, data BYTEA NOT NULL)",
    """CREATE TABLE IF NOT EXISTS modules(
    module_id TEXT PRIMARY KEY, site_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK(status IN ('active', 'deleted')),
    manifest BYTEA NOT NULL, manifest_sha256 TEXT NOT NULL, package_meta BYTEA NOT NULL,
    weights_sha256 TEXT NOT NULL, weights_size BIGINT NOT NULL,
    wrapped_dek BYTEA, blob_name TEXT UNIQUE, blob_sha256 TEXT, kek_id TEXT,
    registered_index BIGINT NOT NULL UNIQUE REFERENCES entries(idx),
    deleted_index BIGINT UNIQUE REFERENCES entries(idx),
    created TEXT NOT NULL, deleted TEXT,
    CHECK((status = 'active') = (wrapped_dek IS NOT NULL AND blob_name IS NOT NULL)))""",
    """CREATE TABLE IF NOT EXISTS artifacts(
    kind TEXT NOT NULL, artifact_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK(status IN ('active', 'published', 'retired')),
    meta BYTEA NOT NULL, wrapped_dek BYTEA, blob_name TEXT UNIQUE, blob_sha256 TEXT,
    blob_size BIGINT,
    entry_index BIGINT NOT NULL REFERENCES entries(idx),
    updated_index BIGINT NOT NULL REFERENCES entries(idx),
    created TEXT NOT NULL, PRIMARY KEY(kind, artifact_id))""",
    "CREATE INDEX IF NOT EXISTS modules_status ON modules(status)",
    """CREATE TABLE IF NOT EXISTS evaluations(
    site_id TEXT NOT NULL, classifier_id TEXT NOT NULL, report BYTEA NOT NULL,
    report_sha256 TEXT NOT NULL, salt TEXT NOT NULL,
    entry_index BIGINT NOT NULL UNIQUE REFERENCES entries(idx), created TEXT NOT NULL,
    PRIMARY KEY(site_id, classifier_id))""",
    "CREATE INDEX IF NOT EXISTS evaluations_classifier ON evaluations(classifier_id)",
    SITES_SCHEMA,
]
#: The tables that keep the schema; ``aggregator`` roles need exactly these (docs).
TABLES = (
    "meta",
    "entries",
    "nodes",
    "checkpoints",
    "blobs",
    "modules",
    "artifacts",
    "evaluations",
    "site_activity",
)
_SHRED_VACUUM = ("VACUUM FULL modules, artifacts", "VACUUM blobs")


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***`` (for messages and logs)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<a DSN that does not parse>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo("", **{k: str(v) for k, v in params.items() if v is not None})


@functools.cache
def _pg(sql: str) -> str:
    """The shared ``?`` placeholders as psycopg's ``%s`` (the SQL holds no literal ``%``)."""
    assert "%" not in sql, sql
    return sql.replace("?", "%s")


class _Connection:
    """A psycopg connection that reads the store's ``?`` SQL (the ``Conn`` protocol)."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor:
        return self.conn.execute(_pg(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(_pg(sql), [tuple(p) for p in parameters])


def connect(dsn: str) -> psycopg.Connection:
    """Connect in autocommit mode (transactions are explicit); ``E_STORE_CONNECT`` on failure."""
    check_dsn(dsn)
    try:
        return psycopg.connect(dsn, autocommit=True, application_name="ffsecure-aggregator")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(
            f"cannot connect to the PostgreSQL store ({redact_dsn(dsn)}): {reason}",
            code="E_STORE_CONNECT",
            hint="check store.dsn (host, dbname, user, sslmode, sslrootcert) and that the "
            "database server is running and reachable",
        ) from None


class PostgresStore(SQLStore):
    """The store in one PostgreSQL schema, shared safely by several ``serve`` processes."""

    SCHEMA_VERSION = SCHEMA_VERSION
    UPGRADES = UPGRADES
    BLOBS_IN_SNAPSHOT = True  # rows of the blobs table

    def __init__(self, conn: psycopg.Connection, *, origin: str, kek: bytes, signer: LogSigner):
        super().__init__(origin=origin, kek=kek, signer=signer)
        self._pg = conn
        self._conn = _Connection(conn)
        self._lock = threading.RLock()
        self._shredded = False
        # PostgreSQL's warnings (e.g. a VACUUM skipped for a role that does not own the table)
        conn.add_notice_handler(
            lambda diag: (
                log.warning("PostgreSQL: %s", diag.message_primary)
                if diag.severity_nonlocalized == "WARNING"
                else None
            )
        )

    @classmethod
    def open(cls, dsn: str, *, origin: str, kek: bytes, log_signer: LogSigner) -> PostgresStore:
        """Connect, create or check the schema (idempotent, under the log's lock)."""
        conn = connect(dsn)
        try:
            store = cls(conn, origin=origin, kek=kek, signer=log_signer)
            store._init_schema()
            store._recover()
        except BaseException:
            conn.close()
            raise
        log.info("store: PostgreSQL %s", redact_dsn(dsn))
        return store

    def _schema_statements(self) -> list[str]:
        return list(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._pg.close()

    # -- transactions ----------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[_Connection]:
        with self._lock:
            self._shredded = False
            with self._pg.transaction():
                self._pg.execute(_LOCK_SQL, (LOCK_CLASS,))
                yield self._conn
            if self._shredded:
                self._vacuum_shredded()

    @contextmanager
    def _read(self) -> Iterator[_Connection]:
        with self._lock, self._pg.transaction():
            self._pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield self._conn

    def _vacuum_shredded(self) -> None:
        """Rewrite the tables that held a destroyed wrapped key, so no dead version remains."""
        self._shredded = False
        for statement in _SHRED_VACUUM:
            try:
                self._pg.execute(statement)
            except psycopg.Error as exc:  # committed already; the operator can vacuum later
                log.warning("%s after a deletion did not complete: %s", statement, exc)

    # -- blobs (a table, written in the caller's transaction) ------------
    def _put_blob(self, conn: Conn, name: str, data: bytes) -> None:
        conn.execute("INSERT INTO blobs(name, data) VALUES (?, ?)", (name, bytes(data)))

    def _load_blob(self, conn: Conn, name: str) -> bytes | None:
        row = conn.execute("SELECT data FROM blobs WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def _drop_blob(self, conn: Conn, name: str) -> None:
        conn.execute("DELETE FROM blobs WHERE name = ?", (name,))
        self._shredded = True

    def _blob_exists(self, conn: Conn, name: str) -> bool:
        return conn.execute("SELECT 1 FROM blobs WHERE name = ?", (name,)).fetchone() is not None

    def _stray_blobs(self, conn: Conn, named: set[str]) -> list[str]:
        return [r[0] for r in conn.execute("SELECT name FROM blobs") if r[0] not in named]

    def _remove_orphan_blobs(self, conn: Conn, named: set[str]) -> int:
        """Blobs commit with their rows, so an interrupted write leaves none to remove."""
        return 0
