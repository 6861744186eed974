"""The DP policy an audit checks modules against cannot be dropped or swapped by the exporter.

A federation requires DP (mean-embedding, epsilon <= 1); a dishonest aggregator registered a
module without any DP claim. The bundle is real (tests/audit_fixture.py: CA, signed tiny-cvae
package, SQLite store, `aggregator ledger export`), audited through the real `ffsecure audit
verify` command. The exporter's moves: drop `federation.json` (the auditor then pins the log
key with `--log-key`), or put back an older manifest the same CA signed with a looser policy;
the ledger's `federation.loaded` (recorded at the aggregator's start) names the one in force.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from ffsecure.federation import create_signed_manifest
from tests.audit_fixture import AuditLab, dp_parameters
from tests.dp_records import DP_SGD_CLAIM

torch.set_num_threads(1)

STRICT = {"required": True, "max_epsilon": 1.0, "delta": 1e-5, "mechanism": "mean-embedding"}


def invoke(*args):
    from click.testing import CliRunner

    from ffsecure.cli import cli

    r = CliRunner().invoke(cli, ["audit", "verify", *map(str, args), "--json"])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, json.loads(r.stdout)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-dp-policy")
    lab = AuditLab(root)
    loose = lab.fed.home.federation.read_bytes()  # CA-signed, DP not required
    strict = dataclasses.replace(lab.fed.manifest, dp_policy=dict(STRICT))
    lab.fed.home.federation.write_bytes(create_signed_manifest(strict, lab.fed.ca))
    non_dp = lab.register("st-mary", (0,), seed=1, dp=None)
    bundle = lab.export("strict")
    (root / "ca.pem").write_bytes(lab.fed.ca_pem)
    (root / "loose.json").write_bytes(loose)
    (root / "strict.json").write_bytes((bundle / "federation.json").read_bytes())
    lab.close()
    return root, bundle, non_dp


def _codes(out):
    return sorted({f["code"] for f in out["findings"] if f["severity"] == "error"})


def test_a_module_without_dp_under_a_dp_policy_fails_the_audit(world):
    root, bundle, non_dp = world
    code, out = invoke(bundle, "--ca", root / "ca.pem")
    assert code == 3 and out["verdict"] == "FAILED"
    assert _codes(out) == ["E_AUDIT_MODULE_POLICY"]
    (f,) = out["findings"]
    assert f["module_id"] == non_dp and "requires DP" in f["message"]


def test_dropping_federation_json_does_not_turn_the_dp_policy_check_off(world, tmp_path):
    root, bundle, non_dp = world
    t = tmp_path / "dropped"
    shutil.copytree(bundle, t)
    (t / "federation.json").unlink()
    (tmp_path / "log.vkey").write_text((bundle / "log.vkey").read_text())
    code, out = invoke(t, "--ca", root / "ca.pem", "--log-key", tmp_path / "log.vkey")
    assert code == 3 and out["verdict"] == "FAILED"
    # the strict manifest in force at the registration (federations/) still judges the module
    assert _codes(out) == ["E_AUDIT_MODULE_POLICY", "E_AUDIT_NO_FEDERATION"]
    (f,) = [f for f in out["findings"] if f["code"] == "E_AUDIT_NO_FEDERATION"]
    assert f["check"] == "dp-claims" and "--federation" in f["message"]
    assert {c["name"]: c["status"] for c in out["checks"]}["dp-claims"] == "failed"
    # the auditor who brings the manifest gets the policy checked (and the log key bound)
    code, out = invoke(t, "--ca", root / "ca.pem", "--federation", root / "strict.json")
    assert code == 3 and _codes(out) == ["E_AUDIT_MODULE_POLICY"]
    assert "log key bound by --federation" in out["checks"][0]["detail"]


def test_an_older_looser_manifest_swapped_in_is_named_against_the_auditor_s(world, tmp_path):
    root, bundle, non_dp = world
    t = tmp_path / "swapped"
    shutil.copytree(bundle, t)
    shutil.copyfile(root / "loose.json", t / "federation.json")
    code, out = invoke(t, "--ca", root / "ca.pem", "--federation", root / "strict.json")
    assert code == 3 and _codes(out) == ["E_AUDIT_FEDERATION", "E_AUDIT_MODULE_POLICY"]
    swap = [f for f in out["findings"] if f["code"] == "E_AUDIT_FEDERATION"]
    assert "swapped in another policy" in swap[0]["message"]
    # an auditor's manifest the CA never signed is a finding too, never used
    forged = json.loads((root / "strict.json").read_bytes())
    forged["signed"]["dp_policy"]["max_epsilon"] = 100.0
    (tmp_path / "forged.json").write_text(json.dumps(forged, sort_keys=True, separators=(",", ":")))
    code, out = invoke(t, "--ca", root / "ca.pem", "--federation", tmp_path / "forged.json")
    assert code == 3 and "E_AUDIT_FEDERATION" in _codes(out)


def test_an_older_looser_manifest_swapped_in_fails_even_without_the_auditor_s(world, tmp_path):
    """Under the loose manifest the module passes every policy check: only the ledger's record
    of the strict one, in force when it was registered, tells the swap (and the strict one's
    document, which the export kept, judges the module)."""
    root, bundle, non_dp = world
    t = tmp_path / "swapped"
    shutil.copytree(bundle, t)
    shutil.copyfile(root / "loose.json", t / "federation.json")
    code, out = invoke(t, "--ca", root / "ca.pem")
    assert code == 3 and out["verdict"] == "FAILED"
    assert _codes(out) == ["E_AUDIT_FEDERATION_STALE", "E_AUDIT_MODULE_POLICY"]
    (f,) = [f for f in out["findings"] if f["code"] == "E_AUDIT_FEDERATION_STALE"]
    assert (f["check"], f["entry"], f["entry_type"]) == ("trust-anchor", 0, "federation.loaded")
    assert "--federation" in f["message"] and "older or different" in f["message"]
    # the auditor who holds only the loose manifest is told it is not the one in force
    code, out = invoke(bundle, "--ca", root / "ca.pem", "--federation", root / "loose.json")
    assert code == 3 and "E_AUDIT_FEDERATION_STALE" in _codes(out)


def test_a_ledger_with_modules_and_no_recorded_manifest_fails_unless_the_auditor_brings_one(
    tmp_path,
):
    """An aggregator from before federation.loaded: any manifest the CA signed could be paired
    with its log, so the bundle's own cannot be trusted to be the one in force."""
    lab = AuditLab(tmp_path, records_federation=False)
    try:
        lab.register("st-mary", (0,), seed=1)
        bundle = lab.export("unrecorded")
        (tmp_path / "ca.pem").write_bytes(lab.fed.ca_pem)
        (tmp_path / "held.json").write_bytes(lab.fed.home.federation.read_bytes())
    finally:
        lab.close()
    code, out = invoke(bundle, "--ca", tmp_path / "ca.pem")
    assert code == 3 and _codes(out) == ["E_AUDIT_FEDERATION_UNRECORDED"]
    (f,) = out["findings"]
    assert f["check"] == "trust-anchor" and "--federation" in f["message"]
    assert "1 module(s) are registered" in f["message"]
    code, out = invoke(bundle, "--ca", tmp_path / "ca.pem", "--federation", tmp_path / "held.json")
    assert (code, out["verdict"], out["findings"]) == (0, "VERIFIED", [])


