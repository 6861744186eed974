"""The CRL in force, recorded in the ledger: a ``crl.loaded`` entry per CRL the aggregator loads.

Why: the audit bundle carries a CRL, and the exporter chooses which. With the
history of the CRLs the aggregator actually applied in the signed log, an
auditor refuses a bundle CRL older than the newest one recorded (an exporter
putting back a previous, still valid CA-signed CRL to hide a revocation).

Invariants:

- ``CrlRecorder.record`` appends ``crl.loaded`` (actor ``aggregator``; facts from
  :meth:`ffsecure.pki.CrlInfo.facts`: CRL number, SHA-256 of the DER bytes,
  thisUpdate, nextUpdate, the fingerprint of the CA that verified it, the count of
  revoked serials) exactly when the CRL differs (number or hash) from the last one
  the log records; loading the same CRL again, at every restart, appends nothing.
- The CRL has been verified against the CA before it is recorded (``CrlSource``
  loads it with ``pki.load_crl(pem, ca_cert)``); a CRL without a CRL number is
  refused (``E_CRL``), since nothing could then tell which of two CRLs is newer.
- The recorder takes only its own lock and the store's internal one, never the
  service's store lock, so it may be called from any RPC thread.
- Ledgers written before this entry type existed hold none; the first start of
  ``aggregator serve`` records the CRL it loads.
"""

from __future__ import annotations

import logging
import threading

from cryptography import x509

from aggregator.store.base import Store
from ffsecure import pki
from ffsecure.records.entries import EntryType, make_entry

log = logging.getLogger("aggregator.crl")

CRL_ENTRY = EntryType.CRL_LOADED


def last_recorded_crl(store: Store) -> tuple[int, dict] | None:
    """(index, facts) of the last ``crl.loaded`` entry of the store's log, or None."""
    return store.last_entry_of(CRL_ENTRY)


class CrlRecorder:
    """Appends ``crl.loaded`` when the aggregator loads a CRL other than the last recorded one."""

    def __init__(self, store: Store, ca_cert: x509.Certificate):
        self.store = store
        self.ca_cert = ca_cert
        self._lock = threading.Lock()
        last = last_recorded_crl(store)
        self._last = (last[1]["crl_number"], last[1]["crl_sha256"]) if last else None

    def record(self, crl: x509.CertificateRevocationList) -> int | None:
        """Record ``crl`` unless it is the last one recorded; returns the new index or None."""
        info = pki.crl_info(crl)
        with self._lock:
            if self._last == (info.number, info.sha256):
                return None
            entry = make_entry(CRL_ENTRY, "aggregator", info.facts(self.ca_cert))
            index, _ = self.store.append(entry)
            self._last = (info.number, info.sha256)
        log.info(
            "CRL number %d (sha256 %s…, %d revoked) recorded at entry %d",
            info.number,
            info.sha256[:12],
            info.revoked,
            index,
            extra={
                "event": "crl_loaded",
                "crl_number": info.number,
                "crl_sha256": info.sha256,
                "entry": index,
            },
        )
        return index
