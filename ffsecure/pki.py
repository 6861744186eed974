"""Federation PKI: the CA, leaf certificates, CSRs, revocation and verification.

One federation has one offline CA (ECDSA P-256). It issues leaf certificates
directly (no intermediates): site certificates carry the ``clientAuth``
extended key usage, the aggregator's carries ``serverAuth``. Identity lives in
one SAN URI:

* ``ffsecure://<federation-id>/site/<site-id>``
* ``ffsecure://<federation-id>/aggregator``

The CA signs a CRL; everything that verifies a certificate
(:func:`verify_cert`) honours it. Revocation for ``keyCompromise`` (and an
unspecified reason) applies to every use of the certificate; revocation for
any other reason (``superseded`` after a rotation, ``cessationOfOperation``,
...) applies only from the revocation time onwards, so that modules signed
before a rotation stay verifiable.

Files written by :class:`CA` (``DIR`` is created 0700)::

    DIR/ca.pem          CA certificate (public; give it to every party)
    DIR/ca.key          CA private key, PKCS#8 PEM, mode 0600, optionally encrypted
    DIR/crl.pem         the current CRL, signed by the CA
    DIR/state.json      canonical JSON: issued certificates, revocations, CRL number
    DIR/issued/<serial>.pem   every certificate issued
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ffsecure import canonical
from ffsecure.errors import ConfigError, FFSecureError, FormatError, VerificationError
from ffsecure.files import write_secret_file
from ffsecure.records.ids import IdentityError, check_host, check_id

URI_SCHEME = "ffsecure://"
ROLES = ("site", "aggregator")

CA_DAYS_DEFAULT = 3650
LEAF_DAYS_DEFAULT = 365
LEAF_DAYS_MAX = 825
CRL_DAYS_DEFAULT = 30
BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock skew between hosts
MAX_PEM_BYTES = 64 * 1024

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


# --------------------------------------------------------------------- errors


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


class CRLError(VerificationError):
    """The CRL does not parse or is not signed by the CA.

    A CRL past its ``nextUpdate`` is still honoured (it can only under-report
    revocations, never invent one), with a warning (:func:`crl_expired`);
    re-sign it with ``ffsecure pki crl``.
    """

    code = "E_CRL"


class CSRError(VerificationError):
    """A certificate signing request is malformed, unsigned or asks for the wrong identity."""

    code = "E_CSR"


class CAError(FFSecureError):
    """The CA directory is missing, already exists, or its key cannot be loaded."""

    code = "E_CA"


# ------------------------------------------------------------------ identity


@dataclass(frozen=True)
class Identity:
    """Who a certificate speaks for."""

    federation_id: str
    role: str  # "site" | "aggregator"
    site_id: str | None = None

    def __post_init__(self) -> None:
        check_id(self.federation_id, "federation id")
        if self.role not in ROLES:
            raise IdentityError(f"role {self.role!r} is not one of {ROLES}")
        if self.role == "site":
            check_id(self.site_id or "", "site id")
        elif self.site_id is not None:
            raise IdentityError("an aggregator identity has no site id")

    @property
    def uri(self) -> str:
        if self.role == "site":
            return f"{URI_SCHEME}{self.federation_id}/site/{self.site_id}"
        return f"{URI_SCHEME}{self.federation_id}/aggregator"

    @property
    def actor(self) -> str:
        """The ledger actor string (``site:<id>`` or ``aggregator``)."""
        return f"site:{self.site_id}" if self.role == "site" else "aggregator"

    @classmethod
    def parse(cls, uri: str) -> Identity:
        if not isinstance(uri, str) or not uri.startswith(URI_SCHEME) or len(uri) > 200:
            raise IdentityError(f"identity URI {uri!r} does not start with {URI_SCHEME}")
        parts = uri[len(URI_SCHEME) :].split("/")
        if len(parts) == 3 and parts[1] == "site":
            return cls(parts[0], "site", parts[2])
        if len(parts) == 2 and parts[1] == "aggregator":
            return cls(parts[0], "aggregator")
        raise IdentityError(f"identity URI {uri!r} is neither .../site/<id> nor .../aggregator")


def _uris(cert_or_csr) -> list[str]:
    try:
        san = cert_or_csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [
        u
        for u in san.value.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith(URI_SCHEME)
    ]


def identity_of(cert: x509.Certificate) -> Identity:
    """The single ffsecure identity named in ``cert``'s SAN, or E_IDENTITY."""
    uris = _uris(cert)
    if len(uris) != 1:
        raise IdentityError(
            f"certificate names {len(uris)} ffsecure identities; exactly one is required",
            hint="issue certificates with `ffsecure pki issue`",
        )
    return Identity.parse(uris[0])


