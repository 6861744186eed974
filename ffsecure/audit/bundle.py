"""Read an audit bundle directory (docs/audit-bundle.md) into memory, once, at the edge.

Only the files' presence, kind and sizes are checked here; what the bytes mean is
judged by the checks, which turn every problem into a finding. A bundle that
lacks the log itself (``log.vkey``, ``entries.jsonl``, ``checkpoints/``) cannot
be audited at all and is refused with ``E_AUDIT_BUNDLE``.

Every file is read by :func:`ffsecure.files.read_regular_file`: the exporter chose
the bundle, so a member is never followed through a symbolic link, never opened
when it is a FIFO, socket or device, and never read past its cap, whatever its
``st_size`` says (a ``/proc`` file says 0); a member over its cap, or a folder whose
members together pass its total (``MAX_CHECKPOINTS_TOTAL``, ``MAX_MODULES_TOTAL``,
``MAX_LINEAGE_TOTAL``: the exporter chose how many there are), is refused with
``E_AUDIT_BUNDLE``. The bundle path itself may be a symbolic link (an auditor's own
choice of path); what lies inside it may not. A required part (``log.vkey``,
``entries.jsonl``, the ``checkpoints`` folder) that is a link or not a regular
file (folder) is refused with ``E_AUDIT_BUNDLE``; any other member of the wrong
kind (``ca.pem`` a link, ``modules/<id>.json`` a FIFO, ``lineage`` a file, ...) is
left unread, as if absent, and listed in ``Bundle.irregular`` for the audit to
report (``E_AUDIT_BUNDLE_MEMBER``, a warning; what its absence breaks is a finding of
its own check).

``lineage/<sha256>.json`` holds the lineage documents that entries commit to
(``ffsecure.records.lineage``): each is read as bytes (at most
``MAX_LINEAGE_DOCUMENT_BYTES``, all together at most ``MAX_LINEAGE_TOTAL``) and
parsed, hash-checked and matched to its entry by ``resolve_lineage`` during the
replay; a file not named by a SHA-256 is listed as stray.

``federations/<sha256>.json`` holds the CA-signed federation manifests the log records
(``federation.loaded``), each named by the SHA-256 of its signed body: at most
``MAX_FEDERATION_DOCUMENTS`` of them, each read as bytes up to the manifest cap
(``ffsecure.federation.MAX_MANIFEST_BYTES``); their CA signature and digest are judged
by the trust-anchor check (``ffsecure.audit.anchor.check_federation_documents``); a file
not named by a SHA-256 is listed as stray.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ffsecure import canonical
from ffsecure.errors import FFSecureError, FormatError
from ffsecure.federation import MAX_MANIFEST_BYTES
from ffsecure.files import FileTooLarge, NotRegularFile, file_kind, read_regular_file
from ffsecure.ledger.verify import (
    MAX_BUNDLE_ENTRIES_BYTES,
    MAX_CHECKPOINT_BYTES,
    MAX_CHECKPOINTS_TOTAL,
    MAX_VKEY_BYTES,
    charge_member,
    split_entries,
)
from ffsecure.records.ids import MODULE_ID, SHA256_HEX
from ffsecure.records.lineage import MAX_LINEAGE_DOCUMENT_BYTES

MAX_SMALL_FILE = 1 << 20
MAX_MODULE_RECORD = 2 << 20
MAX_LINEAGE_TOTAL = 256 << 20
#: all of ``modules/`` together (a record is a few KiB; 1 GiB is far above any federation's)
MAX_MODULES_TOTAL = 1 << 30
MAX_CRL_FILE = 16 << 20
MAX_FEDERATION_DOCUMENTS = 256
#: the folder of recorded federation manifests (``aggregator ledger export`` writes it)
FEDERATIONS_DIR = "federations"
_MODULE_FILE_SUFFIX = ".json"
_DAMAGED = "the bundle is damaged or not an ffsecure audit bundle"


class BundleError(FFSecureError):
    """The directory is not an audit bundle that can be audited."""

    code = "E_AUDIT_BUNDLE"


@dataclass
class ModuleRecord:
    """``modules/<id>.json``: parsed when it is canonical JSON, else ``error`` says why."""

    module_id: str
    raw: bytes
    record: dict | None
    error: str | None = None


@dataclass
class Bundle:
    """The bytes of one audit bundle."""

    path: Path
    vkey: str
    entries: list[bytes] = field(repr=False)
    checkpoint_notes: dict[str, bytes] = field(repr=False)
    ca_pem: bytes | None
    crl_pem: bytes | None
    federation_json: bytes | None
    modules: dict[str, ModuleRecord] = field(repr=False)
    summary: dict | None
    stray_module_files: list[str] = field(default_factory=list)
    #: ``lineage/<sha256>.json`` by SHA-256 (as named: ``resolve_lineage`` hashes the bytes)
    lineage: dict[str, bytes] = field(default_factory=dict, repr=False)
    stray_lineage_files: list[str] = field(default_factory=list)
    #: ``federations/<sha256>.json`` by the SHA-256 in its name (unverified: the anchor check
    #: verifies each under the CA and hashes its signed body)
    federations: dict[str, bytes] = field(default_factory=dict, repr=False)
    stray_federation_files: list[str] = field(default_factory=list)
    #: members left unread for their kind: path in the bundle -> what it is ("a FIFO", ...)
    irregular: dict[str, str] = field(default_factory=dict)


def _read(path: Path, cap: int, what: str) -> bytes:
    """A required member's bytes; a missing, irregular or oversized one is ``E_AUDIT_BUNDLE``."""
    try:
        return read_regular_file(path, cap)
    except NotRegularFile as exc:
        raise BundleError(
            f"{what} ({path}) is {exc.reason}, not a regular file", hint=_DAMAGED
        ) from None
    except FileTooLarge:
        raise BundleError(
            f"{what} ({path}) is more than the {cap} bytes this auditor reads", hint=_DAMAGED
        ) from None
    except OSError as exc:
        raise BundleError(
            f"{what} ({path}) cannot be read: {exc.strerror or exc}", hint=_DAMAGED
        ) from None


