"""What an earlier main wrote still loads and verifies under the current code.

The fixtures (tests/compat/README.md says how each was made) are read as
an auditor, an aggregator and a site would read them. Dates: module
signatures are checked at their signing time, so the fixtures stay valid
after their certificates expire; a CRL past its nextUpdate is a warning,
never a reason for FAILED.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ffsecure import pki
from ffsecure.federation import load_signed_manifest
from ffsecure.package import SignedPackage, verify_signed_manifest
from site_node.client import kept_receipt, verify_receipt
from site_node.state import ModuleRecord
from tests.conftest import REPO, cli_env

FIXTURE = Path(__file__).resolve().parent / "demo-1de472d"


def _ffsecure(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ffsecure", *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _audit_old_bundle(*extra: str) -> tuple[int, dict]:
    receipts = sorted((FIXTURE / "receipts").glob("*.json"))
    assert len(receipts) == 4
    trusted = [arg for r in receipts for arg in ("--trusted-checkpoint", str(r))]
    done = _ffsecure(
        "audit",
        "verify",
        str(FIXTURE / "audit-bundle"),
        "--ca",
        str(FIXTURE / "ca.pem"),
        *trusted,
        *extra,
        "--json",
    )
    assert done.returncode in (0, 3), done.stdout[-3000:] + done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)


def test_the_old_audit_bundle_verifies_with_every_site_receipt_and_the_held_manifest():
    """The old log records no federation manifest (federation.loaded came later), so the
    auditor brings the one the operator gave it."""
    code, report = _audit_old_bundle(
        "--federation", str(FIXTURE / "aggregator" / "federation.json")
    )
    assert code == 0 and report["verdict"] == "VERIFIED"
    assert [f for f in report["findings"] if f["severity"] == "error"] == []


def test_the_old_audit_bundle_alone_cannot_show_which_manifest_was_in_force():
    code, report = _audit_old_bundle()
    assert code == 3 and report["verdict"] == "FAILED"
    errors = [f["code"] for f in report["findings"] if f["severity"] == "error"]
    assert errors == ["E_AUDIT_FEDERATION_UNRECORDED"]


def test_the_old_package_verifies_at_its_signing_time():
    ca_cert = pki.load_cert((FIXTURE / "ca.pem").read_bytes())
    federation = load_signed_manifest(
        (FIXTURE / "aggregator" / "federation.json").read_bytes(), ca_cert
    )
    pkg = SignedPackage.from_bytes((FIXTURE / "site-1" / "package.ffpk").read_bytes())
    checked = verify_signed_manifest(
        pkg.manifest_bytes,
        pkg.signature,
        pkg.cert_chain_pem,
        ca_cert=ca_cert,
        now=pki.parse_rfc3339(pkg.manifest.created_at),
    )
    assert checked.identity.site_id == "site-1"
    assert checked.manifest.federation_id == federation.federation_id
    record = ModuleRecord.read(FIXTURE / "site-1" / "module.json")
    assert record.module_id == pkg.manifest.module_id and record.status == "registered"


def test_the_old_site_receipt_verifies_against_the_log_key():
    record = json.loads((FIXTURE / "site-1" / "module.json").read_text())
    receipt = kept_receipt(record["receipt"])
    log_vkey = (FIXTURE / "audit-bundle" / "log.vkey").read_text().strip()
    checkpoint = verify_receipt(
        receipt, log_vkey=log_vkey, module_id=record["module_id"], site_id="site-1"
    )
    assert checkpoint.size == receipt.tree_size


@pytest.fixture
def old_home(tmp_path) -> Path:
    home = tmp_path / "aggregator"
    shutil.copytree(FIXTURE / "aggregator", home)
    home.chmod(0o700)
    for path in home.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)
    return home


def test_the_old_store_opens_and_its_ledger_and_blobs_verify(old_home):
    from aggregator.store import open_home_store

    store = open_home_store(old_home)
    try:
        report = store.verify_integrity(decrypt=True)
        size = store.size()
    finally:
        store.close()
    assert size > 0
    # verify_integrity raises on any mismatch; it returns what it checked
    assert report["entries"] == size and report["checkpoints"] >= 1
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", "ledger", "verify", "--dir", str(old_home), "--json"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
