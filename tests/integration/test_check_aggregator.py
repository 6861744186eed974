"""`aggregator check` as a real process on a real aggregator home (and beside a real serve).

One healthy home for the module: a federation whose manifest endpoint is
``localhost:PORT`` with ``server.listen`` pinned to ``127.0.0.1:PORT``, a CRL
valid for 90 days, and a store holding one ``crl.loaded`` entry and a signed
checkpoint. Each test copies the home (modes kept), breaks one thing, runs
``python -m aggregator check --dir HOME --json`` and asserts the exit status,
the line that must fail (or warn) with its fix, and that nothing changed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import socket
import sqlite3
import subprocess
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from aggregator.crl_ledger import CrlRecorder
from aggregator.exitcodes import EXIT_CHECK_FAILED
from aggregator.store import open_home_store
from ffsecure import envelope, pki
from ffsecure.federation import create_signed_manifest
from tests.check_cli import not_passed, run_check
from tests.faults.aggregator_proc import AggregatorProcess, free_port, pin_port
from tests.federation_fixture import build_federation
from tests.pg_fixture import use_postgres


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    fed = build_federation(tmp_path_factory.mktemp("aggcheck") / "fed", sites=())
    port = free_port()
    pin_port(fed.config_path, port)
    manifest = dataclasses.replace(
        fed.manifest, aggregator={**fed.manifest.aggregator, "endpoint": f"localhost:{port}"}
    )
    fed.manifest = manifest
    fed.signed_manifest = create_signed_manifest(manifest, fed.ca)
    pki.write_public_file(fed.home.federation, fed.signed_manifest)
    pki.write_public_file(fed.home.crl, fed.ca.publish_crl(days=90))
    with open_home_store(fed.home) as store:
        CrlRecorder(store, fed.ca.cert).record(pki.load_crl(fed.home.crl.read_bytes()))
        store.checkpoint()
    fed.port = port
    return fed


def copy_home(base, tmp_path: Path) -> Path:
    home = tmp_path / "agg"
    shutil.copytree(base.home.root, home)
    return home


def check(home: Path, *, text_too: bool = False) -> tuple[subprocess.CompletedProcess, dict]:
    """``aggregator check --dir HOME --json`` (and the text run, which must agree)."""
    return run_check(["aggregator", "check", "--dir", str(home)], text_too=text_too)


def details(report: dict, check_name: str) -> list[str]:
    return [c["detail"] for c in report["checks"] if c["check"] == check_name]


def tls_cert_for_home(base, home: Path, *, not_before: dt.datetime, not_after: dt.datetime):
    """The home's own TLS certificate re-issued by the CA with other dates (same key, SAN)."""
    old = pki.load_cert((home / "tls.pem").read_bytes())
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(base.ca.cert.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for ext in old.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    cert = builder.sign(pki.load_private_key(base.ca.directory / "ca.key"), hashes.SHA256())
    (home / "tls.pem").write_bytes(pki.cert_pem(cert))


def test_a_healthy_home_passes_every_check_in_text_and_json(base, tmp_path):
    home = copy_home(base, tmp_path)
    proc, report = check(home, text_too=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["summary"] == {
        "verdict": "PASS",
        "pass": len(report["checks"]),
        "warn": 0,
        "fail": 0,
        "skipped": [],
    }
    names = {c["check"] for c in report["checks"]}
    assert {
        "config",
        "permissions",
        "keys",
        "federation manifest",
        "endpoint",
        "TLS certificate",
        "TLS certificate expiry",
        "CA certificate expiry",
        "CRL next update",
        "TLS host name",
        "listen",
        "store",
        "disk",
        "evaluation",
    } <= names
    assert details(report, "listen") == [f"127.0.0.1:{base.port} is free"]
    assert "ledger of 1 entries and 1 checkpoints verifies" in details(report, "store")[0]


@pytest.mark.slow
def test_an_expired_tls_certificate_fails_with_the_renewal_as_fix(base, tmp_path):
    home = copy_home(base, tmp_path)
    now = dt.datetime.now(dt.UTC)
    tls_cert_for_home(
        base, home, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
    )
    proc, report = check(home)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["TLS certificate expiry"]
    assert "EXPIRED" in bad["TLS certificate expiry"]["detail"]
    assert "ffsecure pki sign-csr --role aggregator" in bad["TLS certificate expiry"]["fix"]


@pytest.mark.slow
def test_a_tls_certificate_expiring_in_ten_days_warns_and_exits_zero(base, tmp_path):
    home = copy_home(base, tmp_path)
    now = dt.datetime.now(dt.UTC)
    tls_cert_for_home(
        base,
        home,
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(days=10, minutes=-1),
    )
    proc, report = check(home)
    assert proc.returncode == 0
    bad = not_passed(report)
    assert list(bad) == ["TLS certificate expiry"]
    assert bad["TLS certificate expiry"]["status"] == "WARN"
    assert "9 days left" in bad["TLS certificate expiry"]["detail"]


@pytest.mark.slow
def test_a_certificate_that_does_not_name_the_manifest_host_fails(base, tmp_path):
    home = copy_home(base, tmp_path)
    key = pki.load_cert((home / "tls.pem").read_bytes()).public_key()
    cert, _ = base.ca.issue_aggregator("agg.example.org", public_key=key)
    (home / "tls.pem").write_bytes(pki.cert_pem(cert))
    proc, report = check(home)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["TLS host name"]
    assert "sites dial localhost" in bad["TLS host name"]["detail"]
    assert "--host localhost" in bad["TLS host name"]["fix"]


@pytest.mark.slow
def test_a_store_open_to_others_warns_and_the_check_changes_nothing(base, tmp_path):
    home = copy_home(base, tmp_path)
    (home / "store.sqlite").chmod(0o644)
    proc, report = check(home)
    assert proc.returncode == 0
    bad = not_passed(report)
    assert list(bad) == ["permissions"] and bad["permissions"]["status"] == "WARN"
    assert "store.sqlite is mode 644" in bad["permissions"]["detail"]
    assert bad["permissions"]["fix"] == f"run `chmod 600 {home / 'store.sqlite'}`"
    assert (home / "store.sqlite").stat().st_mode & 0o777 == 0o644


def test_a_key_open_to_others_fails_and_skips_what_needs_the_keys(base, tmp_path):
    home = copy_home(base, tmp_path)
    (home / "keys" / "kek.key").chmod(0o640)
    proc, report = check(home)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["keys"] and "serve refuses to load it" in bad["keys"]["detail"]
    assert report["summary"]["skipped"] == ["federation", "tls", "store", "evaluation"]


def test_a_port_held_by_another_process_fails_naming_the_port(base, tmp_path):
    home = copy_home(base, tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base.port))
        squatter.listen(1)
        proc, report = check(home)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["listen"]
    assert bad["listen"]["detail"] == f"port {base.port} is held by a process that is not serve"
    assert f"sport = :{base.port}" in bad["listen"]["fix"]


def test_a_tampered_ledger_entry_fails_the_store_check(base, tmp_path):
    home = copy_home(base, tmp_path)
    with sqlite3.connect(home / "store.sqlite") as db:
        (data,) = db.execute("SELECT data FROM entries WHERE idx = 0").fetchone()
        forged = bytes(data).replace(b'"revoked":0', b'"revoked":1', 1)
        assert forged != bytes(data)
        db.execute("UPDATE entries SET data = ? WHERE idx = 0", (forged,))
    db.close()
    proc, report = check(home)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["store"]
    assert "E_STORE_CORRUPT" in bad["store"]["detail"]
    assert "aggregator ledger verify" in bad["store"]["fix"]


@pytest.mark.slow
def test_a_manifest_naming_another_hpke_key_fails_with_its_fix(base, tmp_path):
    home = copy_home(base, tmp_path)
    _, public = envelope.generate_keypair("x25519")
    other = dataclasses.replace(
        base.manifest,
        aggregator={
            **base.manifest.aggregator,
            "hpke_public_key": envelope.b64encode(public),
            "hpke_key_id": envelope.key_id(public),
        },
    )
    (home / "federation.json").write_bytes(create_signed_manifest(other, base.ca))
    proc, report = check(home)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["federation"]
    assert "E_KEY_MISMATCH" in bad["federation"]["detail"]
    assert "public-keys.json" in bad["federation"]["fix"]
    assert report["summary"]["skipped"] == ["tls", "evaluation"]


def test_a_config_that_does_not_parse_is_a_fail_line_not_a_traceback(base, tmp_path):
    home = copy_home(base, tmp_path)
    (home / "aggregator.toml").write_text("[server]\nlisten = 8443\n")
    proc, report = check(home)
    assert proc.returncode == EXIT_CHECK_FAILED
    assert list(not_passed(report)) == ["config"]
    assert report["summary"]["skipped"] == [
        "permissions",
        "federation",
        "tls",
        "listen",
        "store",
        "disk",
        "evaluation",
    ]


def test_beside_a_running_serve_the_check_passes_and_disturbs_nothing(base, tmp_path):
    home = copy_home(base, tmp_path)
    with AggregatorProcess(home / "aggregator.toml", tmp_path / "serve.log") as serve:
        with open_home_store(home) as store:
            size = store.size()
        proc, report = check(home)
        assert serve.proc is not None and serve.proc.poll() is None, serve.log_tail()
        with open_home_store(home) as store:
            assert store.size() == size
    assert proc.returncode == 0, proc.stdout
    assert not not_passed(report)
    assert details(report, "listen") == [
        f"port {base.port}: serve is running (it presents this tls.pem)"
    ]
    assert "serve is running: blob files not compared" in details(report, "store")[0]


def test_a_postgres_store_is_verified_beside_serve_and_a_tampered_entry_fails(
    base, tmp_path, pg_dsn
):
    home = copy_home(base, tmp_path)
    for leftover in home.glob("store.sqlite*"):
        leftover.unlink()
    use_postgres(home / "aggregator.toml", pg_dsn)
    with AggregatorProcess(home / "aggregator.toml", tmp_path / "serve.log") as serve:
        with psycopg.connect(pg_dsn) as db:
            size = db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        proc, report = check(home)
        assert serve.proc is not None and serve.proc.poll() is None, serve.log_tail()
        with psycopg.connect(pg_dsn) as db:
            assert db.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == size
    assert proc.returncode == 0, proc.stdout
    assert not not_passed(report)
    (store_line,) = details(report, "store")
    assert store_line.startswith("PostgreSQL store ")
    assert f"ledger of {size} entries" in store_line
    # the blobs are rows of the reader's snapshot: checked even while serve runs
    assert store_line.endswith("every blob decrypts to its registered weights")
    assert not (home / "store.sqlite").exists()
    with psycopg.connect(pg_dsn) as db:
        # entry 1: the crl.loaded of the start, after its federation.loaded
        (data,) = db.execute("SELECT data FROM entries WHERE idx = 1").fetchone()
        forged = bytes(data).replace(b'"revoked":0', b'"revoked":1', 1)
        assert forged != bytes(data)
        db.execute("UPDATE entries SET data = %s WHERE idx = 1", (forged,))
    proc, report = check(home)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["store"]
    assert "E_STORE_CORRUPT" in bad["store"]["detail"]
