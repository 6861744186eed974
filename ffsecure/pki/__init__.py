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

The package, one module per job (each opens with its own invariants):

* :mod:`~ffsecure.pki.identity`: the identity URI and who a certificate speaks for;
* :mod:`~ffsecure.pki.certs`: PEM parsing under size caps, fingerprints, serials;
* :mod:`~ffsecure.pki.keys`: private key files (0600, optional passphrase);
* :mod:`~ffsecure.pki.crl`: CRL parsing, signature, facts, revocation by reason;
* :mod:`~ffsecure.pki.ca`: the CA directory, issuing, CSRs, revocation, CRL signing;
* :mod:`~ffsecure.pki.verify`: :func:`verify_cert`, the one certificate check.

Callers use ``from ffsecure import pki`` and the names below. Times come from
:mod:`ffsecure.timefmt`, ids from :mod:`ffsecure.records.ids` and public files from
:mod:`ffsecure.files`; they are re-exported here because callers have always
reached them as ``pki.rfc3339``, ``pki.check_id`` and ``pki.write_public_file``.
"""

from ffsecure.files import write_public_file
from ffsecure.pki.ca import (
    BACKDATE,
    CA,
    CA_DAYS_DEFAULT,
    CRL_DAYS_DEFAULT,
    LEAF_DAYS_DEFAULT,
    LEAF_DAYS_MAX,
    CAError,
    CSRError,
    csr_hosts,
    host_general_name,
    init_ca,
    make_key_and_csr,
)
from ffsecure.pki.certs import (
    MAX_PEM_BYTES,
    Fingerprint,
    FingerprintError,
    cert_fingerprint,
    cert_pem,
    check_parses,
    colon_form,
    fingerprint,
    fingerprint_matches,
    load_cert,
    load_certs,
    parse_fingerprint,
    serial_hex,
)
from ffsecure.pki.crl import (
    MAX_CRL_NUMBER,
    NON_RETROACTIVE_REASONS,
    REASONS,
    CRLError,
    CrlInfo,
    check_crl,
    crl_expired,
    crl_info,
    is_revoked,
    load_crl,
)
from ffsecure.pki.identity import ROLES, URI_SCHEME, Identity, ca_federation_id, identity_of
from ffsecure.pki.keys import load_private_key, write_private_key
from ffsecure.pki.verify import (
    CertChainError,
    CertExpiredError,
    CertRevokedError,
    CertUsageError,
    verify_cert,
)
from ffsecure.records.ids import IdentityError, check_id
from ffsecure.timefmt import parse_rfc3339, rfc3339, utcnow

__all__ = [
    "BACKDATE",
    "CA",
    "CA_DAYS_DEFAULT",
    "CRL_DAYS_DEFAULT",
    "LEAF_DAYS_DEFAULT",
    "LEAF_DAYS_MAX",
    "MAX_CRL_NUMBER",
    "MAX_PEM_BYTES",
    "NON_RETROACTIVE_REASONS",
    "REASONS",
    "ROLES",
    "URI_SCHEME",
    "CAError",
    "CRLError",
    "CSRError",
    "CertChainError",
    "CertExpiredError",
    "CertRevokedError",
    "CertUsageError",
    "CrlInfo",
    "Fingerprint",
    "FingerprintError",
    "Identity",
    "IdentityError",
    "ca_federation_id",
    "cert_fingerprint",
    "cert_pem",
    "check_crl",
    "check_id",
    "check_parses",
    "colon_form",
    "crl_expired",
    "csr_hosts",
    "crl_info",
    "fingerprint",
    "fingerprint_matches",
    "host_general_name",
    "identity_of",
    "init_ca",
    "is_revoked",
    "load_cert",
    "load_certs",
    "load_crl",
    "load_private_key",
    "make_key_and_csr",
    "parse_fingerprint",
    "parse_rfc3339",
    "rfc3339",
    "serial_hex",
    "utcnow",
    "verify_cert",
    "write_private_key",
    "write_public_file",
]
