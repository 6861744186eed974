"""The federation manifest in force, recorded in the ledger: ``federation.loaded`` at start.

Why: every audit check of a module's policy (DP required, max epsilon, the
per-site budget, the privacy-report limits, the classes) reads a federation
manifest, and the bundle's ``federation.json`` is chosen by its exporter. The
CA may have signed several manifests over time (a looser one before the
policy was tightened), so a valid CA signature does not say which one the
aggregator enforced. With that recorded in the signed log, an auditor
refuses any manifest but the newest one recorded.

Invariants:

- :func:`record_federation` appends ``federation.loaded`` (actor
  ``aggregator``; facts from :meth:`ffsecure.federation.SignedManifest.facts`:
  federation id, ``created_at`` and the SHA-256 of the canonical signed body)
  exactly when that SHA-256 differs from the last one the log records; a
  restart with the same manifest appends nothing.
- The manifest has been verified against the CA before it is recorded
  (``verify_federation_json``), and ``aggregator.registration.Registrar``
  records it as it is built, so no module is ever registered, by ``serve`` or
  any other caller, under a manifest the log does not name. ``serve`` builds
  its registrar at start, before its CRL is recorded; it reads the manifest
  once per start, so installing another one takes a restart, which records it.
- Ledgers written before this entry type existed hold none; the first start
  of ``aggregator serve`` records the manifest it loads, after the modules
  registered until then (an audit checks every module against the newest
  recorded manifest).
- The log holds only a manifest's digest, and an audit checks each module against
  the manifest in force at its registration too, so ``serve`` keeps the bytes of
  every manifest it loads (:func:`keep_federation`: ``DIR/federations/<sha256>.json``,
  0600 in a 0700 folder, kept across restarts) and ``aggregator ledger export``
  writes those the log records into the bundle (:func:`export_federations`). Like
  the cosignatures, they live in the home, not the store: with several ``serve``
  hosts on one database, export on a host that holds every manifest put in force
  (the export warns about one that is missing).
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from cryptography import x509

from aggregator.home import FEDERATIONS_DIR, AggregatorHome
from aggregator.store.base import Store
from ffsecure import pki
from ffsecure.errors import ConfigError, FFSecureError
from ffsecure.federation import (
    HISTORY_CODE,
    MAX_MANIFEST_BYTES,
    MISDATED,
    STALE,
    UNRECORDED,
    Recorded,
    SignedManifest,
    in_force_at,
    newest_recorded,
    recorded_problem,
    verify_federation_json,
)
from ffsecure.files import (
    FileRefused,
    private_dir,
    read_regular_file,
    restrict,
    write_secret_file,
)
from ffsecure.records.entries import EntryType, entry_of, make_entry

log = logging.getLogger("aggregator.federation")

FEDERATION_ENTRY = EntryType.FEDERATION_LOADED


def last_recorded_federation(store: Store) -> tuple[int, dict] | None:
    """(index, facts) of the last ``federation.loaded`` entry of the store's log, or None."""
    return store.last_entry_of(FEDERATION_ENTRY)


def record_federation(store: Store, signed: SignedManifest) -> int | None:
    """Record ``signed`` unless it is the last manifest recorded; returns the new index or None.

    Call it before anything can be registered under the manifest (no concurrent writer).
    """
    last = last_recorded_federation(store)
    if last is not None and hmac.compare_digest(str(last[1]["federation_sha256"]), signed.sha256):
        return None
    index, _ = store.append(make_entry(FEDERATION_ENTRY, "aggregator", signed.facts()))
    log.info(
        "federation manifest %s… (created %s) recorded at entry %d",
        signed.sha256[:12],
        signed.manifest.created_at,
        index,
        extra={
            "event": "federation_loaded",
            "federation_sha256": signed.sha256,
            "entry": index,
        },
    )
    return index


def keep_federation(home: AggregatorHome, data: bytes, signed: SignedManifest) -> Path:
    """Keep ``data``, the ``federation.json`` bytes ``signed`` was verified from, in the home.

    Written as ``federations/<sha256>.json`` (0600, folder 0700), replacing a file of that name
    whose bytes differ (two files of one signed body enforce the same manifest). Call it as the
    manifest is put in force, so that an export can hand the auditor every manifest the log
    names.
    """
    try:
        path = private_dir(home.federations) / f"{signed.sha256}.json"
        if _read_kept(path) != data:
            write_secret_file(path, data)
        else:
            restrict(path)  # a copy an operator put there by hand
    except OSError as exc:
        raise ConfigError(
            f"cannot keep the federation manifest in {home.federations}: {exc.strerror or exc}",
            hint=f"make {home.federations} a folder the aggregator can write (0700), or "
            "remove what stands there",
        ) from None
    return path


def _read_kept(path: Path) -> bytes | None:
    try:
        return read_regular_file(path, MAX_MANIFEST_BYTES)
    except (FileRefused, OSError):
        return None