def ca_federation_id(ca_cert: x509.Certificate) -> str:
    """The federation id the CA certificate is for (its SAN URI ``ffsecure://<id>/ca``)."""
    for uri in _uris(ca_cert):
        parts = uri[len(URI_SCHEME) :].split("/")
        if len(parts) == 2 and parts[1] == "ca":
            return check_id(parts[0], "federation id")
    raise IdentityError("CA certificate names no federation (SAN URI ffsecure://<id>/ca)")


# --------------------------------------------------------------- small helpers


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


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
    """Whether ``crl``'s ``nextUpdate`` has passed: revocations since then may be missing from it."""
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

    def facts(self, issuer: x509.Certificate) -> dict:
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
        this_update=_rfc3339(crl.last_update_utc),
        next_update=_rfc3339(next_update) if next_update is not None else None,
        revoked=len(crl),
    )


def check_crl(crl: x509.CertificateRevocationList, ca_cert: x509.Certificate) -> None:
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_cert.public_key()):
        raise CRLError(
            "CRL is not signed by the federation CA",
            hint="fetch the CRL published by this federation's CA",
        )


def write_private_key(path: str | os.PathLike, key, passphrase: bytes | None = None) -> None:
    """Write ``key`` as PKCS#8 PEM to ``path``, created 0600, atomically."""
    enc = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    write_secret_file(path, data)


def write_public_file(path: str | os.PathLike, data: bytes) -> None:
    """Write a public file atomically (temp file + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_private_key(path: str | os.PathLike, passphrase: bytes | None = None):
    """Load a PEM private key; a wrong or missing passphrase raises E_KEY."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}", code="E_KEY") from None
    try:
        return serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError) as exc:
        raise FFSecureError(
            f"cannot load private key {path}: {exc}",
            code="E_KEY",
            hint="check the passphrase (--passphrase-file) and that the file is a PEM key",
        ) from None