@pytest.mark.parametrize("required", [True, False], ids=["required", "optional"])
def test_a_site_whose_modules_together_exceed_the_budget_is_a_finding(tmp_path, required):
    """Each module meets the policy alone; the third release of st-mary's data does not.

    Not required but bounded (``max_epsilon`` and ``delta`` set), each DP claim stands in for
    the privacy policy's measured limits, so the claims compose alike; modules without DP,
    allowed there, compose with nothing. The lab writes to the store directly: an aggregator
    that registered the claims anyway."""
    lab = AuditLab(tmp_path)
    try:
        policy = {"required": required, "max_epsilon": 5.0, "delta": 1e-5}
        lab.fed.home.federation.write_bytes(
            create_signed_manifest(
                dataclasses.replace(lab.fed.manifest, dp_policy=policy), lab.fed.ca
            )
        )
        if not required:
            lab.register("st-mary", (1,), seed=5, dp=None)
            lab.register("st-john", (0,), seed=6, dp=None)
        # the claims compose to 3.70, 4.86, then 5.85 (RDP)
        mary = [lab.register("st-mary", (0,), seed=s, dp=DP_SGD_CLAIM) for s in (1, 2, 3)]
        lab.register("st-john", (1,), seed=4, dp=DP_SGD_CLAIM)
        bundle = lab.export("over-budget")
        (tmp_path / "ca.pem").write_bytes(lab.fed.ca_pem)
    finally:
        lab.close()
    code, out = invoke(bundle, "--ca", tmp_path / "ca.pem")
    assert code == 3 and _codes(out) == ["E_AUDIT_DP_BUDGET"]
    (f,) = out["findings"]
    assert (f["module_id"], f["check"]) == (mary[2], "dp-claims")
    assert "st-mary" in f["message"] and "5.8" in f["message"]


