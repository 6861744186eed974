"""Each module is audited against the federation manifest in force when it was registered.

The red team's scenario, with real components (tests/audit_fixture.py: CA, signed tiny-cvae
packages, SQLite store, the bundle written as `aggregator ledger export` writes it): the
federation requires DP at epsilon <= 4; a dishonest aggregator writes a module without any DP
claim into its store; later the CA signs a newer, looser manifest (DP not required), which the
aggregator puts in force at a restart. Judged by the newest manifest alone the module passes;
the log records which manifest was in force at its registration, and the bundle's
``federations/`` carries that manifest's CA-signed document.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from ffsecure import pki
from ffsecure.audit import audit_bundle, load_bundle
from ffsecure.audit.bundle import MAX_FEDERATION_DOCUMENTS, BundleError
from ffsecure.federation import create_signed_manifest, verify_federation_json
from tests.audit_fixture import AuditLab, dp_parameters

torch.set_num_threads(1)

STRICT = {"required": True, "max_epsilon": 4.0, "delta": 1e-5}
LOOSE = {"required": False, "max_epsilon": None, "delta": None}
CLAIM = {"epsilon": 3.9, **dp_parameters(1.1)}  # meets STRICT and re-accounts
HISTORY = "E_AUDIT_FEDERATION_HISTORY"


def _install(lab: AuditLab, manifest) -> str:
    """The CA signs ``manifest`` and the operator installs it; its SHA-256."""
    data = create_signed_manifest(manifest, lab.fed.ca)
    lab.fed.home.federation.write_bytes(data)
    lab.fed.manifest = manifest
    return verify_federation_json(data, lab.fed.ca.cert).sha256


def _later(manifest, hours: int):
    created = pki.parse_rfc3339(manifest.created_at) + dt.timedelta(hours=hours)
    return pki.rfc3339(created)


def _errors(result) -> list[str]:
    return sorted({f.code for f in result.errors})


def _under(result) -> dict:
    """Module id -> the one manifest that bound its registration, where it is not the newest."""
    assert result.anchor is not None
    out = {}
    for module_id, bound in result.anchor.registered_under.items():
        (out[module_id],) = bound
    return out


def _one(result, code):
    found = [f for f in result.findings if f.code == code]
    assert len(found) == 1, [f.to_dict() for f in result.findings]
    return found[0]


@pytest.fixture(scope="module")
def life(tmp_path_factory):
    """Strict manifest -> a DP module and a non-DP one (the dishonest write) -> a looser,
    newer manifest -> a non-DP module (allowed now); the bundle as exported, and as an
    aggregator that kept no manifests would export it."""
    root = tmp_path_factory.mktemp("federation-history")
    lab = AuditLab(root)
    base = lab.fed.manifest
    strict = dataclasses.replace(base, dp_policy=dict(STRICT), created_at=_later(base, 1))
    out: dict[str, Any] = {"strict_sha": _install(lab, strict)}
    out["strict_index"] = lab.start()
    out["dp_module"] = lab.register("st-mary", (0,), seed=1, dp=dict(CLAIM))
    out["cheat"] = lab.register(
        "st-john", (1,), seed=2, dp=None
    )  # no DP: the strict one outlaws it
    loose = dataclasses.replace(strict, dp_policy=dict(LOOSE), created_at=_later(base, 2))
    out["loose_sha"] = _install(lab, loose)
    out["loose_index"] = lab.start()
    out["late"] = lab.register("st-john", (1,), seed=3, dp=None)
    out["bundle"] = lab.export("cheat")
    out["old_bundle"] = lab.export("cheat-no-history", history=False)
    out["home"] = lab.fed.home
    out["ca_pem"] = lab.fed.ca_pem
    out["fed"] = lab.fed
    lab.close()
    return out


def test_a_module_that_broke_the_manifest_in_force_at_its_registration_fails_the_audit(life):
    result = audit_bundle(load_bundle(life["bundle"]), ca_pem=life["ca_pem"])
    assert result.verdict == "FAILED" and _errors(result) == ["E_AUDIT_MODULE_POLICY"]
    f = _one(result, "E_AUDIT_MODULE_POLICY")
    assert f.module_id == life["cheat"] and f.check == "module-signatures"
    assert "bound its registration" in f.message and "requires DP" in f.message
    # the manifest in force at its registration is named: its entry and its digest
    assert f"ledger entry {life['strict_index']}" in f.message
    assert life["strict_sha"][:12] in f.message
    # the module registered under the looser manifest, without DP, is no finding
    assert all(g.module_id != life["late"] for g in result.findings)
    assert _under(result)[life["cheat"]].index == life["strict_index"]
    assert life["late"] not in _under(result)  # under the manifest in force


def test_an_honest_federation_s_bundle_verifies(tmp_path):
    lab = AuditLab(tmp_path)
    try:
        base = lab.fed.manifest
        strict = dataclasses.replace(base, dp_policy=dict(STRICT), created_at=_later(base, 1))
        strict_sha = _install(lab, strict)
        dp_module = lab.register("st-mary", (0,), seed=1, dp=dict(CLAIM))
        loose = dataclasses.replace(strict, dp_policy=dict(LOOSE))
        _install(lab, dataclasses.replace(loose, created_at=_later(base, 2)))
        lab.register("st-john", (1,), seed=2, dp=None)
        bundle = lab.export()
    finally:
        lab.close()
    result = audit_bundle(load_bundle(bundle), ca_pem=lab.fed.ca_pem)
    assert (result.verdict, result.findings) == ("VERIFIED", [])
    assert _under(result)[dp_module].signed.sha256 == strict_sha


def test_a_missing_history_document_is_a_finding(life, tmp_path):
    dropped = tmp_path / "dropped"
    shutil.copytree(life["bundle"], dropped)
    (dropped / "federations" / f"{life['strict_sha']}.json").unlink()
    result = audit_bundle(load_bundle(dropped), ca_pem=life["ca_pem"])
    assert result.verdict == "FAILED" and _errors(result) == [HISTORY]
    f = _one(result, HISTORY)
    assert (f.check, f.entry, f.entry_type) == (
        "trust-anchor",
        life["strict_index"],
        "federation.loaded",
    )
    assert life["cheat"] in f.message and life["dp_module"] in f.message
    assert "holds no document" in f.message
    # the bundle of an aggregator that kept no history fails the same way
    old = audit_bundle(load_bundle(life["old_bundle"]), ca_pem=life["ca_pem"])
    assert _errors(old) == [HISTORY]


def test_a_swapped_or_forged_history_document_is_a_finding(life, tmp_path):
    name = f"{life['strict_sha']}.json"
    swapped = tmp_path / "swapped"
    shutil.copytree(life["bundle"], swapped)
    shutil.copyfile(swapped / "federation.json", swapped / "federations" / name)  # the loose one
    result = audit_bundle(load_bundle(swapped), ca_pem=life["ca_pem"])
    assert _errors(result) == [HISTORY]
    assert "hashes to" in _one(result, HISTORY).message
    forged = tmp_path / "forged"
    shutil.copytree(life["bundle"], forged)
    path = forged / "federations" / name
    path.write_bytes(path.read_bytes().replace(b'"required":true', b'"required":false'))
    result = audit_bundle(load_bundle(forged), ca_pem=life["ca_pem"])
    assert _errors(result) == [HISTORY]
    assert "does not verify against the CA" in _one(result, HISTORY).message


def test_a_single_manifest_federation_exported_without_history_verifies(tmp_path):
    """An older aggregator's export: federation.json is the one manifest ever recorded."""
    lab = AuditLab(tmp_path)
    try:
        lab.register("st-mary", (0, 1), seed=1)
        lab.register("st-john", (1, 2), seed=2)
        bundle = lab.export(history=False)
    finally:
        lab.close()
    assert not (bundle / "federations").exists()
    result = audit_bundle(load_bundle(bundle), ca_pem=lab.fed.ca_pem)
    assert (result.verdict, result.findings) == ("VERIFIED", [])


