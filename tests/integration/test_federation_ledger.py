"""The aggregator records the federation manifest it enforces, and the audit holds the bundle to it.

Real components: the in-process ``aggregator serve`` (mTLS gRPC on loopback, SQLite store),
a site uploading a real signed and sealed tiny-cvae package, the bundle written as
``aggregator ledger export`` writes it, audited by ``audit_bundle``. The federation starts
under manifest A (DP not required); the operator then installs manifest B, signed by the same
CA, that requires DP, and restarts the aggregator. The exporter's move: put A, still CA-signed,
back into the bundle, so that the module registered without DP is judged by A's looser policy.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from typing import Any

import pytest
import torch

from aggregator.federation_ledger import last_recorded_federation
from ffsecure import pki
from ffsecure.audit import audit_bundle, load_bundle
from ffsecure.federation import create_signed_manifest, verify_federation_json
from tests.federation_fixture import build_federation, entry_types, export_bundle

torch.set_num_threads(1)

DP_REQUIRED = {"required": True, "max_epsilon": 10.0, "delta": 1e-5}


def _errors(result) -> list[str]:
    return sorted({f.code for f in result.errors})


def _one(result, code):
    found = [f for f in result.findings if f.code == code]
    assert len(found) == 1, [f.to_dict() for f in result.findings]
    return found[0]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Serve under A (one upload), restart under A, restart under B; a bundle after each."""
    root = tmp_path_factory.mktemp("federation-ledger")
    fed = build_federation(root / "fed")
    out = {"fed": fed, "a": fed.signed_manifest}
    with fed.serve() as srv:
        store = srv.runtime.store
        out["first_start"] = entry_types(store)
        out["first_facts"] = last_recorded_federation(store)
        sealed, pkg = fed.make_package("st-mary", classes=[0, 1])
        with fed.client("st-mary", srv.address) as mary:
            mary.upload(sealed, module_id=pkg.manifest.module_id, site_id="st-mary")
        out["module"] = pkg.manifest.module_id
    with fed.serve() as srv:  # a restart with the same manifest
        out["same_restart"] = entry_types(srv.runtime.store)
        out["under_a"] = export_bundle(fed, srv.runtime.store, root / "under-a")
    strict = dataclasses.replace(fed.manifest, dp_policy=dict(DP_REQUIRED))
    fed.manifest, fed.signed_manifest = strict, create_signed_manifest(strict, fed.ca)
    pki.write_public_file(fed.home.federation, fed.signed_manifest)
    out["b"] = fed.signed_manifest
    with fed.serve() as srv:  # the operator installed B and restarted
        out["new_restart"] = entry_types(srv.runtime.store)
        out["last"] = last_recorded_federation(srv.runtime.store)
        out["under_b"] = export_bundle(fed, srv.runtime.store, root / "under-b")
    return out


def test_serve_records_its_manifest_once_before_anything_can_be_registered(history):
    fed = history["fed"]
    assert history["first_start"] == ["federation.loaded", "crl.loaded"]
    index, facts = history["first_facts"]
    signed = verify_federation_json(history["a"], fed.ca.cert)
    assert index == 0 and facts == signed.facts()
    assert facts["federation_id"] == fed.federation_id
    assert facts["created_at"] == signed.manifest.created_at
    # the restart with the same manifest (and CRL) appended nothing after the upload
    assert history["same_restart"] == ["federation.loaded", "crl.loaded", "module.registered"]


def test_a_restart_with_another_ca_signed_manifest_records_it(history):
    fed = history["fed"]
    assert history["new_restart"] == [
        "federation.loaded",
        "crl.loaded",
        "module.registered",
        "federation.loaded",
    ]
    index, facts = history["last"]
    b = verify_federation_json(history["b"], fed.ca.cert)
    a = verify_federation_json(history["a"], fed.ca.cert)
    assert index == 3 and facts["federation_sha256"] == b.sha256 != a.sha256


def test_the_untouched_bundle_under_one_manifest_verifies(history):
    fed = history["fed"]
    result = audit_bundle(load_bundle(history["under_a"]), ca_pem=fed.ca_pem)
    assert result.verdict == "VERIFIED" and result.findings == []
    assert "federation manifest recorded in the log (entry 0)" in result.anchor.detail()


def test_a_module_registered_under_an_earlier_manifest_is_judged_by_the_newest(history):
    fed = history["fed"]
    result = audit_bundle(load_bundle(history["under_b"]), ca_pem=fed.ca_pem)
    assert _errors(result) == ["E_AUDIT_MODULE_POLICY"]
    assert _one(result, "E_AUDIT_MODULE_POLICY").module_id == history["module"]


