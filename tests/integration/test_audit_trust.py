"""The auditor's trust comes from the CA alone: a dishonest exporter can neither swap the log key
nor choose the CRL.

Bundles are real (tests/audit_fixture.py: a CA, site certificates, signed tiny-cvae packages, a
SQLite store, exported as `aggregator ledger export` does); the aggregator part runs the real
gRPC server on loopback. Each attack is the one an exporter can mount by editing the bundle:
a history rewritten and re-signed with a fresh key with federation.json deleted, crl.pem
removed, and an older (still valid, CA-signed) CRL put back.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from aggregator.crl_ledger import last_recorded_crl
from aggregator.export import write_bundle
from aggregator.home import LogSigner
from ffsecure import canonical, pki
from ffsecure.audit import audit_bundle, load_bundle, render_html
from ffsecure.ledger.checkpoint import Checkpoint, sign_checkpoint
from ffsecure.ledger.merkle import MemoryTree, leaf_hash
from tests.audit_fixture import AuditLab, standard_history
from tests.federation_fixture import build_federation

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-trust")
    lab = AuditLab(root)
    idx = standard_history(lab)
    bundle = lab.export("clean")
    yield lab, idx, bundle
    lab.close()


def _audit(lab, bundle, **kw):
    return audit_bundle(load_bundle(bundle), ca_pem=lab.fed.ca_pem, **kw)


def _errors(result):
    return sorted({f.code for f in result.errors})


def _one(result, code):
    found = [f for f in result.findings if f.code == code]
    assert found, f"no {code} finding in {[f.to_dict() for f in result.findings]}"
    return found[0]


def _copy(bundle, tmp_path, name="tampered"):
    dst = tmp_path / name
    shutil.copytree(bundle, dst)
    return dst


def _invoke(*args):
    from click.testing import CliRunner

    from ffsecure.cli import cli

    r = CliRunner().invoke(cli, ["audit", *map(str, args)], catch_exceptions=False)
    return r.exit_code, r.stdout


def _rewrite_without_deletion(bundle, module_id: str, signer: LogSigner) -> None:
    """Drop a module's deletion, mark it active again, re-sign every checkpoint with ``signer``."""
    lines = (bundle / "entries.jsonl").read_bytes()[:-1].split(b"\n")
    gone = [
        i
        for i, x in enumerate(lines)
        if module_id.encode() in x
        and (b'"type":"module.deleted"' in x or b'"type":"module.deletion_requested"' in x)
    ]
    assert len(gone) == 2
    lines = [x for i, x in enumerate(lines) if i not in gone]
    (bundle / "entries.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))
    rec_path = bundle / "modules" / f"{module_id}.json"
    rec = json.loads(rec_path.read_bytes())
    rec.update(status="active", deleted_index=None)
    rec_path.write_bytes(canonical.dumps(rec) + b"\n")
    tree = MemoryTree([leaf_hash(x) for x in lines])
    for p in (bundle / "checkpoints").iterdir():
        p.unlink()
    for size in range(1, len(lines) + 1):
        checkpoint = Checkpoint(signer.name, size, tree.root(size))
        note = sign_checkpoint(checkpoint, signer.name, signer.key)
        (bundle / "checkpoints" / str(size)).write_text(note)
    (bundle / "log.vkey").write_text(signer.vkey + "\n")


# ------------------------------------------------------------------ the log key


def test_history_resigned_with_a_fresh_key_and_no_federation_json_fails(world, tmp_path):
    lab, idx, bundle = world
    t = _copy(bundle, tmp_path)
    _rewrite_without_deletion(t, idx["c"], LogSigner.generate(lab.store.origin))
    (t / "federation.json").unlink()
    result = _audit(lab, t)
    assert result.verdict == "FAILED"
    # The rewrite is internally consistent: only the missing binding of the log key gives it
    # away (and, with federation.json gone, the policy no manifest gives).
    assert _errors(result) == ["E_AUDIT_LOG_KEY_UNPINNED", "E_AUDIT_NO_FEDERATION"]
    f = _one(result, "E_AUDIT_LOG_KEY_UNPINNED")
    assert f.severity == "error" and f.check == "trust-anchor" and "--log-key" in f.message
    assert {c.name: c.status for c in result.checks}["trust-anchor"] == "failed"
    # The auditor who brings the federation's log key names the swap.
    real_vkey = (bundle / "log.vkey").read_text()
    pinned = _audit(lab, t, log_vkey=real_vkey)
    assert _errors(pinned) == ["E_AUDIT_LOG_KEY_UNBOUND", "E_AUDIT_NO_FEDERATION"]
    (tmp_path / "ca.pem").write_bytes(lab.fed.ca_pem)
    code, out = _invoke("verify", t, "--ca", tmp_path / "ca.pem", "--json")
    assert code == 3 and json.loads(out)["verdict"] == "FAILED"
    assert [x["code"] for x in json.loads(out)["findings"]] == [
        "E_AUDIT_LOG_KEY_UNPINNED",
        "E_AUDIT_NO_FEDERATION",
    ]


def test_without_federation_json_the_auditor_s_log_key_binds_the_log(world, tmp_path):
    lab, idx, bundle = world
    t = _copy(bundle, tmp_path)
    (t / "federation.json").unlink()
    key = tmp_path / "log.vkey"
    key.write_text((bundle / "log.vkey").read_text())
    (tmp_path / "ca.pem").write_bytes(lab.fed.ca_pem)
    code, out = _invoke("verify", t, "--ca", tmp_path / "ca.pem", "--log-key", key, "--json")
    result = json.loads(out)
    assert "log key bound by --log-key" in result["checks"][0]["detail"]
    # the log is bound, but the modules' policy is not: dropping the manifest is a finding
    assert code == 3 and [x["code"] for x in result["findings"]] == ["E_AUDIT_NO_FEDERATION"]
    (tmp_path / "federation.json").write_bytes(lab.fed.home.federation.read_bytes())
    fed = tmp_path / "federation.json"
    args = ("--log-key", key, "--federation", fed, "--json")
    code, out = _invoke("verify", t, "--ca", tmp_path / "ca.pem", *args)
    assert code == 0, out
    result = json.loads(out)
    assert result["verdict"] == "VERIFIED" and result["findings"] == []


# ------------------------------------------------------------------ the CRL


def test_a_bundle_without_crl_fails_and_verifies_with_the_ca_s_crl(world, tmp_path):
    lab, idx, bundle = world
    t = _copy(bundle, tmp_path)
    (t / "crl.pem").unlink()
    result = _audit(lab, t)
    assert result.verdict == "FAILED" and _errors(result) == ["E_AUDIT_NO_CRL"]
    assert "--crl" in _one(result, "E_AUDIT_NO_CRL").message
    assert "E_AUDIT_NO_CRL" in render_html(result)
    with_crl = _audit(lab, t, crl_pem=lab.fed.ca.crl_pem())
    assert with_crl.verdict == "VERIFIED" and with_crl.findings == []
    assert "(--crl) signed by the CA" in with_crl.checks[0].detail
    assert "chosen by the exporter" not in with_crl.checks[0].detail
    # the bundle's own CRL, in its validity period, is still the exporter's pick: said so
    bundled = _audit(lab, bundle)
    assert bundled.verdict == "VERIFIED"
    detail = bundled.checks[0].detail
    assert "(crl.pem) signed by the CA, issued " in detail
    assert "chosen by the exporter" in detail and "--crl" in detail
    (tmp_path / "ca.pem").write_bytes(lab.fed.ca_pem)
    (tmp_path / "crl.pem").write_bytes(lab.fed.ca.crl_pem())
    assert _invoke("verify", t, "--ca", tmp_path / "ca.pem")[0] == 3
    assert _invoke("verify", t, "--ca", tmp_path / "ca.pem", "--crl", tmp_path / "crl.pem")[0] == 0
    code, out = _invoke(
        "report", t, "--ca", tmp_path / "ca.pem", "-o", tmp_path / "r.html", "--json"
    )
    assert code == 0 and json.loads(out)["verdict"] == "FAILED"
    assert "E_AUDIT_NO_CRL" in (tmp_path / "r.html").read_text()


def _revoked_history(lab: AuditLab) -> dict:
    """An aggregator that recorded its manifest and CRL at start (entries 0, 1) and the CRL again
    after the CA revoked st-john's key.

    The revocation is done at the CA and the new CRL copied into the home, as an operator does:
    no ``cert.revoked`` entry, so only ``crl.loaded`` tells the log about it.
    """
    first = lab.fed.home.crl.read_bytes()
    out = {"crl1": first, "rec1": lab.record_crl()}
    out["a"] = lab.register("st-mary", (0,))
    out["b"] = lab.register("st-john", (1,))
    crl2 = lab.fed.ca.revoke(lab.fed.sites["st-john"].cert, "key_compromise")
    pki.write_public_file(lab.fed.home.crl, crl2)
    out.update(crl2=crl2, rec2=lab.record_crl(), again=lab.record_crl())
    out["bundle"] = lab.export()
    return out


@pytest.fixture(scope="module")
def revoked(tmp_path_factory):
    lab = AuditLab(tmp_path_factory.mktemp("audit-revoked"))
    try:
        yield lab, _revoked_history(lab)
    finally:
        lab.close()


def test_the_lab_records_each_new_crl_once(revoked):
    lab, h = revoked
    assert (h["rec1"], h["rec2"], h["again"]) == (1, 4, None)
    index, facts = last_recorded_crl(lab.store)
    info = pki.crl_info(pki.load_crl(h["crl2"]))
    assert index == 4 and facts["crl_number"] == info.number == 2
    assert facts["crl_sha256"] == info.sha256 and facts["revoked"] == 1
    assert facts["issuer_sha256"] == pki.cert_fingerprint(lab.fed.ca.cert)


def test_revoked_module_fails_with_the_bundle_crl(revoked):
    lab, h = revoked
    result = _audit(lab, h["bundle"])
    assert _errors(result) == ["E_AUDIT_MODULE_REVOKED"]
    assert _one(result, "E_AUDIT_MODULE_REVOKED").module_id == h["b"]
    assert "newest CRL recorded in the log: 2 (entry 4)" in result.anchor.detail()


def test_removing_the_crl_to_hide_a_revocation_fails(revoked, tmp_path):
    lab, h = revoked
    t = _copy(h["bundle"], tmp_path)
    (t / "crl.pem").unlink()
    result = _audit(lab, t)
    assert _errors(result) == ["E_AUDIT_NO_CRL"]
    with_crl = _audit(lab, t, crl_pem=lab.fed.ca.crl_pem())
    assert _errors(with_crl) == ["E_AUDIT_MODULE_REVOKED"]


def test_an_older_ca_signed_crl_put_back_fails_naming_the_recorded_crl(revoked, tmp_path):
    lab, h = revoked
    t = _copy(h["bundle"], tmp_path)
    (t / "crl.pem").write_bytes(h["crl1"])  # signed by the CA and not expired: only older
    result = _audit(lab, t)
    assert result.verdict == "FAILED"
    assert _errors(result) == ["E_AUDIT_CRL_OLDER"]  # module b verifies under the old CRL
    f = _one(result, "E_AUDIT_CRL_OLDER")
    assert (f.entry, f.entry_type, f.check) == (4, "crl.loaded", "trust-anchor")
    assert "CRL number 1" in f.message and "CRL number 2" in f.message and "entry 4" in f.message
    # The auditor who brings the CA's CRL sees the revocation, and the swap is still named.
    fresh = _audit(lab, t, crl_pem=lab.fed.ca.crl_pem())
    assert _errors(fresh) == ["E_AUDIT_CRL_OLDER", "E_AUDIT_MODULE_REVOKED"]
    assert "(crl.pem)" in _one(fresh, "E_AUDIT_CRL_OLDER").message
    # An auditor's own CRL older than the recorded one is refused the same way.
    stale = _audit(lab, h["bundle"], crl_pem=h["crl1"])
    assert _errors(stale) == ["E_AUDIT_CRL_OLDER"]
    assert "(--crl)" in _one(stale, "E_AUDIT_CRL_OLDER").message


def _crl_numbered(ca: pki.CA, number: int) -> bytes:
    """A CA-signed CRL that reuses ``number`` for other contents (what a CA must never do)."""
    now = pki.utcnow()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=3))
        .add_extension(x509.CRLNumber(number), critical=False)
        .sign(ca._key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.PEM)