def _name(common_name: str, federation_id: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ffsecure"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, federation_id),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _check_days(days: int, maximum: int) -> int:
    if not isinstance(days, int) or days < 1 or days > maximum:
        raise ConfigError(
            f"lifetime of {days} days is outside 1..{maximum}",
            hint=f"pick a lifetime of at most {maximum} days",
        )
    return days


def _check_p256(public_key, what: str) -> None:
    if (
        not isinstance(public_key, ec.EllipticCurvePublicKey)
        or public_key.curve.name != "secp256r1"
    ):
        raise CSRError(
            f"{what} key is not ECDSA P-256", hint="make the key with `site-node enroll`"
        )


# ------------------------------------------------------------------------ CA


def _ip_or_dns(host: str) -> x509.GeneralName:
    import ipaddress

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


class CA:
    """A federation CA backed by a directory (see the module docstring)."""

    def __init__(self, directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.directory = Path(directory)
        self.cert = cert
        self._key = key
        self.federation_id = ca_federation_id(cert)

    # -- loading ---------------------------------------------------------
    @classmethod
    def load(cls, directory: str | os.PathLike, passphrase: bytes | None = None) -> CA:
        directory = Path(directory)
        if not (directory / "ca.pem").is_file() or not (directory / "ca.key").is_file():
            raise CAError(
                f"{directory} holds no CA (ca.pem + ca.key)",
                hint="create one with `ffsecure pki init`",
            )
        cert = load_cert((directory / "ca.pem").read_bytes())
        key = load_private_key(directory / "ca.key", passphrase)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise CAError("ca.key does not match ca.pem")
        return cls(directory, cert, key)

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    def sign_bytes(self, message: bytes) -> bytes:
        """ECDSA P-256/SHA-256 signature by the CA key (used for the federation manifest)."""
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))

    # -- state -----------------------------------------------------------
    def _state(self) -> dict:
        path = self.directory / "state.json"
        if not path.exists():
            return {
                "v": 1,
                "federation_id": self.federation_id,
                "crl_number": 0,
                "issued": [],
                "revoked": [],
            }
        return canonical.loads_canonical(path.read_bytes(), max_bytes=64 << 20)

    def _save_state(self, state: dict) -> None:
        write_public_file(self.directory / "state.json", canonical.dumps(state))

    def issued(self) -> list[dict]:
        """Records of every certificate issued (serial, identity, fingerprint, validity)."""
        return list(self._state()["issued"])

    def revoked(self) -> list[dict]:
        return list(self._state()["revoked"])

    # -- issuing ---------------------------------------------------------
    def _issue(
        self,
        identity: Identity,
        public_key,
        *,
        days: int,
        common_name: str,
        extra_sans: Iterable[x509.GeneralName] = (),
    ) -> x509.Certificate:
        _check_p256(public_key, "the certificate's")
        _check_days(days, LEAF_DAYS_MAX)
        if identity.federation_id != self.federation_id:
            raise IdentityError(
                f"identity is for federation {identity.federation_id!r}, "
                f"this CA serves {self.federation_id!r}"
            )
        now = utcnow()
        not_after = min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        eku = (
            ExtendedKeyUsageOID.CLIENT_AUTH
            if identity.role == "site"
            else ExtendedKeyUsageOID.SERVER_AUTH
        )
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri), *extra_sans]
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, identity.federation_id))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        issued_dir = self.directory / "issued"
        issued_dir.mkdir(exist_ok=True)
        write_public_file(issued_dir / f"{serial_hex(cert.serial_number)}.pem", cert_pem(cert))
        state = self._state()
        state["issued"].append(
            {
                "serial": serial_hex(cert.serial_number),
                "identity": identity.uri,
                "role": identity.role,
                "fingerprint": cert_fingerprint(cert),
                "not_before": _rfc3339(cert.not_valid_before_utc),
                "not_after": _rfc3339(cert.not_valid_after_utc),
            }
        )
        self._save_state(state)
        return cert

    def issue_site(self, site_id: str, public_key=None, *, days: int = LEAF_DAYS_DEFAULT):
        """Issue a site certificate. Without ``public_key`` a fresh key is made.

        Returns ``(cert, private_key_or_None)``.
        """
        identity = Identity(self.federation_id, "site", check_id(site_id, "site id"))
        key = None
        if public_key is None:
            key = ec.generate_private_key(ec.SECP256R1())
            public_key = key.public_key()
        return self._issue(identity, public_key, days=days, common_name=site_id), key

    def issue_aggregator(
        self,
        host: str,
        public_key=None,
        *,
        days: int = LEAF_DAYS_DEFAULT,
        extra_hosts: Iterable[str] = (),
    ):
        """Issue the aggregator's TLS certificate for ``host`` (DNS name or IP).

        Returns ``(cert, private_key_or_None)``.
        """
        hosts = [host, *extra_hosts]
        for h in hosts:
            check_host(h)
        identity = Identity(self.federation_id, "aggregator")
        key = None
        if public_key is None:
            key = ec.generate_private_key(ec.SECP256R1())
            public_key = key.public_key()
        sans = []
        for h in dict.fromkeys(hosts):
            sans.append(_ip_or_dns(h))
        return self._issue(identity, public_key, days=days, common_name=host, extra_sans=sans), key

    def sign_csr(
        self,
        csr_pem: bytes,
        *,
        role: str = "site",
        site_id: str | None = None,
        host: str | None = None,
        days: int = LEAF_DAYS_DEFAULT,
    ) -> x509.Certificate:
        """Sign a CSR made by :func:`make_key_and_csr` (the key never leaves the site).

        The CSR proves possession of the key and names the identity it asks
        for; the CA copies only the public key and the checked identity, never
        the CSR's other extensions. ``site_id``, when given, must match.
        """
        if isinstance(csr_pem, str):
            csr_pem = csr_pem.encode()
        if len(csr_pem) > MAX_PEM_BYTES:
            raise CSRError("CSR is larger than 64 KiB")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CSRError(f"not a PEM CSR: {exc}") from None
        if not csr.is_signature_valid:
            raise CSRError("CSR signature does not verify (no proof of key possession)")
        _check_p256(csr.public_key(), "the CSR's")
        uris = _uris(csr)
        if len(uris) != 1:
            raise CSRError(
                f"CSR names {len(uris)} ffsecure identities; exactly one is required",
                hint="make the CSR with `site-node enroll`",
            )
        identity = Identity.parse(uris[0])
        if identity.federation_id != self.federation_id:
            raise IdentityError(
                f"CSR asks for federation {identity.federation_id!r}, this CA serves "
                f"{self.federation_id!r}"
            )
        if identity.role != role:
            raise CSRError(f"CSR asks for role {identity.role!r}, expected {role!r}")
        if role == "site":
            if site_id is not None and identity.site_id != site_id:
                raise IdentityError(f"CSR asks for site {identity.site_id!r}, expected {site_id!r}")
            return self._issue(
                identity, csr.public_key(), days=days, common_name=identity.site_id or ""
            )
        if host is None:
            raise CSRError("an aggregator CSR needs --host")
        cert, _ = self.issue_aggregator(host, csr.public_key(), days=days)
        return cert

    # -- revocation ------------------------------------------------------
    def revoke(
        self, cert_or_serial, reason: str = "unspecified", *, at: dt.datetime | None = None
    ) -> bytes:
        """Revoke a certificate (object, or serial as int/hex string); return the new CRL PEM."""
        if reason not in REASONS:
            raise ConfigError(
                f"unknown revocation reason {reason!r}", hint=f"use one of {sorted(REASONS)}"
            )
        if isinstance(cert_or_serial, x509.Certificate):
            serial = cert_or_serial.serial_number
        elif isinstance(cert_or_serial, int):
            serial = cert_or_serial
        else:
            try:
                serial = int(str(cert_or_serial).lower().removeprefix("0x"), 16)
            except ValueError:
                raise ConfigError(f"serial {cert_or_serial!r} is not hexadecimal") from None
        state = self._state()
        if serial_hex(serial) not in {r["serial"] for r in state["issued"]}:
            raise ConfigError(
                f"serial {serial_hex(serial)} was not issued by this CA",
                code="E_NOT_FOUND",
                hint="list certificates with `ffsecure pki list`",
            )
        if serial_hex(serial) in {r["serial"] for r in state["revoked"]}:
            return self.crl_pem()
        state["revoked"].append(
            {
                "serial": serial_hex(serial),
                "reason": reason,
                "revoked_at": _rfc3339(at or utcnow()),
            }
        )
        self._save_state(state)
        return self.publish_crl()

    def publish_crl(self, *, days: int = CRL_DAYS_DEFAULT) -> bytes:
        """Sign a fresh CRL from the state, write DIR/crl.pem and return it."""
        state = self._state()
        state["crl_number"] += 1
        now = utcnow()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(days=days))
            .add_extension(x509.CRLNumber(state["crl_number"]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()),
                critical=False,
            )
        )
        for record in state["revoked"]:
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(record["serial"], 16))
                .revocation_date(_parse_rfc3339(record["revoked_at"]))
                .add_extension(x509.CRLReason(REASONS[record["reason"]]), critical=False)
                .build()
            )
            builder = builder.add_revoked_certificate(revoked)
        crl = builder.sign(self._key, hashes.SHA256())
        pem = crl.public_bytes(serialization.Encoding.PEM)
        self._save_state(state)
        write_public_file(self.directory / "crl.pem", pem)
        return pem

    def crl_pem(self) -> bytes:
        path = self.directory / "crl.pem"
        return path.read_bytes() if path.exists() else self.publish_crl()

    def crl(self) -> x509.CertificateRevocationList:
        return x509.load_pem_x509_crl(self.crl_pem())