def test_an_older_ca_signed_manifest_swapped_into_the_bundle_fails_without_federation(
    history, tmp_path
):
    fed = history["fed"]
    swapped = tmp_path / "swapped"
    shutil.copytree(history["under_b"], swapped)
    (swapped / "federation.json").write_bytes(history["a"])
    result = audit_bundle(load_bundle(swapped), ca_pem=fed.ca_pem)
    # A's looser policy passes the module: only the record of B tells the swap
    assert result.verdict == "FAILED" and _errors(result) == ["E_AUDIT_FEDERATION_STALE"]
    f = _one(result, "E_AUDIT_FEDERATION_STALE")
    b = verify_federation_json(history["b"], fed.ca.cert)
    assert (f.check, f.entry, f.entry_type) == ("trust-anchor", 3, "federation.loaded")
    assert "federation.json" in f.message and "entry 3" in f.message
    assert b.sha256[:12] in f.message and "--federation" in f.message
    # the auditor who brings B gets the module judged by it and the swap named
    held = audit_bundle(load_bundle(swapped), ca_pem=fed.ca_pem, federation_json=history["b"])
    assert _errors(held) == ["E_AUDIT_FEDERATION", "E_AUDIT_MODULE_POLICY"]


def test_an_auditor_s_own_manifest_older_than_the_recorded_one_is_named(history):
    fed = history["fed"]
    result = audit_bundle(
        load_bundle(history["under_b"]), ca_pem=fed.ca_pem, federation_json=history["a"]
    )
    assert "E_AUDIT_FEDERATION_STALE" in _errors(result)
    f = _one(result, "E_AUDIT_FEDERATION_STALE")
    assert f.message.startswith("--federation") and "federation operator" in f.message


def test_the_registrar_records_its_manifest_before_any_module_it_registers(tmp_path):
    """Every path that registers (here the operator tests' direct Registrar, no serve)."""
    from aggregator.store import open_home_store
    from tests.ops_fixture import register_trained

    fed = build_federation(tmp_path / "fed", sites=("st-mary",))
    with open_home_store(fed.home) as store:
        register_trained(fed, store, "st-mary", (0, 1), seed=1)
        register_trained(fed, store, "st-mary", (2, 3), seed=2)  # a second Registrar
        assert entry_types(store) == ["federation.loaded", "module.registered", "module.registered"]
        _, facts = last_recorded_federation(store)
    assert facts == verify_federation_json(fed.signed_manifest, fed.ca.cert).facts()


def _export(home_root, out, *, as_json: bool = True) -> tuple[Any, str]:
    """``aggregator ledger export`` in-process: its JSON (or text) and what it wrote to stderr."""
    from click.testing import CliRunner

    from aggregator.cli import cli

    args = ["ledger", "export", "--dir", str(home_root), "--out", str(out)]
    res = CliRunner().invoke(cli, args + (["--json"] if as_json else []))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if as_json else res.stdout, res.stderr


#: The federation findings an audit reports about the manifest in force.
FEDERATION_CODES = {
    "E_AUDIT_FEDERATION",
    "E_AUDIT_FEDERATION_STALE",
    "E_AUDIT_FEDERATION_UNRECORDED",
}


def _as_recorded(history, home, store):
    """Nothing changed: the home holds B, the newest manifest recorded."""
    return None


def _installed_without_restart(history, home, store):
    """A looser C (same CA) installed; serve not restarted, so the log still names B."""
    fed = history["fed"]
    looser = dataclasses.replace(fed.manifest, dp_policy={**DP_REQUIRED, "max_epsilon": 50.0})
    data = create_signed_manifest(looser, fed.ca)
    (home / fed.home.federation.name).write_bytes(data)
    return verify_federation_json(data, fed.ca.cert)


def _put_back_after_a_newer_one(history, home, store):
    """C (created after B) recorded at a start, then B put back and recorded again: B is the
    last record, C the newest."""
    from aggregator.federation_ledger import record_federation

    fed = history["fed"]
    later = dataclasses.replace(fed.manifest, created_at="2099-01-01T00:00:00Z")
    c = verify_federation_json(create_signed_manifest(later, fed.ca), fed.ca.cert)
    assert record_federation(store, c) is not None
    assert record_federation(store, verify_federation_json(history["b"], fed.ca.cert))
    return c


def _misdated_record(history, home, store):
    """The log names B's digest with another creation time (only the log key can write it)."""
    from ffsecure.records.entries import EntryType, make_entry

    facts = dict(verify_federation_json(history["b"], history["fed"].ca.cert).facts())
    facts["created_at"] = "2099-01-01T00:00:00Z"
    store.append(make_entry(EntryType.FEDERATION_LOADED, "aggregator", facts))


