"""The store's logic over SQL, shared by every backend (SQLite, PostgreSQL).

One home for the rules of the store: what a registration, a deletion, an
artifact or an evaluation must check, which rows and ledger entries change
together, how the Merkle nodes and checkpoints are kept, and what
``verify_integrity`` demands (with the evaluations and the site activity in
their mixins, ``aggregator.store.evaluations`` and ``aggregator.store.sites``).
A backend (``aggregator.store.sqlite``,
``aggregator.store.postgres``) supplies only what differs between databases:

- ``_write()`` / ``_read()``: a write transaction that holds the log's write
  lock from its first statement (so the tree size read, the Merkle nodes
  appended and the rows written never interleave with another writer, in this
  process or another), and a read transaction that sees one snapshot;
- the schema text, its version and the versions it upgrades in place;
- where the encrypted blobs live (``_put_blob``, ``_load_blob``,
  ``_drop_blob``, ``_blob_exists``, ``_stray_blobs``, ``_remove_orphan_blobs``).

The SQL here is the subset both databases read the same way, written with
``?`` placeholders (the PostgreSQL backend rewrites them to ``%s``); a
parameter is never tested with ``? IS NULL``, whose type PostgreSQL cannot
infer.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from aggregator.home import LogSigner
from aggregator.store import sealing
from aggregator.store.base import (
    ARTIFACT_STATUSES,
    MODULE_STATUSES,
    ArtifactRow,
    LedgerSnapshot,
    ModuleRow,
    RegistrationCheck,
    Store,
    check_artifact,
    check_module_id,
)
from aggregator.store.evaluations import EvaluationsMixin
from aggregator.store.sites import SitesMixin
from ffsecure import canonical
from ffsecure.errors import ConfigError, FormatError, LedgerError, NotFoundError, StoreError
from ffsecure.ledger.checkpoint import Checkpoint, open_checkpoint
from ffsecure.ledger.merkle import (
    MemoryTree,
    consistency_proof_from,
    inclusion_proof_from,
    leaf_hash,
    new_nodes,
    root_from,
)
from ffsecure.records.entries import EntryType, entry_bytes, make_entry, validate_entry
from ffsecure.records.ids import SITE_ID
from ffsecure.records.lineage import LineageDocument
from ffsecure.records.receipts import Receipt
from ffsecure.timefmt import now_rfc3339

log = logging.getLogger("aggregator.store")

_ARTIFACT_ENTRY = {
    "dataset": (EntryType.DATASET_SYNTHESIZED, "dataset_id"),
    "classifier": (EntryType.CLASSIFIER_TRAINED, "classifier_id"),
}
_STATUS_ENTRY = {
    ("dataset", "retired"): EntryType.DATASET_RETIRED,
    ("classifier", "retired"): EntryType.CLASSIFIER_RETIRED,
    ("classifier", "published"): EntryType.CLASSIFIER_PUBLISHED,
}
_SHREDDED = ["wrapped_dek", "blob"]


def _lineage_documents(dataset_metas: Iterable[dict]) -> dict[str, bytes]:
    """The lineage documents of the datasets whose entries commit to one, by SHA-256.

    A document is rebuilt from the full recipe the dataset's meta keeps; canonical JSON
    makes it the very bytes the entry's ``lineage.sha256`` hashed (a classifier commits
    to its dataset's document).
    """
    out: dict[str, bytes] = {}
    for meta in dataset_metas:
        if "lineage" in meta:
            document = LineageDocument.from_modules(meta["recipe"]["modules"])
            out[document.commitment().sha256] = document.to_bytes()
    return out


class Cursor(Protocol):
    """What the store reads from a statement's result (sqlite3 and psycopg cursors alike)."""

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """The connection a backend's transaction yields: ``?`` placeholders, positional params."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


def _corrupt(message: str) -> StoreError:
    return StoreError(
        message,
        code="E_STORE_CORRUPT",
        hint="run `aggregator ledger verify` and restore the store from a backup if it fails",
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Nodes:
    """Merkle node reader over the ``nodes`` table (inside the caller's transaction)."""

    def __init__(self, conn: Conn):
        self.conn = conn

    def node(self, level: int, index: int) -> bytes:
        row = self.conn.execute(
            "SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, index)
        ).fetchone()
        if row is None:
            raise _corrupt(f"Merkle node (level {level}, index {index}) is missing")
        return bytes(row[0])


class SQLStore(EvaluationsMixin, SitesMixin, Store):
    """Every store operation, over a backend's transactions, schema and blob placement."""

    #: The schema version this backend writes, and the older ones it upgrades in place.
    SCHEMA_VERSION: str
    UPGRADES: dict[str, str] = {}
    #: Whether the blobs are part of a read transaction's snapshot (rows of the database) or
    #: lie outside it (files written before their row commits, removed after): only in the
    #: first case can a reader beside a live ``serve`` check them (``verify_integrity``).
    BLOBS_IN_SNAPSHOT: bool = False

    def __init__(self, *, origin: str, kek: bytes, signer: LogSigner):
        if not isinstance(kek, (bytes, bytearray)) or len(kek) != 32:
            raise ConfigError(
                "the key-encryption key must be 32 bytes",
                code="E_KEY_FORMAT",
                hint="load it with aggregator.home.load_kek",
            )
        if signer.name != origin:
            raise ConfigError(
                f"the log key is named {signer.name!r} but the log origin is {origin!r}",
                code="E_CONFIG",
                hint="the log key name and the log origin must be the same",
            )
        self._kek = bytes(kek)
        self._kek_id = sealing.kek_id(self._kek)
        self._signer = signer
        self.origin = origin
        self.vkey = signer.vkey

    # -- what a backend supplies -----------------------------------------
    @abc.abstractmethod
    def _write(self) -> AbstractContextManager[Conn]:
        """A write transaction holding the log's write lock from its first statement."""

    @abc.abstractmethod
    def _read(self) -> AbstractContextManager[Conn]:
        """A read transaction over one consistent snapshot."""

    @abc.abstractmethod
    def _schema_statements(self) -> list[str]:
        """Idempotent ``CREATE ... IF NOT EXISTS`` statements of the whole schema."""

    @abc.abstractmethod
    def _put_blob(self, conn: Conn, name: str, data: bytes) -> None:
        """Keep an encrypted blob durably, as part of the write transaction ``conn``."""

    @abc.abstractmethod
    def _load_blob(self, conn: Conn, name: str) -> bytes | None:
        """The bytes of a blob, or None when it is missing."""

    @abc.abstractmethod
    def _drop_blob(self, conn: Conn, name: str) -> None:
        """Destroy a blob once the write transaction ``conn`` commits."""

    @abc.abstractmethod
    def _blob_exists(self, conn: Conn, name: str) -> bool: ...

    @abc.abstractmethod
    def _stray_blobs(self, conn: Conn, named: set[str]) -> list[str]:
        """The stored blobs that no row names."""

    @abc.abstractmethod
    def _remove_orphan_blobs(self, conn: Conn, named: set[str]) -> int:
        """At open: remove blobs no committed row names (an interrupted write); returns how many."""

    # -- opening ---------------------------------------------------------
    def _init_schema(self) -> None:
        with self._write() as conn:
            for statement in self._schema_statements():
                conn.execute(statement)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            want = {
                "schema": self.SCHEMA_VERSION,
                "origin": self.origin,
                "vkey": self.vkey,
                "kek_id": self._kek_id,
            }
            if not meta:
                conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", sorted(want.items()))
                return
            if meta.get("schema") in self.UPGRADES:
                log.info(
                    "store schema %s upgraded to %s: added %s",
                    meta["schema"],
                    self.SCHEMA_VERSION,
                    self.UPGRADES[meta["schema"]],
                )
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema'", (self.SCHEMA_VERSION,)
                )
                meta["schema"] = self.SCHEMA_VERSION
            self._check_meta(meta)

    def _check_meta(self, meta: dict[str, str]) -> None:
        if meta.get("schema") != self.SCHEMA_VERSION:
            raise StoreError(
                f"store schema {meta.get('schema')!r} is not supported "
                f"(expected {self.SCHEMA_VERSION})",
                code="E_STORE_VERSION",
                hint="use the ffsecure release that created the store",
            )
        if meta.get("origin") != self.origin:
            raise ConfigError(
                f"this store holds the log {meta.get('origin')!r}, not {self.origin!r}",
                code="E_CONFIG",
                hint="open it with the origin it was created with",
            )
        if meta.get("vkey") != self.vkey:
            raise ConfigError(
                "the log key does not match the key this store's checkpoints are signed with",
                code="E_LOG_KEY_MISMATCH",
                hint="use the keys/log.key the store was created with",
            )
        if meta.get("kek_id") != self._kek_id:
            raise ConfigError(
                "the key-encryption key is not the one this store was created with",
                code="E_KEK_MISMATCH",
                hint="use the keys/kek.key the store was created with",
            )

    def _check_stored_meta(self) -> None:
        """Check an existing store's meta rows for this release, log key and KEK; write nothing."""
        with self._read() as conn:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self._check_meta(meta)

    def _recover(self) -> None:
        """Check leaves against entries; remove blobs that no committed row names."""
        with self._write() as conn:
            size = self._size(conn)
            top = conn.execute("SELECT MAX(idx) FROM nodes WHERE level = 0").fetchone()[0]
            if (top + 1 if top is not None else 0) != size:
                raise _corrupt(
                    f"the log holds {size} entries but {0 if top is None else top + 1} leaf hashes"
                )
            removed = self._remove_orphan_blobs(conn, self._named_blobs(conn))
            if removed:
                log.warning("removed %d blob(s) left by an interrupted write", removed)

    @staticmethod
    def _named_blobs(conn: Conn) -> set[str]:
        return {
            r[0]
            for r in conn.execute(
                "SELECT blob_name FROM modules WHERE blob_name IS NOT NULL "
                "UNION SELECT blob_name FROM artifacts WHERE blob_name IS NOT NULL"
            )
        }

    def _open_blob(
        self, conn: Conn, name: str, wrapped: bytes, aad: bytes, blob_sha256: str
    ) -> bytes:
        data = self._load_blob(conn, name)
        if data is None:
            raise _corrupt(f"blob {name} is missing")
        if not hmac.compare_digest(_sha256(data), blob_sha256):
            raise _corrupt(f"blob {name} does not match its recorded hash")
        return sealing.open_blob(data, sealing.unwrap_dek(self._kek, wrapped, aad), aad)

    # -- ledger internals (caller holds the write transaction) -----------
    @staticmethod
    def _nodes(conn: Conn) -> _Nodes:
        return _Nodes(conn)

    @staticmethod
    def _size(conn: Conn) -> int:
        top = conn.execute("SELECT MAX(idx) FROM entries").fetchone()[0]
        return 0 if top is None else top + 1

    def _append_locked(self, conn: Conn, data: bytes, kind: str) -> int:
        index = self._size(conn)
        h = leaf_hash(data)
        conn.execute("INSERT INTO entries(idx, type, data) VALUES (?, ?, ?)", (index, kind, data))
        conn.executemany(
            "INSERT INTO nodes(level, idx, hash) VALUES (?, ?, ?)",
            new_nodes(_Nodes(conn), index, h),
        )
        return index

    def _checkpoint_locked(self, conn: Conn) -> tuple[int, str]:
        size = self._size(conn)
        row = conn.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
        if row is not None:
            return size, row[0]
        note = self._signer.sign(Checkpoint(self.origin, size, root_from(_Nodes(conn), size)))
        conn.execute(
            "INSERT INTO checkpoints(size, note, created) VALUES (?, ?, ?)",
            (size, note, now_rfc3339()),
        )
        return size, note

    # -- modules ---------------------------------------------------------
    def register_module(
        self,
        *,
        module_id: str,
        site_id: str,
        manifest_bytes: bytes,
        package_meta: bytes,
        weights: bytes,
        entry: dict,
        precondition: RegistrationCheck | None = None,
    ) -> Receipt:
        check_module_id(module_id)
        if not SITE_ID.matches(site_id):
            raise FormatError(f"site id {site_id!r} is not {SITE_ID.rule}", code="E_SITE_ID")
        canonical.loads_canonical(manifest_bytes)
        canonical.loads_canonical(package_meta)
        data = entry_bytes(entry)
        facts = entry["facts"]
        manifest_sha256, weights_sha256 = _sha256(manifest_bytes), _sha256(weights)
        expected = {
            "type": EntryType.MODULE_REGISTERED,
            "module_id": module_id,
            "site_id": site_id,
            "manifest_sha256": manifest_sha256,
            "weights_sha256": weights_sha256,
        }
        got = {"type": entry["type"], **{k: facts.get(k) for k in expected if k != "type"}}
        wrong = [k for k in expected if got[k] != expected[k]]
        if wrong:
            raise LedgerError(
                f"the module.registered entry does not match the module: {', '.join(wrong)} differ",
                code="E_ENTRY",
                hint="build the entry from the same manifest and weights",
            )
        with self._write() as conn:
            row = conn.execute(
                "SELECT manifest, status, registered_index FROM modules WHERE module_id = ?",
                (module_id,),
            ).fetchone()
            if row is not None:
                if not hmac.compare_digest(bytes(row[0]), bytes(manifest_bytes)):
                    raise StoreError(
                        f"module {module_id} is already registered with a different manifest",
                        code="E_DUPLICATE_MODULE",
                        hint="a new module needs a new random module id",
                    )
                if row[1] == "deleted":
                    raise StoreError(
                        f"module {module_id} was deleted and cannot be registered again",
                        code="E_MODULE_DELETED",
                        hint="a new module needs a new random module id",
                    )
                index = row[2]
                size, note = conn.execute(
                    "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1"
                ).fetchone()
                stored = bytes(
                    conn.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()[0]
                )
                proof = inclusion_proof_from(_Nodes(conn), index, size)
                return Receipt(index, stored, size, note, proof, existing=True)
            if precondition is not None:
                # Under the log's write lock: no other writer, in any process, can register a
                # module of this site between these rows and this module's commit.
                precondition(
                    [
                        self._module_row(r)
                        for r in conn.execute(
                            f"SELECT {self._MODULE_COLS} FROM modules WHERE site_id = ? "
                            "ORDER BY registered_index",
                            (site_id,),
                        )
                    ]
                )
            aad = b"module\x00" + module_id.encode()
            dek = sealing.new_dek()
            blob = sealing.seal_blob(bytes(weights), dek, aad)
            name = f"m-{module_id}.blob"
            self._put_blob(conn, name, blob)
            index = self._append_locked(conn, data, EntryType.MODULE_REGISTERED)
            conn.execute(
                "INSERT INTO modules(module_id, site_id, status, manifest, manifest_sha256, "
                "package_meta, weights_sha256, weights_size, wrapped_dek, blob_name, blob_sha256, "
                "kek_id, registered_index, created) "
                "VALUES (?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    module_id,
                    site_id,
                    bytes(manifest_bytes),
                    manifest_sha256,
                    bytes(package_meta),
                    weights_sha256,
                    len(weights),
                    sealing.wrap_dek(self._kek, dek, aad),
                    name,
                    _sha256(blob),
                    self._kek_id,
                    index,
                    entry["time"],
                ),
            )
            size, note = self._checkpoint_locked(conn)
            proof = inclusion_proof_from(_Nodes(conn), index, size)
        log.info("module %s of site %s registered as entry %d", module_id, site_id, index)
        return Receipt(index, data, size, note, proof, existing=False)

    def delete_module(
        self, module_id: str, *, actor: str, reason: str, request_entry: dict | None = None
    ) -> list[tuple[int, bytes]]:
        check_module_id(module_id)
        if not isinstance(reason, str) or not reason.strip():
            raise LedgerError(
                "a deletion needs a reason", code="E_ENTRY", hint="say why the module is deleted"
            )
        request = None
        if request_entry is not None:
            request = entry_bytes(request_entry)
            if (
                request_entry["type"] != EntryType.MODULE_DELETION_REQUESTED
                or request_entry["facts"].get("module_id") != module_id
            ):
                raise LedgerError(
                    "the request entry is not a module.deletion_requested entry for this module",
                    code="E_ENTRY",
                )
        out: list[tuple[int, bytes]] = []
        with self._write() as conn:
            row = conn.execute(
                "SELECT status, blob_name, weights_sha256, blob_sha256, kek_id FROM modules "
                "WHERE module_id = ?",
                (module_id,),
            ).fetchone()
            if row is None:
                raise NotFoundError(
                    f"module {module_id} is not in the store", hint="list modules to see the ids"
                )
            if row[0] == "deleted":
                raise StoreError(f"module {module_id} is already deleted", code="E_MODULE_DELETED")
            facts = {
                "module_id": module_id,
                "reason": reason,
                "destroyed": list(_SHREDDED),
                "weights_sha256": row[2],
                "blob_sha256": row[3],
                "kek_id": row[4],
            }
            data = entry_bytes(make_entry(EntryType.MODULE_DELETED, actor, facts))
            if request is not None:
                out.append(
                    (
                        self._append_locked(conn, request, EntryType.MODULE_DELETION_REQUESTED),
                        request,
                    )
                )
            index = self._append_locked(conn, data, EntryType.MODULE_DELETED)
            out.append((index, data))
            conn.execute(
                "UPDATE modules SET status = 'deleted', wrapped_dek = NULL, blob_name = NULL, "
                "deleted_index = ?, deleted = ? WHERE module_id = ?",
                (index, now_rfc3339(), module_id),
            )
            self._checkpoint_locked(conn)
            self._drop_blob(conn, row[1])
        log.info("module %s deleted (entry %d): data key and blob destroyed", module_id, index)
        return out

    def module_weights(self, module_id: str) -> bytes:
        check_module_id(module_id)
        with self._read() as conn:
            return self._module_weights_in(conn, module_id)

    def _module_weights_in(self, conn: Conn, module_id: str) -> bytes:
        """A module's decrypted weights, read in the transaction ``conn``."""
        row = conn.execute(
            "SELECT status, wrapped_dek, blob_name, blob_sha256, weights_sha256 FROM modules "
            "WHERE module_id = ?",
            (module_id,),
        ).fetchone()
        if row is None:
            raise NotFoundError(
                f"module {module_id} is not in the store", hint="list modules to see the ids"
            )
        if row[0] == "deleted":
            raise StoreError(
                f"module {module_id} was deleted; its weights no longer exist",
                code="E_MODULE_DELETED",
                hint="leave deleted modules out of synthesis",
            )
        weights = self._open_blob(
            conn, row[2], bytes(row[1]), b"module\x00" + module_id.encode(), row[3]
        )
        if not hmac.compare_digest(_sha256(weights), row[4]):
            raise _corrupt(
                f"module {module_id} decrypts to weights whose hash is not the registered one"
            )
        return weights

    _MODULE_COLS = (
        "module_id, site_id, status, manifest, manifest_sha256, package_meta, weights_sha256, "
        "weights_size, registered_index, deleted_index, created, deleted"
    )

    @staticmethod
    def _module_row(r: tuple) -> ModuleRow:
        return ModuleRow(
            r[0], r[1], r[2], bytes(r[3]), r[4], bytes(r[5]), r[6], r[7], r[8], r[9], r[10], r[11]
        )

    def get_module(self, module_id: str) -> ModuleRow:
        check_module_id(module_id)
        with self._read() as conn:
            r = conn.execute(
                f"SELECT {self._MODULE_COLS} FROM modules WHERE module_id = ?", (module_id,)
            ).fetchone()
        if r is None:
            raise NotFoundError(
                f"module {module_id} is not in the store", hint="list modules to see the ids"
            )
        return self._module_row(r)

    def list_modules(self, status: str | None = None) -> list[ModuleRow]:
        if status is not None and status not in MODULE_STATUSES:
            raise FormatError(
                f"module status {status!r} is not one of {', '.join(MODULE_STATUSES)}",
                code="E_STATUS",
            )
        select = f"SELECT {self._MODULE_COLS} FROM modules"
        order = " ORDER BY registered_index"
        with self._read() as conn:
            if status is None:
                rows = conn.execute(select + order).fetchall()
            else:
                rows = conn.execute(select + " WHERE status = ?" + order, (status,)).fetchall()
        return [self._module_row(r) for r in rows]

    # -- artifacts -------------------------------------------------------
    def put_artifact(
        self, kind: str, artifact_id: str, meta: dict, blob: bytes | None, entry: dict
    ) -> tuple[int, bytes]:
        check_artifact(kind, artifact_id)
        if not isinstance(meta, dict):
            raise FormatError("artifact meta must be a JSON object", code="E_JSON")
        meta_bytes = canonical.dumps(meta)
        data = entry_bytes(entry)
        etype, id_key = _ARTIFACT_ENTRY[kind]
        if entry["type"] != etype or entry["facts"].get(id_key) != artifact_id:
            raise LedgerError(
                f"a {kind} needs a {etype} entry whose facts.{id_key} is {artifact_id!r}",
                code="E_ENTRY",
            )
        if (
            blob is not None
            and "sha256" in entry["facts"]
            and entry["facts"]["sha256"] != _sha256(blob)
        ):
            raise LedgerError(
                f"the entry's sha256 is not the hash of the {kind} bytes", code="E_ENTRY"
            )
        with self._write() as conn:
            if conn.execute(
                "SELECT 1 FROM artifacts WHERE kind = ? AND artifact_id = ?", (kind, artifact_id)
            ).fetchone():
                raise StoreError(
                    f"{kind} {artifact_id} already exists",
                    code="E_DUPLICATE_ARTIFACT",
                    hint="choose a new id",
                )
            wrapped = name = blob_sha = None
            if blob is not None:
                aad = f"{kind}\x00{artifact_id}".encode()
                dek = sealing.new_dek()
                sealed = sealing.seal_blob(bytes(blob), dek, aad)
                name, blob_sha, wrapped = (
                    f"a-{kind}-{artifact_id}.blob",
                    _sha256(sealed),
                    sealing.wrap_dek(self._kek, dek, aad),
                )
                self._put_blob(conn, name, sealed)
            index = self._append_locked(conn, data, etype)
            conn.execute(
                "INSERT INTO artifacts(kind, artifact_id, status, meta, wrapped_dek, blob_name, "
                "blob_sha256, blob_size, entry_index, updated_index, created) "
                "VALUES (?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    artifact_id,
                    meta_bytes,
                    wrapped,
                    name,
                    blob_sha,
                    None if blob is None else len(blob),
                    index,
                    index,
                    entry["time"],
                ),
            )
        return index, data

    def set_artifact_status(
        self, kind: str, artifact_id: str, status: str, entry: dict
    ) -> tuple[int, bytes]:
        check_artifact(kind, artifact_id)
        etype = _STATUS_ENTRY.get((kind, status))
        if status not in ARTIFACT_STATUSES or etype is None:
            raise FormatError(
                f"a {kind} cannot be set to {status!r}",
                code="E_STATUS",
                hint="datasets can be retired; classifiers published or retired",
            )
        data = entry_bytes(entry)
        id_key = _ARTIFACT_ENTRY[kind][1]
        if entry["type"] != etype or entry["facts"].get(id_key) != artifact_id:
            raise LedgerError(
                f"setting {kind} {artifact_id} to {status} needs a {etype} entry for it",
                code="E_ENTRY",
            )
        with self._write() as conn:
            row = conn.execute(
                "SELECT status, blob_name, meta FROM artifacts WHERE kind = ? AND artifact_id = ?",
                (kind, artifact_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{kind} {artifact_id} is not in the store")
            if row[0] == "retired" or row[0] == status:
                raise StoreError(f"{kind} {artifact_id} is already {row[0]}", code="E_STATUS")
            if status == "published":
                # in the write transaction: no deletion (by any process) slips in between
                self._check_none_deleted(conn, kind, artifact_id, canonical.loads(bytes(row[2])))
            index = self._append_locked(conn, data, etype)
            if status == "retired":
                # Retired artifacts may hold what a deleted module contributed: shred them too.
                conn.execute(
                    "UPDATE artifacts SET status = ?, updated_index = ?, wrapped_dek = NULL, "
                    "blob_name = NULL WHERE kind = ? AND artifact_id = ?",
                    (status, index, kind, artifact_id),
                )
                if row[1]:
                    self._drop_blob(conn, row[1])
            else:
                conn.execute(
                    "UPDATE artifacts SET status = ?, updated_index = ? "
                    "WHERE kind = ? AND artifact_id = ?",
                    (status, index, kind, artifact_id),
                )
        return index, data

    def _check_none_deleted(self, conn: Conn, kind: str, artifact_id: str, meta: dict) -> None:
        """``E_LINEAGE_DELETED`` when a module of the artifact's lineage is deleted: a deletion
        cut short before its retirements leaves such a classifier active, never servable."""
        deleted = {
            row[0] for row in conn.execute("SELECT module_id FROM modules WHERE status = 'deleted'")
        }
        for m in meta.get("modules", []):
            if m["module_id"] in deleted:
                raise StoreError(
                    f"{kind} {artifact_id} was made from module {m['module_id']}, which is "
                    "deleted; it cannot be published",
                    code="E_LINEAGE_DELETED",
                    hint="retrain from the live modules (`aggregator retrain`)",
                )

    _ARTIFACT_COLS = (
        "kind, artifact_id, status, meta, blob_sha256, blob_size, blob_name IS NOT NULL, "
        "entry_index, updated_index, created"
    )

    @staticmethod
    def _artifact_row(r: tuple) -> ArtifactRow:
        return ArtifactRow(
            r[0], r[1], r[2], canonical.loads(bytes(r[3])), r[4], r[5], bool(r[6]), r[7], r[8], r[9]
        )

    def get_artifact(self, kind: str, artifact_id: str) -> ArtifactRow:
        check_artifact(kind, artifact_id)
        with self._read() as conn:
            r = conn.execute(
                f"SELECT {self._ARTIFACT_COLS} FROM artifacts WHERE kind = ? AND artifact_id = ?",
                (kind, artifact_id),
            ).fetchone()
        if r is None:
            raise NotFoundError(f"{kind} {artifact_id} is not in the store")
        return self._artifact_row(r)

    def list_artifacts(self, kind: str, status: str | None = None) -> list[ArtifactRow]:
        check_artifact(kind, "x")
        select = f"SELECT {self._ARTIFACT_COLS} FROM artifacts WHERE kind = ?"
        with self._read() as conn:
            if status is None:
                rows = conn.execute(select + " ORDER BY entry_index", (kind,)).fetchall()
            else:
                rows = conn.execute(
                    select + " AND status = ? ORDER BY entry_index", (kind, status)
                ).fetchall()
        return [self._artifact_row(r) for r in rows]

    def artifact_blob(self, kind: str, artifact_id: str) -> bytes:
        check_artifact(kind, artifact_id)
        with self._read() as conn:
            row = conn.execute(
                "SELECT status, wrapped_dek, blob_name, blob_sha256 FROM artifacts "
                "WHERE kind = ? AND artifact_id = ?",
                (kind, artifact_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{kind} {artifact_id} is not in the store")
            if row[2] is None:
                raise NotFoundError(
                    f"{kind} {artifact_id} has no stored bytes"
                    + (" (destroyed when it was retired)" if row[0] == "retired" else "")
                )
            return self._open_blob(
                conn, row[2], bytes(row[1]), f"{kind}\x00{artifact_id}".encode(), row[3]
            )

    # -- ledger ----------------------------------------------------------
    def append(self, entry: dict) -> tuple[int, bytes]:
        data = entry_bytes(entry)
        if entry["type"] in {
            EntryType.MODULE_REGISTERED,
            EntryType.MODULE_DELETED,
            EntryType.DATASET_SYNTHESIZED,
            EntryType.CLASSIFIER_TRAINED,
            EntryType.CLASSIFIER_EVALUATED,
        }:
            raise LedgerError(
                f"{entry['type']} entries are appended by the store operation that makes them true",
                code="E_ENTRY",
                hint="use register_module, delete_module, put_artifact or put_evaluation",
            )
        with self._write() as conn:
            return self._append_locked(conn, data, entry["type"]), data

    def append_many(self, entries: list[dict]) -> int:
        """Append plain events in one transaction (bulk loads, benchmarks); returns the new size."""
        datas = [entry_bytes(e) for e in entries]
        with self._write() as conn:
            for e, data in zip(entries, datas, strict=True):
                self._append_locked(conn, data, e["type"])
            return self._size(conn)

    def size(self) -> int:
        with self._read() as conn:
            return self._size(conn)

    def entry(self, index: int) -> bytes:
        with self._read() as conn:
            row = conn.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise NotFoundError(f"ledger entry {index} does not exist")
        return bytes(row[0])

    def entries(self, start: int, end: int) -> list[bytes]:
        with self._read() as conn:
            size = self._size(conn)
            if not 0 <= start <= end <= size:
                raise NotFoundError(
                    f"entries [{start}, {end}) are outside the log of {size} entries"
                )
            rows = conn.execute(
                "SELECT data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    def _check_tree_size(self, conn: Conn, tree_size: int) -> None:
        size = self._size(conn)
        if not 0 <= tree_size <= size:
            raise LedgerError(
                f"tree size {tree_size} is larger than the log ({size} entries)",
                code="E_PROOF",
                hint="ask for a size the log has reached",
            )

    def root_hash(self, tree_size: int | None = None) -> bytes:
        with self._read() as conn:
            size = self._size(conn) if tree_size is None else tree_size
            self._check_tree_size(conn, size)
            return root_from(_Nodes(conn), size)

    def checkpoint(self) -> str:
        with self._write() as conn:
            return self._checkpoint_locked(conn)[1]

    def latest_checkpoint(self) -> str | None:
        with self._read() as conn:
            row = conn.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else row[0]

    def checkpoints(self) -> list[str]:
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT note FROM checkpoints ORDER BY size")]

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        with self._read() as conn:
            self._check_tree_size(conn, tree_size)
            return inclusion_proof_from(_Nodes(conn), index, tree_size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        with self._read() as conn:
            self._check_tree_size(conn, new_size)
            return consistency_proof_from(_Nodes(conn), old_size, new_size)

    def snapshot(self) -> LedgerSnapshot:
        with self._write() as conn:
            size, _ = self._checkpoint_locked(conn)
            entries = [
                bytes(r[0])
                for r in conn.execute(
                    "SELECT data FROM entries WHERE idx < ? ORDER BY idx", (size,)
                )
            ]
            cps = dict(
                conn.execute(
                    "SELECT size, note FROM checkpoints WHERE size <= ? ORDER BY size", (size,)
                )
            )
            modules = [
                self._module_row(r)
                for r in conn.execute(
                    f"SELECT {self._MODULE_COLS} FROM modules "
                    "WHERE registered_index < ? ORDER BY registered_index",
                    (size,),
                )
            ]
            metas = [
                canonical.loads(bytes(r[0]))
                for r in conn.execute(
                    "SELECT meta FROM artifacts WHERE kind = 'dataset' AND entry_index < ? "
                    "ORDER BY entry_index",
                    (size,),
                )
            ]
        return LedgerSnapshot(
            self.origin, self.vkey, size, entries, cps, modules, _lineage_documents(metas)
        )

    # -- integrity -------------------------------------------------------
    def verify_integrity(self, *, decrypt: bool = True, files: bool = True) -> dict:
        """Check that the store and its log agree; raises StoreError E_STORE_CORRUPT if not.

        Rehashes every entry and compares every stored Merkle node, verifies
        every checkpoint, and checks that each module has its registration
        entry (and a deletion entry once deleted), each active module its
        wrapped key and a blob that decrypts to the registered weights, and
        that no blob lies in ``blobs/`` without a row. The blobs are decrypted in the same
        read snapshot as the rows.

        ``files=False`` leaves the blobs out (existence, strays, decryption): where they lie
        outside the snapshot (:attr:`BLOBS_IN_SNAPSHOT` false: SQLite's files), a live
        ``serve`` writes one before its row commits and unlinks one after, so a reader beside
        it could see either half (``aggregator check``).
        """
        with self._read() as conn:
            datas = [
                (r[0], bytes(r[1]))
                for r in conn.execute("SELECT idx, data FROM entries ORDER BY idx")
            ]
            if [i for i, _ in datas] != list(range(len(datas))):
                raise _corrupt("ledger entry indices are not contiguous")
            tree = MemoryTree()
            registered: dict[str, int] = {}
            deleted: dict[str, int] = {}
            evaluated: dict[int, dict] = {}
            for i, data in datas:
                try:
                    e = validate_entry(data)
                except LedgerError as exc:
                    raise _corrupt(f"ledger entry {i} is invalid: {exc.message}") from None
                if e["type"] == EntryType.MODULE_REGISTERED:
                    registered[e["facts"]["module_id"]] = i
                elif e["type"] == EntryType.MODULE_DELETED:
                    deleted[e["facts"]["module_id"]] = i
                elif e["type"] == EntryType.CLASSIFIER_EVALUATED:
                    evaluated[i] = e
                tree.append(data)
            n_nodes = 0
            for level, idx, h in conn.execute("SELECT level, idx, hash FROM nodes"):
                n_nodes += 1
                if (
                    level >= len(tree._levels)
                    or idx >= len(tree._levels[level])
                    or tree.node(level, idx) != bytes(h)
                ):
                    raise _corrupt(f"stored Merkle node (level {level}, index {idx}) is wrong")
            if n_nodes != sum(len(lv) for lv in tree._levels):
                raise _corrupt("stored Merkle nodes are missing")
            notes = conn.execute("SELECT size, note FROM checkpoints ORDER BY size").fetchall()
            for size, note in notes:
                try:
                    cp = open_checkpoint(note, self.vkey)
                except LedgerError as exc:
                    raise _corrupt(f"checkpoint {size} does not verify: {exc.message}") from None
                if cp.size != size or cp.size > tree.size or cp.root_hash != tree.root(cp.size):
                    raise _corrupt(f"checkpoint {size} does not match the log")
            rows = conn.execute(
                "SELECT module_id, status, registered_index, deleted_index, wrapped_dek, blob_name "
                "FROM modules"
            ).fetchall()
            names = set()
            for mid, status, reg, dele, wrapped, blob_name in rows:
                if registered.get(mid) != reg:
                    raise _corrupt(f"module {mid} has no matching module.registered entry")
                if status == "deleted":
                    if deleted.get(mid) != dele or wrapped is not None or blob_name is not None:
                        raise _corrupt(
                            f"deleted module {mid} is not fully shredded or lacks its entry"
                        )
                else:
                    if mid in deleted or wrapped is None or blob_name is None:
                        raise _corrupt(f"active module {mid} is inconsistent with the log")
                    names.add(blob_name)
            for mid in registered:
                if mid not in {r[0] for r in rows}:
                    raise _corrupt(f"module.registered entry for {mid} has no module row")
            names |= {
                r[0]
                for r in conn.execute("SELECT blob_name FROM artifacts WHERE blob_name IS NOT NULL")
            }
            n_evaluations = self._check_evaluations(conn, evaluated, _corrupt)
            if files:
                active = [(r[0], r[5]) for r in rows if r[1] == "active"]
                self._check_blobs(conn, active, names, decrypt=decrypt)
        return {
            "entries": tree.size,
            "root_hash": tree.root().hex(),
            "checkpoints": len(notes),
            "modules": len(rows),
            "deleted_modules": sum(1 for r in rows if r[1] == "deleted"),
            "evaluations": n_evaluations,
        }

    def _check_blobs(
        self, conn: Conn, active: list[tuple[str, str]], named: set[str], *, decrypt: bool
    ) -> None:
        """Each active module's blob exists (and decrypts), and no blob lacks a row."""
        for module_id, blob_name in active:
            if not self._blob_exists(conn, blob_name):
                raise _corrupt(f"module {module_id} has no blob")
        stray = self._stray_blobs(conn, named)
        if stray:
            raise _corrupt(f"blobs without a row: {', '.join(sorted(stray)[:5])}")
        if decrypt:
            for module_id, _ in active:
                self._module_weights_in(conn, module_id)
