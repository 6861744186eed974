"""A deleted module cannot hide a policy breach behind exporter-controlled signature bytes.

The log binds a module's manifest (``manifest_sha256``) and certificate
(``cert_fingerprint``); the exported record's ``signature`` and ``cert_chain_pem`` are
the exporter's, and ``package_b64`` is only their encoding. The aggregator keeps a
deleted module's signed package, so an honest deleted module verifies; the one excused
failure is a certificate its entry records that the CA revoked after registration.

Bundles are real (tests/audit_fixture.py: CA, signed tiny-cvae packages, SQLite store,
the aggregator's export). A federation requires DP (mean-embedding pinned, epsilon <= 4,
delta <= 1e-5); a dishonest aggregator registered three modules that break it (no DP
claim, a delta above the policy, DP-SGD instead of the pinned mechanism), trained and
published a classifier from them, then deleted them. Its moves: flip a bit of each
deleted module's signature, or swap in a twin certificate of the same site key that the
CA revoked (the audit used to excuse both as warnings and skip the policy checks).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import pytest
import torch

from ffsecure import canonical, pki
from ffsecure.audit import audit_bundle, load_bundle
from ffsecure.federation import create_signed_manifest
from ffsecure.records.entries import make_entry
from tests.audit_fixture import AuditLab, dp_parameters
from tests.dp_records import mean_embedding_record

torch.set_num_threads(1)

SITES = ("st-mary", "st-john", "st-anne")
STRICT = {"required": True, "max_epsilon": 4.0, "delta": 1e-5, "mechanism": "mean-embedding"}
#: Within the policy: a mean-embedding release at epsilon 4 (PRV re-accounts it).
COMPLIANT = mean_embedding_record(epsilon=3.999, noise_multiplier=1.083984375, n_features=2000)
BREACHES = {
    "no_dp": ("st-mary", None, "has no DP claim"),
    "delta": ("st-anne", {"epsilon": 3.9, **dp_parameters(1.1), "delta": 1e-3}, "delta 0.001"),
    "mechanism": ("st-john", {"epsilon": 3.9, **dp_parameters(1.1)}, "pins 'mean-embedding'"),
}


def _with_policy(lab: AuditLab, **policies) -> AuditLab:
    manifest = dataclasses.replace(lab.fed.manifest, **policies)
    lab.fed.home.federation.write_bytes(create_signed_manifest(manifest, lab.fed.ca))
    lab.fed.manifest = manifest
    return lab


def _revoke(lab: AuditLab, cert, reason: str) -> None:
    """What `ffsecure pki revoke` and the operator do: a new CRL and a cert.revoked entry."""
    pki.write_public_file(lab.fed.home.crl, lab.fed.ca.revoke(cert, reason))
    lab.store.append(
        make_entry(
            "cert.revoked",
            "operator:ca",
            {"serial": pki.serial_hex(cert.serial_number), "reason": reason},
        )
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-deleted-modules")
    lab = _with_policy(AuditLab(root, sites=SITES), dp_policy=dict(STRICT))
    try:
        ids = {"compliant": lab.register("st-mary", (3,), seed=9, dp=COMPLIANT)}
        lab.delete(ids["compliant"], site="st-mary")
        honest = lab.export("honest")  # one deleted module, within the policy
        for name, (site, dp, _why) in BREACHES.items():
            ids[name] = lab.register(site, (0, 1), seed=len(ids), dp=dp)
        breaches = [ids[name] for name in BREACHES]
        lab.dataset("ds-1", breaches)
        lab.classifier("clf-1", "ds-1", breaches)
        lab.publish("clf-1")
        for name in BREACHES:
            lab.delete(ids[name], site=BREACHES[name][0])
        lab.retire("dataset", "ds-1", ids["no_dp"])
        lab.retire("classifier", "clf-1", ids["no_dp"])
        # st-john's key leaks after registration (excused only where witnesses date it)
        _revoke(lab, lab.fed.sites["st-john"].cert, "key_compromise")
        # the CA re-issued st-mary's key (a twin certificate), then revoked the twin
        twin, _ = lab.fed.ca.issue_site("st-mary", lab.fed.sites["st-mary"].key.public_key())
        _revoke(lab, twin, "key_compromise")
        dishonest = lab.export("dishonest")
    finally:
        lab.close()
    return lab, ids, honest, dishonest, pki.cert_pem(twin).decode("ascii")


def _audit(lab: AuditLab, bundle: Path):
    return audit_bundle(load_bundle(bundle), ca_pem=lab.fed.ca_pem)


def _rewrite_package(bundle: Path, module_id: str, change) -> None:
    """Edit a record's package as an exporter can, and re-encode ``package_b64`` to match."""
    path = bundle / "modules" / f"{module_id}.json"
    record = canonical.loads_canonical(path.read_bytes().rstrip(b"\n"))
    change(record["package"])
    record["package_b64"] = base64.b64encode(canonical.dumps(record["package"])).decode()
    path.write_bytes(canonical.dumps(record) + b"\n")


def _flip_signature(package: dict) -> None:
    signature = bytearray(base64.b64decode(package["signature"]))
    signature[-1] ^= 1
    package["signature"] = base64.b64encode(bytes(signature)).decode()


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "tampered"))


def _of(result, module_id: str) -> list[tuple[str, str]]:
    return sorted((f.code, f.severity) for f in result.findings if f.module_id == module_id)


def _policy_message(result, module_id: str) -> str:
    (f,) = [
        f for f in result.findings if f.module_id == module_id and f.code == "E_AUDIT_MODULE_POLICY"
    ]
    return f.message


