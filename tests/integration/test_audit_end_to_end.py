"""The whole path: sites upload over real mTLS gRPC, a site deletes its module over RPC, the
operator exports with `aggregator ledger export`, and the auditor verifies with `ffsecure audit
verify`, using a site's receipt checkpoint as a trusted checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import cli_env
from tests.federation_fixture import build_federation

torch.set_num_threads(1)


@pytest.mark.slow  # a server and two fresh interpreters that import torch: ~30 s on the shared CPU
def test_uploads_deletion_export_and_audit(tmp_path):
    fed = build_federation(tmp_path / "fed")
    with (
        fed.serve() as srv,
        fed.client("st-mary", srv.address) as mary,
        fed.client("st-john", srv.address) as john,
    ):
        sealed, pkg = fed.make_package("st-mary", classes=[0, 1])
        kept = mary.upload(sealed, module_id=pkg.manifest.module_id, site_id="st-mary")
        sealed, pkg2 = fed.make_package("st-john", classes=[2, 3])
        john.upload(sealed, module_id=pkg2.manifest.module_id, site_id="st-john")
        sealed, pkg3 = fed.make_package("st-mary", classes=[3])
        gone = mary.upload(sealed, module_id=pkg3.manifest.module_id, site_id="st-mary")
        mary.request_deletion([gone.module_id], "consent withdrawn")
    receipt_cp = tmp_path / "st-mary-receipt.json"  # the receipt as the site keeps it
    receipt_cp.write_text(json.dumps(kept.to_dict()))
    (tmp_path / "ca.pem").write_bytes(fed.ca_pem)
    bundle = tmp_path / "bundle"
    env = cli_env()
    p = subprocess.run(
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
    assert p.returncode == 0, p.stderr
    assert (bundle / "federation.json").read_bytes() == fed.signed_manifest
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "ffsecure",
            "audit",
            "verify",
            str(bundle),
            "--ca",
            str(tmp_path / "ca.pem"),
            "--trusted-checkpoint",
            str(receipt_cp),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert out["verdict"] == "VERIFIED" and out["findings"] == []
    checks = {c["name"]: c for c in out["checks"]}
    # no DP module to re-account, no witness key pinned by this auditor
    assert {n: c["status"] for n, c in checks.items() if c["status"] != "ok"} == {
        "dp-claims": "skipped",
        "witnesses": "skipped",
    }
    assert checks["module-signatures"]["detail"] == "3 of 3 verify"
    assert checks["deletions"]["detail"] == "1 request(s), 1 deletion(s)"
    assert checks["trusted-checkpoints"]["detail"].startswith("1 trusted checkpoint")
