"""The federation CRL: parsing, the CA's signature, its identifying facts, revocation semantics.

Revocation for ``keyCompromise`` (and an unspecified reason) applies to every
use of the certificate; revocation for any other reason (``superseded`` after
a rotation, ``cessationOfOperation``, ...) applies only from the revocation
time onwards, so that modules signed before a rotation stay verifiable
(:func:`is_revoked`). ``cryptography.x509.verification`` checks no CRL at all,
so this module is the only place revocation is decided (docs/decisions.md,
"PKI").

A CRL past its ``nextUpdate`` is still honoured (it can only under-report
revocations, never invent one) and reported by :func:`crl_expired`.
:func:`crl_info` gives the facts of a ``crl.loaded`` ledger entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, x448, x25519

from ffsecure.errors import VerificationError
from ffsecure.pki.certs import cert_fingerprint
from ffsecure.timefmt import rfc3339, utcnow

#: Revocation reasons whose effect starts at the revocation time (not retroactive).
NON_RETROACTIVE_REASONS = frozenset(
    {
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.cessation_of_operation,
        x509.ReasonFlags.affiliation_changed,
        x509.ReasonFlags.privilege_withdrawn,
    }
)
REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
}


class CRLError(VerificationError):
    """The CRL does not parse or is not signed by the CA.

    A CRL past its ``nextUpdate`` is still honoured (it can only under-report
    revocations, never invent one), with a warning (:func:`crl_expired`);
    re-sign it with ``ffsecure pki crl``.
    """

    code = "E_CRL"


def load_crl(pem: bytes, ca_cert: x509.Certificate | None = None) -> x509.CertificateRevocationList:
    """Parse a PEM CRL; with ``ca_cert``, also check that the CA signed it (E_CRL)."""
    if isinstance(pem, str):
        pem = pem.encode()
    if len(pem) > 16 * 1024 * 1024:
        raise CRLError("CRL is larger than 16 MiB")
    try:
        crl = x509.load_pem_x509_crl(pem)
    except ValueError as exc:
        raise CRLError(f"not a PEM CRL: {exc}", hint="export it with `ffsecure pki crl`") from None
    if ca_cert is not None:
        check_crl(crl, ca_cert)
    return crl


def crl_expired(crl: x509.CertificateRevocationList, now: dt.datetime | None = None) -> bool:
    """Whether ``crl``'s ``nextUpdate`` has passed: later revocations may be missing from it."""
    next_update = crl.next_update_utc
    return next_update is not None and next_update < (now or utcnow())


#: CRL numbers are recorded in the ledger as canonical JSON integers (at most 20 digits).
MAX_CRL_NUMBER = 10**20 - 1


@dataclass(frozen=True)
class CrlInfo:
    """What identifies one CRL: its number, the SHA-256 of its DER bytes and its validity window.

    These are the facts of a ``crl.loaded`` ledger entry (docs/audit-bundle.md): an auditor
    compares a bundle's CRL with the newest one the aggregator recorded having loaded.
    """

    number: int
    sha256: str
    this_update: str
    next_update: str | None
    revoked: int

    def facts(self, issuer: x509.Certificate) -> dict[str, Any]:
        """The ``crl.loaded`` facts; ``issuer_sha256`` is the fingerprint of the verifying CA."""
        return {
            "crl_number": self.number,
            "crl_sha256": self.sha256,
            "this_update": self.this_update,
            "next_update": self.next_update,
            "issuer_sha256": cert_fingerprint(issuer),
            "revoked": self.revoked,
        }


def crl_info(crl: x509.CertificateRevocationList) -> CrlInfo:
    """The identifying facts of ``crl``; E_CRL without a CRL number in range (RFC 5280 5.2.3)."""
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise CRLError(
            "the CRL has no CRL number", hint="sign CRLs with `ffsecure pki crl`"
        ) from None
    except ValueError as exc:
        raise CRLError(f"the CRL's extensions do not parse: {exc}") from None
    if not 0 <= number <= MAX_CRL_NUMBER:
        raise CRLError(f"the CRL number {number} is outside 0..{MAX_CRL_NUMBER}")
    der = crl.public_bytes(serialization.Encoding.DER)
    next_update = crl.next_update_utc
    return CrlInfo(
        number=number,
        sha256=hashlib.sha256(der).hexdigest(),
        this_update=rfc3339(crl.last_update_utc),
        next_update=rfc3339(next_update) if next_update is not None else None,
        revoked=len(crl),
    )


#: Certificate keys that cannot sign: key-agreement keys (a CA holding one signed no CRL).
_KEY_AGREEMENT_TYPES = (
    x25519.X25519PublicKey,
    x448.X448PublicKey,
    mlkem.MLKEM768PublicKey,
    mlkem.MLKEM1024PublicKey,
)


def _signed_by(crl: x509.CertificateRevocationList, ca_cert: x509.Certificate) -> bool:
    key = ca_cert.public_key()
    if isinstance(key, _KEY_AGREEMENT_TYPES):
        return False
    return crl.is_signature_valid(key)


def check_crl(crl: x509.CertificateRevocationList, ca_cert: x509.Certificate) -> None:
    if crl.issuer != ca_cert.subject or not _signed_by(crl, ca_cert):
        raise CRLError(
            "CRL is not signed by the federation CA",
            hint="fetch the CRL published by this federation's CA",
        )


def is_revoked(
    cert: x509.Certificate, crl: x509.CertificateRevocationList | None, at: dt.datetime
) -> tuple[bool, str | None]:
    """Whether ``cert`` counts as revoked at ``at`` under ``crl`` (see the module docstring)."""
    if crl is None:
        return False, None
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is None:
        return False, None
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        reason = x509.ReasonFlags.unspecified
    if reason in NON_RETROACTIVE_REASONS and at < entry.revocation_date_utc:
        return False, reason.value
    return True, reason.value
