"""A real federation in a temporary directory, for tests that need the whole chain.

``build_federation(tmp_path)`` creates, with the library functions only (no
CLI, no stub): a federation CA; an aggregator home (KEK, log key, HPKE key,
TLS key + certificate for ``localhost`` / ``127.0.0.1``, the CA-signed
federation manifest, ``ca.pem``, ``crl.pem`` and an ``aggregator.toml``
listening on ``127.0.0.1:0``); and site certificates. The federation's
generator is the tiny ``cvae`` config by default, so a real module package (real
safetensors weights, signed by the site, sealed with HPKE to the aggregator)
takes milliseconds to make. Takes about a second.

Typical use::

    fed = build_federation(tmp_path)
    with fed.serve() as srv:                      # in-process mTLS server on an ephemeral port
        with fed.client("st-mary", srv.address) as c:
            sealed, pkg = fed.make_package("st-mary")
            receipt = c.upload(sealed, module_id=pkg.manifest.module_id, site_id="st-mary")
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aggregator.home import (
    AggregatorHome,
    create_kek,
    create_log_key,
    default_origin,
    write_private_file,
)
from ffsecure import canonical, envelope, pki
from ffsecure.federation import FederationManifest, create_signed_manifest

FEDERATION_ID = "fedtest"
#: What ``aggregator serve`` appends to an empty ledger at its first start: federation.loaded,
#: then crl.loaded.
START_ENTRIES = 2
SITES = ("st-mary", "st-john")
LABELS = ["zero", "one", "two", "three"]
IMAGE_SHAPE = (1, 16, 16)

TEST_CONFIG = """\
[server]
listen = "127.0.0.1:0"
shutdown_grace_s = {grace}
max_workers = {workers}
upload_deadline_s = 60.0
download_deadline_s = {download_deadline}
request_deadline_s = {request_deadline}

[uploads]
chunk_bytes = {chunk}
commit_every_bytes = {commit}

