"""Registration: from a complete sealed upload to a ledger receipt.

The pipeline, in order, each step refusing with a typed error::

    sealed bytes --open_sealed(HPKE key)--> signed package bytes
                 --SignedPackage.from_bytes--> package
                 --verify_package(federation, CA, CRL)--> verified module
                 --site id == peer identity?--> (else E_IMPERSONATION)
                 --privacy policy--> (else E_PRIVACY_POLICY)
                 --DP claim re-accounted, bounded, in budget--> (else E_DP_CLAIM)
                 --store.register_module(... module.registered entry), and inside its
                   write transaction, under the log's write lock: the site's modules
                   composed, the new one included, within the DP policy
                   (else E_DP_BUDGET, rolled back)--> receipt

A :class:`Registrar` is built for one CA-verified federation manifest and
records it first (``federation.loaded``, ``aggregator.federation_ledger``)
unless it is the last one the ledger records, so no module is ever
registered under a manifest the ledger does not name.

Nothing is written before every check has passed, so a refused package
changes neither the store nor the ledger. Only the final store call runs
under the store lock; the expensive checks run in parallel across uploads.

The site's budget is judged on the rows the store reads under the log's write lock
(PostgreSQL's advisory lock, SQLite's ``BEGIN IMMEDIATE``), not under this process's
``store_lock``: several ``aggregator serve`` processes share one PostgreSQL store, and
two uploads of one site, one to each, must not both pass on the same history.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

from cryptography import x509

from aggregator.auth import Peer
from aggregator.federation_ledger import record_federation
from aggregator.store.base import ModuleRow, Store, check_module_id
from ffsecure import canonical, envelope
from ffsecure.dp import check_claim as check_dp_claim
from ffsecure.dp import check_site_budget
from ffsecure.errors import StoreError, VerificationError
from ffsecure.federation import FederationManifest, SignedManifest
from ffsecure.ledger import make_entry, open_checkpoint
from ffsecure.package import SignedPackage, VerifiedModule, package_meta, verify_package
from ffsecure.privacy.policy import check_module as check_privacy_policy
from ffsecure.records.entries import EntryType
from ffsecure.records.receipts import Receipt

__all__ = [
    "DiskFullError",
    "Registrar",
    "disk_error",
    "check_module_id",
    "receipt_for_module",
    "max_upload_bytes",
]


class DiskFullError(StoreError):
    """The aggregator's disk (blobs, store or staging area) has no room for this write."""

    code = "E_DISK_FULL"


def disk_error(exc: OSError, doing: str) -> StoreError:
    """A typed error for a failed write: E_DISK_FULL for no space / quota, E_STORE otherwise."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DiskFullError(
            f"the aggregator ran out of disk space while {doing}; nothing was kept",
            hint="retry later; the operator must free space on the aggregator's disk",
        )
    return StoreError(
        f"the aggregator could not write while {doing}: {exc.strerror or exc}",
        hint="retry later; the operator has the details",
    )


class ImpersonationError(VerificationError):
    """A package signed by one site arrived over another site's connection."""

    code = "E_IMPERSONATION"


def max_upload_bytes(federation: FederationManifest, configured: int = 0) -> int:
    """Largest sealed upload: the manifest's module limit plus the envelope's own overhead.

    ``configured`` (aggregator.toml ``limits.max_upload_bytes``) may only lower it.
    """
    limit = federation.max_module_bytes + envelope.PREFIX_LEN + envelope.MAX_HEADER_BYTES + 2048
    return min(limit, configured) if configured > 0 else limit


def receipt_for_module(store: Store, module_id: str) -> Receipt:
    """A fresh receipt for a module registered earlier (latest checkpoint, proof against it)."""
    row = store.get_module(check_module_id(module_id))
    note = store.checkpoint()
    size = open_checkpoint(note, store.vkey, origin=store.origin).size
    index = row.registered_index
    return Receipt(
        index=index,
        entry=store.entry(index),
        tree_size=size,
        checkpoint=note,
        inclusion_proof=store.inclusion_proof(index, size),
        existing=True,
        module_id=module_id,
    )


