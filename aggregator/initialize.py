"""Creating an aggregator home, in two steps (the federation manifest needs its public keys).

1. :func:`create_keys` (``aggregator init --federation-id ID --dir DIR``): the
   key-encryption key, the log signing key, the HPKE key and the TLS key
   (all 0600 under ``keys/``), ``public-keys.json`` for the CA operator and
   ``aggregator.csr`` (the TLS key's certificate request for the identity
   ``ffsecure://<federation-id>/aggregator``).
2. :func:`install` (``aggregator init --federation federation.json --dir DIR
   --ca-cert ca.pem --crl crl.pem --tls-cert aggregator.pem``): checks that the
   CA signed the manifest, that the manifest names *this* home's HPKE and log
   keys, that the CRL verifies and that the TLS certificate is this
   federation's aggregator certificate for this home's TLS key; then writes
   ``federation.json``, ``ca.pem``, ``crl.pem``, ``tls.pem``, the default
   ``aggregator.toml`` and an empty store.

Step 2 may instead take the CA's startup kit (:func:`install_kit`,
``aggregator install-kit KIT --dir DIR --expect-ca-fingerprint FP``): the kit
is pinned to the CA fingerprint and its signature checked, then its members
go through :func:`install` exactly as the loose files would.

All refuse to overwrite anything, and check everything before writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aggregator.config import DEFAULT_TOML, parse_config, write_default_config
from aggregator.home import (
    AggregatorHome,
    create_kek,
    create_log_key,
    default_origin,
    load_log_key,
    read_private_file,
    write_private_file,
)
from aggregator.store import open_home_store
from ffsecure import envelope, pki, templates
from ffsecure.errors import ConfigError
from ffsecure.federation import FederationManifest, load_signed_manifest, write_public_keys
from ffsecure.pki.kit import KitError, Role, open_kit
from ffsecure.pki.startup import AGGREGATOR_UNIT
from ffsecure.records.ids import check_host


def _exists(path: Path) -> ConfigError:
    return ConfigError(
        f"{path} already exists; refusing to overwrite it",
        code="E_EXISTS",
        hint="use a new --dir, or remove the old home deliberately "
        "(its keys protect stored modules)",
    )


def create_keys(
    home_dir: str | Path,
    federation_id: str,
    *,
    origin: str | None = None,
    hpke_suite: str = "x25519",
    hosts: Sequence[str] = (),
) -> dict:
    """Step 1: keys, public-keys.json and aggregator.csr. Returns the paths written.

    ``hosts`` (DNS names or IPs the sites will connect to) go into the CSR's
    SAN beside the identity URI, so the CA signs them without being told.
    """
    federation_id = pki.check_id(federation_id, "federation id")
    hosts = [check_host(name) for name in dict.fromkeys(hosts)]
    home = AggregatorHome.at(home_dir)
    public_keys, csr_path = home.root / "public-keys.json", home.root / "aggregator.csr"
    for p in (
        home.kek_key,
        home.log_key,
        home.hpke_key,
        home.tls_key,
        public_keys,
        csr_path,
        home.store_db,
    ):
        if p.exists():
            raise _exists(p)
    origin = origin or default_origin(federation_id)
    home.ensure_dirs()
    create_kek(home)
    signer = create_log_key(home, origin)
    hpke_private, hpke_public = envelope.generate_keypair(hpke_suite)
    envelope.write_key_file(home.hpke_key, hpke_private, hpke_suite)
    key = ec.generate_private_key(ec.SECP256R1())
    write_private_file(
        home.tls_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    csr = _tls_csr(key, federation_id, hosts)
    pki.write_public_file(csr_path, csr.public_bytes(serialization.Encoding.PEM))
    write_public_keys(
        public_keys,
        hpke_public_key=hpke_public,
        hpke_suite=hpke_suite,
        log_public_key=signer.vkey,
        log_origin=signer.name,
    )
    return {
        "home": str(home.root),
        "public_keys": str(public_keys),
        "csr": str(csr_path),
        "keys": [str(p) for p in (home.kek_key, home.log_key, home.hpke_key, home.tls_key)],
        "log_origin": signer.name,
        "hpke_key_id": envelope.key_id(hpke_public),
        "hosts": hosts,
    }


def _tls_csr(
    key: ec.EllipticCurvePrivateKey, federation_id: str, hosts: Sequence[str]
) -> x509.CertificateSigningRequest:
    """The TLS key's CSR: the aggregator identity URI, then each host as a DNS name or IP."""
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(pki.Identity(federation_id, "aggregator").uri)
    ]
    names += [pki.host_general_name(host) for host in hosts]
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aggregator")]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )


def check_manifest_keys(home: AggregatorHome, manifest: FederationManifest) -> None:
    """The manifest names this home's HPKE key and log key (E_KEY_MISMATCH otherwise)."""
    suite, _private, kid = envelope.read_key_file(home.hpke_key)
    signer = load_log_key(home)
    agg = manifest.aggregator
    if kid != manifest.hpke_key_id or suite != manifest.hpke_suite:
        raise ConfigError(
            f"the federation manifest names the HPKE key {manifest.hpke_key_id}, "
            f"not this home's keys/hpke.key ({kid})",
            code="E_KEY_MISMATCH",
            hint="the CA must build federation.json from this home's public-keys.json",
        )
    if signer.vkey != agg["log_public_key"] or signer.name != agg["log_origin"]:
        raise ConfigError(
            "the federation manifest names another log key than this home's keys/log.key",
            code="E_KEY_MISMATCH",
            hint="the CA must build federation.json from this home's public-keys.json",
        )


