"""A dishonest operator holding the log key writes lineage entries that hide a deleted module.

Every entry goes through the aggregator's own ``Store`` and is signed with the real log
key; the bundle is exported as ``aggregator ledger export`` writes it. Each case read
VERIFIED with no finding before the audit checked it; each must now FAIL with the finding
named here (docs/auditor-guide.md, "Lineage").
"""

from __future__ import annotations

import hashlib
import os

import pytest

from ffsecure.audit.bundle import load_bundle
from ffsecure.audit.verify import audit_bundle
from ffsecure.records.entries import make_entry
from tests.audit_fixture import AuditLab


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _put(lab: AuditLab, kind: str, aid: str, facts: dict, blob: bytes) -> int:
    etype = "dataset.synthesized" if kind == "dataset" else "classifier.trained"
    entry = make_entry(etype, "operator:alice", facts)
    return lab.store.put_artifact(kind, aid, {}, blob, entry)[0]


def _errors(lab: AuditLab, name: str) -> list[tuple[str, str]]:
    result = audit_bundle(load_bundle(lab.export(name)), ca_pem=lab.fed.ca_pem)
    errors = [(f.code, f.message) for f in result.errors]
    assert (result.verdict == "FAILED") == bool(errors)
    return errors


@pytest.fixture
def lab(tmp_path):
    lab = AuditLab(tmp_path)
    yield lab
    lab.close()


def test_a_retired_model_logged_again_under_a_new_id_is_a_finding(lab):
    """clf-1 holds site C's module; C is deleted, ds-1 and clf-1 retired; then 'ds-2' and
    'clf-2' are logged with a lineage without C but the very bytes of ds-1 and clf-1."""
    a = lab.register("st-mary", (0, 1), seed=1)
    b = lab.register("st-john", (1, 2), seed=2)
    c = lab.register("st-mary", (2, 3), seed=3)
    ds_blob, clf_blob = os.urandom(64), os.urandom(64)
    common = {"seed": 1, "per_class": 100, "counts": {"0": 100}, "recipe": {"v": 1, "seed": 1}}
    lineage_abc = {"modules": lab.lineage([a, b, c])}
    _put(
        lab,
        "dataset",
        "ds-1",
        {"dataset_id": "ds-1", "sha256": sha(ds_blob), **lineage_abc, **common},
        ds_blob,
    )
    clf1 = {"classifier_id": "clf-1", "dataset_id": "ds-1", "sha256": sha(clf_blob)}
    _put(lab, "classifier", "clf-1", {**clf1, **lineage_abc}, clf_blob)
    lab.publish("clf-1")
    assert _errors(lab, "honest-so-far") == []
    lab.delete(c, site="st-mary")
    lab.retire("dataset", "ds-1", c)
    lab.retire("classifier", "clf-1", c)
    lineage_ab = {"modules": lab.lineage([a, b])}
    _put(
        lab,
        "dataset",
        "ds-2",
        {"dataset_id": "ds-2", "sha256": sha(ds_blob), **lineage_ab, **common},
        ds_blob,
    )
    clf2 = {"classifier_id": "clf-2", "dataset_id": "ds-2", "sha256": sha(clf_blob)}
    _put(lab, "classifier", "clf-2", {**clf2, **lineage_ab}, clf_blob)
    lab.publish("clf-2")
    errors = _errors(lab, "reissued")
    codes = [code for code, _ in errors]
    assert codes == ["E_AUDIT_LINEAGE_DELETED", "E_AUDIT_LIVE_DELETED", "E_AUDIT_LIVE_DELETED"]
    assert "classifier clf-2 is published, but its bytes" in errors[0][1]
    assert "are those of classifier clf-1" in errors[0][1] and c in errors[0][1]
    assert "dataset ds-2 is live, but its bytes" in errors[1][1]
    assert "are those of dataset ds-1" in errors[1][1]
    assert "classifier clf-2 is live" in errors[2][1] and c in errors[2][1]


def test_a_classifier_published_after_its_module_was_deleted_is_a_finding(lab):
    """C is deleted, then clf-1 (made from C, not yet retired) is served; retired later."""
    a = lab.register("st-mary", (0, 1), seed=1)
    c = lab.register("st-john", (2, 3), seed=3)
    lab.dataset("ds-1", [a, c])
    lab.classifier("clf-1", "ds-1", [a, c])
    lab.delete(c, site="st-john")
    lab.publish("clf-1")
    lab.retire("dataset", "ds-1", c)
    lab.retire("classifier", "clf-1", c)
    errors = _errors(lab, "published-after-delete")
    assert [code for code, _ in errors] == ["E_AUDIT_LINEAGE_DELETED"]
    assert "clf-1 is published after module" in errors[0][1] and c in errors[0][1]


def _recipe(modules: list[tuple[str, str, list[int]]], blob: bytes) -> dict:
    return {
        "v": 1,
        "seed": 5,
        "num_classes": 4,
        "per_class": 10,
        "image_shape": [1, 8, 8],
        "device_type": "cpu",
        "uncovered": [],
        "dataset_sha256": sha(blob),
        "modules": [
            {"classes": classes, "family": "cvae", "module_id": mid, "weights_sha256": w}
            for mid, w, classes in modules
        ],
    }


