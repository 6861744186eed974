"""The audit judges every module's signed privacy report against the federation's privacy policy.

The policy requires a report and limits the membership AUROC to 0.5. A dishonest aggregator
registered, besides a compliant DP module whose report states no measured figure (its DP claim
covers them), a DP module that signed a breaking figure the old way and a module without a DP
claim whose report states no figure: both are findings of a FAILED audit. The bundle is real
(tests/audit_fixture.py: CA, signed tiny-cvae packages, SQLite store, the aggregator's export),
audited through the real `ffsecure audit verify` command and rendered by the HTML report.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from ffsecure.audit import audit_bundle, load_bundle, render_html
from ffsecure.cli import cli
from ffsecure.federation import create_signed_manifest
from tests.audit_fixture import AuditLab, dp_parameters

torch.set_num_threads(1)

POLICY = {"required": True, "max_membership_auroc": 0.5}
CLAIM = {"epsilon": 3.9, **dp_parameters(1.1)}  # RDP spends 0.96: the claim re-accounts


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-privacy-policy")
    lab = AuditLab(root)
    policy_manifest = dataclasses.replace(lab.fed.manifest, privacy_policy=dict(POLICY))
    lab.fed.home.federation.write_bytes(create_signed_manifest(policy_manifest, lab.fed.ca))
    ids = {
        "covered": lab.register(
            "st-mary", (0,), seed=1, dp=CLAIM, privacy_report={"v": 1, "generated": 1000}
        ),
        "old_format": lab.register(
            "st-mary",
            (1,),
            seed=2,
            dp=CLAIM,
            privacy_report={"v": 1, "members": 300, "membership_auroc": 0.61},
        ),
        "no_claim": lab.register(
            "st-john", (2,), seed=3, dp=None, privacy_report={"v": 1, "generated": 1000}
        ),
    }
    bundle = lab.export("bundle")
    (root / "ca.pem").write_bytes(lab.fed.ca_pem)
    lab.close()
    return root, bundle, ids


def test_the_audit_refuses_figures_a_dp_claim_does_not_cover_and_reports_without_them(world):
    root, bundle, ids = world
    args = ["audit", "verify", str(bundle), "--ca", str(root / "ca.pem"), "--json"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 3, r.output
    out = json.loads(r.stdout)
    assert out["verdict"] == "FAILED"
    policy = {f["module_id"]: f["message"] for f in out["findings"]}
    assert {f["code"] for f in out["findings"]} == {"E_AUDIT_MODULE_POLICY"}
    assert set(policy) == {ids["old_format"], ids["no_claim"]}  # the covered module passes
    assert "[E_PRIVACY_POLICY] membership AUROC 0.61 is above" in policy[ids["old_format"]]
    assert "does not state it" in policy[ids["no_claim"]]


def test_the_audit_report_says_which_thresholds_the_dp_claim_covers(world):
    root, bundle, ids = world
    result = audit_bundle(load_bundle(bundle), ca_pem=(root / "ca.pem").read_bytes())
    page = render_html(result)
    row = next(part for part in page.split("<tr>") if ids["covered"][:12] in part)
    assert "not released, covered by the DP claim: membership AUROC" in row
    for other in ("old_format", "no_claim"):
        row = next(part for part in page.split("<tr>") if ids[other][:12] in part)
        assert "covered by the DP claim" not in row
