"""Read an audit bundle directory (docs/audit-bundle.md) into memory, once, at the edge.

Only the files' presence and sizes are checked here; what the bytes mean is
judged by the checks, which turn every problem into a finding. A bundle that
lacks the log itself (``log.vkey``, ``entries.jsonl``, ``checkpoints/``) cannot
be audited at all and is refused with ``E_AUDIT_BUNDLE``.

``lineage/<sha256>.json`` holds the lineage documents that entries commit to
(``ffsecure.records.lineage``): each is read as bytes (at most
``MAX_LINEAGE_DOCUMENT_BYTES``, all together at most ``MAX_LINEAGE_TOTAL``) and
parsed, hash-checked and matched to its entry by ``resolve_lineage`` during the
replay; a file not named by a SHA-256 is listed as stray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ffsecure import canonical
from ffsecure.errors import FFSecureError, FormatError
from ffsecure.ledger.verify import MAX_BUNDLE_ENTRIES_BYTES, read_entries
from ffsecure.records.ids import MODULE_ID, SHA256_HEX
from ffsecure.records.lineage import MAX_LINEAGE_DOCUMENT_BYTES

MAX_SMALL_FILE = 1 << 20
MAX_CHECKPOINT_FILE = 64 * 1024
MAX_MODULE_RECORD = 2 << 20
MAX_LINEAGE_TOTAL = 256 << 20
_MODULE_FILE_SUFFIX = ".json"


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


def _read(path: Path, cap: int, what: str) -> bytes:
    if not path.is_file():
        raise BundleError(
            f"{what} ({path}) is not a regular file",
            hint="the bundle is damaged or not an ffsecure audit bundle",
        )
    try:
        size = path.stat().st_size
        if size > cap:
            raise BundleError(
                f"{what} ({path}) is {size} bytes, more than the {cap} this auditor reads",
                hint="the bundle is damaged or not an ffsecure audit bundle",
            )
        return path.read_bytes()
    except OSError as exc:
        raise BundleError(
            f"{what} ({path}) cannot be read: {exc.strerror or exc}",
            hint="the bundle is damaged or not an ffsecure audit bundle",
        ) from None


def _optional(path: Path, cap: int, what: str) -> bytes | None:
    return _read(path, cap, what) if path.is_file() else None


def load_bundle(path: str | Path) -> Bundle:
    """Read a bundle directory. Raises BundleError when the log part is missing."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(
            f"{root} is not a directory", hint="pass the directory `aggregator ledger export` wrote"
        )
    missing = [p for p in ("log.vkey", "entries.jsonl") if not (root / p).is_file()]
    missing += [] if (root / "checkpoints").is_dir() else ["checkpoints"]
    if missing:
        raise BundleError(
            f"bundle {root} lacks {', '.join(missing)}",
            hint="export it again with `aggregator ledger export --out DIR`",
        )
    vkey_bytes = _read(root / "log.vkey", 4096, "log.vkey")
    try:
        vkey = vkey_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError("log.vkey is not UTF-8 text", hint="copy log.vkey unchanged") from None
    _read_check = (root / "entries.jsonl").stat().st_size
    if _read_check > MAX_BUNDLE_ENTRIES_BYTES:
        raise BundleError("entries.jsonl is larger than this auditor reads")
    try:
        entries = read_entries(root / "entries.jsonl")
    except FFSecureError as exc:
        raise BundleError(f"entries.jsonl: {exc.message}", hint=exc.hint) from None
    notes = {}
    for p in sorted((root / "checkpoints").iterdir()):
        if p.is_file():
            notes[p.name] = _read(p, MAX_CHECKPOINT_FILE, f"checkpoint {p.name}")
    modules: dict[str, ModuleRecord] = {}
    stray: list[str] = []
    mdir = root / "modules"
    if mdir.is_dir():
        for p in sorted(mdir.iterdir()):
            module_id = p.name.removesuffix(_MODULE_FILE_SUFFIX)
            if module_id == p.name or not MODULE_ID.matches(module_id) or not p.is_file():
                stray.append(p.name)
                continue
            raw = _read(p, MAX_MODULE_RECORD, f"module record {p.name}")
            body = raw[:-1] if raw.endswith(b"\n") else raw
            try:
                rec = canonical.loads_canonical(body, max_bytes=MAX_MODULE_RECORD)
                if not isinstance(rec, dict):
                    raise FormatError("not a JSON object")
                modules[module_id] = ModuleRecord(module_id, raw, rec)
            except FFSecureError as exc:
                modules[module_id] = ModuleRecord(module_id, raw, None, exc.message)
    lineage, stray_lineage = _lineage_documents(root / "lineage")
    summary = None
    raw_summary = _optional(root / "bundle.json", MAX_SMALL_FILE, "bundle.json")
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
        ca_pem=_optional(root / "ca.pem", MAX_SMALL_FILE, "ca.pem"),
        crl_pem=_optional(root / "crl.pem", 16 << 20, "crl.pem"),
        federation_json=_optional(root / "federation.json", MAX_SMALL_FILE, "federation.json"),
        modules=modules,
        summary=summary if isinstance(summary, dict) else None,
        stray_module_files=stray,
        lineage=lineage,
        stray_lineage_files=stray_lineage,
    )


def _lineage_documents(ldir: Path) -> tuple[dict[str, bytes], list[str]]:
    """``lineage/``: document bytes by the SHA-256 in their names, and the stray names."""
    documents: dict[str, bytes] = {}
    stray: list[str] = []
    if not ldir.is_dir():
        return documents, stray
    total = 0
    for p in sorted(ldir.iterdir()):
        digest = p.name.removesuffix(_MODULE_FILE_SUFFIX)
        if digest == p.name or not SHA256_HEX.matches(digest) or not p.is_file():
            stray.append(p.name)
            continue
        documents[digest] = _read(p, MAX_LINEAGE_DOCUMENT_BYTES, f"lineage document {p.name}")
        total += len(documents[digest])
        if total > MAX_LINEAGE_TOTAL:
            raise BundleError(
                f"lineage/ holds more than the {MAX_LINEAGE_TOTAL} bytes this auditor reads",
                hint="the bundle is damaged or not an ffsecure audit bundle",
            )
    return documents, stray
