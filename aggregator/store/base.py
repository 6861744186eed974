"""The store interface: modules, artifacts and the ledger, behind one abstract class.

The gRPC service and the operator CLI use only this interface; the SQLite
backend (``aggregator.store.sqlite``) implements it and a PostgreSQL backend
could later. No SQL lives outside the backend modules.

Contract of every backend:

- every write that changes the ledger and the store is one transaction: the
  module/artifact row, its encrypted blob, its ledger entry and the Merkle
  nodes commit together or not at all;
- a refused input changes nothing (validation happens before any write);
- a rule that depends on what is already stored (a site's DP budget) is judged on rows
  read inside the write transaction, under the log's write lock, never on an earlier
  read: two servers sharing the store cannot both pass it on the same history;
- ledger entries are canonical JSON (``ffsecure.records.entries``) and the
  bytes stored are the bytes hashed and exported.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ffsecure.errors import FormatError
from ffsecure.records.entries import EntryType, entry_of

# check_module_id is re-exported: the store and its callers refuse module ids by the one rule.
from ffsecure.records.ids import check_artifact_id
from ffsecure.records.ids import check_module_id as check_module_id
from ffsecure.records.receipts import Receipt

ARTIFACT_KINDS = ("dataset", "classifier")
ARTIFACT_STATUSES = ("active", "published", "retired")
MODULE_STATUSES = ("active", "deleted")
_SCAN_BATCH = 4096


def check_artifact(kind: str, artifact_id: str) -> None:
    if kind not in ARTIFACT_KINDS:
        raise FormatError(
            f"artifact kind {kind!r} is not one of {', '.join(ARTIFACT_KINDS)}",
            code="E_ARTIFACT_KIND",
            hint="use dataset or classifier",
        )
    check_artifact_id(artifact_id, f"{kind} id")


@dataclass(frozen=True)
class ModuleRow:
    """A stored module; weights are reached only through ``Store.module_weights``."""

    module_id: str
    site_id: str
    status: str
    manifest: bytes
    manifest_sha256: str
    package_meta: bytes
    weights_sha256: str
    weights_size: int
    registered_index: int
    deleted_index: int | None
    created: str
    deleted: str | None


@dataclass(frozen=True)
class ArtifactRow:
    """A synthesized dataset or a trained classifier."""

    kind: str
    artifact_id: str
    status: str
    meta: dict
    blob_sha256: str | None
    blob_size: int | None
    has_blob: bool
    entry_index: int
    updated_index: int
    created: str


@dataclass(frozen=True)
class EvaluationRow:
    """A site's evaluation report of a classifier (``ffsecure.evalreport``), as stored."""

    site_id: str
    classifier_id: str
    report: dict  # EvaluationReport.to_dict()
    report_sha256: str  # the commitment in the classifier.evaluated entry
    salt: str
    entry_index: int
    created: str


@dataclass(frozen=True)
class SiteActivityRow:
    """What ``serve`` last saw of one site: its last call, its last refusal (code, method, time)."""

    site_id: str
    last_contact: str
    last_refusal_code: str | None
    last_refusal_method: str | None
    last_refusal_time: str | None


#: A registration's precondition: given every module row of the registering site (deleted ones
#: included), read inside the write transaction under the log's write lock, it raises to refuse.
RegistrationCheck = Callable[[Sequence[ModuleRow]], None]


