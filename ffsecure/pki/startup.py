"""What the CA puts into a startup kit (:mod:`ffsecure.pki.kit`), from a participant's CSR.

The CA checks the signed ``federation.json`` against itself before it signs
anything, then signs the CSR (so the private key never leaves the host that
made it) and gathers the members:

* site: ``site.pem``, ``ca.pem``, ``federation.json``, ``site.toml`` (the
  shipped template with the federation id, the site id and the aggregator
  endpoint of the manifest filled in), ``site-node.service`` and
  ``README.txt``;
* aggregator: ``aggregator.pem`` (host names from the CSR, which
  ``aggregator init --host`` wrote), ``ca.pem``, ``crl.pem``,
  ``federation.json``, ``aggregator.toml`` (the template, listening on every
  interface at the manifest endpoint's port), ``README.txt`` and the
  ``aggregator.service`` unit when the installed templates ship one.

``README.txt`` shows the CA fingerprint in both forms and the next commands,
and says why the fingerprint must be compared out of band: a fingerprint
read from inside the kit proves nothing about the kit.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from ffsecure import templates
from ffsecure.federation import FederationManifest, load_signed_manifest
from ffsecure.pki.ca import CA, LEAF_DAYS_DEFAULT
from ffsecure.pki.certs import Fingerprint, cert_pem, fingerprint
from ffsecure.pki.identity import identity_of
from ffsecure.pki.kit import Role, build_kit
from ffsecure.timefmt import rfc3339

__all__ = ["MadeKit", "make_aggregator_kit", "make_site_kit"]

AGGREGATOR_UNIT = "aggregator.service"


@dataclass(frozen=True)
class MadeKit:
    """A kit's bytes and the facts the CA operator is shown about it."""

    data: bytes
    role: Role
    identity: str
    cert: x509.Certificate
    ca_fingerprint: Fingerprint
    members: tuple[str, ...]


def make_site_kit(
    ca: CA,
    *,
    csr_pem: bytes,
    site_id: str,
    federation_json: bytes,
    days: int = LEAF_DAYS_DEFAULT,
) -> MadeKit:
    """Sign the site's CSR (it must ask for ``site_id``) and pack the site's kit."""
    manifest = load_signed_manifest(federation_json, ca.cert)
    cert = ca.sign_csr(csr_pem, role="site", site_id=site_id, days=days)
    toml = templates.read("site.toml")
    for table, key, value in (
        ("site", "federation_id", ca.federation_id),
        ("site", "site_id", site_id),
        ("aggregator", "endpoint", manifest.aggregator["endpoint"]),
    ):
        toml = templates.fill(toml, table, key, value)
    fp = fingerprint(ca.cert)
    members = {
        "site.pem": cert_pem(cert),
        "ca.pem": ca.cert_pem,
        "federation.json": federation_json,
        "site.toml": toml.encode(),
        "site-node.service": templates.read("site-node.service").encode(),
        "README.txt": _site_readme(site_id, manifest, cert, fp).encode(),
    }
    return _pack(ca, Role.SITE, cert, members)


def make_aggregator_kit(
    ca: CA,
    *,
    csr_pem: bytes,
    federation_json: bytes,
    host: str | None = None,
    days: int = LEAF_DAYS_DEFAULT,
) -> MadeKit:
    """Sign the aggregator's CSR (host names from it, or ``host``) and pack its kit."""
    manifest = load_signed_manifest(federation_json, ca.cert)
    cert = ca.sign_csr(csr_pem, role="aggregator", host=host, days=days)
    port = manifest.aggregator["endpoint"].rpartition(":")[2]
    toml = templates.read("aggregator.toml").replace(
        'listen = "127.0.0.1:8443"', f'listen = "0.0.0.0:{port}"', 1
    )
    fp = fingerprint(ca.cert)
    members = {
        "aggregator.pem": cert_pem(cert),
        "ca.pem": ca.cert_pem,
        "crl.pem": ca.crl_pem(),
        "federation.json": federation_json,
        "aggregator.toml": toml.encode(),
        "README.txt": _aggregator_readme(manifest, cert, fp).encode(),
    }
    if AGGREGATOR_UNIT in templates.NAMES:  # shipped once the unit exists; skipped before
        members[AGGREGATOR_UNIT] = templates.read(AGGREGATOR_UNIT).encode()
    return _pack(ca, Role.AGGREGATOR, cert, members)


def _pack(ca: CA, role: Role, cert: x509.Certificate, members: dict[str, bytes]) -> MadeKit:
    identity = identity_of(cert).uri
    return MadeKit(
        data=build_kit(ca, role, identity, members),
        role=role,
        identity=identity,
        cert=cert,
        ca_fingerprint=fingerprint(ca.cert),
        members=tuple(sorted(members)),
    )


def _fingerprint_block(fp: Fingerprint) -> str:
    return (
        "CA certificate fingerprint (SHA-256), in both of its usual forms:\n\n"
        f"  {fp.hex}\n  {fp.colon}\n\n"
        "Compare it with the fingerprint the CA operator gives you OUT OF BAND (read\n"
        "aloud on the phone, in person, on a signed letter). Do not take it from this\n"
        "file: whoever could swap the kit in transit could swap this file too.\n"
    )


def _site_readme(
    site_id: str, manifest: FederationManifest, cert: x509.Certificate, fp: Fingerprint
) -> str:
    return (
        f"ffsecure startup kit for site {site_id} of federation {manifest.federation_id}\n"
        f"certificate valid until {rfc3339(cert.not_valid_after_utc)}; aggregator "
        f"{manifest.aggregator['endpoint']}\n\n"
        + _fingerprint_block(fp)
        + "\nNext, on the site host (the key made by `site-node enroll` stays there):\n\n"
        "  site-node install-kit THIS.kit --config /etc/ffsecure/site.toml \\\n"
        "      --expect-ca-fingerprint <the fingerprint the CA operator told you>\n"
        "  # site.toml is written from the kit unless one exists (then it is kept):\n"
        "  # set [data] source to this site's images\n"
        "  site-node status --config /etc/ffsecure/site.toml\n"
        "  site-node run --once --config /etc/ffsecure/site.toml\n\n"
        "To run as a service: `site-node install-kit ... --systemd-unit\n"
        "/etc/systemd/system/site-node.service` writes the unit of this kit\n"
        '(docs/site-operator.md, "Running as a service").\n'
    )


def _aggregator_readme(
    manifest: FederationManifest, cert: x509.Certificate, fp: Fingerprint
) -> str:
    return (
        f"ffsecure startup kit for the aggregator of federation {manifest.federation_id}\n"
        f"certificate valid until {rfc3339(cert.not_valid_after_utc)}; sites connect to "
        f"{manifest.aggregator['endpoint']}\n\n"
        + _fingerprint_block(fp)
        + "\nNext, on the aggregator host (the home made by `aggregator init` step 1):\n\n"
        "  aggregator install-kit THIS.kit --dir HOME \\\n"
        "      --expect-ca-fingerprint <the fingerprint the CA operator told you>\n"
        "  aggregator serve --dir HOME\n"
    )