#: A signed policy that does not require DP but bounds what a DP claim may state.
BOUNDED = {"required": False, "max_epsilon": 1.0, "delta": 1e-5}
#: DP-SGD parameters a malicious site runs: an exact claim, far outside BOUNDED.
LOOSE = {
    "delta": 1e-3,
    "accountant": "prv",
    "noise_multiplier": 0.3,
    "sample_rate": 0.5,
    "steps": 100,
}


def _loose_claim() -> dict:
    from ffsecure import dp

    return {"epsilon": dp.compute_epsilon(**LOOSE), **LOOSE}


def test_a_claim_above_the_bounds_of_a_not_required_policy_fails_the_audit(tmp_path):
    """required = false leaves DP to the site, but the bounds the CA signed still bind any DP
    claim (an honest site refuses a target above them): above them is a finding."""
    claim = _loose_claim()
    assert claim["epsilon"] > 100
    lab = AuditLab(tmp_path)
    try:
        bounded = dataclasses.replace(lab.fed.manifest, dp_policy=dict(BOUNDED))
        lab.fed.home.federation.write_bytes(create_signed_manifest(bounded, lab.fed.ca))
        within = {"epsilon": 0.0, **LOOSE, "delta": 1e-5, "noise_multiplier": 40.0, "steps": 10}
        within["epsilon"] = _epsilon(within)
        assert within["epsilon"] <= 1.0
        lab.register("st-john", (1,), seed=2, dp=within)
        lab.register("st-john", (0,), seed=3, dp=None)  # DP is not required
        over = lab.register("st-mary", (0,), seed=1, dp=claim)
        bundle = lab.export("bounded")
        (tmp_path / "ca.pem").write_bytes(lab.fed.ca_pem)
    finally:
        lab.close()
    code, out = invoke(bundle, "--ca", tmp_path / "ca.pem")
    # alone, the claim also spends more than the bounded site budget (max_epsilon 1.0)
    assert code == 3 and _codes(out) == ["E_AUDIT_DP_BUDGET", "E_AUDIT_MODULE_POLICY"]
    assert {f["module_id"] for f in out["findings"]} == {over}
    (f,) = [f for f in out["findings"] if f["code"] == "E_AUDIT_MODULE_POLICY"]
    assert "epsilon" in f["message"] and "(0, 1.0]" in f["message"]


def _epsilon(claim: dict) -> float:
    from ffsecure import dp

    return dp.compute_epsilon(**{k: v for k, v in claim.items() if k != "epsilon"})