def test_a_crl_with_the_recorded_number_but_other_bytes_fails(revoked, tmp_path):
    lab, h = revoked
    t = _copy(h["bundle"], tmp_path)
    (t / "crl.pem").write_bytes(_crl_numbered(lab.fed.ca, 2))
    result = _audit(lab, t)
    assert _errors(result) == ["E_AUDIT_CRL_MISMATCH"]
    assert _one(result, "E_AUDIT_CRL_MISMATCH").entry == 4


def test_a_crl_newer_than_the_recorded_one_is_accepted(revoked, tmp_path):
    lab, h = revoked
    newer = lab.fed.ca.publish_crl()  # CRL 3: the CA re-signed since the export
    result = _audit(lab, h["bundle"], crl_pem=newer)
    assert _errors(result) == ["E_AUDIT_MODULE_REVOKED"]
    assert not [f for f in result.findings if f.code.startswith("E_AUDIT_CRL")]


# ------------------------------------------------------------------ the aggregator records its CRL


def test_serve_records_its_crl_at_start_and_each_new_one_on_reload(tmp_path, caplog):
    fed = build_federation(tmp_path / "fed")
    first = fed.home.crl.read_bytes()
    with fed.serve() as srv:
        store = srv.runtime.store
        index, facts = last_recorded_crl(store)
        # after the federation.loaded of the start (entry 0)
        assert (index, store.size()) == (1, 2) and facts["crl_number"] == 1
        sealed, pkg = fed.make_package("st-mary", classes=[0, 1])
        with fed.client("st-mary", srv.address) as mary:
            mary.upload(sealed, module_id=pkg.manifest.module_id, site_id="st-mary")
        size = store.size()
        crl2 = fed.ca.revoke(fed.sites["st-john"].cert, "key_compromise")
        pki.write_public_file(fed.home.crl, crl2)
        with (
            caplog.at_level("INFO", logger="aggregator.crl"),
            fed.client("st-mary", srv.address) as mary,
        ):
            mary.get_checkpoint()  # any call: the CRL is re-read and recorded
            mary.get_checkpoint()  # the same CRL again: nothing more
        assert store.size() == size + 1
        index, facts = last_recorded_crl(store)
        info = pki.crl_info(pki.load_crl(crl2))
        assert (index, facts["crl_number"], facts["crl_sha256"]) == (size, 2, info.sha256)
        loaded = [r for r in caplog.records if getattr(r, "event", None) == "crl_loaded"]
        assert [r.crl_number for r in loaded] == [2]
    with fed.serve() as srv:  # a restart with the same CRL appends nothing
        assert srv.runtime.store.size() == size + 1
        bundle = write_bundle(
            srv.runtime.store.snapshot(),
            tmp_path / "bundle",
            ca_cert_pem=fed.ca_pem,
            crl_pem=fed.home.crl.read_bytes(),
            federation_json=fed.signed_manifest,
        )
    clean = audit_bundle(load_bundle(bundle), ca_pem=fed.ca_pem)
    assert clean.verdict == "VERIFIED" and clean.findings == []
    (bundle / "crl.pem").write_bytes(first)
    swapped = audit_bundle(load_bundle(bundle), ca_pem=fed.ca_pem)
    assert _errors(swapped) == ["E_AUDIT_CRL_OLDER"]
    assert _one(swapped, "E_AUDIT_CRL_OLDER").entry == size
