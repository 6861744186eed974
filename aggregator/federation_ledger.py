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
"""

from __future__ import annotations

import hmac
import logging

from aggregator.store.base import Store
from ffsecure.federation import MISDATED, STALE, UNRECORDED, SignedManifest
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


#: The code of the finding an audit of the bundle would report, by
#: :func:`ffsecure.federation.recorded_problem`'s answer.
_AUDIT_CODE = {
    UNRECORDED: "E_AUDIT_FEDERATION_UNRECORDED",
    MISDATED: "E_AUDIT_FEDERATION_STALE",
    STALE: "E_AUDIT_FEDERATION_STALE",
}


def export_warning(
    entries: list[bytes], federation_json: bytes, ca_pem: bytes
) -> dict[str, str] | None:
    """What an audit of the bundle will report about the home's manifest (logged), or None.

    ``aggregator ledger export`` copies the home's ``federation.json`` into the bundle, and
    ``ffsecure audit verify`` holds it to the newest manifest the log records. An operator
    who installed a new manifest and has not restarted ``serve`` yet, or put an older one
    back, learns it here, before handing the bundle to an auditor, rather than from the
    audit. The decision is the audit's own (:func:`ffsecure.federation.recorded_problem`);
    returns ``{"code": the finding the audit will report, "message": ...}``.
    """
    why = _export_problem(entries, federation_json, ca_pem)
    if why is not None:
        log.warning(
            "export: %s",
            why["message"],
            extra={"event": "export_federation_mismatch", "audit_code": why["code"]},
        )
    return why


def _export_problem(
    entries: list[bytes], federation_json: bytes, ca_pem: bytes
) -> dict[str, str] | None:
    # heavy-free: pki and federation import cryptography only
    from ffsecure import pki
    from ffsecure.errors import FFSecureError
    from ffsecure.federation import newest_recorded, recorded_problem, verify_federation_json

    try:
        signed = verify_federation_json(federation_json, pki.load_cert(ca_pem))
    except FFSecureError as exc:
        return {
            "code": "E_AUDIT_FEDERATION",
            "message": f"federation.json does not verify against ca.pem ({exc.code}: "
            f"{exc.message}): install the manifest the CA signed, then export again",
        }
    records, modules = [], 0
    for index, data in enumerate(entries):
        loaded = entry_of(data, FEDERATION_ENTRY)
        if loaded is not None:
            records.append((index, loaded["facts"]))
        modules += entry_of(data, EntryType.MODULE_REGISTERED) is not None
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
