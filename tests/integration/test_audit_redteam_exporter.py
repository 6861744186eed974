"""Red team, dishonest exporter: holes the audit still lets through (each test fails until fixed).

Real components as in ``test_federation_ledger.py``: the in-process ``aggregator serve``,
a site uploading a real signed package, the bundle as ``aggregator ledger export`` writes it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ffsecure import pki
from ffsecure.audit import audit_bundle, load_bundle
from ffsecure.federation import create_signed_manifest
from tests.audit_fixture import resign_checkpoints
from tests.federation_fixture import build_federation, entry_types, export_bundle

torch.set_num_threads(1)

DP_REQUIRED = {"required": True, "max_epsilon": 10.0, "delta": 1e-5}


def _install(fed, signed: bytes) -> None:
    pki.write_public_file(fed.home.federation, signed)


@pytest.fixture(scope="module")
def rollback(tmp_path_factory):
    """A (loose) -> upload -> B (strict, newer) -> the operator puts A back and restarts."""
    root = tmp_path_factory.mktemp("federation-rollback")
    fed = build_federation(root / "fed")
    loose = dataclasses.replace(fed.manifest, created_at="2026-01-01T00:00:00Z")
    a = create_signed_manifest(loose, fed.ca)
    fed.manifest, fed.signed_manifest = loose, a
    _install(fed, a)
    with fed.serve() as srv:
        sealed, pkg = fed.make_package("st-mary", classes=[0, 1])
        with fed.client("st-mary", srv.address) as mary:
            mary.upload(sealed, module_id=pkg.manifest.module_id, site_id="st-mary")
    strict = dataclasses.replace(
        loose, dp_policy=dict(DP_REQUIRED), created_at="2026-02-01T00:00:00Z"
    )
    b = create_signed_manifest(strict, fed.ca)
    _install(fed, b)
    with fed.serve() as srv:  # B, the tightened policy, in force
        under_b = export_bundle(fed, srv.runtime.store, root / "under-b")
    _install(fed, a)  # the operator reinstalls the older, looser A (still CA-signed)
    with fed.serve() as srv:
        types = entry_types(srv.runtime.store)
        rolled = export_bundle(fed, srv.runtime.store, root / "rolled-back")
    return {"fed": fed, "a": a, "b": b, "under_b": under_b, "rolled": rolled, "types": types}


def test_a_federation_manifest_rolled_back_to_an_older_one_is_a_finding(rollback):
    """The newest recorded manifest is not the newest one in force when the log goes back.

    ``check_federation_history`` compares the manifest in force with the *last*
    ``federation.loaded`` only. An operator who put back the older, looser manifest A after
    B (a restart appends ``federation.loaded`` for A; with the log key, appending it at export
    time is just as easy, and no trusted checkpoint can catch an appended entry) has every
    module judged by A: the module without DP that B outlaws reads VERIFIED.
    """
    fed = rollback["fed"]
    assert rollback["types"][-1] == "federation.loaded"
    honest = audit_bundle(load_bundle(rollback["under_b"]), ca_pem=fed.ca_pem)
    assert "E_AUDIT_MODULE_POLICY" in {f.code for f in honest.errors}
    result = audit_bundle(load_bundle(rollback["rolled"]), ca_pem=fed.ca_pem)
    assert result.verdict == "FAILED", [f.to_dict() for f in result.findings]
    codes = {f.code for f in result.errors}
    assert codes == {"E_AUDIT_FEDERATION_STALE"}, [f.to_dict() for f in result.findings]
    rollback_warnings = [f for f in result.warnings if f.code == "E_AUDIT_FEDERATION_ROLLBACK"]
    assert len(rollback_warnings) == 1
    # the auditor who brings B, the newest, gets the module judged by it
    held = audit_bundle(
        load_bundle(rollback["rolled"]), ca_pem=fed.ca_pem, federation_json=rollback["b"]
    )
    assert {f.code for f in held.errors} == {"E_AUDIT_FEDERATION", "E_AUDIT_MODULE_POLICY"}


# ------------------------------------------------- a deletion of other weights


@pytest.fixture(scope="module")
def deleted_world(tmp_path_factory):
    from tests.audit_fixture import AuditLab, standard_history

    root = tmp_path_factory.mktemp("redteam-deletion")
    lab = AuditLab(root)
    idx = standard_history(lab)
    bundle = lab.export("clean")
    yield lab, idx, bundle
    lab.close()


def test_a_deletion_that_records_destroying_other_weights_is_a_finding(deleted_world, tmp_path):
    """``module.deleted`` records the hash of the weights it destroyed (``weights_sha256``).

    The audit never compares it with the module's registered weights, so a deletion entry
    saying the aggregator destroyed some other weights (the module's own kept) reads VERIFIED.
    """
    import json
    import shutil

    from aggregator.home import load_log_key

    lab, idx, bundle = deleted_world
    t = tmp_path / "other-weights"
    shutil.copytree(bundle, t)
    lines = (t / "entries.jsonl").read_bytes()[:-1].split(b"\n")
    i = idx["deleted_c"]
    entry = json.loads(lines[i])
    assert entry["type"] == "module.deleted"
    registered = entry["facts"]["weights_sha256"]
    lines[i] = lines[i].replace(registered.encode(), b"0" * 64)
    (t / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    resign_checkpoints(t, load_log_key(lab.fed.home))
    result = audit_bundle(load_bundle(t), ca_pem=lab.fed.ca_pem)
    assert result.verdict == "FAILED", [f.to_dict() for f in result.findings]
    f = next(f for f in result.errors if f.code == "E_AUDIT_NOT_SHREDDED")
    assert (f.entry, f.module_id) == (i, entry["facts"]["module_id"])
