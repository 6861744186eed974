"""Export this site's receipts for an auditor (``site-node receipts export``).

An auditor runs ``ffsecure audit verify BUNDLE --trusted-checkpoint FILE``
with checkpoints the aggregator signed and the site kept: the bundle's log
must extend each of them, so a log that dropped or rewrote a site's entry is a
finding. This module writes those files from the state directory, one home
for the form they take (the demo runs the same command).

Layout of the export folder ``OUT``::

    OUT/<module id>.receipt.json   the upload receipt (Receipt.to_dict), one per
                                   module registered or since deleted
    OUT/<module id>.deletion.note  the signed checkpoint the deletion was
                                   verified against, one per deleted module
    OUT/checkpoint.note            the newest checkpoint this site verified
    OUT/index.json                 what each file is (module, status, ledger
                                   index, tree size, SHA-256 of the file)

Invariants:

* every receipt and note is verified against the log key of the CA-signed
  federation manifest before anything is written; a kept receipt that no
  longer verifies is damage here (``E_STATE_CORRUPT``), never handed to an
  auditor, where it would read as evidence against the aggregator;
* the bytes depend only on the state (no time stamp), so exporting twice
  gives the same files; a file already in ``OUT`` with other bytes is
  refused (``E_EXISTS``) before any file is written, and identical files are
  left as they are;
* the files are public (0644): entries and checkpoints are what the
  aggregator's log publishes anyway, and no key or data is read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffsecure import pki
from ffsecure.errors import FFSecureError
from ffsecure.federation import FederationManifest, load_signed_manifest
from ffsecure.files import write_public_file
from ffsecure.ledger import open_checkpoint
from ffsecure.templates import FileExistsRefused
from site_node.client import kept_receipt, verify_receipt
from site_node.state import ModuleRecord, StateDir, state_corrupt

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT",
    "INDEX_NAME",
    "ExportedFile",
    "ReceiptsExport",
    "collect",
    "deletion_file_name",
    "export_receipts",
    "receipt_file_name",
]

#: The ``format`` of ``index.json``.
FORMAT = "ffsecure-receipts/1"
INDEX_NAME = "index.json"
CHECKPOINT_NAME = "checkpoint.note"


def receipt_file_name(module_id: str) -> str:
    return f"{module_id}.receipt.json"


def deletion_file_name(module_id: str) -> str:
    return f"{module_id}.deletion.note"


@dataclass(frozen=True)
class ExportedFile:
    """One file of the export: its name in ``OUT``, its bytes and what it is."""

    name: str
    data: bytes
    kind: str  # receipt | deletion | checkpoint | index
    module_id: str | None = None
    tree_size: int | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class ReceiptsExport:
    """What :func:`export_receipts` did: each file and whether it was written or already there."""

    out: Path
    site_id: str
    files: tuple[ExportedFile, ...]
    unchanged: frozenset[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "site_id": self.site_id,
            "receipts": sum(f.kind == "receipt" for f in self.files),
            "deletions": sum(f.kind == "deletion" for f in self.files),
            "files": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "module_id": f.module_id,
                    "sha256": f.sha256,
                    "written": f.name not in self.unchanged,
                }
                for f in self.files
            ],
            "trusted_checkpoints": [
                str(self.out / f.name) for f in self.files if f.kind != "index"
            ],
        }


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _federation(state: StateDir) -> FederationManifest:
    state.require_installed()
    ca_cert = pki.load_cert(state.ca_cert.read_bytes())
    return load_signed_manifest(state.federation.read_bytes(), ca_cert)


def _receipt_file(record: ModuleRecord, log: _LogKey) -> ExportedFile:
    receipt = kept_receipt(record.receipt)
    try:
        verify_receipt(
            receipt, log_vkey=log.vkey, log_origin=log.origin, module_id=record.module_id
        )
    except FFSecureError as exc:
        raise state_corrupt(
            f"it does not verify against its own signed checkpoint ({exc.message})",
            f"the stored receipt of module {record.module_id}",
        ) from None
    return ExportedFile(
        receipt_file_name(record.module_id),
        _json_bytes(receipt.to_dict()),
        "receipt",
        record.module_id,
        receipt.tree_size,
    )


@dataclass(frozen=True)
class _LogKey:
    """The log's note verifier key and origin, from the CA-signed federation manifest."""

    vkey: str
    origin: str


def _note_file(
    note: object, name: str, kind: str, what: str, log: _LogKey, module_id: str | None = None
) -> ExportedFile:
    if not isinstance(note, str):
        raise state_corrupt("it holds no checkpoint note", what)
    try:
        cp = open_checkpoint(note, log.vkey, origin=log.origin)
    except FFSecureError as exc:
        raise state_corrupt(f"its checkpoint does not verify ({exc.message})", what) from None
    return ExportedFile(name, note.encode("utf-8"), kind, module_id, cp.size)


def _module_files(record: ModuleRecord, log: _LogKey) -> list[ExportedFile]:
    files = []
    if record.status in ("registered", "deleted") and record.receipt:
        files.append(_receipt_file(record, log))
    deletion = record.deletion or {}
    if record.status == "deleted" and deletion.get("checkpoint") is not None:
        what = f"the deletion record of module {record.module_id}"
        name = deletion_file_name(record.module_id)
        files.append(
            _note_file(deletion["checkpoint"], name, "deletion", what, log, record.module_id)
        )
    return files


def _index(site_id: str, federation: FederationManifest, files: list[ExportedFile]) -> bytes:
    def described(f: ExportedFile) -> dict[str, Any]:
        return {"file": f.name, "kind": f.kind, "tree_size": f.tree_size, "sha256": f.sha256}

    return _json_bytes(
        {
            "format": FORMAT,
            "site_id": site_id,
            "federation_id": federation.federation_id,
            "log_origin": federation.aggregator["log_origin"],
            "files": [{"module_id": f.module_id, **described(f)} for f in files],
        }
    )


def collect(state: StateDir, site_id: str) -> list[ExportedFile]:
    """Every file of the export, verified, index last (nothing is written)."""
    federation = _federation(state)
    log = _LogKey(federation.aggregator["log_public_key"], federation.aggregator["log_origin"])
    files: list[ExportedFile] = []
    for record in state.modules():
        files.extend(_module_files(record, log))
    latest = state.read_checkpoint()
    if latest is not None:
        what = f"the stored checkpoint {state.checkpoint}"
        files.append(_note_file(latest, CHECKPOINT_NAME, "checkpoint", what, log))
    files.append(ExportedFile(INDEX_NAME, _index(site_id, federation, files), "index"))
    return files


def _existing_same(path: Path, data: bytes) -> bool:
    """True when ``path`` holds exactly ``data``; False when absent; refused when it differs."""
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
        return True
    raise FileExistsRefused(
        f"{path} already exists with other content; nothing was written",
        hint="export into a new folder (e.g. receipts-YYYYMMDD): receipts are evidence, so an "
        "export never replaces a file an auditor may already hold",
    )


def export_receipts(state: StateDir, out: str | Path, *, site_id: str) -> ReceiptsExport:
    """Write this site's verified receipts and checkpoints to ``out`` (see the module docstring)."""
    files = collect(state, site_id)
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise FileExistsRefused(f"{target} exists and is not a folder", hint="name a folder")
    unchanged = frozenset(f.name for f in files if _existing_same(target / f.name, f.data))
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.name not in unchanged:
            write_public_file(target / f.name, f.data)
    return ReceiptsExport(target, site_id, tuple(files), unchanged)
