"""Write an audit bundle: everything an auditor needs to check the log offline.

Layout (docs/audit-bundle.md)::

    bundle.json               format version, origin, tree size, root hash, export time
    log.vkey                  the log's note verifier key
    entries.jsonl             one entry per line: exactly the bytes that were hashed
    checkpoints/<size>        every checkpoint issued up to the export, one signed note per file
    ca.pem, crl.pem           the federation CA certificate and its current CRL
    federation.json           the CA-signed federation manifest (binds the log key to the CA)
    modules/<module-id>.json  manifest, signature and certificate chain of each module
                              (never weights)
    lineage/<sha256>.json     each lineage document a dataset or classifier entry commits
                              to (``ffsecure.records.lineage``): exactly the hashed bytes
    federations/<sha256>.json each CA-signed federation manifest the log records
                              (``federation.loaded``), named by its signed body's SHA-256

The bundle is built in a temporary sibling directory and renamed into place,
so an interrupted export leaves no partial bundle.

:func:`write_log_tiles` writes the same log as a C2SP ``tlog-tiles``
directory (``ffsecure.ledger.tiles``), to be served by any static web server.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path

from aggregator.store.base import LedgerSnapshot
from ffsecure import canonical
from ffsecure.audit.bundle import FEDERATIONS_DIR
from ffsecure.errors import ConfigError
from ffsecure.ledger.merkle import MemoryTree, leaf_hash, root_from
from ffsecure.ledger.tiles import TilesExport, write_tiles
from ffsecure.records.ids import SHA256_HEX
from ffsecure.timefmt import now_rfc3339

BUNDLE_FORMAT = "ffsecure-audit-bundle/v1"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def module_record(row) -> dict:
    """The public record of one module: what the site signed and published, its state in the log.

    ``package`` is the site's signed package metadata (manifest, signature,
    certificate chain; never weights) and ``package_b64`` its exact canonical
    bytes, so that a verifier in any language checks the very bytes stored.
    """
    return {
        "module_id": row.module_id,
        "site_id": row.site_id,
        "status": row.status,
        "manifest_sha256": row.manifest_sha256,
        "package": canonical.loads(row.package_meta),
        "package_b64": base64.b64encode(row.package_meta).decode(),
        "weights_sha256": row.weights_sha256,
        "registered_index": row.registered_index,
        "deleted_index": row.deleted_index,
    }


def write_bundle(
    snap: LedgerSnapshot,
    out_dir: Path,
    *,
    ca_cert_pem: bytes,
    crl_pem: bytes | None,
    federation_json: bytes | None = None,
    federation_documents: Mapping[str, bytes] | None = None,
) -> Path:
    """Write the bundle of ``snap`` to ``out_dir`` (which must not exist or be empty).

    ``federation_json`` is the CA-signed federation manifest, copied unchanged: it names
    the log key, so an auditor holding only the CA certificate can trust ``log.vkey``.
    ``federation_documents`` (``aggregator.federation_ledger.recorded_documents``) are the
    manifests the log records, by SHA-256, each copied unchanged to ``federations/``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(
            f"{out_dir} already exists and is not an empty directory",
            code="E_EXISTS",
            hint="choose a new directory for the bundle",
        )
    if not ca_cert_pem or b"BEGIN CERTIFICATE" not in ca_cert_pem:
        raise ConfigError(
            "the CA certificate is missing or not PEM",
            code="E_CONFIG",
            hint="the aggregator home must hold ca.pem",
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(6)}.partial"
    tmp.mkdir(mode=0o755)
    try:
        tree = MemoryTree([leaf_hash(e) for e in snap.entries])
        _write(tmp / "entries.jsonl", b"".join(e + b"\n" for e in snap.entries))
        for size, note in snap.checkpoints.items():
            _write(tmp / "checkpoints" / str(size), note.encode("utf-8"))
        (tmp / "checkpoints").mkdir(exist_ok=True)
        _write(tmp / "log.vkey", (snap.vkey + "\n").encode())
        _write(tmp / "ca.pem", ca_cert_pem)
        if crl_pem:
            _write(tmp / "crl.pem", crl_pem)
        if federation_json:
            _write(tmp / "federation.json", federation_json)
        (tmp / "modules").mkdir()
        for row in snap.modules:
            _write(
                tmp / "modules" / f"{row.module_id}.json",
                canonical.dumps(module_record(row)) + b"\n",
            )
        for digest, document in sorted(snap.lineage.items()):
            _write(tmp / "lineage" / f"{digest}.json", document)
        for digest, document in sorted((federation_documents or {}).items()):
            if not SHA256_HEX.matches(digest):
                raise ConfigError(
                    f"federation manifest name {digest!r} is not a SHA-256", code="E_CONFIG"
                )
            _write(tmp / FEDERATIONS_DIR / f"{digest}.json", document)
        meta = {
            "format": BUNDLE_FORMAT,
            "origin": snap.origin,
            "tree_size": snap.size,
            "root_hash": root_from(tree, snap.size).hex(),
            "exported": now_rfc3339(),
            "modules": len(snap.modules),
            "crl": bool(crl_pem),
        }
        _write(tmp / "bundle.json", canonical.dumps(meta) + b"\n")
        if out_dir.exists():
            out_dir.rmdir()
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def write_log_tiles(snap: LedgerSnapshot, tiles_dir: Path) -> TilesExport:
    """Write (or bring up to date) the tlog-tiles directory of ``snap``'s log.

    The checkpoint served is the snapshot's latest (its size is the log's), with
    whatever cosignature lines ``snap.checkpoints`` carries.
    """
    tree = MemoryTree([leaf_hash(e) for e in snap.entries])
    return write_tiles(tiles_dir, tree, snap.entries, snap.checkpoints[snap.size])
