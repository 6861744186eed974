"""The federation CA: a directory that issues leaf certificates and signs the CRL.

One federation has one offline CA (ECDSA P-256). It issues leaf certificates
directly (no intermediates): site certificates carry the ``clientAuth``
extended key usage, the aggregator's carries ``serverAuth``; every leaf is
``CA:FALSE``, P-256, and names exactly one identity URI
(:mod:`ffsecure.pki.identity`). A CSR proves possession of its key and names
the identity it asks for; the CA copies only the public key and the checked
identity.

Files written by :class:`CA` (``DIR`` is created 0700)::

    DIR/ca.pem          CA certificate (public; give it to every party)
    DIR/ca.key          CA private key, PKCS#8 PEM, mode 0600, optionally encrypted
    DIR/crl.pem         the current CRL, signed by the CA
    DIR/state.json      canonical JSON: issued certificates, revocations, CRL number
    DIR/issued/<serial>.pem   every certificate issued
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ffsecure import canonical
from ffsecure.errors import ConfigError, FFSecureError, VerificationError
from ffsecure.files import write_public_file
from ffsecure.pki.certs import MAX_PEM_BYTES, cert_fingerprint, cert_pem, load_cert, serial_hex
from ffsecure.pki.crl import REASONS
from ffsecure.pki.identity import URI_SCHEME, Identity, ca_federation_id, san_uris
from ffsecure.pki.keys import load_private_key, write_private_key
from ffsecure.records.ids import IdentityError, check_host, check_id
from ffsecure.timefmt import parse_rfc3339, rfc3339, utcnow

CA_DAYS_DEFAULT = 3650
LEAF_DAYS_DEFAULT = 365
LEAF_DAYS_MAX = 825
CRL_DAYS_DEFAULT = 30
BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock skew between hosts


class CSRError(VerificationError):
    """A certificate signing request is malformed, unsigned or asks for the wrong identity."""

    code = "E_CSR"


class CAError(FFSecureError):
    """The CA directory is missing, already exists, or its key cannot be loaded."""

    code = "E_CA"


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


def _check_p256(public_key: object, what: str) -> ec.EllipticCurvePublicKey:
    """``public_key`` if it is an ECDSA P-256 key, else raise E_CSR."""
    if (
        not isinstance(public_key, ec.EllipticCurvePublicKey)
        or public_key.curve.name != "secp256r1"
    ):
        raise CSRError(
            f"{what} key is not ECDSA P-256", hint="make the key with `site-node enroll`"
        )
    return public_key


# ------------------------------------------------------------------------ CA


def host_general_name(host: str) -> x509.GeneralName:
    """A host as a SAN entry: an IP address when it parses as one, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def csr_hosts(csr: x509.CertificateSigningRequest) -> list[str]:
    """The DNS names and IP addresses in a CSR's SAN (``aggregator init --host``), in order."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [str(v) for v in san.get_values_for_type(x509.DNSName)]
    return names + [str(v) for v in san.get_values_for_type(x509.IPAddress)]


def _aggregator_hosts(csr: x509.CertificateSigningRequest, host: str | None) -> list[str]:
    """The host names an aggregator certificate gets: those the CSR asks for, each checked.

    ``aggregator init --host`` writes them into the CSR, so the CA need not
    remember them; a ``host`` given to the CA must be one of them (a CSR
    without any takes it as its only name).
    """
    hosts = [check_host(name) for name in csr_hosts(csr)]
    if host is not None:
        check_host(host)
        if hosts and host not in hosts:
            raise CSRError(
                f"the CSR asks for host(s) {', '.join(hosts)}, not {host!r}",
                hint="leave --host out to use the CSR's, or have the operator re-run "
                "`aggregator init --host HOST` in a new home",
            )
        return [host, *(name for name in hosts if name != host)]
    if not hosts:
        raise CSRError(
            "an aggregator CSR without a host name needs --host",
            hint="pass --host, or make the CSR with `aggregator init --host HOST`",
        )
    return hosts


class CA:
    """A federation CA backed by a directory (see the module docstring)."""

    def __init__(self, directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.directory = Path(directory)
        self.cert = cert
        self._key = key
        self.federation_id = ca_federation_id(cert)

    # -- loading ---------------------------------------------------------
    @classmethod
    def load(cls, directory: str | os.PathLike[str], passphrase: bytes | None = None) -> CA:
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
    def _state(self) -> dict[str, Any]:
        path = self.directory / "state.json"
        if not path.exists():
            return {
                "v": 1,
                "federation_id": self.federation_id,
                "crl_number": 0,
                "issued": [],
                "revoked": [],
            }
        state: dict[str, Any] = canonical.loads_canonical(path.read_bytes(), max_bytes=64 << 20)
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        write_public_file(self.directory / "state.json", canonical.dumps(state))

    def issued(self) -> list[dict[str, Any]]:
        """Records of every certificate issued (serial, identity, fingerprint, validity)."""
        return list(self._state()["issued"])

    def revoked(self) -> list[dict[str, Any]]:
        return list(self._state()["revoked"])

    # -- issuing ---------------------------------------------------------
    def _issue(
        self,
        identity: Identity,
        public_key: CertificatePublicKeyTypes,
        *,
        days: int,
        common_name: str,
        extra_sans: Iterable[x509.GeneralName] = (),
    ) -> x509.Certificate:
        subject_key = _check_p256(public_key, "the certificate's")
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
            .public_key(subject_key)
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
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
                "not_before": rfc3339(cert.not_valid_before_utc),
                "not_after": rfc3339(cert.not_valid_after_utc),
            }
        )
        self._save_state(state)
        return cert

    def issue_site(
        self,
        site_id: str,
        public_key: CertificatePublicKeyTypes | None = None,
        *,
        days: int = LEAF_DAYS_DEFAULT,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | None]:
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
        public_key: CertificatePublicKeyTypes | None = None,
        *,
        days: int = LEAF_DAYS_DEFAULT,
        extra_hosts: Iterable[str] = (),
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | None]:
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
            sans.append(host_general_name(h))
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
        uris = san_uris(csr)
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
        hosts = _aggregator_hosts(csr, host)
        cert, _ = self.issue_aggregator(
            hosts[0], csr.public_key(), days=days, extra_hosts=hosts[1:]
        )
        return cert

    # -- revocation ------------------------------------------------------
    def revoke(
        self,
        cert_or_serial: x509.Certificate | int | str,
        reason: str = "unspecified",
        *,
        at: dt.datetime | None = None,
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
                "revoked_at": rfc3339(at or utcnow()),
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
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        for record in state["revoked"]:
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(record["serial"], 16))
                .revocation_date(parse_rfc3339(record["revoked_at"]))
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
    directory: str | os.PathLike[str],
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
    key_path: str | os.PathLike[str],
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