def init_ca(
    directory: str | os.PathLike,
    federation_id: str,
    *,
    passphrase: bytes | None = None,
    days: int = CA_DAYS_DEFAULT,
) -> CA:
    """Create a federation CA in ``directory`` (refuses to overwrite one)."""
    check_id(federation_id, "federation id")
    _check_days(days, 36500)
    directory = Path(directory)
    if (directory / "ca.key").exists() or (directory / "ca.pem").exists():
        raise CAError(f"{directory} already holds a CA", hint="pick an empty directory")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    now = utcnow()
    name = _name(f"ffsecure federation CA {federation_id}", federation_id)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"{URI_SCHEME}{federation_id}/ca")]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private_key(directory / "ca.key", key, passphrase)
    write_public_file(directory / "ca.pem", cert_pem(cert))
    ca = CA(directory, cert, key)
    ca._save_state(
        {"v": 1, "federation_id": federation_id, "crl_number": 0, "issued": [], "revoked": []}
    )
    ca.publish_crl()
    return ca


# ---------------------------------------------------------------------- CSR


def make_key_and_csr(
    key_path: str | os.PathLike,
    *,
    federation_id: str,
    site_id: str,
    passphrase: bytes | None = None,
) -> bytes:
    """Make a P-256 key (written 0600 to ``key_path``) and return a CSR PEM for the site."""
    identity = Identity(
        check_id(federation_id, "federation id"), "site", check_id(site_id, "site id")
    )
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(site_id, federation_id))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    write_private_key(key_path, key, passphrase)
    return csr.public_bytes(serialization.Encoding.PEM)


# ------------------------------------------------------------- verification


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(text: str) -> dt.datetime:
    try:
        when = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, TypeError):
        raise FormatError(
            f"time {text!r} is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)", code="E_TIME_FORMAT"
        ) from None
    return when.replace(tzinfo=dt.UTC)


rfc3339 = _rfc3339
parse_rfc3339 = _parse_rfc3339


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
        raise CertExpiredError(f"the federation CA certificate is not valid at {_rfc3339(at)}")
    if not (cert.not_valid_before_utc <= at <= cert.not_valid_after_utc):
        raise CertExpiredError(
            f"certificate is valid from {_rfc3339(cert.not_valid_before_utc)} to "
            f"{_rfc3339(cert.not_valid_after_utc)}, not at {_rfc3339(at)}",
            hint="renew the certificate (`ffsecure pki issue` or `site-node enroll`)",
        )


def is_revoked(
    cert: x509.Certificate, crl: x509.CertificateRevocationList | None, at: dt.datetime
) -> tuple[bool, str | None]:
    """Whether ``cert`` counts as revoked at ``at`` under ``crl`` (see module docstring)."""
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
