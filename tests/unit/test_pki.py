"""Federation PKI: CA, leaf certificates, CSR enrolment, CRL and rotation."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ffsecure import pki
from ffsecure.errors import FFSecureError

HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return pki.init_ca(tmp_path_factory.mktemp("ca"), "fed-test")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    return pki.init_ca(tmp_path_factory.mktemp("other"), "fed-test")


def _code(excinfo) -> str:
    return excinfo.value.code


def test_init_writes_ca_with_private_key_0600(tmp_path):
    ca = pki.init_ca(tmp_path / "ca", "fed-a", passphrase=b"correct horse")
    key_mode = stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode)
    dir_mode = stat.S_IMODE((tmp_path / "ca").stat().st_mode)
    assert key_mode == 0o600 and dir_mode == 0o700
    assert b"ENCRYPTED" in (tmp_path / "ca" / "ca.key").read_bytes()
    assert pki.ca_federation_id(ca.cert) == "fed-a"
    bc = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    assert isinstance(ca.cert.public_key(), ec.EllipticCurvePublicKey)
    assert ca.cert.not_valid_after_utc - ca.cert.not_valid_before_utc > dt.timedelta(days=3000)
    again = pki.CA.load(tmp_path / "ca", passphrase=b"correct horse")
    assert again.cert == ca.cert
    with pytest.raises(FFSecureError) as info:
        pki.CA.load(tmp_path / "ca", passphrase=b"wrong")
    assert _code(info) == "E_KEY"
    with pytest.raises(FFSecureError) as info:
        pki.init_ca(tmp_path / "ca", "fed-a")
    assert _code(info) == "E_CA"
    with pytest.raises(FFSecureError) as info:
        pki.CA.load(tmp_path / "nothing")
    assert _code(info) == "E_CA"


@pytest.mark.parametrize("bad", ["", "Upper", "-lead", "a" * 64, "a/b", "a b", "é", "../x"])
def test_bad_ids_are_refused(bad):
    with pytest.raises(FFSecureError) as info:
        pki.check_id(bad)
    assert _code(info) == "E_IDENTITY"


def test_times_are_rfc3339_utc_seconds():
    when = pki.parse_rfc3339("2026-11-22T12:00:00Z")
    assert when.tzinfo is not None and pki.rfc3339(when) == "2026-11-22T12:00:00Z"
    for bad in ["2026-11-22 12:00:00", "2026-11-22T12:00:00+01:00", "2026-13-01T00:00:00Z", None]:
        with pytest.raises(FFSecureError) as info:
            pki.parse_rfc3339(bad)
        assert _code(info) == "E_TIME_FORMAT"


def test_identity_uri_round_trip():
    site = pki.Identity("fed-1", "site", "st-mary")
    assert site.uri == "ffsecure://fed-1/site/st-mary"
    assert pki.Identity.parse(site.uri) == site
    agg = pki.Identity("fed-1", "aggregator")
    assert pki.Identity.parse(agg.uri) == agg
    for bad in [
        "https://fed-1/site/x",
        "ffsecure://fed-1/site/X",
        "ffsecure://fed-1/ca",
        "ffsecure://fed-1/site/a/b",
        "ffsecure://fed-1/aggregator/x",
    ]:
        with pytest.raises(FFSecureError) as info:
            pki.Identity.parse(bad)
        assert _code(info) == "E_IDENTITY"


def test_site_certificate_has_client_auth_and_identity(ca):
    cert, key = ca.issue_site("st-mary")
    assert key is not None
    identity = pki.verify_cert(cert, ca_cert=ca.cert, crl=ca.crl(), role="site")
    assert identity == pki.Identity("fed-test", "site", "st-mary")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=360) < life < dt.timedelta(days=370)
    assert len(pki.cert_fingerprint(cert)) == 64
    assert pki.identity_of(cert).actor == "site:st-mary"
    records = {r["serial"]: r for r in ca.issued()}
    assert records[pki.serial_hex(cert.serial_number)]["identity"] == identity.uri


def test_aggregator_certificate_has_server_auth_and_host(ca):
    cert, _ = ca.issue_aggregator("127.0.0.1", extra_hosts=["localhost"])
    assert pki.verify_cert(cert, ca_cert=ca.cert, role="aggregator").role == "aggregator"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    with pytest.raises(FFSecureError) as info:
        pki.verify_cert(cert, ca_cert=ca.cert, role="site")
    assert _code(info) == "E_IDENTITY"
    with pytest.raises(FFSecureError) as info:
        ca.issue_aggregator("bad host!")
    assert _code(info) == "E_IDENTITY"


def test_lifetime_bounds(ca):
    with pytest.raises(FFSecureError) as info:
        ca.issue_site("long-lived", days=5000)
    assert _code(info) == "E_CONFIG"


def test_certificate_from_another_ca_is_refused(ca, other_ca):
    cert, _ = other_ca.issue_site("st-mary")
    with pytest.raises(FFSecureError) as info:
        pki.verify_cert(cert, ca_cert=ca.cert)
    assert _code(info) == "E_CERT_CHAIN"


def test_ca_certificate_is_not_a_leaf(ca):
    with pytest.raises(FFSecureError) as info:
        pki.verify_cert(ca.cert, ca_cert=ca.cert)
    assert _code(info) == "E_CERT_CHAIN"


def test_expired_and_not_yet_valid(ca):
    cert, _ = ca.issue_site("st-time", days=1)
    with pytest.raises(FFSecureError) as info:
        pki.verify_cert(cert, ca_cert=ca.cert, at=pki.utcnow() + dt.timedelta(days=2))
    assert _code(info) == "E_CERT_EXPIRED"
    with pytest.raises(FFSecureError) as info:
        pki.verify_cert(cert, ca_cert=ca.cert, at=pki.utcnow() - dt.timedelta(days=1))
    assert _code(info) == "E_CERT_EXPIRED"


def _leaf_with(ca, *, eku, uri="ffsecure://fed-test/site/odd"):
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key = serialization.load_pem_private_key((ca.directory / "ca.key").read_bytes(), None)
    now = pki.utcnow()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - HOUR)
        .not_valid_after(now + HOUR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def test_wrong_key_usage_is_refused(ca):
    server_only = _leaf_with(ca, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    with pytest.raises(FFSecureError) as info:
        pki.verify_cert(server_only, ca_cert=ca.cert, role="site")
    assert _code(info) == "E_CERT_USAGE"
    no_eku = _leaf_with(ca, eku=None)
    with pytest.raises(FFSecureError) as info:
        pki.verify_cert(no_eku, ca_cert=ca.cert)
    assert _code(info) == "E_CERT_USAGE"


def test_identity_of_another_federation_is_refused(ca):
    cert = _leaf_with(ca, eku=[ExtendedKeyUsageOID.CLIENT_AUTH], uri="ffsecure://fed-x/site/a")
    with pytest.raises(FFSecureError) as info:
        pki.verify_cert(cert, ca_cert=ca.cert)
    assert _code(info) == "E_IDENTITY"


def test_revocation_is_honoured(tmp_path):
    ca = pki.init_ca(tmp_path, "fed-r")
    cert, _ = ca.issue_site("st-bad")
    good, _ = ca.issue_site("st-good")
    crl_pem = ca.revoke(cert, "key_compromise")
    crl = pki.load_crl(crl_pem, ca.cert)
    with pytest.raises(FFSecureError) as info:
        pki.verify_cert(cert, ca_cert=ca.cert, crl=crl)
    assert _code(info) == "E_CERT_REVOKED"
    # key compromise is retroactive: even a time before revocation is refused
    with pytest.raises(FFSecureError) as info:
        pki.verify_cert(cert, ca_cert=ca.cert, crl=crl, at=pki.utcnow() - dt.timedelta(minutes=4))
    assert _code(info) == "E_CERT_REVOKED"
    assert pki.verify_cert(good, ca_cert=ca.cert, crl=crl).site_id == "st-good"
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number >= 2
    # revoking by hex serial again is idempotent and unknown serials are refused
    assert pki.load_crl(ca.revoke(pki.serial_hex(cert.serial_number)), ca.cert) is not None
    with pytest.raises(FFSecureError) as info:
        ca.revoke("abcdef")
    assert _code(info) == "E_NOT_FOUND"


def _lapsed_crl(ca, tmp_path) -> bytes:
    """A CRL the CA signed whose nextUpdate passed an hour ago (as a forgotten re-signing leaves
    it)."""
    key = pki.load_private_key(ca.directory / "ca.key")
    now = pki.utcnow()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - 25 * HOUR)
        .next_update(now - HOUR)
        .sign(key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.PEM)


def test_a_crl_past_its_next_update_is_expired_but_still_honoured(ca, tmp_path):
    fresh = pki.load_crl(ca.publish_crl(days=1), ca.cert)
    assert not pki.crl_expired(fresh)
    assert pki.crl_expired(fresh, now=pki.utcnow() + 2 * 24 * HOUR)
    lapsed = pki.load_crl(
        _lapsed_crl(ca, tmp_path), ca.cert
    )  # still loads: it can only under-report
    assert pki.crl_expired(lapsed) and not pki.crl_expired(lapsed, now=pki.utcnow() - 2 * HOUR)


def test_the_aggregator_warns_when_its_crl_lapses(ca, tmp_path, caplog):
    from aggregator.auth import CrlSource

    path = tmp_path / "crl.pem"
    path.write_bytes(ca.publish_crl(days=1))
    source = CrlSource(path, ca.cert)
    with caplog.at_level("WARNING", logger="aggregator.auth"):
        assert source.current() is not None
        assert not caplog.records
        path.write_bytes(_lapsed_crl(ca, tmp_path))
        assert (
            source.current() is not None
        )  # honoured, not dropped: revocations it lists still apply
    [record] = caplog.records
    assert (
        "past its nextUpdate" in record.getMessage() and "ffsecure pki crl" in record.getMessage()
    )


def test_crl_from_another_ca_is_refused(ca, other_ca):
    with pytest.raises(FFSecureError) as info:
        pki.load_crl(other_ca.crl_pem(), ca.cert)
    assert _code(info) == "E_CRL"
    with pytest.raises(FFSecureError) as info:
        pki.load_crl(b"not a crl")
    assert _code(info) == "E_CRL"


def test_rotation_keeps_identity_and_old_signatures_verifiable(tmp_path):
    ca = pki.init_ca(tmp_path, "fed-rot")
    old, _ = ca.issue_site("st-rot")
    signed_at = pki.utcnow()
    new, _ = ca.issue_site("st-rot")
    revoked_at = signed_at + dt.timedelta(seconds=30)
    crl = pki.load_crl(ca.revoke(old, "superseded", at=revoked_at), ca.cert)
    assert pki.identity_of(new) == pki.identity_of(old)
    assert pki.verify_cert(new, ca_cert=ca.cert, crl=crl).site_id == "st-rot"
    # the old cert still verifies for signatures made before it was superseded ...
    assert pki.verify_cert(old, ca_cert=ca.cert, crl=crl, at=signed_at).site_id == "st-rot"
    # ... but not for anything after
    with pytest.raises(FFSecureError) as info:
        pki.verify_cert(old, ca_cert=ca.cert, crl=crl, at=revoked_at + HOUR)
    assert _code(info) == "E_CERT_REVOKED"


def test_csr_enrolment_keeps_key_on_site(tmp_path, ca):
    key_path = tmp_path / "site.key"
    csr = pki.make_key_and_csr(key_path, federation_id="fed-test", site_id="st-csr")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = ca.sign_csr(csr, site_id="st-csr")
    key = pki.load_private_key(key_path)
    assert cert.public_key() == key.public_key()
    assert pki.verify_cert(cert, ca_cert=ca.cert, role="site").site_id == "st-csr"
    with pytest.raises(FFSecureError) as info:
        ca.sign_csr(csr, site_id="someone-else")
    assert _code(info) == "E_IDENTITY"
    wrong_fed = pki.make_key_and_csr(tmp_path / "k2", federation_id="fed-other", site_id="st-csr")
    with pytest.raises(FFSecureError) as info:
        ca.sign_csr(wrong_fed)
    assert _code(info) == "E_IDENTITY"
    with pytest.raises(FFSecureError) as info:
        ca.sign_csr(
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        )
    assert _code(info) == "E_CSR"


def test_csr_with_bad_signature_is_refused(tmp_path, ca):
    csr_pem = pki.make_key_and_csr(tmp_path / "k", federation_id="fed-test", site_id="st-sig")
    der = bytearray(x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature value
    import base64

    pem = (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.encodebytes(bytes(der))
        + b"-----END CERTIFICATE REQUEST-----\n"
    )
    with pytest.raises(FFSecureError) as info:
        ca.sign_csr(pem)
    assert _code(info) == "E_CSR"


def test_csr_with_non_p256_key_is_refused(ca):
    key = ec.generate_private_key(ec.SECP384R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("ffsecure://fed-test/site/p384")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(FFSecureError) as info:
        ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM))
    assert _code(info) == "E_CSR"


def test_certificates_work_for_mutual_tls(tmp_path, ca):
    """The issued certificates pass OpenSSL's own chain and purpose checks in TLS 1.3."""
    server_cert, server_key = ca.issue_aggregator("127.0.0.1")
    client_cert, client_key = ca.issue_site("st-tls")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    for name, cert, key in [("srv", server_cert, server_key), ("cli", client_cert, client_key)]:
        (tmp_path / f"{name}.pem").write_bytes(pki.cert_pem(cert))
        pki.write_private_key(tmp_path / f"{name}.key", key)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.minimum_version = ssl.TLSVersion.TLSv1_3
    sctx.load_cert_chain(tmp_path / "srv.pem", tmp_path / "srv.key")
    sctx.load_verify_locations(tmp_path / "ca.pem")
    sctx.verify_mode = ssl.CERT_REQUIRED
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_cert_chain(tmp_path / "cli.pem", tmp_path / "cli.key")
    cctx.load_verify_locations(tmp_path / "ca.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen = {}

    def serve():
        conn, _ = listener.accept()
        with sctx.wrap_socket(conn, server_side=True) as tls:
            der = tls.getpeercert(binary_form=True)
            seen["peer"] = pki.identity_of(x509.load_der_x509_certificate(der))
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        cctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.recv(2) == b"ok"
        server_identity = pki.identity_of(
            x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        )
    thread.join(5)
    listener.close()
    assert server_identity.role == "aggregator"
    assert seen["peer"] == pki.Identity("fed-test", "site", "st-tls")


# ------------------------------------------------------------------- the CLI


def _run(*args, ok=True):
    import subprocess

    from tests.conftest import PYTHON, REPO, cli_env

    proc = subprocess.run(
        [PYTHON, "-m", *args], cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode == 0) == ok, proc.stderr
    return proc


def test_cli_operator_flow(tmp_path):
    """init -> issue -> enroll + sign-csr -> revoke -> list/verify, as an operator runs it."""
    import json

    ca_dir, certs = tmp_path / "ca", tmp_path / "certs"
    (tmp_path / "pass").write_text("s3cret passphrase\n")
    pw = ["--passphrase-file", str(tmp_path / "pass")]
    _run("ffsecure", "pki", "init", "--federation-id", "fed-cli", "--dir", str(ca_dir), *pw)
    out = _run(
        "ffsecure",
        "pki",
        "issue",
        "site",
        "--site-id",
        "st-a",
        "--ca-dir",
        str(ca_dir),
        "--out",
        str(certs),
        "--json",
        *pw,
    )
    issued = json.loads(out.stdout)
    assert issued["identity"] == "ffsecure://fed-cli/site/st-a"
    assert stat.S_IMODE((certs / "st-a.key").stat().st_mode) == 0o600
    _run(
        "ffsecure",
        "pki",
        "issue",
        "aggregator",
        "--host",
        "127.0.0.1",
        "--ca-dir",
        str(ca_dir),
        "--out",
        str(certs),
        *pw,
    )
    # CSR path: the key is made on the site and never seen by the CA
    _run(
        "site_node",
        "enroll",
        "--federation-id",
        "fed-cli",
        "--site-id",
        "st-b",
        "--key",
        str(tmp_path / "st-b.key"),
        "--csr",
        str(tmp_path / "st-b.csr"),
    )
    assert stat.S_IMODE((tmp_path / "st-b.key").stat().st_mode) == 0o600
    _run(
        "ffsecure",
        "pki",
        "sign-csr",
        str(tmp_path / "st-b.csr"),
        "--site-id",
        "st-b",
        "--ca-dir",
        str(ca_dir),
        "--out",
        str(tmp_path / "st-b.pem"),
        *pw,
    )
    refused = _run(
        "ffsecure",
        "pki",
        "sign-csr",
        str(tmp_path / "st-b.csr"),
        "--site-id",
        "st-c",
        "--ca-dir",
        str(ca_dir),
        "--out",
        str(tmp_path / "x.pem"),
        *pw,
        ok=False,
    )
    assert "error[E_IDENTITY]" in refused.stderr
    verified = _run(
        "ffsecure",
        "pki",
        "verify",
        str(tmp_path / "st-b.pem"),
        "--ca",
        str(ca_dir / "ca.pem"),
        "--role",
        "site",
        "--json",
    )
    assert json.loads(verified.stdout)["site_id"] == "st-b"
    wrong_pw = _run(
        "ffsecure",
        "pki",
        "issue",
        "site",
        "--site-id",
        "st-z",
        "--ca-dir",
        str(ca_dir),
        "--out",
        str(certs),
        ok=False,
    )
    assert "error[E_KEY]" in wrong_pw.stderr
    _run(
        "ffsecure",
        "pki",
        "revoke",
        "--ca-dir",
        str(ca_dir),
        "--cert",
        str(certs / "st-a.pem"),
        "--reason",
        "key_compromise",
        *pw,
    )
    revoked = _run(
        "ffsecure",
        "pki",
        "verify",
        str(certs / "st-a.pem"),
        "--ca",
        str(ca_dir / "ca.pem"),
        "--crl",
        str(ca_dir / "crl.pem"),
        ok=False,
    )
    assert "error[E_CERT_REVOKED]" in revoked.stderr
    rows = json.loads(_run("ffsecure", "pki", "list", "--ca-dir", str(ca_dir), "--json").stdout)
    status = {r["identity"]: r["revoked"] for r in rows}
    assert status["ffsecure://fed-cli/site/st-a"]["reason"] == "key_compromise"
    assert status["ffsecure://fed-cli/site/st-b"] is None
    assert not list(tmp_path.rglob("*.tmp"))


def _csr_for(uri: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site-b")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    "site_id", ["site-b\n", "site-b\r", "site-b\x00", "site-b\t", "Site-B", " site-b", "site-b "]
)
def test_csr_identity_that_is_not_exactly_an_id_is_refused(ca, site_id):
    issued = len(ca.issued())
    with pytest.raises(FFSecureError) as info:
        ca.sign_csr(_csr_for(f"ffsecure://fed-test/site/{site_id}"))
    assert _code(info) == "E_IDENTITY" and repr(site_id) in info.value.message
    assert len(ca.issued()) == issued


def test_cli_sign_csr_without_site_id_refuses_a_newline_identity(tmp_path):
    """`pki sign-csr` with no --site-id signs what the CSR asks for, so the CSR must be exact."""
    ca = pki.init_ca(tmp_path / "ca", "fed-cli")
    (tmp_path / "b.csr").write_bytes(_csr_for("ffsecure://fed-cli/site/site-b\n"))
    refused = _run(
        "ffsecure",
        "pki",
        "sign-csr",
        str(tmp_path / "b.csr"),
        "--ca-dir",
        str(tmp_path / "ca"),
        "--out",
        str(tmp_path / "b.pem"),
        ok=False,
    )
    assert "error[E_IDENTITY]" in refused.stderr and "'site-b\\n'" in refused.stderr
    assert "issued" not in refused.stdout and not (tmp_path / "b.pem").exists()
    assert ca.issued() == [] and not (tmp_path / "ca" / "issued").exists()


def _cli(*args, env_extra=None, ok=True):
    import subprocess

    from tests.conftest import PYTHON, REPO, cli_env

    env = cli_env()
    for name in ("FFSECURE_CA_PASSPHRASE_FILE", "FFSECURE_SITE_PASSPHRASE_FILE"):
        env.pop(name, None)
    env.update(env_extra or {})
    proc = subprocess.run(
        [PYTHON, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode == 0) == ok, proc.stderr
    return proc


def _encrypted(path) -> bool:
    try:
        pki.load_private_key(path)
    except FFSecureError as exc:
        assert exc.code == "E_KEY"
        return True
    return False


def test_a_key_is_written_unencrypted_only_with_a_warning_or_on_purpose(tmp_path):
    """pki init and site-node enroll: warn on stderr without a passphrase, stay quiet with
    --no-passphrase, encrypt with a passphrase file named by the option or the environment."""
    (tmp_path / "pass").write_text("s3cret passphrase\n")
    site = ["site_node", "enroll", "--federation-id", "fed-pw", "--site-id", "st-a"]

    def enroll(name, *extra, **kw):
        return _cli(
            *site,
            "--key",
            str(tmp_path / f"{name}.key"),
            "--csr",
            str(tmp_path / f"{name}.csr"),
            *extra,
            **kw,
        )

    for run, key in (
        (
            lambda: _cli(
                "ffsecure",
                "pki",
                "init",
                "--federation-id",
                "fed-pw",
                "--dir",
                str(tmp_path / "ca-plain"),
            ),
            tmp_path / "ca-plain" / "ca.key",
        ),
        (lambda: enroll("plain"), tmp_path / "plain.key"),
    ):
        warned = run().stderr
        assert "warning:" in warned and "UNENCRYPTED" in warned and str(key) in warned
        assert "--no-passphrase" in warned and "--passphrase-file" in warned
        assert not _encrypted(key)
    quiet = [
        _cli(
            "ffsecure",
            "pki",
            "init",
            "--federation-id",
            "fed-pw",
            "--dir",
            str(tmp_path / "ca-quiet"),
            "--no-passphrase",
        ),
        enroll("quiet", "--no-passphrase"),
    ]
    assert all("UNENCRYPTED" not in p.stderr for p in quiet)
    assert not _encrypted(tmp_path / "ca-quiet" / "ca.key") and not _encrypted(
        tmp_path / "quiet.key"
    )
    from_env = [
        _cli(
            "ffsecure",
            "pki",
            "init",
            "--federation-id",
            "fed-pw",
            "--dir",
            str(tmp_path / "ca-env"),
            env_extra={"FFSECURE_CA_PASSPHRASE_FILE": str(tmp_path / "pass")},
        ),
        enroll("env", env_extra={"FFSECURE_SITE_PASSPHRASE_FILE": str(tmp_path / "pass")}),
    ]
    assert all("UNENCRYPTED" not in p.stderr for p in from_env)
    assert _encrypted(tmp_path / "ca-env" / "ca.key") and _encrypted(tmp_path / "env.key")
    assert pki.CA.load(tmp_path / "ca-env", b"s3cret passphrase").federation_id == "fed-pw"
    both = enroll("both", "--no-passphrase", "--passphrase-file", str(tmp_path / "pass"), ok=False)
    assert "error[E_CONFIG]" in both.stderr and not (tmp_path / "both.key").exists()


def test_the_pki_package_exports_every_name_callers_use_and_nothing_private():
    """`from ffsecure import pki` keeps working after the split: the names exist and are listed."""
    used = {"CA", "CAError", "CRLError", "CertChainError", "CertRevokedError", "CrlInfo"}
    used |= {"Identity", "IdentityError", "REASONS", "BACKDATE", "LEAF_DAYS_DEFAULT"}
    used |= {"CA_DAYS_DEFAULT", "CRL_DAYS_DEFAULT", "ca_federation_id", "cert_fingerprint"}
    used |= {"cert_pem", "check_id", "crl_expired", "crl_info", "identity_of", "init_ca"}
    used |= {"load_cert", "load_certs", "load_crl", "load_private_key", "make_key_and_csr"}
    used |= {"parse_rfc3339", "rfc3339", "serial_hex", "utcnow", "verify_cert"}
    used |= {"write_private_key", "write_public_file"}
    assert used <= set(pki.__all__)
    assert all(hasattr(pki, name) and not name.startswith("_") for name in pki.__all__)
    assert pki.verify_cert.__module__ == "ffsecure.pki.verify"
    assert pki.CA.__module__ == "ffsecure.pki.ca"


def test_the_library_path_verifier_lacks_what_verify_cert_guarantees(tmp_path, ca, other_ca):
    """Why verify_cert keeps its own chain check (docs/decisions.md, "PKI"), pinned.

    cryptography's verifier accepts a revoked certificate (it reads no CRL) and
    reports another CA's certificate at a time before this CA existed as a date
    problem; verify_cert says E_CERT_REVOKED and E_CERT_CHAIN. If a later
    cryptography changes either, this test fails and the decision is due again.
    """
    from cryptography.x509 import verification

    own = pki.init_ca(tmp_path / "ca", "fed-test")
    cert, _ = own.issue_site("st-lib")
    crl = x509.load_pem_x509_crl(own.revoke(cert, "key_compromise"))
    now = pki.utcnow()
    store = verification.Store([own.cert])
    verifier = verification.PolicyBuilder().store(store).time(now).build_client_verifier()
    assert verifier.verify(cert, []).subjects  # revoked, yet accepted
    with pytest.raises(FFSecureError) as info:
        pki.verify_cert(cert, ca_cert=own.cert, crl=crl, at=now)
    assert _code(info) == "E_CERT_REVOKED"

    foreign, _ = other_ca.issue_site("st-lib")
    early = ca.cert.not_valid_before_utc - HOUR
    store = verification.Store([ca.cert])
    verifier = verification.PolicyBuilder().store(store).time(early).build_client_verifier()
    with pytest.raises(verification.VerificationError, match="not valid at validation time"):
        verifier.verify(foreign, [])
    with pytest.raises(FFSecureError) as info:
        pki.verify_cert(foreign, ca_cert=ca.cert, at=early)
    assert _code(info) == "E_CERT_CHAIN"