class _Reader:
    """Reads the members of one bundle, noting those of the wrong kind instead of reading them."""

    def __init__(self, root: Path):
        self.root = root
        self.irregular: dict[str, str] = {}

    def optional(self, name: str, cap: int, what: str) -> bytes | None:
        """``name``'s bytes; None when it is absent or of the wrong kind (then noted)."""
        if not os.path.lexists(self.root / name) or self.kind(name) is not None:
            return None
        return _read(self.root / name, cap, what)

    def kind(self, name: str, *, folder: bool = False) -> str | None:
        """None when ``name`` is absent or of the expected kind (a regular file, or a folder that
        is no link); else what it is, noted in ``irregular``."""
        try:
            mode = (self.root / name).lstat().st_mode
        except FileNotFoundError:
            return None
        expected = stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)
        if expected:
            return None
        self.irregular[name] = file_kind(mode)
        return self.irregular[name]

    def folder(self, name: str) -> list[str]:
        """The names in folder ``name`` (none when absent or of the wrong kind), sorted."""
        if self.kind(name, folder=True) is not None or not (self.root / name).is_dir():
            return []
        return sorted(_shown(p.name) for p in (self.root / name).iterdir())


def _shown(name: str) -> str:
    """A member name as text: bytes of it that are not UTF-8 (which Python keeps as lone
    surrogates) become ``\\x..`` escapes, so a finding naming it prints and renders. No
    such name is a module id, a digest or a checkpoint size, so none is ever opened."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def load_bundle(path: str | Path) -> Bundle:
    """Read a bundle directory. Raises BundleError when the log part is missing."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(
            f"{root} is not a directory", hint="pass the directory `aggregator ledger export` wrote"
        )
    missing = [p for p in ("log.vkey", "entries.jsonl") if not os.path.lexists(root / p)]
    missing += [] if os.path.lexists(root / "checkpoints") else ["checkpoints"]
    if missing:
        raise BundleError(
            f"bundle {root} lacks {', '.join(missing)}",
            hint="export it again with `aggregator ledger export --out DIR`",
        )
    reader = _Reader(root)
    if reader.kind("checkpoints", folder=True) is not None:
        raise BundleError(
            f"checkpoints ({root / 'checkpoints'}) is {reader.irregular['checkpoints']}, "
            "not a folder",
            hint=_DAMAGED,
        )
    vkey_bytes = _read(root / "log.vkey", MAX_VKEY_BYTES, "log.vkey")
    try:
        vkey = vkey_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError("log.vkey is not UTF-8 text", hint="copy log.vkey unchanged") from None
    try:
        entries = split_entries(
            _read(root / "entries.jsonl", MAX_BUNDLE_ENTRIES_BYTES, "entries.jsonl")
        )
    except FFSecureError as exc:
        raise BundleError(f"entries.jsonl: {exc.message}", hint=exc.hint) from None
    notes = {}
    total = 0
    for name in reader.folder("checkpoints"):
        note = reader.optional(f"checkpoints/{name}", MAX_CHECKPOINT_BYTES, f"checkpoint {name}")
        if note is not None:
            notes[name] = note
            total = _within(charge_member(total, note), MAX_CHECKPOINTS_TOTAL, "checkpoints")
    modules, stray = _module_records(reader)
    lineage, stray_lineage = _lineage_documents(reader)
    federations, stray_federations = _federation_documents(reader)
    summary = None
    raw_summary = reader.optional("bundle.json", MAX_SMALL_FILE, "bundle.json")
    if raw_summary is not None:
        try:
            summary = canonical.loads(raw_summary)
        except FFSecureError:
            summary = None
    return Bundle(
        path=root,
        vkey=vkey,
        entries=entries,
        checkpoint_notes=notes,
        ca_pem=reader.optional("ca.pem", MAX_SMALL_FILE, "ca.pem"),
        crl_pem=reader.optional("crl.pem", MAX_CRL_FILE, "crl.pem"),
        federation_json=reader.optional("federation.json", MAX_SMALL_FILE, "federation.json"),
        modules=modules,
        summary=summary if isinstance(summary, dict) else None,
        stray_module_files=stray,
        lineage=lineage,
        stray_lineage_files=stray_lineage,
        federations=federations,
        stray_federation_files=stray_federations,
        irregular=reader.irregular,
    )