def check_tls_cert(
    home: AggregatorHome,
    tls_cert: x509.Certificate,
    manifest: FederationManifest,
    *,
    ca_cert: x509.Certificate,
    crl: x509.CertificateRevocationList | None,
) -> None:
    """``tls_cert`` is this federation's aggregator certificate for ``keys/tls.key``."""
    identity = pki.verify_cert(tls_cert, ca_cert=ca_cert, crl=crl, role="aggregator")
    if identity.federation_id != manifest.federation_id:
        raise ConfigError(
            f"the TLS certificate is for federation {identity.federation_id!r}",
            code="E_KEY_MISMATCH",
            hint="ask the CA of this federation to sign aggregator.csr",
        )
    tls_key = serialization.load_pem_private_key(read_private_file(home.tls_key), password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if tls_cert.public_key().public_bytes(*spki) != tls_key.public_key().public_bytes(*spki):
        raise ConfigError(
            "the TLS certificate is not for this home's keys/tls.key",
            code="E_KEY_MISMATCH",
            hint="install the certificate the CA made from this home's aggregator.csr",
        )


def install(
    home_dir: str | Path,
    *,
    federation_json: bytes,
    ca_cert_pem: bytes,
    crl_pem: bytes,
    tls_cert_pem: bytes,
    listen: str | None = None,
    config_text: str = DEFAULT_TOML,
) -> dict:
    """Step 2: check and install the CA's answers, write the config, create the store.

    ``config_text`` is the aggregator.toml to write (a startup kit's; the
    shipped default otherwise); it is parsed before anything is written.
    """
    home = AggregatorHome.at(home_dir)
    for p in (home.kek_key, home.log_key, home.hpke_key, home.tls_key):
        if not p.is_file():
            raise ConfigError(
                f"{p} does not exist",
                code="E_KEY_MISSING",
                hint="run `aggregator init --federation-id ID --dir DIR` first",
            )
    for p in (home.federation, home.ca_cert, home.crl, home.tls_cert, home.config, home.store_db):
        if p.exists():
            raise _exists(p)
    ca_cert = pki.load_cert(ca_cert_pem)
    manifest = load_signed_manifest(federation_json, ca_cert)
    check_manifest_keys(home, manifest)
    crl = pki.load_crl(crl_pem, ca_cert)
    tls_cert = pki.load_cert(tls_cert_pem)
    check_tls_cert(home, tls_cert, manifest, ca_cert=ca_cert, crl=crl)
    configured = parse_config(config_text, home=home.root.resolve()).server.listen
    pki.write_public_file(home.federation, federation_json)
    pki.write_public_file(home.ca_cert, ca_cert_pem)
    pki.write_public_file(home.crl, crl_pem)
    pki.write_public_file(home.tls_cert, tls_cert_pem)
    write_default_config(home.config, listen=listen, text=config_text)
    with open_home_store(home) as store:
        size = store.size()
    return {
        "home": str(home.root),
        "federation_id": manifest.federation_id,
        "config": str(home.config),
        "store": str(home.store_db),
        "log_size": size,
        "listen": listen or configured,
    }


def install_kit(
    home_dir: str | Path,
    kit_data: bytes,
    expected_fingerprint: str,
    *,
    listen: str | None = None,
    unit_path: Path | None = None,
) -> dict:
    """Step 2 from a startup kit: pin the CA, verify the kit, then :func:`install` its members.

    Refused with nothing written unless the kit's ``ca.pem`` has
    ``expected_fingerprint`` (``E_KIT_FINGERPRINT``) and that CA signed the
    kit (``E_KIT_SIGNATURE``, ``E_KIT``); :func:`install` then makes every
    check of step 2 (manifest signature and keys, CRL, TLS certificate for
    this home's key) before it writes. The kit's ``aggregator.service`` is
    written to ``unit_path`` when asked for and present.
    """
    kit = open_kit(kit_data, expected_fingerprint, Role.AGGREGATOR)
    if unit_path is not None:
        if AGGREGATOR_UNIT not in kit.members:
            raise KitError(
                "this kit carries no aggregator.service unit",
                hint="leave --systemd-unit out (the CA's ffsecure has no unit to ship)",
            )
        if unit_path.exists():
            raise _exists(unit_path)
    out = install(
        home_dir,
        federation_json=kit.members["federation.json"],
        ca_cert_pem=kit.members["ca.pem"],
        crl_pem=kit.members["crl.pem"],
        tls_cert_pem=kit.members["aggregator.pem"],
        listen=listen,
        config_text=kit.text("aggregator.toml"),
    )
    if unit_path is not None:
        templates.write_new(unit_path, kit.text(AGGREGATOR_UNIT))
    fp = pki.fingerprint(kit.ca_cert)
    return {
        **out,
        "ca_fingerprint": fp.hex,
        "ca_fingerprint_colon": fp.colon,
        "identity": kit.identity,
        "systemd_unit": str(unit_path) if unit_path else None,
    }
