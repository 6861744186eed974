"""Red team, dishonest exporter: holes the audit still lets through (each test fails until fixed).

Real components as in ``test_federation_ledger.py``: the in-process ``aggregator serve``,
a site uploading a real signed package, the bundle as ``aggregator ledger export`` writes it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from aggregator.export import write_bundle
from ffsecure import pki
from ffsecure.audit import audit_bundle, load_bundle
from ffsecure.federation import create_signed_manifest
from ffsecure.records.entries import validate_entry
from tests.federation_fixture import build_federation

torch.set_num_threads(1)

DP_REQUIRED = {"required": True, "max_epsilon": 10.0, "delta": 1e-5}


def _types(store) -> list[str]:
    return [validate_entry(data)["type"] for data in store.entries(0, store.size())]


def _export(fed, store, path):
    return write_bundle(
        store.snapshot(),
        path,
        ca_cert_pem=fed.ca_pem,
        crl_pem=fed.home.crl.read_bytes(),
        federation_json=fed.home.federation.read_bytes(),
    )


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
        under_b = _export(fed, srv.runtime.store, root / "under-b")
    _install(fed, a)  # the operator reinstalls the older, looser A (still CA-signed)
    with fed.serve() as srv:
        types = _types(srv.runtime.store)
        rolled = _export(fed, srv.runtime.store, root / "rolled-back")
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
