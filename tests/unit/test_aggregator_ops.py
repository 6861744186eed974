"""aggregator.operations on a real store in a temp dir: lineage facts, training, publishing, exact
unlearning."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3

import pytest
import torch

from aggregator.evaluation import EvalSet, load_evaluation
from aggregator.operations import Operations, recipe_from_facts
from aggregator.store import open_home_store
from ffsecure.classifier import TrainConfig
from ffsecure.errors import FFSecureError, StoreError
from ffsecure.ledger import ENTRY_TYPES, validate_entry
from tests.federation_fixture import build_federation
from tests.ops_fixture import _digits, from_scratch, register_poisoned, register_trained

torch.set_num_threads(1)

SITES = ("north", "south", "east")
PLAN = {"north": ([0, 1], 11), "south": ([2, 3], 12), "east": ([0, 1, 2, 3], 13)}
FAST = dict(epochs=2, batch_size=64, seed=3)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("ops")
    fed = build_federation(root / "fed", sites=SITES)
    ids = {}
    with open_home_store(fed.home) as store:
        for site, (classes, seed) in PLAN.items():
            ids[site] = register_trained(fed, store, site, classes, seed)
    return fed, ids


@pytest.fixture
def env(template, tmp_path):
    """A fresh copy of the registered home for each test."""
    fed, ids = template
    home = tmp_path / "aggregator"
    shutil.copytree(fed.home.root, home)
    store = open_home_store(home)
    yield fed, ids, store, home
    store.close()


def _ops(fed, store, home, **kw):
    return Operations(store, fed.manifest, runs_dir=home / "runs", **kw)


def _eval_set() -> EvalSet:
    ds = _digits((1, 16, 16))
    keep = ds.test_y < 4
    return EvalSet("digits[0-3]", ds.test_x[keep], ds.test_y[keep], ["zero", "one", "two", "three"])


def test_synthesize_records_lineage_and_a_regenerable_recipe(env):
    fed, ids, store, home = env
    ops = _ops(fed, store, home)
    ds = ops.synthesize(per_class=12, seed=7)
    entry = validate_entry(store.entry(ds.appended.index))
    facts = entry["facts"]
    assert entry["type"] == "dataset.synthesized" and set(
        ENTRY_TYPES["dataset.synthesized"]
    ) <= set(facts)
    assert facts["dataset_id"] == ds.dataset_id == f"ds-{ds.appended.index:06d}"
    assert facts["modules"] == sorted(
        (
            {"module_id": m, "weights_sha256": store.get_module(m).weights_sha256}
            for m in ids.values()
        ),
        key=lambda m: m["module_id"],
    )
    assert facts["seed"] == 7 and facts["per_class"] == 12
    assert facts["counts"] == {"zero": 12, "one": 12, "two": 12, "three": 12}
    assert "assignments" not in facts["recipe"]
    assert (
        facts["recipe"]["host"]["torch"] == torch.__version__
    )  # signed into the ledger with the recipe
    row = store.get_artifact("dataset", ds.dataset_id)
    assert row.has_blob is False  # recipe only
    assert recipe_from_facts(facts) == row.meta["recipe"]
    x, y, _ = ops.dataset_tensors(ds.dataset_id)  # regenerated bit for bit (hash-checked)
    assert torch.equal(x, ds.images) and torch.equal(y, ds.labels)
    assert ds.grid_path.is_file() and ds.grid_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_publish_and_fetchable_metadata(env):
    fed, ids, store, home = env
    ops = _ops(fed, store, home, evaluation=_eval_set())
    ds = ops.synthesize(per_class=16, seed=1, grid=False)
    clf = ops.train(ds.dataset_id, settings=TrainConfig(**FAST), width=8, threads=1)
    entry = validate_entry(store.entry(clf.appended.index))
    facts = entry["facts"]
    assert entry["type"] == "classifier.trained"
    assert (
        facts["sha256"]
        == hashlib.sha256(store.artifact_blob("classifier", clf.classifier_id)).hexdigest()
    )
    assert facts["dataset_id"] == ds.dataset_id and facts["modules"] == ds.modules
    assert (
        facts["config"]["seed"] == 3
        and facts["config"]["epochs"] == 2
        and facts["config"]["torch_threads"] == 1
    )
    assert facts["config"]["model"]["arch"] == "cnn"
    assert facts["config"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert 0.0 <= facts["metrics"]["accuracy"] <= 1.0 and facts["metrics"]["n"] == int(
        _eval_set().y.numel()
    )
    with pytest.raises(FFSecureError) as err:
        ops.publish("clf-999999")
    assert err.value.code == "E_NOT_FOUND"
    published = ops.publish()
    cid, pub = published.classifier_id, published.appended
    assert cid == clf.classifier_id and not published.already
    assert validate_entry(pub.entry)["type"] == "classifier.published"
    assert ops.current_classifier().artifact_id == cid
    from aggregator.service import published_classifier

    info, data = published_classifier(store)
    assert info.classifier_id == cid and hashlib.sha256(data).hexdigest() == info.sha256
    assert info.trained_index == clf.appended.index and info.published_index == pub.index
    size = store.size()
    again, by_default = ops.publish(cid), ops.publish()  # idempotent: nothing appended
    assert again.already and again.classifier_id == cid and again.appended == pub
    assert by_default.already and by_default.appended == pub and store.size() == size


def test_refusals_change_nothing(env):
    fed, ids, store, home = env
    ops = _ops(fed, store, home)
    ds = ops.synthesize(per_class=4, seed=0, grid=False)
    ops.delete(ids["south"], "consent withdrawn")
    size = store.size()
    with pytest.raises(FFSecureError) as err:
        ops.train(ds.dataset_id, settings=TrainConfig(**FAST), width=8)
    assert err.value.code == "E_DATASET_RETIRED"
    with pytest.raises(FFSecureError) as err:
        ops.publish()
    assert err.value.code == "E_NO_CLASSIFIER"
    with pytest.raises(FFSecureError) as err:
        ops.delete(ids["south"], "again")
    assert err.value.code == "E_MODULE_DELETED"
    assert store.size() == size


def test_no_live_modules_is_refused(env):
    fed, ids, store, home = env
    ops = _ops(fed, store, home)
    for mid in ids.values():
        ops.delete(mid, "site left")
    size = store.size()
    with pytest.raises(FFSecureError) as err:
        ops.synthesize(per_class=4, seed=0)
    assert err.value.code == "E_NO_MODULES" and store.size() == size


def test_a_module_deleted_during_synthesis_never_enters_a_lineage(env):
    fed, ids, store, home = env
    victim = ids["east"]

    def progress(description, total):
        def update(done):
            if store.get_module(victim).status == "active":
                store.delete_module(victim, actor="site:east", reason="withdrawn mid-synthesis")

        return update

    ops = _ops(fed, store, home, progress=progress)
    size = store.size()
    with pytest.raises(FFSecureError) as err:
        ops.synthesize(per_class=4, seed=0, grid=False)
    assert err.value.code == "E_LINEAGE_DELETED"
    assert store.size() == size + 1  # only the module.deleted entry
    assert store.list_artifacts("dataset") == []


def _live_lineage(store) -> set[str]:
    out = set()
    for kind in ("dataset", "classifier"):
        for row in store.list_artifacts(kind):
            if row.status != "retired":
                out |= {m["module_id"] for m in row.meta["modules"]}
    return out


def test_exact_unlearning_matches_training_from_scratch(env, template, tmp_path):
    fed, ids, store, home = env
    ops = _ops(fed, store, home)
    ds = ops.synthesize(per_class=20, seed=9, grid=False)
    clf = ops.train(ds.dataset_id, settings=TrainConfig(**FAST), width=8, threads=1)
    ops.publish(clf.classifier_id)
    gone = ids["south"]
    wrapped = (
        sqlite3.connect(home / "store.sqlite")
        .execute("SELECT wrapped_dek, blob_name FROM modules WHERE module_id = ?", (gone,))
        .fetchone()
    )
    assert wrapped[0] is not None and (home / "blobs" / wrapped[1]).is_file()

    out = ops.delete(gone, "consent withdrawn", actor="site:south")
    assert out.retired_datasets == [ds.dataset_id] and out.retired_classifiers == [
        clf.classifier_id
    ]
    types = [validate_entry(a.entry)["type"] for a in out.appended]
    assert types == ["module.deleted", "classifier.retired", "dataset.retired"]
    for a in out.appended[1:]:
        facts = validate_entry(a.entry)["facts"]
        assert facts["module_id"] == gone and "consent withdrawn" in facts["reason"]
    # (a) blob and wrapped key gone
    row = (
        sqlite3.connect(home / "store.sqlite")
        .execute("SELECT wrapped_dek, blob_name, status FROM modules WHERE module_id = ?", (gone,))
        .fetchone()
    )
    assert row == (None, None, "deleted") and not (home / "blobs" / wrapped[1]).exists()
    assert not store.list_artifacts("classifier", "published")  # retired, not current
    assert [r.artifact_id for r, _ in ops.pending_retrains()] == [clf.classifier_id]

    again = ops.retrain()
    # (b) no live artifact names the deleted module
    assert gone not in _live_lineage(store)
    assert ops.pending_retrains() == []
    new = again.classifiers[0]
    assert validate_entry(store.entry(new.appended.index))["facts"]["replaces"] == clf.classifier_id
    assert ops.current_classifier().artifact_id == new.classifier_id
    assert again.datasets[0].modules == [m for m in ds.modules if m["module_id"] != gone]

    # (c) bit for bit what a fresh aggregator makes from the remaining modules only
    fed2 = build_federation(tmp_path / "scratch", sites=SITES)
    with open_home_store(fed2.home) as fresh:
        for site in ("north", "east"):
            r = store.get_module(ids[site])
            fresh.register_module(
                module_id=r.module_id,
                site_id=r.site_id,
                manifest_bytes=r.manifest,
                package_meta=r.package_meta,
                weights=store.module_weights(r.module_id),
                entry=validate_entry(store.entry(r.registered_index)),
            )
        ops2 = Operations(fresh, fed.manifest)
        ds2 = ops2.synthesize(per_class=20, seed=9, grid=False)
        clf2 = ops2.train(ds2.dataset_id, settings=TrainConfig(**FAST), width=8, threads=1)
    assert ds2.sha256 == again.datasets[0].sha256
    assert clf2.weights == store.artifact_blob("classifier", new.classifier_id)
    assert clf2.sha256 == new.sha256 != clf.sha256
    store.verify_integrity()


def test_no_retrain_then_retrain_later_and_interrupted_deletion(env):
    fed, ids, store, home = env
    ops = _ops(fed, store, home)
    ds = ops.synthesize(per_class=8, seed=2, grid=False)
    ops.train(ds.dataset_id, settings=TrainConfig(**FAST), width=8, threads=1)
    # A deletion interrupted after the shredding (the store call alone): artifacts still name the
    # module.
    store.delete_module(ids["north"], actor="aggregator", reason="crash test")
    assert ids["north"] in _live_lineage(store)
    # until the retirements run, the classifier made from the deleted module is never served
    size = store.size()
    with pytest.raises(StoreError) as info:
        ops.publish()
    assert info.value.code == "E_LINEAGE_DELETED" and ids["north"] in info.value.message
    assert store.size() == size and ops.current_classifier() is None
    out = ops.retrain()
    assert ids["north"] not in _live_lineage(store)
    assert [c.classifier_id for c in out.classifiers] and out.classifiers[0].modules == [
        m for m in ds.modules if m["module_id"] != ids["north"]
    ]
    assert ops.current_classifier() is None  # the retired one was never published
    assert ops.retrain().appended == []  # nothing left to do


def test_evaluation_section(tmp_path):
    assert load_evaluation({}, label_space=["a", "b"], image_shape=(1, 16, 16)) is None
    with pytest.raises(FFSecureError) as err:
        load_evaluation(
            {"data": "digits", "bogus": 1}, label_space=["a", "b"], image_shape=(1, 16, 16)
        )
    assert err.value.code == "E_CONFIG" and "bogus" in err.value.message
    with pytest.raises(FFSecureError) as err:
        load_evaluation({"data": "digits"}, label_space=["a", "b"], image_shape=(1, 16, 16))
    assert err.value.code == "E_EVAL_CLASSES"
    ev = load_evaluation(
        {"data": "digits", "max_samples": 50},
        label_space=[str(i) for i in range(10)],
        image_shape=(1, 16, 16),
    )
    assert tuple(ev.x.shape) == (50, 1, 16, 16) and ev.y.shape == (50,)


def test_retrain_worker_deletes_in_the_call_and_stops_cleanly(env):
    from aggregator.unlearning import RetrainWorker

    fed, ids, store, home = env
    ops = _ops(fed, store, home)
    ds = ops.synthesize(per_class=8, seed=2, grid=False)
    clf = ops.train(ds.dataset_id, settings=TrainConfig(**FAST), width=8, threads=1)
    ops.publish(clf.classifier_id)
    worker = RetrainWorker(lambda progress=None: _ops(fed, store, home, progress=progress))
    worker.stop()  # a stopping worker takes deletions but starts no pass
    entries = worker.deleter(store, ids["east"], "site:east", "withdrawn", None)
    assert [validate_entry(e)["type"] for _, e in entries] == [
        "module.deleted",
        "classifier.retired",
        "dataset.retired",
    ]
    assert worker.passes == 0 and worker.wait_idle(0)
    assert [r.artifact_id for r, _ in ops.pending_retrains()] == [clf.classifier_id]

    live = RetrainWorker(lambda progress=None: _ops(fed, store, home, progress=progress))
    live.request()
    assert live.wait_idle(300) and live.last_error is None and live.passes == 1
    assert (
        ops.pending_retrains() == []
        and ops.current_classifier().meta["replaces"] == clf.classifier_id
    )
    live.stop()


def test_a_stored_module_with_nan_weights_is_named_by_synthesis_and_skipped_by_the_retrain_worker(
    env, caplog
):
    """A module stored before registration checked values: synthesis names it, the worker goes on
    without it."""
    from aggregator.unlearning import RetrainWorker

    fed, ids, store, home = env
    ops = _ops(fed, store, home)
    ds = ops.synthesize(per_class=8, seed=2, grid=False)
    clf = ops.train(ds.dataset_id, settings=TrainConfig(**FAST), width=8, threads=1)
    ops.publish(clf.classifier_id)
    bad, tensor = register_poisoned(fed, store, "south", [2, 3], 21)
    size = store.size()
    with pytest.raises(FFSecureError) as err:
        ops.synthesize(per_class=8, seed=2, grid=False)
    assert err.value.code == "E_TENSOR_VALUE"
    assert bad in err.value.message and repr(tensor) in err.value.message
    assert store.size() == size  # the refused step appended nothing

    worker = RetrainWorker(lambda progress=None: _ops(fed, store, home, progress=progress))
    with caplog.at_level("WARNING", logger="aggregator.operations"):
        worker.deleter(store, ids["east"], "site:east", "withdrawn", None)
        assert worker.wait_idle(300)
    worker.stop()
    assert worker.last_error is None, worker.last_error
    assert [m for m, _ in worker.last_outcome.skipped_modules] == [bad]
    skipped = [r for r in caplog.records if getattr(r, "event", None) == "module_skipped"]
    assert skipped and skipped[-1].module_id == bad and bad in skipped[-1].getMessage()
    current = ops.current_classifier()
    assert current.meta["replaces"] == clf.classifier_id
    assert {m["module_id"] for m in current.meta["modules"]} == {ids["north"], ids["south"]}


@pytest.mark.slow
def test_exact_unlearning_holds_at_world_size_two(env, tmp_path):
    """--nproc 2: the world size is recorded, retraining uses it, and the result is bit for bit
    what a fresh aggregator makes at world size 2 from the remaining modules."""
    fed, ids, store, home = env
    ops = _ops(fed, store, home)
    settings = TrainConfig(**FAST, world_size=2)
    ds = ops.synthesize(per_class=20, seed=9, grid=False, nproc=2)
    assert ds.sha256 == ops.synthesize(per_class=20, seed=9, grid=False).sha256
    clf = ops.train(ds.dataset_id, settings=settings, width=8, threads=1)
    facts = validate_entry(store.entry(clf.appended.index))["facts"]
    assert facts["config"]["world_size"] == 2 and facts["config"]["torch_threads"] == 1
    ops.delete(ids["south"], "consent withdrawn", actor="site:south")
    new = ops.retrain().classifiers[0]
    assert validate_entry(store.entry(new.appended.index))["facts"]["config"]["world_size"] == 2
    ds2, clf2 = from_scratch(
        tmp_path / "scratch",
        fed,
        store,
        [ids["north"], ids["east"]],
        per_class=20,
        seed=9,
        settings=settings,
        width=8,
        threads=1,
        sites=SITES,
    )
    assert clf2.weights == store.artifact_blob("classifier", new.classifier_id)
    assert clf2.sha256 == new.sha256 != clf.sha256


def test_deleting_a_module_that_gave_no_sample_retrains_to_the_same_bytes_and_verifies(tmp_path):
    """Three modules cover the same two classes and each class gets one sample: one module
    gives none. Deleting it, the honest retrain makes the very same dataset and classifier
    bytes again, and the audit's same-bytes rule must not call them a retired model
    re-logged (only modules with a share of the samples taint bytes)."""
    from ffsecure.audit import audit_bundle, load_bundle
    from tests.federation_fixture import export_bundle

    sites = ("north", "south", "east")
    fed = build_federation(tmp_path / "fed", sites=sites)
    store = open_home_store(fed.home)
    try:
        ids = {s: register_trained(fed, store, s, [0, 1], 20 + i) for i, s in enumerate(sites)}
        ops = _ops(fed, store, fed.home.root)
        ds = ops.synthesize(per_class=1, seed=2, grid=False)
        used = {a["module_id"] for a in ds.recipe["assignments"]}
        (idle,) = [m for m in ids.values() if m not in used]
        clf = ops.train(ds.dataset_id, settings=TrainConfig(**FAST), width=8, threads=1)
        ops.publish(clf.classifier_id)
        ops.delete(idle, reason="site asked")
        out = ops.retrain()
        (new_clf,) = out.classifiers
        new_ds = store.get_artifact("dataset", new_clf.dataset_id)
        assert new_ds.meta["sha256"] == ds.sha256 and new_clf.sha256 == clf.sha256
        ops.publish(new_clf.classifier_id)
        bundle = export_bundle(fed, store, tmp_path / "bundle")
    finally:
        store.close()
    result = audit_bundle(load_bundle(bundle), ca_pem=fed.ca_pem)
    assert result.verdict == "VERIFIED", [(f.code, f.message) for f in result.findings]