def _not_signed_by_the_ca(history, home, store):
    (home / history["fed"].home.federation.name).write_bytes(b'{"signed": {}, "signatures": []}')


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (_as_recorded, None),
        (_installed_without_restart, "E_AUDIT_FEDERATION_STALE"),
        (_put_back_after_a_newer_one, "E_AUDIT_FEDERATION_STALE"),
        (_misdated_record, "E_AUDIT_FEDERATION_STALE"),
        (_not_signed_by_the_ca, "E_AUDIT_FEDERATION"),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)).strip("_"),
)
def test_export_warns_exactly_when_the_audit_will_fail_the_bundle_s_manifest(
    history, tmp_path, change, code
):
    """The export reads the audit's own decision: whatever the home and log hold, it predicts
    the federation finding the audit of the written bundle reports, and still writes it."""
    from aggregator.home import AggregatorHome
    from aggregator.store import open_home_store

    fed = history["fed"]
    home = shutil.copytree(fed.home.root, tmp_path / "home")
    with open_home_store(AggregatorHome.at(home)) as store:
        other = change(history, home, store)
    done, err = _export(home, tmp_path / "bundle")
    audited = audit_bundle(load_bundle(tmp_path / "bundle"), ca_pem=fed.ca_pem)
    found = {f.code for f in audited.errors} & FEDERATION_CODES
    if code is None:
        assert done["warnings"] == [] and found == set() and "warning" not in err
        return
    [warning] = done["warnings"]
    assert warning["code"] == code and found == {code}
    assert "then export again" in warning["message"]
    # logged for the operator's journal, with the code the audit will report
    assert f"WARNING aggregator.federation: export: {warning['message'][:40]}" in err
    if other is not None:  # both manifests named by their digests
        _, b = history["last"]
        assert other.sha256[:12] in warning["message"]
        assert b["federation_sha256"][:12] in warning["message"]
    if change is _put_back_after_a_newer_one:
        assert "E_AUDIT_FEDERATION_ROLLBACK" in {f.code for f in audited.findings}
    out, err = _export(home, tmp_path / "text", as_json=False)
    assert out.startswith("wrote audit bundle ")
    assert f"\nwarning: the audit of this bundle will report {code}: " in err


def test_serve_keeps_every_manifest_it_loads_and_the_export_writes_them(history, tmp_path):
    """The bytes of A and B, kept in the home at each start, go into the bundle's federations/,
    so the module registered under A is judged by A too."""
    fed = history["fed"]
    digests = {k: verify_federation_json(history[k], fed.ca.cert).sha256 for k in ("a", "b")}
    for key, digest in digests.items():
        kept = fed.home.federations / f"{digest}.json"
        assert kept.read_bytes() == history[key] and kept.stat().st_mode & 0o777 == 0o600
    done, err = _export(fed.home.root, tmp_path / "bundle")
    assert done["warnings"] == [] and "warning" not in err
    written = tmp_path / "bundle" / "federations"
    assert sorted(p.name for p in written.iterdir()) == sorted(
        f"{d}.json" for d in digests.values()
    )
    result = audit_bundle(load_bundle(tmp_path / "bundle"), ca_pem=fed.ca_pem)
    assert result.anchor is not None
    assert [m.index for m in result.anchor.registered_under[history["module"]]] == [0]


def test_export_warns_when_the_home_lacks_a_manifest_in_force_at_a_registration(history, tmp_path):
    fed = history["fed"]
    a = verify_federation_json(history["a"], fed.ca.cert)
    home = shutil.copytree(fed.home.root, tmp_path / "home")
    (home / fed.home.federations.name / f"{a.sha256}.json").unlink()  # an older aggregator's home
    done, err = _export(home, tmp_path / "bundle")
    [warning] = done["warnings"]
    assert warning["code"] == "E_AUDIT_FEDERATION_HISTORY"
    assert "entry 0" in warning["message"] and a.sha256[:12] in warning["message"]
    assert "then export again" in warning["message"]
    assert f"WARNING aggregator.federation: export: {warning['message'][:40]}" in err
    audited = audit_bundle(load_bundle(tmp_path / "bundle"), ca_pem=fed.ca_pem)
    assert "E_AUDIT_FEDERATION_HISTORY" in {f.code for f in audited.errors}
    out, err = _export(home, tmp_path / "text", as_json=False)
    assert "\nwarning: the audit of this bundle will report E_AUDIT_FEDERATION_HISTORY: " in err


def test_keeping_a_manifest_tightens_a_hand_copied_file_and_names_a_bad_folder(history, tmp_path):
    """The export's warning tells the operator to copy a missing manifest into federations/;
    a copy made 0644 is tightened at the next start, and a file standing where the folder
    belongs is a ConfigError with a hint, not a traceback out of `serve`."""
    from aggregator.federation_ledger import keep_federation
    from aggregator.home import AggregatorHome
    from ffsecure.errors import ConfigError

    fed = history["fed"]
    a = verify_federation_json(history["a"], fed.ca.cert)
    home_root = shutil.copytree(fed.home.root, tmp_path / "home")
    home = AggregatorHome(home_root)
    kept = home.federations / f"{a.sha256}.json"
    kept.chmod(0o644)
    assert keep_federation(home, history["a"], a) == kept
    assert kept.stat().st_mode & 0o777 == 0o600 and kept.read_bytes() == history["a"]
    shutil.rmtree(home.federations)
    home.federations.write_bytes(b"not a folder")
    with pytest.raises(ConfigError) as info:
        keep_federation(home, history["a"], a)
    assert str(home.federations) in info.value.message and info.value.hint