class Registrar:
    """Opens, verifies and registers sealed packages for one aggregator.

    Building one puts ``federation`` in force: it is recorded in the ledger
    (``federation.loaded``) unless it is the last manifest recorded there.
    """

    def __init__(
        self,
        *,
        store: Store,
        federation: SignedManifest,
        ca_cert: x509.Certificate,
        crl: Callable[[], x509.CertificateRevocationList | None],
        hpke_private_key: bytes,
        hpke_key_id: str,
        store_lock: threading.RLock | None = None,
    ):
        self.store = store
        self.federation = federation.manifest
        self.ca_cert = ca_cert
        self._crl = crl
        self._hpke_private_key = hpke_private_key
        self.hpke_key_id = hpke_key_id
        self.store_lock = store_lock or threading.RLock()
        self.max_module_bytes = self.federation.max_module_bytes
        with self.store_lock:
            record_federation(store, federation)

    def verify(self, sealed: bytes, peer: Peer) -> tuple[SignedPackage, VerifiedModule]:
        """Every check, no write: returns ``(package, verified_module)``."""
        plaintext = envelope.open_sealed(
            sealed,
            self._hpke_private_key,
            federation_id=self.federation.federation_id,
            key_id=self.hpke_key_id,
            max_bytes=self.max_module_bytes,
        )
        package = SignedPackage.from_bytes(plaintext, max_bytes=self.max_module_bytes)
        verified = verify_package(
            package, federation=self.federation, ca_cert=self.ca_cert, crl=self._crl()
        )
        signer = verified.identity.site_id
        if signer != peer.site_id or package.manifest.site_id != peer.site_id:
            raise ImpersonationError(
                f"package of site {package.manifest.site_id!r} (signed by {signer!r}) "
                f"arrived over the connection of site {peer.site_id!r}",
                hint="a site uploads only its own modules, "
                "over a connection with its own certificate",
            )
        m = package.manifest
        check_privacy_policy(  # E_PRIVACY_POLICY; a DP claim covers only if dp_policy bounds it
            m.privacy_report,
            m.dp,
            self.federation.privacy_policy,
            dp_policy=self.federation.dp_policy,
        )
        if m.dp is not None:
            check_dp_claim(m.dp)  # E_DP_CLAIM: bounded before accounting, under a time budget
        return package, verified

    @staticmethod
    def entry_facts(package: SignedPackage, verified: VerifiedModule) -> dict:
        """The module.registered facts: ids, hashes and the manifest's own public claims."""
        m = package.manifest
        return {
            "module_id": m.module_id,
            "site_id": m.site_id,
            "manifest_sha256": verified.manifest_sha256,
            "weights_sha256": m.weights_sha256,
            "weights_bytes": m.weights_bytes,
            "cert_fingerprint": verified.cert_fingerprint,
            "generator_family": m.generator["family"],
            "classes": list(m.classes),
            "dp_epsilon": m.dp.get("epsilon") if isinstance(m.dp, dict) else None,
        }

    def check_site_budget(self, site_id: str, rows: Sequence[ModuleRow], dp: dict | None) -> None:
        """``E_DP_BUDGET`` unless the modules of ``site_id`` in ``rows`` (all it registered so
        far, deleted ones included), composed with this one, stay within the DP policy
        (``ffsecure.dp.check_site_budget`` says when it applies: wherever the policy bounds DP
        claims, required or not).

        ``rows`` are what the store read inside the registration's write transaction (the
        ``precondition`` of :meth:`Store.register_module`), so no other server can register
        a module of the site between this check and the commit."""
        records = [
            canonical.loads_canonical(row.manifest).get("dp")
            for row in rows
            if row.site_id == site_id
        ]
        check_site_budget([*records, dp], self.federation.dp_policy, site_id=site_id)

    def register(self, sealed: bytes, peer: Peer) -> Receipt:
        package, verified = self.verify(sealed, peer)
        m = package.manifest
        entry = make_entry(
            EntryType.MODULE_REGISTERED, peer.actor, self.entry_facts(package, verified)
        )

        def within_budget(rows: Sequence[ModuleRow]) -> None:
            self.check_site_budget(m.site_id, rows, m.dp)

        with self.store_lock:
            try:
                r = self.store.register_module(
                    module_id=m.module_id,
                    site_id=m.site_id,
                    manifest_bytes=package.manifest_bytes,
                    package_meta=package_meta(package),
                    weights=package.weights,
                    entry=entry,
                    precondition=within_budget,
                )
            except OSError as exc:
                # The store rolled back (no row, no entry, its new blob removed); say why, typed.
                raise disk_error(exc, "storing the module") from None
        return replace(r, module_id=m.module_id)