[rate_limit]
calls_per_second = {calls}
call_burst = {call_burst}
uploads_per_minute = {uploads}
upload_burst = {upload_burst}
"""


@dataclass
class SiteCreds:
    site_id: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_pem: bytes
    key_pem: bytes
    cert_path: Path
    key_path: Path


@dataclass
class Federation:
    root: Path
    federation_id: str
    ca: pki.CA
    home: AggregatorHome
    manifest: FederationManifest
    signed_manifest: bytes
    sites: dict[str, SiteCreds] = field(default_factory=dict)

    # -- paths -------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.home.config

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    @property
    def log_vkey(self) -> str:
        return self.manifest.aggregator["log_public_key"]

    # -- sites -------------------------------------------------------------
    def add_site(self, site_id: str, *, days: int = 30) -> SiteCreds:
        cert, key = self.ca.issue_site(site_id, days=days)
        return self._save_site(site_id, cert, key)

    def _save_site(
        self, site_id: str, cert: x509.Certificate, key, *, name: str | None = None
    ) -> SiteCreds:
        d = self.root / "sites" / (name or site_id)
        d.mkdir(parents=True, exist_ok=True)
        cert_pem = pki.cert_pem(cert)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (d / "site.pem").write_bytes(cert_pem)
        pki.write_private_key(d / "site.key", key)
        creds = SiteCreds(site_id, cert, key, cert_pem, key_pem, d / "site.pem", d / "site.key")
        if name is None:
            self.sites[site_id] = creds
        return creds

    def _ca_signed(
        self, site_id: str, *, federation_id: str, not_before: dt.datetime, not_after: dt.datetime
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A clientAuth site certificate signed with this CA's key, with whatever identity and
        dates."""
        ca_key = pki.load_private_key(self.ca.directory / "ca.key")
        key = ec.generate_private_key(ec.SECP256R1())
        ident = pki.Identity(federation_id, "site", site_id)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site_id)]))
            .issuer_name(self.ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
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
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(ident.uri)]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca.cert.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    def expired_site(self, site_id: str) -> SiteCreds:
        """A site certificate from this CA whose validity ended yesterday."""
        now = dt.datetime.now(dt.UTC)
        cert, key = self._ca_signed(
            site_id,
            federation_id=self.federation_id,
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1),
        )
        return self._save_site(site_id, cert, key, name=f"{site_id}-expired")

    def other_federation_site(
        self, site_id: str, federation_id: str = "fed-elsewhere"
    ) -> SiteCreds:
        """A valid site certificate from this CA naming another federation (TLS accepts its
        chain)."""
        now = dt.datetime.now(dt.UTC)
        cert, key = self._ca_signed(
            site_id,
            federation_id=federation_id,
            not_before=now - dt.timedelta(hours=1),
            not_after=now + dt.timedelta(days=1),
        )
        return self._save_site(site_id, cert, key, name=f"{site_id}-{federation_id}")

    def foreign_site(self, site_id: str) -> SiteCreds:
        """A site certificate for the same federation id from another CA (an attacker's)."""
        other = pki.init_ca(self.root / "other-ca", self.federation_id)
        cert, key = other.issue_site(site_id)
        return self._save_site(site_id, cert, key, name=f"{site_id}-foreign")

    def revoke_site(self, site_id: str, reason: str = "key_compromise") -> None:
        """Revoke the site's certificate and install the new CRL in the aggregator home."""
        crl = self.ca.revoke(self.sites[site_id].cert, reason)
        pki.write_public_file(self.home.crl, crl)

    # -- modules -----------------------------------------------------------
    def make_package(
        self,
        site_id: str,
        *,
        classes: Sequence[int] = (0,),
        seed: int = 0,
        signer: str | None = None,
        manifest_site: str | None = None,
        module_id: str | None = None,
    ):
        """A real sealed module package: ``(sealed_bytes, SignedPackage)``.

        ``signer`` signs with another site's key; ``manifest_site`` names another site in
        the manifest (both for impersonation tests).
        """
        from ffsecure.package import build_manifest, sign_package

        weights = generator_weights(
            self.manifest.generator["family"], canonical.dumps(self.manifest.generator["config"])
        )
        manifest = build_manifest(
            federation=self.manifest,
            site_id=manifest_site or site_id,
            weights=weights,
            classes=list(classes),
            seed=seed,
            module_id=module_id,
        )
        creds = self.sites[signer or site_id]
        pkg = sign_package(manifest, weights, creds.key, creds.cert)
        sealed = envelope.seal(
            pkg.to_bytes(),
            self.manifest.hpke_public_key,
            federation_id=self.federation_id,
            key_id=self.manifest.hpke_key_id,
            suite=self.manifest.hpke_suite,
        )
        return sealed, pkg

    # -- running -----------------------------------------------------------
    @contextlib.contextmanager
    def serve(self) -> Iterator[object]:
        """An in-process aggregator server (real mTLS on 127.0.0.1:ephemeral)."""
        from aggregator.config import load_config
        from aggregator.server import start

        running = start(load_config(self.config_path))
        try:
            yield running
        finally:
            running.stop(grace=1.0)

    def client(self, site_id: str, address: str, *, creds: SiteCreds | None = None, **kwargs):
        """An AggregatorClient for a site, verifying receipts with the federation's log key."""
        from site_node.client import AggregatorClient

        c = creds or self.sites[site_id]
        client = AggregatorClient(
            address,
            ca_cert_pem=self.ca_pem,
            cert_pem=c.cert_pem,
            key_pem=c.key_pem,
            server_name="localhost",
            **kwargs,
        )
        client.use_federation(self.manifest)
        return client


@functools.lru_cache(maxsize=4)
def generator_weights(family: str, config_json: bytes) -> bytes:
    """Safetensors weights of the federation's generator (its deterministic initial weights)."""
    from ffsecure import generators

    return generators.to_safetensors(generators.build(family, canonical.loads(config_json)))