def test_the_export_writes_every_recorded_manifest_s_document(life):
    fed, bundle = life["fed"], Path(life["bundle"])
    names = sorted(p.name for p in (bundle / "federations").iterdir())
    assert names == sorted(f"{life[k]}.json" for k in ("strict_sha", "loose_sha"))
    for name in names:  # the bytes the aggregator kept, which the CA signed
        kept = life["home"].federations / name
        assert (bundle / "federations" / name).read_bytes() == kept.read_bytes()
        assert verify_federation_json(kept.read_bytes(), fed.ca.cert).sha256 + ".json" == name
        assert kept.stat().st_mode & 0o777 == 0o600
    assert life["home"].federations.stat().st_mode & 0o777 == 0o700


def test_misnamed_or_unneeded_bad_history_files_are_warnings(life, tmp_path):
    t = tmp_path / "stray"
    shutil.copytree(life["bundle"], t)
    (t / "federations" / "notes.txt").write_text("hello")
    (t / "federations" / f"{'0' * 64}.json").write_bytes(b"{}")
    result = audit_bundle(load_bundle(t), ca_pem=life["ca_pem"])
    assert _errors(result) == ["E_AUDIT_MODULE_POLICY"]  # as before: the cheat
    warned = [f.message for f in result.warnings if f.code == HISTORY]
    assert len(warned) == 2 and any("notes.txt" in m for m in warned)


def test_the_loader_bounds_the_number_of_history_documents(life, tmp_path):
    t = tmp_path / "many"
    shutil.copytree(life["bundle"], t)
    for n in range(MAX_FEDERATION_DOCUMENTS + 1):
        (t / "federations" / f"{n:064x}.json").write_bytes(b"{}")
    with pytest.raises(BundleError, match="federation manifests"):
        load_bundle(t)


