"""Verify a leaf certificate against the federation CA and its CRL at a point in time.

:func:`verify_cert` is the one function that turns a certificate into an
:class:`~ffsecure.pki.identity.Identity`. Checks, in order, each with its own
error code: issued directly by the CA with a valid signature, not a CA
itself, ECDSA P-256 (``E_CERT_CHAIN``); the CA and the certificate inside
their validity periods (``E_CERT_EXPIRED``); not revoked at that time under
the CRL's reason semantics (``E_CERT_REVOKED``, :func:`ffsecure.pki.crl.is_revoked`);
the key usages of its role (``E_CERT_USAGE``); one identity URI for the CA's
federation and the expected role (``E_IDENTITY``). The chain comes before
any date, so a certificate of another CA is ``E_CERT_CHAIN`` whatever time a
package claims.

Why not ``cryptography.x509.verification`` (evaluated with cryptography 51):
it checks the signature, validity, basic constraints and EKU of a path, but
no CRL (a revoked certificate verifies), so revocation by reason from its
time onwards has nowhere to go; it raises one ``VerificationError`` with a
message for every failure, so the typed codes above cannot be derived from
it; and it checks dates before it gives up on the chain: another CA's
certificate at a time before this CA existed fails as "not valid at
validation time", where the threat model requires ``E_CERT_CHAIN``. The
federation has a single level (CA, then leaf), so the local check is a
handful of explicit steps (docs/decisions.md, "PKI").
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ffsecure.errors import VerificationError
from ffsecure.pki.certs import check_parses, serial_hex
from ffsecure.pki.crl import check_crl, is_revoked
from ffsecure.pki.identity import Identity, ca_federation_id, identity_of
from ffsecure.records.ids import IdentityError
from ffsecure.timefmt import rfc3339, utcnow


class CertChainError(VerificationError):
    """A certificate was not issued by the federation CA (or is not a valid leaf)."""

    code = "E_CERT_CHAIN"


class CertExpiredError(VerificationError):
    """A certificate is outside its validity period at the time of use."""

    code = "E_CERT_EXPIRED"


class CertRevokedError(VerificationError):
    """A certificate is on the federation CRL."""

    code = "E_CERT_REVOKED"


class CertUsageError(VerificationError):
    """A certificate lacks the key usage its role needs."""

    code = "E_CERT_USAGE"


def _check_ca(ca_cert: x509.Certificate) -> None:
    try:
        bc = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ku = ca_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CertChainError("the trust anchor is not a CA certificate") from None
    if not bc.ca or not ku.key_cert_sign:
        raise CertChainError("the trust anchor is not a CA certificate")


def _check_chain(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    """Issued directly by ``ca_cert`` (valid signature), not a CA, ECDSA P-256 (E_CERT_CHAIN)."""
    if cert.issuer != ca_cert.subject:
        raise CertChainError(
            "certificate was not issued by the federation CA",
            hint="use a certificate issued by this federation's CA",
        )
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise CertChainError(
            "certificate signature does not verify against the federation CA",
            hint="use a certificate issued by this federation's CA",
        ) from None
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CertUsageError("certificate lacks basic constraints") from None
    if bc.ca:
        raise CertChainError("a CA certificate cannot be used as a site or aggregator certificate")
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        raise CertChainError("certificate key is not ECDSA P-256")


def _check_validity(cert: x509.Certificate, ca_cert: x509.Certificate, at: dt.datetime) -> None:
    """The CA and the certificate both inside their validity at ``at`` (E_CERT_EXPIRED)."""
    if not (ca_cert.not_valid_before_utc <= at <= ca_cert.not_valid_after_utc):
        raise CertExpiredError(f"the federation CA certificate is not valid at {rfc3339(at)}")
    if not (cert.not_valid_before_utc <= at <= cert.not_valid_after_utc):
        raise CertExpiredError(
            f"certificate is valid from {rfc3339(cert.not_valid_before_utc)} to "
            f"{rfc3339(cert.not_valid_after_utc)}, not at {rfc3339(at)}",
            hint="renew the certificate (`ffsecure pki issue` or `site-node enroll`)",
        )


def verify_cert(
    cert: x509.Certificate,
    *,
    ca_cert: x509.Certificate,
    crl: x509.CertificateRevocationList | None = None,
    at: dt.datetime | None = None,
    role: str | None = None,
) -> Identity:
    """Check ``cert`` against the federation CA and CRL at time ``at`` (default now).

    Checks, in order: issued directly by the CA with a valid signature, not a CA
    itself, ECDSA P-256 (E_CERT_CHAIN); the CA and the certificate inside their
    validity periods (E_CERT_EXPIRED); not revoked (E_CERT_REVOKED); the key usages
    of its role (E_CERT_USAGE); one identity URI for the CA's federation and the
    expected role (E_IDENTITY). Returns the identity.

    The chain comes before any date: a certificate of another CA (even one with
    this federation's id and CA name) is E_CERT_CHAIN at every time, never
    E_CERT_EXPIRED because of the time it claims.
    """
    at = (at or utcnow()).astimezone(dt.UTC)
    check_parses(cert)
    _check_ca(ca_cert)
    if crl is not None:
        check_crl(crl, ca_cert)
    _check_chain(cert, ca_cert)
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CertUsageError("certificate lacks basic constraints or key usage") from None
    _check_validity(cert, ca_cert, at)
    revoked, reason = is_revoked(cert, crl, at)
    if revoked:
        raise CertRevokedError(
            f"certificate {serial_hex(cert.serial_number)} is revoked ({reason})",
            hint="ask the federation CA for a new certificate",
        )
    identity = identity_of(cert)
    if identity.federation_id != ca_federation_id(ca_cert):
        raise IdentityError(
            f"certificate is for federation {identity.federation_id!r}, the CA serves "
            f"{ca_federation_id(ca_cert)!r}"
        )
    if role is not None and identity.role != role:
        raise IdentityError(f"certificate is for role {identity.role!r}, expected {role!r}")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise CertUsageError("certificate has no extended key usage") from None
    needed = (
        ExtendedKeyUsageOID.CLIENT_AUTH
        if identity.role == "site"
        else ExtendedKeyUsageOID.SERVER_AUTH
    )
    if needed not in eku or not ku.digital_signature:
        raise CertUsageError(
            f"certificate for role {identity.role!r} lacks "
            f"{'clientAuth' if identity.role == 'site' else 'serverAuth'} / digitalSignature",
            hint="issue it with `ffsecure pki issue` for the right role",
        )
    return identity