def test_the_aggregator_refuses_a_claim_above_the_bounds_of_a_not_required_policy(tmp_path):
    from aggregator.store import open_home_store
    from ffsecure.errors import FFSecureError
    from tests.federation_fixture import build_federation
    from tests.ops_fixture import peer, registrar
    from tests.security import forge

    fed = build_federation(tmp_path / "fed")
    forge.require_dp(fed, BOUNDED)
    store = open_home_store(fed.home)
    try:
        reg = registrar(fed, store)  # records the federation manifest in the log
        size = store.size()
        sealed, _ = forge.forge(fed, "st-mary", dp=_loose_claim(), seed=1)
        with pytest.raises(FFSecureError) as info:
            reg.register(sealed, peer(fed, "st-mary"))
        assert info.value.code == "E_POLICY_DP" and "max_epsilon" not in info.value.message
        assert "outside (0, 1.0]" in info.value.message and store.size() == size
        delta_over = {**LOOSE, "noise_multiplier": 40.0, "steps": 10}
        sealed, _ = forge.forge(
            fed, "st-mary", dp={"epsilon": _epsilon(delta_over), **delta_over}, seed=2
        )
        with pytest.raises(FFSecureError) as info:
            reg.register(sealed, peer(fed, "st-mary"))
        assert info.value.code == "E_POLICY_DP" and "delta 0.001" in info.value.message
        assert store.size() == size
    finally:
        store.close()


#: A signed policy that pins DP per patient (dp_policy.privacy_unit).
PER_PATIENT = {"required": True, "max_epsilon": 4.0, "delta": 1e-5, "privacy_unit": "patient"}
#: An honest DP-SGD claim within PER_PATIENT (RDP: it spends 0.96, less than it claims).
CLAIM = {"epsilon": 3.9, **dp_parameters(1.1)}


def test_a_claim_per_image_under_a_patient_pin_fails_the_audit(tmp_path):
    """The aggregator let through modules whose DP protects one image, not one patient: one
    that says so, and one written before records named their unit (per image)."""
    lab = AuditLab(tmp_path, sites=("st-mary", "st-john", "st-anne"))
    try:
        pinned = dataclasses.replace(lab.fed.manifest, dp_policy=dict(PER_PATIENT))
        lab.fed.home.federation.write_bytes(create_signed_manifest(pinned, lab.fed.ca))
        lab.register("st-mary", (0,), seed=1, dp={**CLAIM, "privacy_unit": "patient"})
        per_image = lab.register("st-john", (1,), seed=2, dp={**CLAIM, "privacy_unit": "image"})
        unnamed = lab.register("st-anne", (0,), seed=3, dp=dict(CLAIM))
        bundle = lab.export("per-image")
        (tmp_path / "ca.pem").write_bytes(lab.fed.ca_pem)
    finally:
        lab.close()
    code, out = invoke(bundle, "--ca", tmp_path / "ca.pem")
    assert code == 3 and _codes(out) == ["E_AUDIT_MODULE_POLICY"]
    assert sorted(f["module_id"] for f in out["findings"]) == sorted([per_image, unnamed])
    for f in out["findings"]:
        assert "per 'image'" in f["message"] and "per 'patient'" in f["message"]


def test_the_aggregator_refuses_a_claim_per_image_under_a_patient_pin(tmp_path):
    from aggregator.store import open_home_store
    from ffsecure.errors import FFSecureError
    from tests.federation_fixture import build_federation
    from tests.ops_fixture import peer, registrar
    from tests.security import forge

    fed = build_federation(tmp_path / "fed")
    forge.require_dp(fed, PER_PATIENT)
    store = open_home_store(fed.home)
    try:
        reg = registrar(fed, store)
        size = store.size()
        sealed, _ = forge.forge(fed, "st-mary", dp={**CLAIM, "privacy_unit": "image"}, seed=1)
        with pytest.raises(FFSecureError) as info:
            reg.register(sealed, peer(fed, "st-mary"))
        assert info.value.code == "E_POLICY_DP" and "per 'patient'" in info.value.message
        assert store.size() == size
        sealed, _ = forge.forge(fed, "st-mary", dp={**CLAIM, "privacy_unit": "patient"}, seed=2)
        reg.register(sealed, peer(fed, "st-mary"))
        assert store.size() > size
    finally:
        store.close()
