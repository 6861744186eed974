"""Committed lineage end to end: a real store logs lineage commitments (threshold lowered to 0, so
three real modules take the path of a thousand), synthesizes, trains, deletes a module and
retrains; `aggregator ledger export` writes the lineage documents and `ffsecure audit verify`
VERIFIES the bundle; an exporter who drops, swaps or edits a document, or an aggregator who logs
a wrong count, gets a FAILED audit (exit 3) naming the entry."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aggregator.home import load_log_key
from aggregator.operations import Operations, recipe_from_facts
from aggregator.store import open_home_store
from ffsecure import canonical
from ffsecure.audit import audit_bundle, load_bundle, render_html
from ffsecure.classifier import TrainConfig
from ffsecure.ledger import validate_entry
from ffsecure.ledger.checkpoint import Checkpoint, sign_checkpoint
from ffsecure.ledger.merkle import MemoryTree, leaf_hash
from tests.conftest import cli_env
from tests.federation_fixture import build_federation
from tests.ops_fixture import register_trained

torch.set_num_threads(1)

PLAN = {"north": ([0, 1], 11), "south": ([2, 3], 12), "east": ([0, 1, 2, 3], 13)}
FAST = dict(epochs=1, batch_size=64, seed=3)


def _cli(prog: str, *args: str) -> tuple[int, dict]:
    p = subprocess.run(
        [sys.executable, "-m", prog, *args, "--json"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
    )
    assert p.returncode in (0, 3), f"{prog} {' '.join(args)}: {p.stderr[-3000:]}"
    return p.returncode, json.loads(p.stdout)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Synthesize, train, publish, delete `south`, retrain; export the bundle."""
    root = tmp_path_factory.mktemp("lineage")
    fed = build_federation(root / "fed", sites=tuple(PLAN))
    with open_home_store(fed.home) as store:
        ids = {site: register_trained(fed, store, site, *plan) for site, plan in PLAN.items()}
        ops = Operations(store, fed.manifest, lineage_inline_max=0)
        ds = ops.synthesize(per_class=8, seed=4, grid=False)
        clf = ops.train(ds.dataset_id, settings=TrainConfig(**FAST), width=8, threads=1)
        ops.publish(clf.classifier_id)
        ops.delete(ids["south"], "consent withdrawn", actor="site:south")
        again = ops.retrain()
        facts = {
            aid: validate_entry(store.entry(index))["facts"]
            for aid, index in (
                (ds.dataset_id, ds.appended.index),
                (clf.classifier_id, clf.appended.index),
                (again.datasets[0].dataset_id, again.datasets[0].appended.index),
                (again.classifiers[0].classifier_id, again.classifiers[0].appended.index),
            )
        }
        recipe = store.get_artifact("dataset", ds.dataset_id).meta["recipe"]
        store.verify_integrity()
    bundle = root / "bundle"
    _cli("aggregator", "ledger", "export", "--dir", str(fed.home.root), "--out", str(bundle))
    (root / "ca.pem").write_bytes(fed.ca_pem)
    return fed, ids, facts, recipe, bundle, root


def _copy(bundle: Path, to: Path) -> Path:
    shutil.copytree(bundle, to)
    return to


def _lineage_codes(result) -> list[tuple[str, str]]:
    return [(f.code, f.entry_type) for f in result.findings if f.check == "lineage"]


def test_a_committed_history_exports_and_verifies(history):
    fed, ids, facts, recipe, bundle, root = history
    ds_id, clf_id, ds2_id, clf2_id = facts
    for aid in facts:
        assert "modules" not in facts[aid] and set(facts[aid]["lineage"]) == {"count", "sha256"}
    assert (
        facts[clf_id]["lineage"]
        == facts[ds_id]["lineage"]
        == {
            "count": 3,
            "sha256": facts[ds_id]["lineage"]["sha256"],
        }
    )
    assert facts[clf2_id]["lineage"] == facts[ds2_id]["lineage"] and (
        facts[ds2_id]["lineage"]["count"] == 2
    )
    names = sorted(p.name for p in (bundle / "lineage").iterdir())
    assert names == sorted(f"{facts[a]['lineage']['sha256']}.json" for a in (ds_id, ds2_id))
    documents = load_bundle(bundle).lineage
    assert recipe_from_facts(facts[ds_id], documents) == recipe

    code, verdict = _cli("ffsecure", "audit", "verify", str(bundle), "--ca", str(root / "ca.pem"))
    assert (code, verdict["verdict"], verdict["findings"]) == (0, "VERIFIED", [])
    result = audit_bundle(load_bundle(bundle), ca_pem=fed.ca_pem)
    current = result.replay.current_classifier()
    assert current.artifact_id == clf2_id
    assert {m["module_id"] for m in current.modules} == {ids["north"], ids["east"]}
    assert {m["module_id"] for m in result.replay.classifiers[clf_id].modules} == set(ids.values())
    page = render_html(result)
    assert "Lineage of the current classifier" in page
    assert ids["north"][:12] in page and ids["east"][:12] in page and ids["south"][:12] in page
    assert f"lineage document {facts[ds2_id]['lineage']['sha256'][:20]}" in page


