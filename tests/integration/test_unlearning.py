"""Exact unlearning end to end: sites upload trained modules over mTLS, the operator trains and
publishes, a site deletes its module (over gRPC, and by the operator's CLI); then (a) its blob and
data key are gone, (b) no live dataset or classifier has it in its lineage, (c) the retrained
classifier is bit for bit the one a fresh aggregator trains from the remaining modules with the same
seeds, (d) the exported bundle verifies.

Determinism settings: CPU, torch deterministic algorithms (ffsecure.classifier.train_classifier),
the same torch thread count (recorded in classifier.trained; here --threads 1), the same library
versions.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aggregator.export import write_bundle
from aggregator.operations import Operations
from aggregator.store import open_home_store
from ffsecure.classifier import TrainConfig
from ffsecure.ledger import validate_entry
from tests.conftest import cli_env
from tests.federation_fixture import build_federation
from tests.ops_fixture import from_scratch, trained_package

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
SITES = ("north", "south", "east")
DIGITS = [str(i) for i in range(10)]
PLAN = {
    "north": (list(range(0, 5)), 21),
    "south": (list(range(5, 10)), 22),
    "east": (list(range(10)), 23),
}
EPOCHS, WIDTH, SEED, PER_CLASS, TRAIN_SEED = 2, 8, 4, 12, 5


def aggregator(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"aggregator {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return proc


def _json(*args: str) -> dict:
    return json.loads(aggregator(*args, "--json").stdout)


def _wrapped_dek(home: Path, module_id: str) -> tuple[bytes, str]:
    with sqlite3.connect(home / "store.sqlite") as db:
        wrapped, blob = db.execute(
            "SELECT wrapped_dek, blob_name FROM modules WHERE module_id = ?", (module_id,)
        ).fetchone()
    assert wrapped is not None and (home / "blobs" / blob).is_file()
    return bytes(wrapped), blob


def _assert_shredded(home: Path, module_id: str, wrapped: bytes, blob: str) -> None:
    with sqlite3.connect(home / "store.sqlite") as db:
        row = db.execute(
            "SELECT status, wrapped_dek, blob_name FROM modules WHERE module_id = ?", (module_id,)
        ).fetchone()
    assert row == ("deleted", None, None)
    assert not (home / "blobs" / blob).exists()
    for f in home.glob(
        "store.sqlite*"
    ):  # the wrapped key does not linger in the database or its WAL
        assert wrapped not in f.read_bytes(), f.name


def _live_lineage(store) -> set[str]:
    out = set()
    for kind in ("dataset", "classifier"):
        for row in store.list_artifacts(kind):
            if row.status != "retired":
                out |= {m["module_id"] for m in row.meta["modules"]}
    return out


def _verify_bundle(home: Path, out: Path) -> dict:
    _json("ledger", "export", "--dir", str(home), "--out", str(out))
    return _json("ledger", "verify", "--bundle", str(out))


@pytest.fixture
def federation(tmp_path):
    fed = build_federation(tmp_path / "fed", sites=SITES, labels=DIGITS)
    with fed.home.config.open("a") as fh:
        fh.write('\n[evaluation]\ndata = "digits"\n')
    return fed


def _upload_all(fed, srv) -> dict[str, str]:
    ids = {}
    for site, (classes, seed) in PLAN.items():
        sealed, pkg = trained_package(fed, site, classes, seed)
        with fed.client(site, srv.address) as c:
            ids[site] = c.upload(sealed, module_id=pkg.manifest.module_id, site_id=site).module_id
    return ids


def _train_and_publish(home: Path) -> tuple[dict, dict]:
    ds = _json("synthesize", "--dir", str(home), "--per-class", str(PER_CLASS), "--seed", str(SEED))
    clf = _json(
        "train",
        "--dir",
        str(home),
        "--dataset",
        ds["dataset_id"],
        "--epochs",
        str(EPOCHS),
        "--width",
        str(WIDTH),
        "--seed",
        str(TRAIN_SEED),
        "--threads",
        "1",
    )
    _json("publish", "--dir", str(home), clf["classifier_id"])
    return ds, clf


def _scratch(tmp_path, fed, module_ids, settings=None):
    """What a fresh aggregator trains from ``module_ids`` alone with the same seeds and settings
    (by default those _operator_ops trains with; pass the recorded ones for a CLI-trained model)."""
    with open_home_store(fed.home) as store:
        return from_scratch(
            tmp_path / "scratch",
            fed,
            store,
            module_ids,
            per_class=PER_CLASS,
            seed=SEED,
            settings=settings or TrainConfig(epochs=EPOCHS, seed=TRAIN_SEED),
            width=WIDTH,
            threads=1,
            sites=SITES,
        )


def _operator_ops(fed, store):
    from aggregator.evaluation import load_evaluation
    from aggregator.operations import Operations

    ev = load_evaluation({"data": "digits"}, label_space=DIGITS, image_shape=(1, 16, 16))
    return Operations(
        store, fed.manifest, actor="operator:alice", runs_dir=fed.home.root / "runs", evaluation=ev
    )


def test_site_deletion_over_grpc_retrains_in_the_background(federation, tmp_path):
    """The RPC path (in-process server; the operator's steps as library calls on a second
    connection)."""
    from ffsecure.ledger import verify_bundle_log

    fed = federation
    home = fed.home.root
    with fed.serve() as srv:
        ids = _upload_all(fed, srv)
        with open_home_store(home) as store:
            ops = _operator_ops(fed, store)
            ds = ops.synthesize(per_class=PER_CLASS, seed=SEED)
            clf = ops.train(
                ds.dataset_id,
                settings=TrainConfig(epochs=EPOCHS, seed=TRAIN_SEED),
                width=WIDTH,
                threads=1,
            )
            ops.publish(clf.classifier_id)
        assert ds.grid_path.is_file()
        assert 0.0 <= clf.metrics["accuracy"] <= 1.0
        gone = ids["south"]
        wrapped, blob = _wrapped_dek(home, gone)
        with fed.client("south", srv.address) as c:
            before = c.fetch_classifier()
            assert before.classifier_id == clf.classifier_id and gone in before.module_ids
            result = c.request_deletion([gone], "consent withdrawn")
        types = [validate_entry(e)["type"] for _, e in result.entries]
        assert types == [
            "module.deletion_requested",
            "module.deleted",
            "classifier.retired",
            "dataset.retired",
        ]
        worker = srv.runtime.retrain_worker
        assert worker.wait_idle(600) and worker.last_error is None and worker.passes == 1
        with fed.client("north", srv.address) as c:
            after = c.fetch_classifier()
    # (a)
    _assert_shredded(home, gone, wrapped, blob)
    # (b)
    with open_home_store(home) as store:
        assert gone not in _live_lineage(store)
        trained = validate_entry(store.entry(after.trained_index))
        assert (
            trained["actor"] == "aggregator" and trained["facts"]["replaces"] == clf.classifier_id
        )
        assert 0.0 <= trained["facts"]["metrics"]["accuracy"] <= 1.0
        bundle = write_bundle(
            store.snapshot(),
            tmp_path / "bundle",
            ca_cert_pem=fed.ca_pem,
            crl_pem=fed.home.crl.read_bytes(),
            federation_json=fed.signed_manifest,
        )
        exported = [validate_entry(e)["type"] for e in store.entries(0, store.size())]
    assert after.published and gone not in after.module_ids
    assert sorted(after.module_ids) == sorted([ids["north"], ids["east"]])
    # (c)
    _, scratch = _scratch(tmp_path, fed, [ids["north"], ids["east"]])
    assert scratch.weights == after.weights and scratch.sha256 == after.sha256 != before.sha256
    # (d)
    report = verify_bundle_log(bundle)
    assert [e["type"] for e in report.entries] == exported
    assert exported[-3:] == ["dataset.synthesized", "classifier.trained", "classifier.published"]
    assert exported.count("module.registered") == 3 and exported.count("module.deleted") == 1


@pytest.mark.slow
def test_operator_deletes_with_the_cli(federation, tmp_path):
    fed = federation
    home = fed.home.root
    with fed.serve() as srv:
        ids = _upload_all(fed, srv)
    ds, clf = _train_and_publish(home)
    gone = ids["east"]
    wrapped, blob = _wrapped_dek(home, gone)

    refused = aggregator(
        "modules",
        "delete",
        "--dir",
        str(home),
        gone,
        "--reason",
        "x",
        "--json",
        "--yes",
        "--reason",
        "",
        check=False,
    )
    assert refused.returncode != 0
    out = _json(
        "modules", "delete", "--dir", str(home), gone, "--reason", "site withdrew consent", "--yes"
    )
    assert out["retired_classifiers"] == [clf["classifier_id"]] and out["retired_datasets"] == [
        ds["dataset_id"]
    ]
    types = [e["entry"]["type"] for e in out["entries"]]
    assert types == [
        "module.deleted",
        "classifier.retired",
        "dataset.retired",
        "dataset.synthesized",
        "classifier.trained",
        "classifier.published",
    ]
    new = out["retrained"]["classifiers"][0]
    assert 0.0 <= new["metrics"]["accuracy"] <= 1.0
    _assert_shredded(home, gone, wrapped, blob)
    status = _json("status", "--dir", str(home))
    assert status["modules"] == {"live": 2, "deleted": 1}
    assert status["current_classifier"]["classifier_id"] == new["classifier_id"]
    assert gone not in status["current_classifier"]["modules"] and status["pending_retrains"] == []
    with open_home_store(home) as store:
        assert gone not in _live_lineage(store)
        weights = store.artifact_blob("classifier", new["classifier_id"])
        recorded = store.get_artifact("classifier", new["classifier_id"]).meta["train"]
    # the CLI trained with its own defaults (min_steps among them): the scratch run uses the
    # settings the retrained classifier's record names, as an auditor re-running it would
    settings = Operations.settings_from_config(recorded)
    assert (settings.epochs, settings.seed) == (EPOCHS, TRAIN_SEED)
    _, scratch = _scratch(tmp_path, fed, [ids["north"], ids["south"]], settings)
    assert scratch.weights == weights
    assert _verify_bundle(home, tmp_path / "bundle")["ok"] is True
    again = aggregator(
        "modules", "delete", "--dir", str(home), gone, "--reason", "again", "--yes", check=False
    )
    assert again.returncode == 1 and "error[E_MODULE_DELETED]" in again.stderr
