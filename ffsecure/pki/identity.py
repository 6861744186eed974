"""Who a certificate speaks for: one ffsecure identity URI in its SAN.

Identities (docs/pki.md)::

    ffsecure://<federation-id>/site/<site-id>
    ffsecure://<federation-id>/aggregator
    ffsecure://<federation-id>/ca            (the CA certificate only)

Every id inside a URI is checked whole by its one rule in :mod:`ffsecure.records.ids`
(``E_IDENTITY``); a certificate or CSR that names anything other than exactly
one ffsecure identity is refused, so a holder can never be two parties.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from ffsecure.records.ids import IdentityError, check_id

URI_SCHEME = "ffsecure://"
ROLES = ("site", "aggregator")


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


def san_uris(cert_or_csr: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    """The ffsecure URIs in the SAN of a certificate or CSR (empty without a SAN)."""
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
    uris = san_uris(cert)
    if len(uris) != 1:
        raise IdentityError(
            f"certificate names {len(uris)} ffsecure identities; exactly one is required",
            hint="issue certificates with `ffsecure pki issue`",
        )
    return Identity.parse(uris[0])


def ca_federation_id(ca_cert: x509.Certificate) -> str:
    """The federation id the CA certificate is for (its SAN URI ``ffsecure://<id>/ca``)."""
    for uri in san_uris(ca_cert):
        parts = uri[len(URI_SCHEME) :].split("/")
        if len(parts) == 2 and parts[1] == "ca":
            return check_id(parts[0], "federation id")
    raise IdentityError("CA certificate names no federation (SAN URI ffsecure://<id>/ca)")
