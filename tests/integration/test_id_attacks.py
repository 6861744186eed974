"""Ids with a trailing newline, sent by a hostile site to a real ``aggregator serve`` process.

``$`` in a ``^...$`` pattern applied with ``re.match`` also matches before a
final newline, so these were accepted before ids were checked with
``fullmatch`` (``ffsecure.records.ids``). A site with a valid certificate tries, over
real mTLS gRPC on loopback against the ``aggregator serve`` child process:

* a signed package whose module id is ``"<32 hex>\\n"``, with a fresh id,
  with another site's module id and with its own deleted module's id;
* an upload id ``"<32 hex>\\n"``;
* a certificate the CA would once have issued for ``site-b\\n``.

Each is refused with a typed code; the log (checkpoint), the blob directory
and the upload staging directory are as they were, and afterwards an
exported bundle still verifies (the audit a poisoned module id broke for good).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aggregator.store import open_home_store
from ffsecure import pki
from ffsecure.v1 import aggregator_pb2 as pb
from ffsecure.v1 import aggregator_pb2_grpc as pb_grpc
from site_node.client import RetryPolicy
from tests.conftest import cli_env
from tests.faults.aggregator_proc import AggregatorProcess, free_port, pin_port
from tests.federation_fixture import SiteCreds, build_federation
from tests.security import forge

NO_RETRY = RetryPolicy(max_attempts=1)


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    return build_federation(tmp_path_factory.mktemp("ids"), sites=("st-mary", "st-john"))


@pytest.fixture(scope="module")
def server(fed):
    address = pin_port(fed.config_path, free_port())
    proc = AggregatorProcess(fed.config_path, fed.root / "serve.log")
    with proc:
        proc.address = address
        yield proc


@pytest.fixture(scope="module")
def history(fed, server):
    """st-mary holds one active module and one it deleted; st-john holds one active module."""
    ids = {}
    for site, name in (("st-mary", "kept"), ("st-mary", "deleted"), ("st-john", "john")):
        sealed, pkg = fed.make_package(site, classes=[1] if name == "deleted" else [0])
        with fed.client(site, server.address, retry=NO_RETRY) as client:
            client.upload(sealed, module_id=pkg.manifest.module_id, site_id=site)
        ids[name] = pkg.manifest.module_id
    with fed.client("st-mary", server.address, retry=NO_RETRY) as client:
        client.request_deletion([ids["deleted"]], "consent withdrawn")
    return ids


def _stub(fed, creds: SiteCreds, address: str):
    channel = grpc.secure_channel(
        address,
        grpc.ssl_channel_credentials(
            root_certificates=fed.ca_pem,
            private_key=creds.key_pem,
            certificate_chain=creds.cert_pem,
        ),
        options=[("grpc.ssl_target_name_override", "localhost")],
    )
    return channel, pb_grpc.AggregatorStub(channel)


def _state(fed, server) -> tuple:
    """What a refusal must leave as it was: the signed checkpoint, blobs and staged uploads."""
    with fed.client("st-mary", server.address, retry=NO_RETRY) as client:
        note, size = client.get_checkpoint()
    blobs = sorted(p.name for p in fed.home.blobs.iterdir())
    uploads = fed.home.root / "uploads"
    staged = sorted(str(p.relative_to(uploads)) for p in uploads.rglob("*"))
    return size, note, blobs, staged


def _no_newline_names(fed) -> None:
    names = [p.name for p in fed.home.root.rglob("*")]
    assert not [n for n in names if "\n" in n], names


@pytest.mark.parametrize("target", ["fresh", "kept", "deleted", "john"])
def test_a_module_id_with_a_trailing_newline_is_refused(fed, server, history, target):
    module_id = (history.get(target) or "5e" * 16) + "\n"
    sealed, manifest = forge.forge(fed, "st-mary", mutate=lambda d: d.update(module_id=module_id))
    assert manifest["module_id"] == module_id
    before = _state(fed, server)
    channel, stub = _stub(fed, fed.sites["st-mary"], server.address)
    with channel:
        refusal = forge.send(stub, forge.chunks(sealed))
    assert isinstance(refusal, forge.Refusal), "a module id with a newline was registered"
    assert (refusal.status, refusal.code) == (grpc.StatusCode.INVALID_ARGUMENT, "E_MODULE_ID")
    assert repr(module_id) in refusal.message
    assert _state(fed, server)[:3] == before[:3]  # no ledger entry, no blob
    _no_newline_names(fed)


def test_an_upload_id_with_a_trailing_newline_creates_no_staging_directory(fed, server, history):
    sealed, _ = fed.make_package("st-mary", classes=[2])
    before = _state(fed, server)
    channel, stub = _stub(fed, fed.sites["st-mary"], server.address)
    with channel:
        refusal = forge.send(stub, forge.chunks(sealed, upload_id="ab" * 16 + "\n"))
        status = None
        try:
            stub.GetUploadStatus(pb.GetUploadStatusRequest(upload_id="ab" * 16 + "\n"), timeout=10)
        except grpc.RpcError as exc:
            status = forge.refusal_of(exc)
    assert isinstance(refusal, forge.Refusal)
    assert (refusal.status, refusal.code) == (grpc.StatusCode.INVALID_ARGUMENT, "E_UPLOAD_ID")
    assert status is not None and status.code == "E_UPLOAD_ID"
    assert _state(fed, server) == before  # nothing staged, nothing logged
    _no_newline_names(fed)


def _newline_site_creds(fed, tmp_path: Path) -> SiteCreds:
    """A site certificate for ``site-b\\n``, signed by the federation CA's own key.

    ``ffsecure pki sign-csr`` issued exactly this before CSR identities were
    checked whole; the CA refuses to now, so the test signs with the key.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    uri = f"ffsecure://{fed.federation_id}/site/site-b\n"
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site-b")]))
        .issuer_name(fed.ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
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
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
        .sign(fed.ca._key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SiteCreds(
        "site-b\n", cert, key, pki.cert_pem(cert), key_pem, tmp_path / "b.pem", tmp_path / "b.key"
    )


def test_a_certificate_for_a_newline_site_id_is_not_a_site(fed, server, history, tmp_path):
    creds = _newline_site_creds(fed, tmp_path)
    with pytest.raises(pki.IdentityError):
        pki.identity_of(creds.cert)
    before = _state(fed, server)
    channel, stub = _stub(fed, creds, server.address)
    with channel:
        with pytest.raises(grpc.RpcError) as err:
            stub.GetFederationInfo(pb.GetFederationInfoRequest(), timeout=10)
        refusal = forge.refusal_of(err.value)
        sealed, _ = fed.make_package("st-mary", classes=[3])
        upload = forge.send(stub, forge.chunks(sealed))
    assert (refusal.status, refusal.code) == (grpc.StatusCode.UNAUTHENTICATED, "E_IDENTITY")
    assert isinstance(upload, forge.Refusal) and upload.code == "E_IDENTITY"
    assert _state(fed, server) == before


# Not marked slow although it takes ~30 s: it reads the log the attack tests above wrote into
# the module's server, so it must run in the same selection as they do.
def test_after_the_attacks_the_store_is_clean_and_the_bundle_verifies(
    fed, server, history, tmp_path
):
    assert server.stop() == 0, server.log_tail()
    log = server.log_path.read_text(errors="replace")
    assert "E_MODULE_ID" in log and "E_UPLOAD_ID" in log and "E_IDENTITY" in log
    store = open_home_store(fed.home)
    try:
        modules = {row.module_id: row.status for row in store.list_modules()}
        summary = store.verify_integrity()
    finally:
        store.close()
    assert modules == {
        history["kept"]: "active",
        history["deleted"]: "deleted",
        history["john"]: "active",
    }
    assert summary is not None
    bundle, env = tmp_path / "bundle", cli_env()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "aggregator",
            "ledger",
            "export",
            "--dir",
            str(fed.home.root),
            "--out",
            str(bundle),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (tmp_path / "ca.pem").write_bytes(fed.ca_pem)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ffsecure",
            "audit",
            "verify",
            str(bundle),
            "--ca",
            str(tmp_path / "ca.pem"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    out = json.loads(done.stdout)
    assert (done.returncode, out["verdict"], out["findings"]) == (0, "VERIFIED", []), done.stdout