def _module_records(reader: _Reader) -> tuple[dict[str, ModuleRecord], list[str]]:
    """``modules/``: each record by its module id, parsed when canonical; and the stray names."""
    modules: dict[str, ModuleRecord] = {}
    stray: list[str] = []
    total = 0
    for name in reader.folder("modules"):
        module_id = name.removesuffix(_MODULE_FILE_SUFFIX)
        if module_id == name or not MODULE_ID.matches(module_id):
            stray.append(name)
            continue
        raw = reader.optional(f"modules/{name}", MAX_MODULE_RECORD, f"module record {name}")
        if raw is None:
            continue
        total = _within(charge_member(total, raw), MAX_MODULES_TOTAL, "modules")
        body = raw[:-1] if raw.endswith(b"\n") else raw
        try:
            rec = canonical.loads_canonical(body, max_bytes=MAX_MODULE_RECORD)
            if not isinstance(rec, dict):
                raise FormatError("not a JSON object")
            modules[module_id] = ModuleRecord(module_id, raw, rec)
        except FFSecureError as exc:
            modules[module_id] = ModuleRecord(module_id, raw, None, exc.message)
    return modules, stray


def _lineage_documents(reader: _Reader) -> tuple[dict[str, bytes], list[str]]:
    """``lineage/``: document bytes by the SHA-256 in their names, and the stray names."""
    documents: dict[str, bytes] = {}
    stray: list[str] = []
    total = 0
    for name in reader.folder("lineage"):
        digest = name.removesuffix(_MODULE_FILE_SUFFIX)
        if digest == name or not SHA256_HEX.matches(digest):
            stray.append(name)
            continue
        document = reader.optional(
            f"lineage/{name}", MAX_LINEAGE_DOCUMENT_BYTES, f"lineage document {name}"
        )
        if document is None:
            continue
        documents[digest] = document
        total = _within(charge_member(total, document), MAX_LINEAGE_TOTAL, "lineage")
    return documents, stray


def _within(total: int, cap: int, folder: str) -> int:
    """``total`` (``folder``'s members so far, :func:`~ffsecure.ledger.verify.charge_member`);
    more than ``cap`` is ``E_AUDIT_BUNDLE``: the exporter chose how many members a folder
    holds, and each is kept in memory."""
    if total > cap:
        raise BundleError(
            f"{folder}/ holds more than the {cap} bytes this auditor reads", hint=_DAMAGED
        )
    return total


def _federation_documents(reader: _Reader) -> tuple[dict[str, bytes], list[str]]:
    """``federations/``: manifest bytes by the SHA-256 in their names, and the stray names."""
    documents: dict[str, bytes] = {}
    stray: list[str] = []
    for name in reader.folder(FEDERATIONS_DIR):
        digest = name.removesuffix(_MODULE_FILE_SUFFIX)
        if digest == name or not SHA256_HEX.matches(digest):
            stray.append(name)
            continue
        if len(documents) == MAX_FEDERATION_DOCUMENTS:
            raise BundleError(
                f"{FEDERATIONS_DIR}/ holds more than the {MAX_FEDERATION_DOCUMENTS} federation "
                "manifests this auditor reads",
                hint=_DAMAGED,
            )
        document = reader.optional(
            f"{FEDERATIONS_DIR}/{name}", MAX_MANIFEST_BYTES, f"federation manifest {name}"
        )
        if document is not None:
            documents[digest] = document
    return documents, stray