def test_an_honest_deleted_module_keeps_its_signed_package_and_verifies(world):
    lab, ids, honest, _dishonest, _twin = world
    result = _audit(lab, honest)
    assert result.verdict == "VERIFIED" and result.findings == []
    module = result.modules[ids["compliant"]]
    assert module.signature_ok and module.problem is None and module.dp_recomputed is not None


def test_the_honest_export_of_the_deleted_breaches_fails_on_each_policy(world):
    lab, ids, _honest, dishonest, _twin = world
    result = _audit(lab, dishonest)
    assert result.verdict == "FAILED"
    for name, (_site, _dp, why) in BREACHES.items():
        assert ("E_AUDIT_MODULE_POLICY", "error") in _of(result, ids[name]), name
        assert why in _policy_message(result, ids[name])
    # st-john's certificate was revoked after registration by the entry times, the
    # aggregator's clock: with no witness to date it, not excused
    assert _of(result, ids["mechanism"]) == [
        ("E_AUDIT_MODULE_POLICY", "error"),
        ("E_AUDIT_MODULE_REVOKED", "error"),
    ]
    assert _of(result, ids["compliant"]) == []
    assert result.modules[ids["no_dp"]].signature_ok


def test_a_flipped_signature_on_a_deleted_module_is_an_error_and_its_policy_still_checked(
    world, tmp_path
):
    lab, ids, _honest, dishonest, _twin = world
    t = _copy(dishonest, tmp_path)
    for name in BREACHES:
        _rewrite_package(t, ids[name], _flip_signature)
    result = _audit(lab, t)
    assert result.verdict == "FAILED"
    assert not [f for f in result.findings if f.severity == "warning"]
    for name, (_site, _dp, why) in BREACHES.items():
        assert _of(result, ids[name]) == [
            ("E_AUDIT_MODULE_POLICY", "error"),
            ("E_AUDIT_MODULE_SIGNATURE", "error"),
        ], name
        assert why in _policy_message(result, ids[name])
        assert not result.modules[ids[name]].signature_ok


def test_a_deleted_module_with_a_revoked_twin_certificate_is_an_error(world, tmp_path):
    lab, ids, _honest, dishonest, twin_pem = world
    t = _copy(dishonest, tmp_path)
    _rewrite_package(t, ids["no_dp"], lambda package: package.update(cert_chain_pem=twin_pem))
    result = _audit(lab, t)
    # the signature verifies under the twin (same key) and the twin was revoked after
    # registration, but it is not the certificate the entry records
    assert _of(result, ids["no_dp"]) == [
        ("E_AUDIT_MODULE_POLICY", "error"),
        ("E_AUDIT_MODULE_RECORD", "error"),
        ("E_AUDIT_MODULE_REVOKED", "error"),
    ]
    (record,) = [
        f for f in result.findings if f.module_id == ids["no_dp"] and f.code.endswith("RECORD")
    ]
    assert "cert_fingerprint" in record.message and "swapped" in record.message


def test_a_swapped_certificate_that_verifies_still_fails_on_its_fingerprint(world, tmp_path):
    lab, ids, honest, _dishonest, twin_pem = world
    t = _copy(honest, tmp_path)  # exported before the twin was revoked: the twin is valid
    _rewrite_package(t, ids["compliant"], lambda package: package.update(cert_chain_pem=twin_pem))
    result = _audit(lab, t)
    assert result.verdict == "FAILED"
    assert _of(result, ids["compliant"]) == [("E_AUDIT_MODULE_RECORD", "error")]
    assert result.modules[ids["compliant"]].signature_ok  # only the fingerprint catches it


def test_a_deleted_module_over_the_membership_limit_cannot_hide_behind_its_signature(tmp_path):
    lab = _with_policy(
        AuditLab(tmp_path / "lab"),
        privacy_policy={"required": True, "max_membership_auroc": 0.5},
    )
    try:
        leaky = lab.register(
            "st-mary", (0,), privacy_report={"v": 1, "members": 300, "membership_auroc": 0.61}
        )
        lab.delete(leaky, site="st-mary")
        bundle = lab.export("bundle")
    finally:
        lab.close()
    t = _copy(bundle, tmp_path)
    _rewrite_package(t, leaky, _flip_signature)
    for exported, expected in (
        (bundle, [("E_AUDIT_MODULE_POLICY", "error")]),
        (t, [("E_AUDIT_MODULE_POLICY", "error"), ("E_AUDIT_MODULE_SIGNATURE", "error")]),
    ):
        result = _audit(lab, exported)
        assert result.verdict == "FAILED" and _of(result, leaky) == expected
        assert "E_PRIVACY_POLICY" in _policy_message(result, leaky)


def test_a_deleted_module_whose_certificate_was_revoked_before_registration_is_an_error(
    tmp_path,
):
    lab = AuditLab(tmp_path / "lab")
    try:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        lab.revoke("st-mary", "superseded", at=now - dt.timedelta(minutes=1))
        late = lab.register("st-mary", (1,))  # the aggregator should have refused it
        lab.delete(late, site="st-mary")
        result = _audit(lab, lab.export())
    finally:
        lab.close()
    assert result.verdict == "FAILED"
    assert _of(result, late) == [("E_AUDIT_MODULE_REVOKED", "error")]
    (f,) = [f for f in result.findings if f.module_id == late]
    assert "should have refused it" in f.message and "deleted at entry" in f.message