def export_federations(
    home: AggregatorHome, entries: list[bytes], federation_json: bytes | None, ca_pem: bytes
) -> tuple[dict[str, bytes], list[dict[str, str]]]:
    """What ``aggregator ledger export`` writes of the federation manifests, and its warnings.

    The documents are the kept ones (``DIR/federations/<sha256>.json``) of the manifests the
    log records (``federation.loaded``), by SHA-256: only a document that verifies under the
    CA and whose signed body hashes to the digest its name and the log give; the rest count
    as missing. The warnings say what an audit of the bundle will report about its manifests
    (logged, each ``{"code": the finding the audit will report, "message": ...}``).
    ``federation.json`` is copied into the bundle, and ``ffsecure audit verify`` holds it to
    the newest manifest the log records: an operator who installed a new manifest and has not
    restarted ``serve`` yet, or put an older one back, learns it here, before handing the
    bundle to an auditor, rather than from the audit. Likewise when the home lacks the
    document of a manifest in force at some module's registration, which the audit needs.
    The decisions are the audit's own (:func:`ffsecure.federation.recorded_problem`,
    :func:`ffsecure.federation.in_force_at`). The entries are read once, each document and
    ``federation.json`` verified once.
    """
    ca_cert = pki.load_cert(ca_pem)
    records, registrations = _recorded(entries)
    documents: dict[str, bytes] = {}
    for digest in sorted({str(facts["federation_sha256"]) for _, facts in records}):
        data = _read_kept(home.federations / f"{digest}.json")
        if data is not None and _verifies_as(data, digest, ca_cert):
            documents[digest] = data
    found: list[dict[str, str] | None] = []
    at_hand = set(documents)
    if federation_json is not None:
        try:
            signed = verify_federation_json(federation_json, ca_cert)
        except FFSecureError as exc:
            found.append(
                {
                    "code": "E_AUDIT_FEDERATION",
                    "message": f"federation.json does not verify against ca.pem ({exc.code}: "
                    f"{exc.message}): install the manifest the CA signed, then export again",
                }
            )
        else:
            at_hand.add(signed.sha256)
            found.append(_export_problem(records, len(registrations), signed))
    found.append(_missing_documents(records, registrations, at_hand))
    warnings = [why for why in found if why is not None]
    for why in warnings:
        log.warning(
            "export: %s",
            why["message"],
            extra={"event": "export_federation_mismatch", "audit_code": why["code"]},
        )
    return documents, warnings


def _verifies_as(data: bytes, digest: str, ca_cert: x509.Certificate) -> bool:
    try:
        return hmac.compare_digest(verify_federation_json(data, ca_cert).sha256, digest)
    except FFSecureError:
        return False


def _recorded(entries: list[bytes]) -> tuple[list[Recorded], list[int]]:
    """Every ``federation.loaded`` (index, facts) and every ``module.registered`` index."""
    records, registrations = [], []
    for index, data in enumerate(entries):
        loaded = entry_of(data, FEDERATION_ENTRY)
        if loaded is not None:
            records.append((index, loaded["facts"]))
        if entry_of(data, EntryType.MODULE_REGISTERED) is not None:
            registrations.append(index)
    return records, registrations


#: The code of the finding an audit of the bundle would report, by
#: :func:`ffsecure.federation.recorded_problem`'s answer.
_AUDIT_CODE = {
    UNRECORDED: "E_AUDIT_FEDERATION_UNRECORDED",
    MISDATED: "E_AUDIT_FEDERATION_STALE",
    STALE: "E_AUDIT_FEDERATION_STALE",
}


def _missing_documents(
    records: list[Recorded], registrations: list[int], at_hand: set[str]
) -> dict[str, str] | None:
    missing = sorted(
        {
            (index, str(facts["federation_sha256"]))
            for bound in in_force_at(records, registrations).values()
            for index, facts in bound
            if str(facts["federation_sha256"]) not in at_hand
        }
    )
    if not missing:
        return None
    named = ", ".join(f"entry {index} (sha256 {digest[:12]}…)" for index, digest in missing)
    return {
        "code": HISTORY_CODE,
        "message": f"the home keeps no CA-signed document of the federation manifest(s) "
        f"recorded at {named}, in force when modules were registered, so the audit cannot "
        "check those modules against them: put each manifest the CA signed in "
        f"{FEDERATIONS_DIR}/<sha256>.json of the home, then export again",
    }


def _export_problem(
    records: list[Recorded], modules: int, signed: SignedManifest
) -> dict[str, str] | None:
    newest, _ = newest_recorded(records)
    problem = recorded_problem(signed, newest, modules)
    if problem is None:
        return None
    code = _AUDIT_CODE[problem]
    if newest is None:
        message = (
            f"{modules} module(s) are registered but the log records no federation manifest "
            "(federation.loaded): start `aggregator serve` once with this manifest to record "
            "it, then export again"
        )
    else:
        index, facts = newest
        message = (
            f"federation.json (created {signed.manifest.created_at}, sha256 "
            f"{signed.sha256[:12]}…) is not the newest manifest the log records (ledger "
            f"entry {index}: created {facts['created_at']}, sha256 "
            f"{str(facts['federation_sha256'])[:12]}…): install that manifest, or restart "
            "`aggregator serve` so that it records the one it enforces, then export again"
        )
    return {"code": code, "message": message}
