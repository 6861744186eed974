"""`site-node receipts export` as a site runs it, and `ffsecure audit verify` on what it wrote.

A real aggregator (in process, loopback mTLS) registers two modules of one site and
deletes one of them; the site exports its receipts with the real program; the operator
exports the ledger with `aggregator ledger export`; the auditor verifies the bundle with
every exported file as a trusted checkpoint, and a site's module.json passed by mistake
is a usage error, not a finding.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ffsecure.errors import FFSecureError
from ffsecure.templates import FileExistsRefused
from site_node import sync
from site_node import trust as trustlib
from site_node.receipts import export_receipts
from site_node.state import StateDir
from site_node.training import train_module
from tests.conftest import cli_env
from tests.federation_fixture import build_federation
from tests.integration.test_site_node import (
    DIGITS,
    REPO,
    InProcessAggregator,
    free_port,
    setup_site_in_process,
    site_node,
    upload_in_process,
    write_site_config,
)


def program(tool: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", tool, *map(str, args)],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One site with a registered module and a deleted one; the ledger exported afterwards."""
    root = tmp_path_factory.mktemp("receipts")
    fed = build_federation(root / "fed", labels=DIGITS, sites=())
    agg = InProcessAggregator(fed, free_port()).start()
    try:
        cfg_path = write_site_config(root, "st-a", agg.address, [0, 1])
        cfg, t, first = setup_site_in_process(fed, cfg_path)
        second = train_module(cfg, t)
        upload_in_process(cfg, t)
        state = StateDir(cfg.state_dir)
        with trustlib.make_client(cfg, t) as client:
            sync.forget_module(state, client, t, first.module_id, "consent withdrawn")
    finally:
        agg.stop()
    bundle = root / "bundle"
    done = program("aggregator", "ledger", "export", "--dir", fed.home.root, "--out", bundle)
    assert done.returncode == 0, done.stderr
    return root, fed, cfg_path, first.module_id, second.module_id, bundle


def test_export_writes_one_verified_receipt_per_module_that_audit_verify_takes(world):
    root, fed, cfg, deleted, registered, bundle = world
    out = root / "receipts-1"
    summary = json.loads(
        site_node("receipts", "export", "--config", cfg, "--out", out, "--json").stdout
    )
    names = sorted(f["name"] for f in summary["files"])
    assert names == sorted(
        [
            f"{deleted}.receipt.json",
            f"{deleted}.deletion.note",
            f"{registered}.receipt.json",
            "checkpoint.note",
            "index.json",
        ]
    )
    assert summary["receipts"] == 2 and summary["deletions"] == 1
    assert all(f["written"] for f in summary["files"])
    index = json.loads((out / "index.json").read_text())
    assert index["format"] == "ffsecure-receipts/1" and index["site_id"] == "st-a"
    assert {f["file"] for f in index["files"]} == set(names) - {"index.json"}
    receipt = json.loads((out / f"{registered}.receipt.json").read_text())
    assert receipt["module_id"] == registered and set(receipt) == {
        "module_id",
        "index",
        "entry",
        "tree_size",
        "checkpoint",
        "inclusion_proof",
        "existing",
    }
    trusted = [a for p in summary["trusted_checkpoints"] for a in ("--trusted-checkpoint", p)]
    verdict = program(
        "ffsecure", "audit", "verify", bundle, "--ca", fed.home.ca_cert, *trusted, "--json"
    )
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    checks = {c["name"]: c for c in json.loads(verdict.stdout)["checks"]}
    assert checks["trusted-checkpoints"]["status"] == "ok"
    assert checks["trusted-checkpoints"]["detail"].startswith("4 trusted checkpoint(s)")


def test_export_again_keeps_identical_files_and_refuses_to_overwrite_a_changed_one(world):
    """The library the command calls (a process per call would cost a torch import each)."""
    root, fed, cfg, deleted, registered, bundle = world
    state, out = StateDir(cfg.parent / "state"), root / "receipts-2"
    first = export_receipts(state, out, site_id="st-a")
    again = export_receipts(state, out, site_id="st-a")
    assert not first.unchanged and again.unchanged == {f.name for f in again.files}
    target = out / f"{registered}.receipt.json"
    target.write_text(target.read_text().replace('"existing": false', '"existing": true'))
    changed = target.read_bytes()
    (out / "index.json").unlink()
    with pytest.raises(FileExistsRefused) as refused:
        export_receipts(state, out, site_id="st-a")
    assert refused.value.code == "E_EXISTS" and str(target) in refused.value.message
    assert "new folder" in (refused.value.hint or "")
    assert target.read_bytes() == changed and not (out / "index.json").exists()  # nothing written


def test_export_refuses_a_damaged_receipt_instead_of_handing_it_to_an_auditor(world, tmp_path):
    root, fed, cfg, deleted, registered, bundle = world
    state = StateDir(cfg.parent / "state")
    path = state.modules_dir / registered / "module.json"
    good = path.read_text()
    record = json.loads(good)
    record["receipt"]["index"] += 1
    path.write_text(json.dumps(record))
    try:
        with pytest.raises(FFSecureError) as damaged:
            export_receipts(state, tmp_path / "r", site_id="st-a")
    finally:
        path.write_text(good)
    assert damaged.value.code == "E_STATE_CORRUPT" and registered in damaged.value.message
    assert not (tmp_path / "r").exists()


def test_a_module_json_given_to_audit_verify_is_a_usage_error_naming_the_export(world):
    root, fed, cfg, deleted, registered, bundle = world
    module_json = cfg.parent / "state" / "modules" / registered / "module.json"
    proc = program(
        "ffsecure",
        "audit",
        "verify",
        bundle,
        "--ca",
        fed.home.ca_cert,
        "--trusted-checkpoint",
        module_json,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error[E_USAGE]" in proc.stderr and "module.json" in proc.stderr
    assert "site-node receipts export" in proc.stderr and "FAILED" not in proc.stdout