def test_a_recipe_sampling_a_module_the_lineage_leaves_out_is_a_finding(lab):
    """After C's deletion ds-2 lists [a] in facts.modules, but its recipe (what regeneration
    samples from) names C too."""
    a = lab.register("st-mary", (0, 1), seed=1)
    c = lab.register("st-john", (2, 3), seed=3)
    lab.dataset("ds-1", [a, c])
    lab.delete(c, site="st-john")
    lab.retire("dataset", "ds-1", c)
    blob = os.urandom(64)
    facts = {
        "dataset_id": "ds-2",
        "sha256": sha(blob),
        "modules": lab.lineage([a]),
        "seed": 5,
        "per_class": 10,
        "counts": {"0": 10, "1": 10, "2": 10, "3": 10},
    }
    honest = _recipe([(a, lab.weights[a], [0, 1])], blob)
    _put(lab, "dataset", "ds-2", {**facts, "recipe": honest}, blob)
    assert _errors(lab, "honest") == []
    hiding = _recipe([(a, lab.weights[a], [0, 1]), (c, lab.weights[c], [2, 3])], blob)
    _put(lab, "dataset", "ds-3", {**facts, "dataset_id": "ds-3", "recipe": hiding}, blob)
    errors = _errors(lab, "recipe-hides-deleted")
    assert [code for code, _ in errors] == ["E_AUDIT_LINEAGE_FORMAT"]
    assert "dataset ds-3" in errors[0][1] and "are not the modules" in errors[0][1]


def test_a_recipe_of_other_bytes_than_the_dataset_is_a_finding(lab):
    a = lab.register("st-mary", (0, 1), seed=1)
    blob = os.urandom(64)
    recipe = _recipe([(a, lab.weights[a], [0, 1])], os.urandom(64))
    facts = {"dataset_id": "ds-1", "sha256": sha(blob), "modules": lab.lineage([a]), "seed": 5}
    _put(lab, "dataset", "ds-1", {**facts, "per_class": 10, "counts": {}, "recipe": recipe}, blob)
    errors = _errors(lab, "recipe-of-other-bytes")
    assert [code for code, _ in errors] == ["E_AUDIT_LINEAGE_MISMATCH"]
    assert "recipe is of dataset" in errors[0][1]


def test_a_dataset_with_an_empty_lineage_is_a_finding(lab):
    """No synthesis has zero modules; an empty list would leave its classifier unchecked."""
    a = lab.register("st-mary", (0, 1), seed=1)
    lab.dataset("ds-1", [a])
    blob = os.urandom(64)
    facts = {"dataset_id": "ds-2", "sha256": sha(blob), "modules": [], "seed": 5}
    _put(lab, "dataset", "ds-2", {**facts, "per_class": 10, "counts": {}, "recipe": {"v": 1}}, blob)
    errors = _errors(lab, "empty-lineage")
    assert [code for code, _ in errors] == ["E_AUDIT_LINEAGE_FORMAT"]
    assert "names no module" in errors[0][1]


def test_a_lineage_module_without_its_weights_is_a_finding(lab):
    a = lab.register("st-mary", (0, 1), seed=1)
    blob = os.urandom(64)
    facts = {"dataset_id": "ds-1", "sha256": sha(blob), "modules": [a], "seed": 5}
    _put(lab, "dataset", "ds-1", {**facts, "per_class": 10, "counts": {}, "recipe": {"v": 1}}, blob)
    errors = _errors(lab, "bare-module-id")
    assert [code for code, _ in errors] == ["E_AUDIT_LINEAGE_HASH"]
    assert "without the weights" in errors[0][1]


def test_a_classifier_trained_on_a_retired_twin_of_a_dataset_is_a_finding(lab):
    """ds-2 has the bytes of ds-1 (made from C, deleted) and a lineage without C; clf-2 is
    trained on ds-2 and published; then ds-2 is retired, so no live dataset has those bytes.
    The classifier still learnt from C's samples."""
    a = lab.register("st-mary", (0, 1), seed=1)
    c = lab.register("st-john", (2, 3), seed=3)
    ds_blob, clf_blob = os.urandom(64), os.urandom(64)
    common = {"seed": 1, "per_class": 100, "counts": {"0": 100}, "recipe": {"v": 1, "seed": 1}}
    facts = {"dataset_id": "ds-1", "sha256": sha(ds_blob), "modules": lab.lineage([a, c])}
    _put(lab, "dataset", "ds-1", {**facts, **common}, ds_blob)
    lab.delete(c, site="st-john")
    lab.retire("dataset", "ds-1", c)
    twin = {"dataset_id": "ds-2", "sha256": sha(ds_blob), "modules": lab.lineage([a])}
    _put(lab, "dataset", "ds-2", {**twin, **common}, ds_blob)
    clf = {"classifier_id": "clf-2", "dataset_id": "ds-2", "sha256": sha(clf_blob)}
    _put(lab, "classifier", "clf-2", {**clf, "modules": lab.lineage([a])}, clf_blob)
    lab.publish("clf-2")
    lab.retire("dataset", "ds-2", a, reason="superseded")
    errors = _errors(lab, "twin-retired")
    assert [code for code, _ in errors] == ["E_AUDIT_LINEAGE_DELETED", "E_AUDIT_LIVE_DELETED"]
    for _, message in errors:
        assert "its dataset ds-2 has the bytes" in message and "dataset ds-1" in message
        assert c in message