def build_federation(
    root: Path,
    *,
    federation_id: str = FEDERATION_ID,
    sites: Sequence[str] = SITES,
    labels: Sequence[str] = LABELS,
    image_shape: tuple[int, int, int] = IMAGE_SHAPE,
    generator_size: str = "tiny",
    max_module_bytes: int = 16 << 20,
    shutdown_grace_s: float = 5.0,
    max_workers: int = 16,
    chunk_bytes: int = 64 * 1024,
    commit_every_bytes: int = 64 * 1024,
    calls_per_second: float = 200.0,
    call_burst: int = 400,
    uploads_per_minute: float = 600.0,
    upload_burst: int = 200,
    download_deadline_s: float = 60.0,
    request_deadline_s: float = 30.0,
) -> Federation:
    """Create the CA, the aggregator home and site credentials under ``root``."""
    from ffsecure import generators

    root = Path(root)
    ca = pki.init_ca(root / "ca", federation_id)
    home = AggregatorHome.at(root / "aggregator")
    home.ensure_dirs()
    create_kek(home)
    signer = create_log_key(home, default_origin(federation_id))
    hpke_private, hpke_public = envelope.generate_keypair("x25519")
    envelope.write_key_file(home.hpke_key, hpke_private, "x25519")
    tls_cert, tls_key = ca.issue_aggregator("localhost", extra_hosts=["127.0.0.1"])
    write_private_file(
        home.tls_key,
        tls_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    pki.write_public_file(home.tls_cert, pki.cert_pem(tls_cert))

    config = generators.default_config(
        "cvae", image_shape=image_shape, num_classes=len(labels), size=generator_size
    )
    manifest = FederationManifest(
        federation_id=federation_id,
        label_space=list(labels),
        image_shape=tuple(image_shape),
        generator={"family": "cvae", "config": config},
        dp_policy={"required": False, "max_epsilon": None, "delta": None},
        limits={"max_module_bytes": max_module_bytes},
        aggregator={
            "endpoint": "localhost:8443",
            "hpke_public_key": envelope.b64encode(hpke_public),
            "hpke_key_id": envelope.key_id(hpke_public),
            "hpke_suite": "x25519",
            "log_public_key": signer.vkey,
            "log_origin": signer.name,
        },
    )
    signed = create_signed_manifest(manifest, ca)
    pki.write_public_file(home.federation, signed)
    pki.write_public_file(home.ca_cert, ca.cert_pem)
    pki.write_public_file(home.crl, ca.crl_pem())
    home.config.write_text(
        TEST_CONFIG.format(
            grace=float(shutdown_grace_s),
            workers=max_workers,
            chunk=chunk_bytes,
            commit=commit_every_bytes,
            calls=float(calls_per_second),
            call_burst=call_burst,
            uploads=float(uploads_per_minute),
            upload_burst=upload_burst,
            download_deadline=float(download_deadline_s),
            request_deadline=float(request_deadline_s),
        )
    )
    fed = Federation(
        root=root,
        federation_id=federation_id,
        ca=ca,
        home=home,
        manifest=manifest,
        signed_manifest=signed,
    )
    for site in sites:
        fed.add_site(site)
    return fed


def entry_types(store) -> list[str]:
    """The ``type`` of every entry of ``store``'s log, in order."""
    from ffsecure.records.entries import validate_entry

    return [validate_entry(data)["type"] for data in store.entries(0, store.size())]


def export_bundle(fed, store, path):
    """Export ``store`` as an audit bundle at ``path`` with ``fed``'s CA, CRL, the manifest
    the home holds and those it kept (what ``aggregator ledger export`` copies)."""
    from aggregator.export import write_bundle
    from aggregator.federation_ledger import export_federations

    snap = store.snapshot()
    federation_json = fed.home.federation.read_bytes()
    return write_bundle(
        snap,
        path,
        ca_cert_pem=fed.ca_pem,
        crl_pem=fed.home.crl.read_bytes(),
        federation_json=federation_json,
        federation_documents=export_federations(
            fed.home, snap.entries, federation_json, fed.ca_pem
        )[0],
    )