def test_a_dropped_lineage_document_fails_the_audit(history):
    fed, ids, facts, recipe, bundle, root = history
    ds_id = next(iter(facts))
    t = _copy(bundle, root / "dropped")
    (t / "lineage" / f"{facts[ds_id]['lineage']['sha256']}.json").unlink()
    code, verdict = _cli("ffsecure", "audit", "verify", str(t), "--ca", str(root / "ca.pem"))
    assert code == 3 and verdict["verdict"] == "FAILED"
    missing = [f for f in verdict["findings"] if f["code"] == "E_AUDIT_LINEAGE_MISSING"]
    assert [f["entry_type"] for f in missing] == ["dataset.synthesized", "classifier.trained"]
    # without the document nothing reads the retired dataset's lineage any more
    assert load_bundle(t).lineage.keys() == {facts[a]["lineage"]["sha256"] for a in facts} - {
        facts[ds_id]["lineage"]["sha256"]
    }


def test_a_swapped_or_edited_lineage_document_fails_the_audit(history):
    fed, ids, facts, recipe, bundle, root = history
    ds_id, _, ds2_id, _ = facts
    first = bundle / "lineage" / f"{facts[ds_id]['lineage']['sha256']}.json"
    second = bundle / "lineage" / f"{facts[ds2_id]['lineage']['sha256']}.json"

    swapped = _copy(bundle, root / "swapped")
    (swapped / "lineage" / first.name).write_bytes(second.read_bytes())
    edited = _copy(bundle, root / "edited")
    doc = canonical.loads(first.read_bytes())
    doc["modules"][1]["classes"] = [0]
    (edited / "lineage" / first.name).write_bytes(canonical.dumps(doc))
    for t in (swapped, edited):
        result = audit_bundle(load_bundle(t), ca_pem=fed.ca_pem)
        assert result.verdict == "FAILED"
        assert _lineage_codes(result) == [
            ("E_AUDIT_LINEAGE_COMMITMENT", "dataset.synthesized"),
            ("E_AUDIT_LINEAGE_COMMITMENT", "classifier.trained"),
        ]


def test_a_count_other_than_the_document_s_fails_the_audit(history):
    """Even the aggregator, re-signing every checkpoint, cannot log a count the document lacks."""
    fed, ids, facts, recipe, bundle, root = history
    ds2_id = list(facts)[2]
    t = _copy(bundle, root / "count")
    lines = (t / "entries.jsonl").read_bytes()[:-1].split(b"\n")
    old = canonical.dumps(facts[ds2_id]["lineage"])
    assert old.startswith(b'{"count":2,')
    lines = [x.replace(old, old.replace(b'"count":2', b'"count":3')) for x in lines]
    (t / "entries.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))
    tampered = audit_bundle(load_bundle(t), ca_pem=fed.ca_pem)
    assert tampered.verdict == "FAILED"  # the log no longer matches its signed checkpoints
    signer = load_log_key(fed.home)
    tree = MemoryTree([leaf_hash(x) for x in lines])
    for p in (t / "checkpoints").iterdir():
        p.unlink()
    (t / "checkpoints" / str(len(lines))).write_text(
        sign_checkpoint(Checkpoint(signer.name, len(lines), tree.root()), signer.name, signer.key)
    )
    code, verdict = _cli("ffsecure", "audit", "verify", str(t), "--ca", str(root / "ca.pem"))
    assert code == 3 and [
        (f["code"], f["entry_type"]) for f in verdict["findings"] if f["check"] == "lineage"
    ] == [
        ("E_AUDIT_LINEAGE_COMMITMENT", "dataset.synthesized"),
        ("E_AUDIT_LINEAGE_COMMITMENT", "classifier.trained"),
    ]
