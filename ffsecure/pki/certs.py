"""Certificates as bytes: PEM parsing under a size cap, fingerprints, serials.

:func:`load_certs` bounds the PEM (64 KiB, at most ``max_count``
certificates) before parsing, and :func:`check_parses` decodes every lazily
parsed field up front, so that a malformed certificate is ``E_CERT_FORMAT``
here and never a bare ``ValueError`` later inside a verifier.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ffsecure.errors import FormatError

MAX_PEM_BYTES = 64 * 1024


def cert_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def load_cert(pem: bytes) -> x509.Certificate:
    """Parse one PEM certificate (size-checked), or raise E_CERT_FORMAT."""
    certs = load_certs(pem, max_count=1)
    return certs[0]


def load_certs(pem: bytes, *, max_count: int = 4) -> list[x509.Certificate]:
    if isinstance(pem, str):
        pem = pem.encode()
    if len(pem) > MAX_PEM_BYTES:
        raise FormatError(
            f"certificate PEM is {len(pem)} bytes, over {MAX_PEM_BYTES}", code="E_CERT_FORMAT"
        )
    if pem.count(b"-----BEGIN CERTIFICATE-----") > max_count:
        raise FormatError(f"more than {max_count} certificates given", code="E_CERT_FORMAT")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise FormatError(f"not a PEM certificate: {exc}", code="E_CERT_FORMAT") from None
    if not certs or len(certs) > max_count:
        raise FormatError(
            f"expected 1 to {max_count} certificates, found {len(certs)}", code="E_CERT_FORMAT"
        )
    for cert in certs:
        check_parses(cert)
    return certs


def check_parses(cert: x509.Certificate) -> None:
    """Parse every lazily decoded part of ``cert`` now, so later use cannot raise ValueError."""
    try:
        cert.public_key()
        list(cert.extensions)
        cert.subject, cert.issuer  # noqa: B018
        cert.not_valid_before_utc, cert.not_valid_after_utc  # noqa: B018
        cert.signature_hash_algorithm  # noqa: B018
    except (ValueError, x509.UnsupportedGeneralNameType) as exc:
        raise FormatError(
            f"certificate does not parse: {exc}",
            code="E_CERT_FORMAT",
            hint="use the certificate exactly as `ffsecure pki` wrote it",
        ) from None
    except Exception as exc:  # e.g. UnsupportedAlgorithm for an unknown key or hash
        raise FormatError(
            f"certificate uses an unsupported algorithm: {exc}", code="E_CERT_FORMAT"
        ) from None


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
