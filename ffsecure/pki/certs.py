"""Certificates as bytes: PEM parsing under a size cap, fingerprints, serials.

:func:`load_certs` bounds the PEM (64 KiB, at most ``max_count``
certificates) before parsing, and :func:`check_parses` decodes every lazily
parsed field up front, so that a malformed certificate is ``E_CERT_FORMAT``
here and never a bare ``ValueError`` later inside a verifier.

Fingerprints have one home here: the SHA-256 of the DER certificate, shown
in two forms, lowercase hex (``ffsecure``'s own, the ``keyid`` of CA
signatures) and openssl's uppercase colon form (``AA:BB:...``, what
``openssl x509 -fingerprint -sha256`` prints). :func:`parse_fingerprint`
takes either (each checked whole with ``fullmatch``; openssl's
``sha256 Fingerprint=`` prefix may stay on) and :func:`fingerprint_matches`
compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ffsecure.errors import ConfigError, FormatError

MAX_PEM_BYTES = 64 * 1024

_HEX_FORM = re.compile(r"[0-9a-fA-F]{64}")
_COLON_FORM = re.compile(r"(?:[0-9a-fA-F]{2}:){31}[0-9a-fA-F]{2}")
_OPENSSL_PREFIX = re.compile(r"(?i:sha256\s+fingerprint=)")


class FingerprintError(ConfigError):
    """A fingerprint given by a person is not a SHA-256 fingerprint in either form."""

    code = "E_FINGERPRINT"


@dataclass(frozen=True)
class Fingerprint:
    """A certificate's SHA-256 fingerprint in both of its printed forms."""

    hex: str
    colon: str

    def to_dict(self) -> dict[str, str]:
        return {"sha256": self.hex, "sha256_colon": self.colon}


def cert_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def colon_form(hex_digest: str) -> str:
    """openssl's form of a hex digest: uppercase byte pairs joined by colons."""
    upper = hex_digest.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


def fingerprint(cert: x509.Certificate) -> Fingerprint:
    """Both printed forms of ``cert``'s SHA-256 fingerprint."""
    digest = cert_fingerprint(cert)
    return Fingerprint(hex=digest, colon=colon_form(digest))


def parse_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint in either form (hex, or ``AA:BB:...``), as lowercase hex.

    Surrounding blanks and openssl's ``sha256 Fingerprint=`` prefix are
    dropped; the rest must be one of the two forms exactly, or E_FINGERPRINT.
    """
    value = text.strip()
    prefix = _OPENSSL_PREFIX.match(value)
    if prefix:
        value = value[prefix.end() :]
    if _HEX_FORM.fullmatch(value):
        return value.lower()
    if _COLON_FORM.fullmatch(value):
        return value.replace(":", "").lower()
    raise FingerprintError(
        "the expected CA fingerprint is not a SHA-256 fingerprint",
        hint="give the 64 hex digits, or the AA:BB:... form (32 pairs), that the CA "
        "operator read to you out of band (`ffsecure pki fingerprint ca.pem`)",
    )


def fingerprint_matches(cert: x509.Certificate, expected: str) -> bool:
    """Whether ``cert``'s fingerprint is ``expected`` (either form), compared in constant time."""
    want = bytes.fromhex(parse_fingerprint(expected))
    have = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return hmac.compare_digest(have, want)


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