class Store(abc.ABC):
    """Modules, artifacts and the transparency ledger of one aggregator."""

    origin: str
    vkey: str

    # -- modules ---------------------------------------------------------
    @abc.abstractmethod
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
        """Store an encrypted module and append its ``module.registered`` entry (idempotent).

        ``precondition`` runs for a new module only (a module already registered with these
        bytes returns its receipt, a new release of nothing), inside the write transaction
        under the log's write lock, with the site's module rows read there; whatever it
        raises rolls the transaction back (nothing written) and reaches the caller.
        """

    @abc.abstractmethod
    def delete_module(
        self, module_id: str, *, actor: str, reason: str, request_entry: dict | None = None
    ) -> list[tuple[int, bytes]]:
        """Crypto-shred a module, append ``module.deleted``; returns the (index, bytes) appended."""

    @abc.abstractmethod
    def module_weights(self, module_id: str) -> bytes:
        """Decrypt a module's weights in memory."""

    @abc.abstractmethod
    def get_module(self, module_id: str) -> ModuleRow: ...

    @abc.abstractmethod
    def list_modules(self, status: str | None = None) -> list[ModuleRow]: ...

    # -- artifacts -------------------------------------------------------
    @abc.abstractmethod
    def put_artifact(
        self, kind: str, artifact_id: str, meta: dict, blob: bytes | None, entry: dict
    ) -> tuple[int, bytes]: ...

    @abc.abstractmethod
    def set_artifact_status(
        self, kind: str, artifact_id: str, status: str, entry: dict
    ) -> tuple[int, bytes]: ...

    @abc.abstractmethod
    def get_artifact(self, kind: str, artifact_id: str) -> ArtifactRow: ...

    @abc.abstractmethod
    def list_artifacts(self, kind: str, status: str | None = None) -> list[ArtifactRow]: ...

    @abc.abstractmethod
    def artifact_blob(self, kind: str, artifact_id: str) -> bytes: ...

    # -- sites' evaluation reports ----------------------------------------
    @abc.abstractmethod
    def put_evaluation(
        self, *, site_id: str, report: bytes, salt: str, entry: dict
    ) -> tuple[EvaluationRow, Receipt]:
        """Store a site's canonical report and append its ``classifier.evaluated``, atomically.

        The classifier must be in the store and not retired (``E_NO_CLASSIFIER``,
        ``E_CLASSIFIER_RETIRED``). Idempotent: the same report bytes from the same
        site for the same classifier return the stored row and a receipt of its
        entry (``existing``), appending nothing; other bytes are ``E_EVALUATION_EXISTS``.
        """

    @abc.abstractmethod
    def list_evaluations(self, classifier_id: str | None = None) -> list[EvaluationRow]: ...

    # -- what serve saw of each site (operational, not in the ledger) ------
    @abc.abstractmethod
    def note_site(self, site_id: str, *, at: str, refusal: tuple[str, str] | None = None) -> None:
        """Record a call from ``site_id`` at ``at`` and, with ``refusal`` (code, method), that
        it was refused. One row per site (bounded by the CA); ``E_SITE_ID`` for a bad id."""

    @abc.abstractmethod
    def list_site_activity(self) -> list[SiteActivityRow]: ...

    # -- ledger ----------------------------------------------------------
    @abc.abstractmethod
    def append(self, entry: dict) -> tuple[int, bytes]:
        """Append an event that changes no module or artifact; returns (index, entry bytes)."""

    @abc.abstractmethod
    def size(self) -> int: ...

    @abc.abstractmethod
    def entry(self, index: int) -> bytes: ...

    @abc.abstractmethod
    def entries(self, start: int, end: int) -> list[bytes]: ...

    def last_entry_of(self, kind: EntryType) -> tuple[int, dict] | None:
        """(index, facts) of the last entry of type ``kind`` in the log, or None.

        Scans from the end in batches (:func:`ffsecure.records.entries.entry_of`).
        """
        end = self.size()
        while end > 0:
            start = max(0, end - _SCAN_BATCH)
            batch = self.entries(start, end)
            for offset in range(len(batch) - 1, -1, -1):
                entry = entry_of(batch[offset], kind)
                if entry is not None:
                    return start + offset, entry["facts"]
            end = start
        return None

    @abc.abstractmethod
    def root_hash(self, tree_size: int | None = None) -> bytes: ...

    @abc.abstractmethod
    def checkpoint(self) -> str:
        """Sign and keep a checkpoint for the current size; returns the note text."""

    @abc.abstractmethod
    def latest_checkpoint(self) -> str | None: ...

    @abc.abstractmethod
    def checkpoints(self) -> list[str]: ...

    @abc.abstractmethod
    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]: ...

    @abc.abstractmethod
    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]: ...

    @abc.abstractmethod
    def snapshot(self) -> LedgerSnapshot:
        """A consistent view for export: a fresh checkpoint, the entries, checkpoints, modules
        and the lineage documents the entries commit to."""

    @abc.abstractmethod
    def verify_integrity(self, *, decrypt: bool = True, files: bool = True) -> dict:
        """Check that the store and its log agree (every entry rehashed, every node and checkpoint
        right, each module with its entries, deleted ones shredded, no stray blob); raises
        StoreError ``E_STORE_CORRUPT`` if not. ``decrypt`` also decrypts every active module;
        ``files=False`` leaves the blobs out (a reader beside a live ``serve``, where the
        blobs lie outside the read snapshot)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class LedgerSnapshot:
    """Everything an export needs, read in one transaction."""

    origin: str
    vkey: str
    size: int
    entries: list[bytes]
    checkpoints: dict[int, str]
    modules: list[ModuleRow]
    #: committed lineage documents (``ffsecure.records.lineage``) by SHA-256
    lineage: dict[str, bytes] = field(default_factory=dict)
