"""The auditor on a bundle made by the real operator commands: uploads over mTLS, `aggregator
synthesize`, `train`, `publish`, `modules delete` (retire + retrain), `ledger export`; then
`ffsecure audit verify` finds nothing and names the retrained classifier as current, and a rewrite
of one lineage is caught."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from ffsecure.audit import audit_bundle, load_bundle
from tests.conftest import cli_env
from tests.federation_fixture import build_federation

torch.set_num_threads(1)


def _cli(prog: str, *args: str) -> dict:
    p = subprocess.run(
        [sys.executable, "-m", prog, *args, "--json"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
    )
    assert p.returncode in (0, 3), f"{prog} {' '.join(args)}: {p.stderr[-3000:]}"
    return json.loads(p.stdout)


@pytest.mark.slow  # real synthesis and classifier training (twice) in child processes
def test_real_operator_history_verifies(tmp_path):
    fed = build_federation(tmp_path / "fed", sites=("north", "south", "east"))
    ids = {}
    with fed.serve() as srv:
        for site, classes in (("north", [0, 1]), ("south", [2, 3]), ("east", [0, 1, 2, 3])):
            sealed, pkg = fed.make_package(site, classes=classes)
            with fed.client(site, srv.address) as c:
                ids[site] = c.upload(
                    sealed, module_id=pkg.manifest.module_id, site_id=site
                ).module_id
    home = str(fed.home.root)
    ds = _cli("aggregator", "synthesize", "--dir", home, "--per-class", "4", "--seed", "1")
    clf = _cli(
        "aggregator",
        "train",
        "--dir",
        home,
        "--dataset",
        ds["dataset_id"],
        "--epochs",
        "1",
        "--width",
        "8",
        "--seed",
        "5",
        "--threads",
        "1",
    )
    _cli("aggregator", "publish", "--dir", home, clf["classifier_id"])
    out = _cli(
        "aggregator",
        "modules",
        "delete",
        "--dir",
        home,
        ids["east"],
        "--reason",
        "withdrawn",
        "--yes",
    )
    new = out["retrained"]["classifiers"][0]["classifier_id"]
    bundle = tmp_path / "bundle"
    _cli("aggregator", "ledger", "export", "--dir", home, "--out", str(bundle))
    (tmp_path / "ca.pem").write_bytes(fed.ca_pem)
    verdict = _cli("ffsecure", "audit", "verify", str(bundle), "--ca", str(tmp_path / "ca.pem"))
    assert verdict["verdict"] == "VERIFIED" and verdict["findings"] == [], verdict["findings"]

    result = audit_bundle(load_bundle(bundle), ca_pem=fed.ca_pem)
    current = result.replay.current_classifier()
    assert current.artifact_id == new and ids["east"] not in {
        m["module_id"] for m in current.modules
    }
    assert not result.replay.classifiers[clf["classifier_id"]].live

    # An operator who quietly un-retires the old classifier (drops its classifier.retired entry and
    # re-signs every checkpoint) is caught by the lineage check, naming the classifier's entry.
    from aggregator.home import load_log_key
    from ffsecure.ledger.checkpoint import Checkpoint, sign_checkpoint
    from ffsecure.ledger.merkle import MemoryTree, leaf_hash

    t = tmp_path / "rewritten"
    shutil.copytree(bundle, t)
    lines = (t / "entries.jsonl").read_bytes()[:-1].split(b"\n")
    lines = [
        x
        for x in lines
        if not (b'"type":"classifier.retired"' in x and clf["classifier_id"].encode() in x)
    ]
    (t / "entries.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))
    signer = load_log_key(fed.home)
    tree = MemoryTree([leaf_hash(x) for x in lines])
    for p in (t / "checkpoints").iterdir():
        p.unlink()
    (t / "checkpoints" / str(len(lines))).write_text(
        sign_checkpoint(Checkpoint(signer.name, len(lines), tree.root()), signer.name, signer.key)
    )
    forged = audit_bundle(load_bundle(t), ca_pem=fed.ca_pem)
    live = [f for f in forged.findings if f.code == "E_AUDIT_LIVE_DELETED"]
    assert [(f.entry_type, f.module_id) for f in live] == [("classifier.trained", ids["east"])]
    assert live[0].entry == result.replay.classifiers[clf["classifier_id"]].index
