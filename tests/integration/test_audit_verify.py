"""The auditor catches each kind of tampering and names the entry; a clean bundle verifies.

Bundles are real: a federation (CA, site certificates, signed tiny-cvae packages),
a SQLite store on disk, exported as `aggregator ledger export` does
(tests/audit_fixture.py). Each test alters a copy of a bundle the way an
attacker or a careless operator would, and checks the finding.
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil

import pytest
import torch

from aggregator.home import load_log_key
from ffsecure.audit import TrustedCheckpoint, audit_bundle, load_bundle
from ffsecure.ledger import verify_bundle_log
from ffsecure.ledger.checkpoint import Checkpoint, sign_checkpoint
from tests.audit_fixture import AuditLab, resign_checkpoints, standard_history

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-world")
    lab = AuditLab(root)
    idx = standard_history(lab)
    bundle = lab.export("clean")
    yield lab, idx, bundle
    lab.close()


def _audit(lab, bundle, *, trusted=(), **kw):
    kept = [TrustedCheckpoint(label, note) for label, note in trusted]
    return audit_bundle(load_bundle(bundle), ca_pem=lab.fed.ca_pem, trusted=kept, **kw)


def _copy(bundle, tmp_path, name="tampered"):
    dst = tmp_path / name
    shutil.copytree(bundle, dst)
    return dst


def _lines(bundle):
    return (bundle / "entries.jsonl").read_bytes()[:-1].split(b"\n")


def _write_lines(bundle, lines):
    (bundle / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


def _codes(result):
    return {f.code for f in result.findings}


def _one(result, code):
    found = [f for f in result.findings if f.code == code]
    assert found, f"no {code} finding in {[f.to_dict() for f in result.findings]}"
    return found[0]


# ------------------------------------------------------------------ clean


def test_clean_bundle_verifies_with_no_finding(world):
    lab, idx, bundle = world
    result = _audit(lab, bundle)
    assert result.ok and result.verdict == "VERIFIED"
    assert result.findings == []
    assert {c.name: c.status for c in result.checks} == {
        "trust-anchor": "ok",
        "entries": "ok",
        "checkpoint-signatures": "ok",
        "checkpoint-roots": "ok",
        "consistency": "ok",
        "trusted-checkpoints": "skipped",
        "witnesses": "skipped",
        "module-records": "ok",
        "module-signatures": "ok",
        "dp-claims": "ok",
        "deletions": "ok",
        "lineage": "ok",
    }
    # The ledger's own verifier agrees on the log part.
    report = verify_bundle_log(bundle)
    assert report.size == result.log.latest.size == len(result.log.entry_bytes) == idx["pub2"] + 1
    assert report.root_hash == result.log.latest.root_hash
    assert result.replay.current_classifier().artifact_id == "clf-2"
    assert all(m.signature_ok for m in result.modules.values())


def test_a_lapsed_bundle_crl_fails_and_names_its_next_update(world):
    """The bundle's crl.pem is the exporter's pick: a lapsed one may hide a newer CRL."""
    lab, idx, bundle = world
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)  # past any CRL the CA issues
    result = _audit(lab, bundle, now=later)
    f = _one(result, "E_AUDIT_CRL_EXPIRED")
    assert f.severity == "error" and f.check == "trust-anchor"
    assert "nextUpdate" in f.message and "--crl" in f.message and "crl.pem" in f.message
    assert not result.ok and [x.code for x in result.findings] == ["E_AUDIT_CRL_EXPIRED"]
    assert {c.name: c.status for c in result.checks}["trust-anchor"] == "failed"


def test_a_lapsed_crl_the_auditor_passes_is_a_warning(world):
    lab, idx, bundle = world
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    result = _audit(lab, bundle, now=later, crl_pem=(bundle / "crl.pem").read_bytes())
    f = _one(result, "E_AUDIT_CRL_EXPIRED")
    assert f.severity == "warning" and "--crl" in f.message
    assert result.ok and [x.code for x in result.findings] == ["E_AUDIT_CRL_EXPIRED"]
    assert {c.name: c.status for c in result.checks}["trust-anchor"] == "warning"


# --------------------------------------------------------------- the log


def test_flipped_byte_that_breaks_the_entry_is_named(world, tmp_path):
    lab, idx, bundle = world
    t = _copy(bundle, tmp_path)
    lines = _lines(t)
    i = idx["clf1"]
    lines[i] = bytes([lines[i][0] ^ 0x01]) + lines[i][1:]  # '{' -> 'z'
    _write_lines(t, lines)
    result = _audit(lab, t)
    assert not result.ok
    f = _one(result, "E_AUDIT_ENTRY")
    assert (f.entry, f.entry_type) == (i, "classifier.trained")
    root = _one(result, "E_AUDIT_ROOT_MISMATCH")
    assert root.entry == i and root.checkpoint == 9  # the first checkpoint covering it


def test_flipped_byte_that_keeps_the_entry_valid_is_bracketed(world, tmp_path):
    lab, idx, bundle = world
    t = _copy(bundle, tmp_path)
    lines = _lines(t)
    i = idx["ds2"]
    pos = lines[i].index(b'"seed":1') + len(b'"seed":')
    lines[i] = lines[i][:pos] + bytes([lines[i][pos] ^ 0x01]) + lines[i][pos + 1 :]  # seed 1 -> 0
    _write_lines(t, lines)
    result = _audit(lab, t)
    assert not result.ok
    assert "E_AUDIT_ENTRY" not in _codes(result)  # still a well-formed entry
    f = _one(result, "E_AUDIT_ROOT_MISMATCH")
    # A Merkle root cannot say which entry of the prefix changed: the finding names the
    # entries between the last matching checkpoint (9) and the first failing one (14).
    assert f.checkpoint == 14 and i in f.entries and f.entries == tuple(range(9, 14))
    assert f.entry is None


def test_removed_entry_is_bracketed_and_the_shortfall_reported(world, tmp_path):
    lab, idx, bundle = world
    t = _copy(bundle, tmp_path)
    lines = _lines(t)
    i = idx["pub1"]
    del lines[i]
    _write_lines(t, lines)
    result = _audit(lab, t)
    assert not result.ok
    missing = _one(result, "E_AUDIT_MISSING_ENTRIES")
    assert missing.checkpoint == 14 and "1 entry was removed" in missing.message
    root = _one(result, "E_AUDIT_ROOT_MISMATCH")
    assert root.checkpoint == 9 and i in root.entries and root.entries == (4, 5, 6, 7, 8)


def test_reordered_pair_is_named_exactly(world, tmp_path):
    lab, idx, bundle = world
    t = _copy(bundle, tmp_path)
    lines = _lines(t)
    i, j = idx["retire_ds1"], idx["retire_clf1"]
    lines[i], lines[j] = lines[j], lines[i]
    _write_lines(t, lines)
    result = _audit(lab, t)
    assert not result.ok
    f = _one(result, "E_AUDIT_REORDERED")
    assert (f.entry, f.entries, f.checkpoint) == (i, (i, j), 14)
    assert f.entry_type == "classifier.retired"  # what now sits at index i


def test_reordered_dependent_pair_also_breaks_lineage(world, tmp_path):
    lab, idx, bundle = world
    t = _copy(bundle, tmp_path)
    lines = _lines(t)
    i = idx["ds1"]
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    _write_lines(t, lines)
    result = _audit(lab, t)
    assert _one(result, "E_AUDIT_REORDERED").entry == i
    lineage = _one(result, "E_AUDIT_LINEAGE_UNKNOWN")
    assert (lineage.entry, lineage.entry_type) == (i, "classifier.trained")


def test_checkpoint_with_bad_signature_is_named(world, tmp_path):
    lab, idx, bundle = world
    t = _copy(bundle, tmp_path)
    note = (t / "checkpoints" / "9").read_text()
    head, _, sigline = note.rstrip("\n").rpartition("\n")
    prefix, _, b64 = sigline.rpartition(" ")
    blob = bytearray(base64.b64decode(b64))
    blob[-1] ^= 0x01  # the Ed25519 signature, not the key hash
    (t / "checkpoints" / "9").write_text(
        f"{head}\n{prefix} {base64.b64encode(bytes(blob)).decode()}\n"
    )
    result = _audit(lab, t)
    assert not result.ok
    f = _one(result, "E_AUDIT_CHECKPOINT_SIGNATURE")
    assert f.checkpoint == 9 and (f.entry, f.entry_type) == (idx["deleted_c"], "module.deleted")
    assert {f.code for f in result.errors} == {"E_AUDIT_CHECKPOINT_SIGNATURE"}


def test_bundle_signed_by_another_log_key_is_refused(world, tmp_path):
    lab, idx, bundle = world
    from aggregator.home import LogSigner

    t = _copy(bundle, tmp_path)
    rogue = LogSigner.generate(lab.store.origin)
    resign_checkpoints(t, rogue)
    (t / "log.vkey").write_text(rogue.vkey + "\n")
    result = _audit(lab, t)
    assert _codes(result) >= {"E_AUDIT_LOG_KEY_UNBOUND"}
    assert not result.ok


# ---------------------------------------------------- forks vs trusted checkpoints


def test_forked_history_is_caught_by_trusted_checkpoints(world, tmp_path):
    lab, idx, bundle = world
    trusted2 = (bundle / "checkpoints" / "2").read_bytes()
    trusted3 = (bundle / "checkpoints" / "3").read_bytes()
    t = _copy(bundle, tmp_path)
    lines = _lines(t)
    # rewrite the registration time of entry 2 by one second, keeping it well-formed
    import re

    m = re.search(rb'"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:)(\d\d)Z"', lines[2])
    sec = (int(m.group(2)) + 1) % 60
    lines[2] = lines[2][: m.start(2)] + b"%02d" % sec + lines[2][m.end(2) :]
    _write_lines(t, lines)
    resign_checkpoints(t, load_log_key(lab.fed.home))
    alone = _audit(lab, t)
    assert {f.check for f in alone.errors} <= {
        "entries"
    }  # internally consistent: only the order check may warn
    assert not [f for f in alone.errors if f.check.startswith("checkpoint")]
    result = _audit(lab, t, trusted=[("receipt-2", trusted2), ("receipt-3", trusted3)])
    assert not result.ok
    f = _one(result, "E_AUDIT_FORK")
    assert (f.entry, f.entry_type, f.checkpoint) == (2, "module.registered", 3)
    assert "split view" in f.message
    only3 = _audit(lab, t, trusted=[("receipt-3", trusted3)])
    assert _one(only3, "E_AUDIT_FORK").entries == (0, 1, 2)


def test_rollback_below_a_trusted_checkpoint_is_caught(world, tmp_path):
    lab, idx, bundle = world
    t = _copy(bundle, tmp_path)
    latest = (bundle / "checkpoints" / str(idx["pub2"] + 1)).read_bytes()
    lines = _lines(t)[:9]
    _write_lines(t, lines)
    for p in (t / "checkpoints").iterdir():
        if int(p.name) > 9:
            p.unlink()
    alone = _audit(lab, t)
    assert not [f for f in alone.errors if f.check.startswith("checkpoint")]
    result = _audit(lab, t, trusted=[("earlier", latest)])
    f = _one(result, "E_AUDIT_FORK")
    assert "rolled back" in f.message and f.checkpoint == idx["pub2"] + 1


def test_trusted_checkpoint_of_another_key_is_a_finding(world, tmp_path):
    lab, idx, bundle = world
    from aggregator.home import LogSigner

    rogue = LogSigner.generate(lab.store.origin)
    note = sign_checkpoint(Checkpoint(rogue.name, 1, b"\x00" * 32), rogue.name, rogue.key).encode()
    result = _audit(lab, bundle, trusted=[("forged", note)])
    assert _one(result, "E_AUDIT_TRUSTED_CHECKPOINT").severity == "error"


# ------------------------------------------------------------- modules and PKI


def test_module_signed_by_a_revoked_cert_is_named(tmp_path):
    lab = AuditLab(tmp_path)
    try:
        a = lab.register("st-mary", (0,))
        b = lab.register("st-john", (1,))
        rev = lab.revoke("st-john", "key_compromise")
        result = _audit(lab, lab.export())
    finally:
        lab.close()
    assert not result.ok
    f = _one(result, "E_AUDIT_MODULE_REVOKED")
    assert (f.entry, f.entry_type, f.module_id) == (2, "module.registered", b)
    assert "still active" in f.message
    assert "at or after its registration" in f.message and "reaches back" in f.message
    assert [x.module_id for x in result.errors] == [b]
    assert result.modules[a].signature_ok and not result.modules[b].signature_ok
    assert result.modules[b].revoked == "keyCompromise"
    assert rev == 3  # 0: federation.loaded, 1: a, 2: b


def test_superseded_cert_keeps_earlier_modules_valid_but_not_later_ones(tmp_path):
    lab = AuditLab(tmp_path)
    try:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        before = (now - dt.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        a = lab.register("st-mary", (0,), created_at=before)
        lab.revoke("st-mary", "superseded", at=now - dt.timedelta(minutes=1))
        clean = _audit(lab, lab.export())
        late = lab.register("st-mary", (1,))  # signed with the old key after the supersession
        result = _audit(lab, lab.export())
    finally:
        lab.close()
    assert clean.ok and clean.findings == [] and clean.modules[a].revoked == "superseded"
    f = _one(result, "E_AUDIT_MODULE_REVOKED")
    assert (f.entry, f.module_id) == (3, late)
    assert (
        "before its registration" in f.message and "should have refused it" in f.message
    )  # 0: federation.loaded, 1: a, 2: cert.revoked, 3: late
    assert result.modules[a].signature_ok


def test_deleted_module_of_a_compromised_cert_needs_witnesses_to_date_its_registration(tmp_path):
    # revoked after its registration by the entry times, but those are the aggregator's
    # clock: only witnesses excuse it (tests/integration/test_audit_revocation_dating.py)
    lab = AuditLab(tmp_path)
    try:
        b = lab.register("st-john", (1,))
        lab.revoke("st-john", "key_compromise")
        lab.delete(b, reason="signing key compromised")
        result = _audit(lab, lab.export())
    finally:
        lab.close()
    assert not result.ok
    f = _one(result, "E_AUDIT_MODULE_REVOKED")
    assert f.severity == "error" and f.entry == 1 and "deleted at entry 3" in f.message
    assert "aggregator's own clock" in f.message and "--witness-key" in f.message


def test_tampered_module_record_is_named(world, tmp_path):
    lab, idx, bundle = world
    t = _copy(bundle, tmp_path)
    import json

    from ffsecure import canonical

    path = t / "modules" / f"{idx['b']}.json"
    rec = json.loads(path.read_bytes())
    rec["package"]["manifest"]["classes"] = [1, 2, 3]
    rec["package_b64"] = base64.b64encode(canonical.dumps(rec["package"])).decode()
    path.write_bytes(canonical.dumps(rec) + b"\n")
    result = _audit(lab, t)
    rec_f = _one(result, "E_AUDIT_MODULE_RECORD")
    sig_f = _one(result, "E_AUDIT_MODULE_SIGNATURE")
    for f in (rec_f, sig_f):
        assert (f.entry, f.entry_type, f.module_id) == (2, "module.registered", idx["b"])
    assert "E_SIGNATURE" in sig_f.message


def test_wrong_ca_is_a_finding(world, tmp_path):
    lab, idx, bundle = world
    from ffsecure import pki

    other = pki.init_ca(tmp_path / "other", lab.fed.federation_id)
    result = audit_bundle(load_bundle(bundle), ca_pem=other.cert_pem)
    assert {"E_AUDIT_CA_MISMATCH", "E_AUDIT_MODULE_SIGNATURE"} <= _codes(result)
    assert not result.ok


# ------------------------------------------------------- deletions and lineage


def test_live_classifier_with_a_deleted_module_is_named(tmp_path):
    lab = AuditLab(tmp_path)
    try:
        a = lab.register("st-mary", (0, 1))
        b = lab.register("st-john", (2, 3))
        ds = lab.dataset("ds-1", [a, b])
        clf = lab.classifier("clf-1", "ds-1", [a, b])
        lab.publish("clf-1")
        deleted = lab.delete(a, site="st-mary")  # ...but nothing is retired
        result = _audit(lab, lab.export())
    finally:
        lab.close()
    assert not result.ok
    live = [f for f in result.findings if f.code == "E_AUDIT_LIVE_DELETED"]
    assert {(f.entry, f.entry_type) for f in live} == {
        (ds, "dataset.synthesized"),
        (clf, "classifier.trained"),
    }
    assert all(f.module_id == a and f"deleted at entry {deleted}" in f.message for f in live)


def test_deletion_request_without_deletion_is_named(tmp_path):
    lab = AuditLab(tmp_path)
    try:
        a = lab.register("st-mary", (0,))
        req = lab.request_deletion(a, "st-mary")
        result = _audit(lab, lab.export())
    finally:
        lab.close()
    assert not result.ok
    f = _one(result, "E_AUDIT_DELETION_MISSING")
    assert (f.entry, f.entry_type, f.module_id) == (req, "module.deletion_requested", a)
    assert [x.code for x in result.errors] == ["E_AUDIT_DELETION_MISSING"]


def test_understated_dp_claim_is_named(tmp_path):
    from ffsecure.dp import compute_epsilon

    params = {
        "delta": 1e-5,
        "noise_multiplier": 1.1,
        "sample_rate": 0.01,
        "steps": 100,
        "accountant": "rdp",
    }
    eps = compute_epsilon(
        noise_multiplier=1.1, sample_rate=0.01, steps=100, delta=1e-5, accountant="rdp"
    )
    lab = AuditLab(tmp_path)
    try:
        honest = lab.register("st-mary", (0,), dp={"epsilon": eps, **params})
        modest = lab.register("st-john", (1,), dp={"epsilon": round(eps / 2, 3), **params})
        bare = lab.register(
            "st-john", (2,), dp={"epsilon": 1.0, "delta": 1e-5}
        )  # no parameters: not re-accountable, a finding
        result = _audit(lab, lab.export())
    finally:
        lab.close()
    assert not result.ok
    f, unchecked = [x for x in result.findings if x.code == "E_AUDIT_DP_CLAIM"]
    assert (unchecked.module_id, unchecked.entry) == (bare, 3) and "lacks" in unchecked.message
    assert (f.entry, f.entry_type, f.module_id) == (2, "module.registered", modest)
    assert f"spend epsilon {eps:.6g}" in f.message
    assert result.modules[honest].dp_recomputed == pytest.approx(eps, rel=1e-12)
    assert {c.name: c.detail for c in result.checks}["dp-claims"] == "2 findings"
