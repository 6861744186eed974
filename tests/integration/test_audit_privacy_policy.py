"""The audit judges every module's signed privacy report against the federation's privacy policy.

The policy requires a report and limits the membership AUROC to 0.5. A DP claim covers a
threshold on a figure the report does not state only where the federation's ``dp_policy``
bounds every DP claim, with ``max_epsilon`` and ``delta``, required or not
(``ffsecure.privacy.report.dp_covers``), read from the CA-signed federation manifest the
audit verified. Two real bundles (tests/audit_fixture.py: CA, signed tiny-cvae
packages, SQLite store, the aggregator's export), audited through the real `ffsecure audit
verify` command and rendered by the HTML report:

- DP required (max_epsilon 10^4): a dishonest aggregator registered, besides two compliant DP
  modules whose reports state no measured figure (epsilon 3.9, and epsilon 10^4: the federation
  chose that bound), a DP module that signed a breaking figure the old way: a finding.
- DP not required, no bound on DP claims: a DP module with epsilon 10^4 and no figures (it
  would void every empirical limit if its claim covered them) and a module without a DP claim
  and without figures are findings; a DP module that signed compliant figures passes.
- DP not required, DP claims bounded (max_epsilon 10^4, delta): a site's own DP module without
  figures (what a DP module signs) passes, a module without a DP claim and without figures is
  a finding.
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
HUGE = {**CLAIM, "epsilon": 1e4}  # honest, and protects nobody
NO_FIGURES = {"v": 1, "generated": 1000}
DP_REQUIRED = {"required": True, "max_epsilon": 1e4, "delta": 1e-5}
DP_NOT_REQUIRED = {"required": False, "max_epsilon": None, "delta": None}
DP_BOUNDED = {"required": False, "max_epsilon": 1e4, "delta": 1e-5}


def _lab(root, dp_policy: dict) -> AuditLab:
    lab = AuditLab(root)
    manifest = dataclasses.replace(
        lab.fed.manifest, privacy_policy=dict(POLICY), dp_policy=dict(dp_policy)
    )
    lab.fed.home.federation.write_bytes(create_signed_manifest(manifest, lab.fed.ca))
    lab.fed.manifest = manifest
    return lab


def _export(lab: AuditLab, root):
    bundle = lab.export("bundle")
    (root / "ca.pem").write_bytes(lab.fed.ca_pem)
    lab.close()
    return bundle


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """DP required: its claims cover what their reports do not state."""
    root = tmp_path_factory.mktemp("audit-privacy-policy")
    lab = _lab(root, DP_REQUIRED)
    ids = {
        "covered": lab.register("st-mary", (0,), seed=1, dp=CLAIM, privacy_report=NO_FIGURES),
        "huge": lab.register("st-john", (2,), seed=3, dp=HUGE, privacy_report=NO_FIGURES),
        "old_format": lab.register(
            "st-mary",
            (1,),
            seed=2,
            dp=CLAIM,
            privacy_report={
                "v": 1,
                "members": 300,
                "non_members": 300,
                "membership_auroc": 0.61,
            },
        ),
    }
    return root, _export(lab, root), ids


@pytest.fixture(scope="module")
def unbounded(tmp_path_factory):
    """DP not required: a DP claim covers nothing."""
    root = tmp_path_factory.mktemp("audit-privacy-policy-unbounded")
    lab = _lab(root, DP_NOT_REQUIRED)
    ids = {
        "huge": lab.register("st-mary", (0,), seed=1, dp=HUGE, privacy_report=NO_FIGURES),
        "stated": lab.register(
            "st-mary",
            (1,),
            seed=2,
            dp=CLAIM,
            privacy_report={
                "v": 1,
                "members": 300,
                "non_members": 300,
                "membership_auroc": 0.5,
            },
        ),
        "no_claim": lab.register("st-john", (2,), seed=3, dp=None, privacy_report=NO_FIGURES),
    }
    return root, _export(lab, root), ids


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    """DP not required, but every DP claim bounded: a claim covers what its report omits."""
    root = tmp_path_factory.mktemp("audit-privacy-policy-bounded")
    lab = _lab(root, DP_BOUNDED)
    ids = {
        "own_dp": lab.register("st-mary", (0,), seed=1, dp=CLAIM, privacy_report=NO_FIGURES),
        "no_claim": lab.register("st-john", (2,), seed=3, dp=None, privacy_report=NO_FIGURES),
    }
    return root, _export(lab, root), ids


def _verify(root, bundle) -> dict:
    args = ["audit", "verify", str(bundle), "--ca", str(root / "ca.pem"), "--json"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 3, r.output
    out = json.loads(r.stdout)
    assert out["verdict"] == "FAILED"
    assert {f["code"] for f in out["findings"]} == {"E_AUDIT_MODULE_POLICY"}
    return {f["module_id"]: f["message"] for f in out["findings"]}


def test_the_audit_refuses_figures_a_dp_claim_does_not_cover_and_reports_without_them(world):
    root, bundle, ids = world
    policy = _verify(root, bundle)
    assert set(policy) == {ids["old_format"]}  # both covered modules pass, 10^4 included
    assert "[E_PRIVACY_POLICY] membership AUROC 0.61 is above" in policy[ids["old_format"]]


def test_without_required_dp_a_dp_claim_covers_no_missing_figure(unbounded):
    root, bundle, ids = unbounded
    policy = _verify(root, bundle)
    assert set(policy) == {ids["huge"], ids["no_claim"]}  # the stated module passes
    huge = policy[ids["huge"]]
    assert "[E_PRIVACY_POLICY]" in huge and "does not state it" in huge
    assert "the federation bounds no DP claim" in huge and "cannot stand in" in huge
    assert "does not state it" in policy[ids["no_claim"]]
    assert "bounds no DP claim" not in policy[ids["no_claim"]]  # no claim to stand in
    page = render_html(audit_bundle(load_bundle(bundle), ca_pem=(root / "ca.pem").read_bytes()))
    assert "covered by the DP claim" not in page


def test_the_audit_report_says_which_thresholds_the_dp_claim_covers(world):
    root, bundle, ids = world
    result = audit_bundle(load_bundle(bundle), ca_pem=(root / "ca.pem").read_bytes())
    page = render_html(result)
    for covered in ("covered", "huge"):
        row = next(part for part in page.split("<tr>") if ids[covered][:12] in part)
        assert "not released, covered by the DP claim: membership AUROC" in row
    row = next(part for part in page.split("<tr>") if ids["old_format"][:12] in part)
    assert "covered by the DP claim" not in row


def test_where_the_federation_bounds_dp_claims_a_dp_module_needs_no_figure(bounded):
    """A site that chose DP where the federation does not require it signs no measured
    figure; a federation that bounds every claim lets the claim stand in for them."""
    root, bundle, ids = bounded
    policy = _verify(root, bundle)
    assert set(policy) == {ids["no_claim"]}  # the DP module passes
    assert "does not state it" in policy[ids["no_claim"]]
    page = render_html(audit_bundle(load_bundle(bundle), ca_pem=(root / "ca.pem").read_bytes()))
    row = next(part for part in page.split("<tr>") if ids["own_dp"][:12] in part)
    assert "not released, covered by the DP claim: membership AUROC" in row