@pytest.mark.parametrize(
    "tight, newer",
    [
        pytest.param(
            {**STRICT, "max_epsilon": 1.0}, {**STRICT, "max_epsilon": 100.0}, id="required"
        ),
        # not required but bounded: each claim covered the privacy limits, so they composed
        pytest.param({**STRICT, "max_epsilon": 1.0, "required": False}, LOOSE, id="optional"),
    ],
)
def test_a_site_over_the_budget_of_the_manifest_in_force_at_registration_fails(
    tmp_path, tight, newer
):
    """Two modules each within epsilon 1 but over it together (RDP composes them to 1.06),
    registered under a tight manifest; a newer manifest raises the budget (or drops it)."""
    lab = AuditLab(tmp_path)
    try:
        base = lab.fed.manifest
        strict = dataclasses.replace(base, dp_policy=tight, created_at=_later(base, 1))
        _install(lab, strict)
        strict_index = lab.start()
        claim = {**CLAIM, "epsilon": 0.97}  # its parameters spend 0.956
        lab.register("st-mary", (0,), seed=1, dp=dict(claim))
        second = lab.register("st-mary", (1,), seed=2, dp=dict(claim))
        _install(lab, dataclasses.replace(strict, dp_policy=newer, created_at=_later(base, 2)))
        lab.start()
        bundle = lab.export()
    finally:
        lab.close()
    result = audit_bundle(load_bundle(bundle), ca_pem=lab.fed.ca_pem)
    assert _errors(result) == ["E_AUDIT_DP_BUDGET"]
    f = _one(result, "E_AUDIT_DP_BUDGET")
    assert f.module_id == second and "bound its registration" in f.message
    assert f"ledger entry {strict_index}" in f.message


def _loose_then_strict(lab: AuditLab):
    """The lab's loose manifest recorded, then a strict one an hour newer installed and
    recorded: (loose, its signed bytes, strict, strict's SHA-256)."""
    base = lab.fed.manifest
    base_bytes = lab.fed.home.federation.read_bytes()
    lab.start()
    strict = dataclasses.replace(base, dp_policy=dict(STRICT), created_at=_later(base, 1))
    strict_sha = _install(lab, strict)
    lab.start()
    return base, base_bytes, strict, strict_sha


def test_a_module_registered_after_a_rollback_is_held_to_the_newer_manifest(tmp_path):
    """Loose L, then strict S (newer), then L put back (a restart with the old file, or an
    entry the operator appends), a module without DP, then a newer loose N in force: the
    module broke S, the newest manifest the CA had signed when it was registered; the
    rollback alone is only a warning, so the module must still fail."""
    lab = AuditLab(tmp_path)
    try:
        base, base_bytes, strict, strict_sha = _loose_then_strict(lab)
        lab.register("st-mary", (0,), seed=1, dp=dict(CLAIM))
        lab.fed.home.federation.write_bytes(base_bytes)
        lab.fed.manifest = base
        lab.start()
        cheat = lab.register("st-john", (1,), seed=2, dp=None)
        newer = dataclasses.replace(strict, dp_policy=dict(LOOSE), created_at=_later(base, 2))
        _install(lab, newer)
        lab.start()
        bundle = lab.export("rollback")
    finally:
        lab.close()
    result = audit_bundle(load_bundle(bundle), ca_pem=lab.fed.ca_pem)
    assert result.verdict == "FAILED" and _errors(result) == ["E_AUDIT_MODULE_POLICY"]
    f = _one(result, "E_AUDIT_MODULE_POLICY")
    assert f.module_id == cheat and "requires DP" in f.message and strict_sha[:12] in f.message
    assert "E_AUDIT_FEDERATION_ROLLBACK" in {x.code for x in result.warnings}


def test_a_record_that_misdates_a_manifest_fails_the_history_check(tmp_path):
    """The operator appends (log key) a record of the old loose manifest dated as the strict
    one, then registers a module without DP under it: the record is not that manifest."""
    from aggregator.federation_ledger import keep_federation
    from ffsecure.records.entries import make_entry

    lab = AuditLab(tmp_path)
    try:
        base, base_bytes, strict, _ = _loose_then_strict(lab)
        old = verify_federation_json(base_bytes, lab.fed.ca.cert)
        keep_federation(lab.fed.home, base_bytes, old)
        facts = {**old.facts(), "created_at": strict.created_at}
        misdated, _ = lab.store.append(make_entry("federation.loaded", "aggregator", facts))
        lab.start = lambda: None  # register() would record the home's manifest again
        cheat = lab.register("st-john", (1,), seed=2, dp=None)
        bundle = lab.export("misdated")
    finally:
        lab.close()
    result = audit_bundle(load_bundle(bundle), ca_pem=lab.fed.ca_pem)
    assert result.verdict == "FAILED" and HISTORY in _errors(result)
    f = _one(result, HISTORY)
    assert (
        f.entry == misdated and cheat in f.message and "the CA signed that manifest as" in f.message
    )
