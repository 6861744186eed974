"""Replaying lineage and deletion events from entries alone."""

from __future__ import annotations

import hashlib

from ffsecure.audit.findings import Findings
from ffsecure.audit.lineage import replay
from ffsecure.records.entries import make_entry

A, B = "a" * 32, "b" * 32
WA, WB = "1" * 64, "2" * 64
H = "3" * 64


def reg(mid, w, site="s1"):
    return make_entry(
        "module.registered",
        f"site:{site}",
        {"module_id": mid, "site_id": site, "manifest_sha256": H, "weights_sha256": w},
    )


def blob_sha(artifact_id):
    """Distinct bytes per artifact, as real datasets and classifiers have."""
    return hashlib.sha256(artifact_id.encode()).hexdigest()


def ds(did, mods, sha=None):
    facts = {"dataset_id": did, "sha256": sha or blob_sha(did), "modules": mods}
    return make_entry("dataset.synthesized", "operator:o", facts)


def clf(cid, did, mods=None, sha=None):
    facts = {"classifier_id": cid, "dataset_id": did, "sha256": sha or blob_sha(cid)}
    if mods is not None:
        facts["modules"] = mods
    return make_entry("classifier.trained", "operator:o", facts)


def deleted(mid, destroyed=("wrapped_dek", "blob"), weights=""):
    """A ``module.deleted`` as the store writes it: with the destroyed weights' hash (the
    module's registered one unless ``weights`` names another; ``None`` leaves it out)."""
    facts = {"module_id": mid, "reason": "r", "destroyed": list(destroyed)}
    if weights is not None:
        facts["weights_sha256"] = weights or {A: WA, B: WB}.get(mid, H)
    return make_entry("module.deleted", "aggregator", facts)


def request(mid, actor="site:s1"):
    return make_entry("module.deletion_requested", actor, {"module_id": mid, "reason": "r"})


def retire(kind, aid):
    return make_entry(f"{kind}.retired", "aggregator", {f"{kind}_id": aid, "reason": "r"})


LIN = [{"module_id": A, "weights_sha256": WA}, {"module_id": B, "weights_sha256": WB}]


def codes(entries):
    f = Findings()
    st = replay(entries, f)
    return st, [(x.code, x.entry) for x in f.items]


def test_exact_unlearning_history_is_clean():
    st, found = codes(
        [
            reg(A, WA),
            reg(B, WB),
            ds("d1", LIN),
            clf("c1", "d1"),
            request(A),
            deleted(A),
            retire("dataset", "d1"),
            retire("classifier", "c1"),
            ds("d2", LIN[1:]),
            clf("c2", "d2", LIN[1:]),
        ]
    )
    assert found == []
    assert st.current_classifier().artifact_id == "c2"
    assert st.classifiers["c1"].modules == LIN  # lineage through the dataset


def test_live_dataset_and_classifier_with_a_deleted_module():
    _, found = codes(
        [
            reg(A, WA),
            reg(B, WB),
            ds("d1", LIN),
            clf("c1", "d1", LIN),
            deleted(A),
            retire("dataset", "d1"),
        ]
    )
    assert found == [("E_AUDIT_LIVE_DELETED", 3)]


def test_deletion_request_without_deletion():
    _, found = codes([reg(A, WA), request(A), reg(B, WB), request(B), deleted(B)])
    assert found == [("E_AUDIT_DELETION_MISSING", 1)]


def test_lineage_contradictions_each_name_their_entry():
    _, found = codes(
        [
            reg(A, WA),
            deleted(A),
            ds("d1", [{"module_id": A, "weights_sha256": WA}]),
            ds("d2", [{"module_id": B, "weights_sha256": WB}]),
            reg(B, WB),
            ds("d3", [{"module_id": B, "weights_sha256": WA}]),
            clf("c1", "nope"),
            clf("c2", "d3", LIN),
            deleted(A),
            deleted("c" * 32, destroyed=("blob",)),
        ]
    )
    assert ("E_AUDIT_LINEAGE_DELETED", 2) in found
    assert ("E_AUDIT_LINEAGE_UNKNOWN", 3) in found
    assert ("E_AUDIT_LINEAGE_HASH", 5) in found
    assert ("E_AUDIT_LINEAGE_UNKNOWN", 6) in found
    assert ("E_AUDIT_LINEAGE_MISMATCH", 7) in found
    assert ("E_AUDIT_DELETION_TWICE", 8) in found
    assert ("E_AUDIT_DELETION_UNKNOWN", 9) in found


def test_shredding_must_be_recorded():
    _, found = codes([reg(A, WA), deleted(A, destroyed=("blob",))])
    assert found == [("E_AUDIT_NOT_SHREDDED", 1)]


def test_a_deletion_must_record_destroying_the_module_s_own_weights():
    # the store has always written the fact: left out, it proves nothing was destroyed
    for weights in (None, WB):
        _, found = codes([reg(A, WA), deleted(A, weights=weights)])
        assert found == [("E_AUDIT_NOT_SHREDDED", 1)], weights


def test_malformed_entries_are_skipped_by_the_replay():
    st, found = codes([reg(A, WA), None, ds("d1", LIN[:1])])
    assert found == [] and st.datasets["d1"].index == 2


def test_actors_must_match_the_owning_site():
    forged = make_entry(
        "module.registered",
        "site:s2",
        {"module_id": A, "site_id": "s1", "manifest_sha256": H, "weights_sha256": WA},
    )
    _, found = codes(
        [
            forged,
            reg(B, WB, site="s2"),
            request(B, actor="site:s1"),
            deleted(B),
            request(A, actor="operator:o"),
            deleted(A),
        ]
    )
    assert found == [("E_AUDIT_MODULE_ACTOR", 0), ("E_AUDIT_DELETION_ACTOR", 2)]


def evaluated(cid, site="s1", actor=None):
    return make_entry(
        "classifier.evaluated",
        actor or f"site:{site}",
        {"classifier_id": cid, "site_id": site, "report_sha256": H},
    )


def test_site_evaluations_are_replayed_and_checked():
    base = [reg(A, WA), ds("d1", LIN[:1]), clf("c1", "d1")]
    st, found = codes(base + [evaluated("c1"), evaluated("c1", "s2")])
    assert found == [] and st.classifiers["c1"].evaluations == {"s1": 3, "s2": 4}
    assert [e.label for e in st.events][-1] == "classifier c1 evaluated by s2"
    _, found = codes(base + [evaluated("c1"), evaluated("c1")])
    assert found == [("E_AUDIT_DUPLICATE_EVALUATION", 4)]
    _, found = codes(base + [evaluated("c1", "s1", actor="site:s2")])
    assert found == [("E_AUDIT_EVALUATION_ACTOR", 3)]
    _, found = codes(base + [evaluated("c9")])
    assert found == [("E_AUDIT_LINEAGE_UNKNOWN", 3)]
    _, found = codes(base + [retire("classifier", "c1"), evaluated("c1")])
    assert found == [("E_AUDIT_LINEAGE_RETIRED", 4)]
