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
from ffsecure.federation import SignedManifest
from ffsecure.records.entries import EntryType, make_entry

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
