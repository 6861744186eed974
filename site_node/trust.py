"""What the site trusts, checked every time it is loaded: CA, own certificate and key, federation
manifest.

``install`` accepts a signed certificate, the CA certificate and the federation
manifest only when they fit together: the certificate chains to the CA, is
valid now, is for the role ``site`` with this config's federation and site id,
and holds the public half of this site's key; the manifest verifies against
the CA and names the same federation. ``load`` repeats those checks on the
installed files, so a file swapped in the state directory is caught before use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ffsecure import pki
from ffsecure.errors import ConfigError, FFSecureError, VerificationError
from ffsecure.federation import FederationManifest, load_signed_manifest
from site_node.client import AggregatorClient, RetryPolicy
from site_node.config import SiteConfig
from site_node.state import StateDir, StateError


@dataclass
class Trust:
    federation: FederationManifest
    ca_cert: x509.Certificate
    ca_pem: bytes
    cert: x509.Certificate
    cert_pem: bytes
    key: object
    identity: pki.Identity


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {what} {path}: {exc.strerror}", hint="check the path"
        ) from None


def load_key(cfg: SiteConfig):
    if not cfg.key_path.exists():
        raise StateError(
            f"site key {cfg.key_path} does not exist",
            code="E_NOT_ENROLLED",
            hint="run `site-node enroll --config site.toml` first",
        )
    return pki.load_private_key(cfg.key_path, cfg.passphrase())


def check_material(
    cfg: SiteConfig,
    *,
    cert_pem: bytes,
    ca_pem: bytes,
    manifest_bytes: bytes,
    key,
    crl: x509.CertificateRevocationList | None = None,
) -> Trust:
    """Check that certificate, CA, manifest and key fit this site; raise a typed error if not.

    The certificate is judged now, under ``crl`` when one is given.
    """
    ca_cert = pki.load_cert(ca_pem)
    if pki.ca_federation_id(ca_cert) != cfg.federation_id:
        raise VerificationError(
            f"the CA certificate is for federation {pki.ca_federation_id(ca_cert)!r}, "
            f"site.toml says {cfg.federation_id!r}",
            code="E_FEDERATION_MISMATCH",
            hint="get ca.pem from your federation's CA operator, or fix site.federation_id",
        )
    certs = pki.load_certs(cert_pem, max_count=1)
    cert = certs[0]
    identity = pki.verify_cert(cert, ca_cert=ca_cert, crl=crl, role="site")
    if identity.site_id != cfg.site_id:
        raise pki.IdentityError(
            f"the certificate is for site {identity.site_id!r}, site.toml says {cfg.site_id!r}",
            hint="install the certificate the CA issued for this site's CSR",
        )
    if cert.public_key() != key.public_key():
        raise VerificationError(
            "the certificate does not hold this site's public key",
            code="E_KEY_MISMATCH",
            hint="the CA must sign the CSR that `site-node enroll` wrote with this key",
        )
    federation = load_signed_manifest(manifest_bytes, ca_cert)
    return Trust(
        federation=federation,
        ca_cert=ca_cert,
        ca_pem=pki.cert_pem(ca_cert),
        cert=cert,
        cert_pem=pki.cert_pem(cert),
        key=key,
        identity=identity,
    )


def install(cfg: SiteConfig, *, cert_file: Path, ca_file: Path, federation_file: Path) -> Trust:
    """Verify and copy the signed certificate, CA certificate and manifest into the state
    directory."""
    return install_material(
        cfg,
        cert_pem=_read(cert_file, "certificate"),
        ca_pem=_read(ca_file, "CA certificate"),
        manifest_bytes=_read(federation_file, "federation manifest"),
    )


def install_material(
    cfg: SiteConfig, *, cert_pem: bytes, ca_pem: bytes, manifest_bytes: bytes
) -> Trust:
    """:func:`check_material` with this site's key, then write the three files into the state
    directory (``install-cert`` and ``install-kit`` both end here); nothing is written when a
    check fails."""
    trust = check_material(
        cfg, cert_pem=cert_pem, ca_pem=ca_pem, manifest_bytes=manifest_bytes, key=load_key(cfg)
    )
    state = StateDir(cfg.state_dir).ensure()
    pki.write_public_file(state.ca_cert, trust.ca_pem)
    pki.write_public_file(state.federation, manifest_bytes)
    pki.write_public_file(state.cert, trust.cert_pem)
    return trust


def load(cfg: SiteConfig) -> Trust:
    """The installed trust material, verified again."""
    state = StateDir(cfg.state_dir)
    state.require_installed()
    try:
        return check_material(
            cfg,
            cert_pem=state.cert.read_bytes(),
            ca_pem=state.ca_cert.read_bytes(),
            manifest_bytes=state.federation.read_bytes(),
            key=load_key(cfg),
        )
    except FFSecureError as exc:
        if exc.hint is None:
            exc.hint = (
                "run `site-node install-kit` (or `install-cert`) again with what the CA "
                "operator sent"
            )
        raise


def make_client(cfg: SiteConfig, trust: Trust, **kwargs):
    """An mTLS client to the aggregator that verifies receipts with the manifest's log key."""

    endpoint = cfg.endpoint or trust.federation.aggregator["endpoint"]
    server_name = cfg.server_name or None
    key_pem = _key_pem(trust.key)
    client = AggregatorClient(
        endpoint,
        ca_cert_pem=trust.ca_pem,
        cert_pem=trust.cert_pem,
        key_pem=key_pem,
        server_name=server_name,
        timeout_s=cfg.timeout_s,
        upload_timeout_s=cfg.upload_timeout_s,
        chunk_bytes=cfg.chunk_bytes,
        retry=RetryPolicy(
            max_attempts=cfg.max_attempts,
            base_delay_s=cfg.base_delay_s,
            max_delay_s=cfg.max_delay_s,
        ),
        max_bytes_per_s=cfg.max_upload_bytes_per_s,
        **kwargs,
    )
    client.use_federation(trust.federation)
    return client


def _key_pem(key) -> bytes:

    # in memory only: gRPC needs the PEM; it is never written or logged
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
