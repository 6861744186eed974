"""A lineage of any size stays a bounded ledger entry; its committed document is checked whole."""

from __future__ import annotations

import hashlib

import pytest

from aggregator.operations import dataset_lineage_facts, recipe_from_facts
from ffsecure import canonical
from ffsecure.audit.findings import Findings
from ffsecure.audit.lineage import replay
from ffsecure.errors import LedgerError
from ffsecure.records.entries import (
    MAX_ENTRY_BYTES,
    ClassifierTrained,
    DatasetSynthesized,
    make_entry,
    parse_entry,
    validate_entry,
)
from ffsecure.records.lineage import (
    INLINE_MAX_BYTES,
    LineageCommitmentError,
    LineageDocument,
    LineageDocumentError,
    LineageFormatError,
    LineageMissingError,
    resolve_lineage,
)
from ffsecure.synthesis import RECIPE_VERSION

H = "ab" * 32


def _modules(n: int, *, salt: str = "") -> list[dict]:
    return [
        {
            "module_id": hashlib.sha256(f"{salt}{i}".encode()).hexdigest()[:32],
            "weights_sha256": hashlib.sha256(f"w{salt}{i}".encode()).hexdigest(),
            "classes": sorted({i % 9, (i + 3) % 9}),
            "family": "cvae",
        }
        for i in range(n)
    ]


def _recipe(n: int, *, salt: str = "") -> dict:
    return {
        "v": RECIPE_VERSION,
        "seed": 5,
        "num_classes": 9,
        "per_class": 40,
        "image_shape": [1, 28, 28],
        "device_type": "cpu",
        "host": {"torch": "2.x", "cpu_capability": "AVX2"},
        "modules": sorted(_modules(n, salt=salt), key=lambda m: m["module_id"]),
        "assignments": [],
        "uncovered": [],
        "dataset_sha256": H,
    }


def _dataset(n: int, *, salt: str = "") -> tuple[dict, LineageDocument | None]:
    base = {"dataset_id": "ds-000001", "sha256": H, "seed": 5, "per_class": 40, "counts": {}}
    return dataset_lineage_facts(base, _recipe(n, salt=salt))


def _docs(*documents: LineageDocument) -> dict[str, bytes]:
    return {d.commitment().sha256: d.to_bytes() for d in documents}


def test_a_lineage_of_2000_modules_is_a_bounded_entry_that_round_trips():
    facts, document = _dataset(2000)
    assert document is not None and "modules" not in facts
    assert facts["lineage"] == {"count": 2000, "sha256": document.commitment().sha256}
    assert "modules" not in facts["recipe"] and "assignments" not in facts["recipe"]
    entry = make_entry("dataset.synthesized", "operator:o", facts)
    data = canonical.dumps(entry)
    assert len(data) < 2048 < INLINE_MAX_BYTES < MAX_ENTRY_BYTES == 0xFFFF
    record = parse_entry(data)
    assert isinstance(record, DatasetSynthesized) and validate_entry(data) == entry
    assert record.modules is None and record.lineage.count == 2000
    trained = make_entry(
        "classifier.trained",
        "operator:o",
        {"classifier_id": "clf-000002", "dataset_id": "ds-000001", "sha256": H}
        | {"lineage": facts["lineage"], "config": {"epochs": 1}},
    )
    clf = parse_entry(canonical.dumps(trained))
    assert isinstance(clf, ClassifierTrained) and clf.lineage == record.lineage
    lineage = resolve_lineage(facts, _docs(document))
    assert [r.module_id for r in lineage.refs] == [m["module_id"] for m in document.modules]
    assert resolve_lineage(trained["facts"], _docs(document)) == lineage
    recipe = recipe_from_facts(facts, _docs(document))
    assert recipe["modules"] == _recipe(2000)["modules"] and recipe["assignments"]


def test_a_small_lineage_stays_inline_byte_for_byte():
    facts, document = _dataset(3)
    recipe = _recipe(3)
    assert document is None and "lineage" not in facts
    assert facts["modules"] == [
        {"module_id": m["module_id"], "weights_sha256": m["weights_sha256"]}
        for m in recipe["modules"]
    ]
    assert facts["recipe"] == {k: v for k, v in recipe.items() if k != "assignments"}
    assert resolve_lineage(facts, {}).recipe_modules == tuple(recipe["modules"])


def test_what_an_exporter_can_drop_or_swap_is_refused():
    facts, document = _dataset(300)
    other_facts, other = _dataset(300, salt="x")
    assert document is not None and other is not None
    name = document.commitment().sha256
    with pytest.raises(LineageMissingError):
        resolve_lineage(facts, _docs(other))
    with pytest.raises(LineageCommitmentError):  # another dataset's document under this name
        resolve_lineage(facts, {name: other.to_bytes()})
    edited = [dict(m) for m in document.modules]
    edited[7]["weights_sha256"] = H
    with pytest.raises(LineageCommitmentError):
        resolve_lineage(facts, {name: LineageDocument(tuple(edited)).to_bytes()})
    with pytest.raises(LineageCommitmentError):  # a log that commits to a wrong count
        resolve_lineage({**facts, "lineage": {"count": 299, "sha256": name}}, _docs(document))
    spaced = document.to_bytes().replace(b",", b", ", 1)
    spaced_name = hashlib.sha256(spaced).hexdigest()
    with pytest.raises(LineageDocumentError):  # hash right, but not canonical
        resolve_lineage({"lineage": {"count": 300, "sha256": spaced_name}}, {spaced_name: spaced})
    with pytest.raises(LineageFormatError):
        resolve_lineage({"modules": "x"}, {})


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m[0].update(classes=[]),
        lambda m: m[0].update(classes=[2, 1]),
        lambda m: m[0].update(family="CVAE\n"),
        lambda m: m[0].update(module_id="../x"),
        lambda m: m[0].update(extra=1),
        lambda m: m.append(dict(m[0])),
    ],
)
def test_a_malformed_lineage_document_is_refused(edit):
    modules = [dict(m) for m in sorted(_modules(3), key=lambda m: m["module_id"])]
    edit(modules)
    with pytest.raises(LineageDocumentError):
        LineageDocument.from_modules(modules)


@pytest.mark.parametrize(
    "facts",
    [
        {"dataset_id": "ds-000001", "sha256": H},
        {"dataset_id": "ds-000001", "sha256": H, "modules": [], "lineage": {}},
        {"dataset_id": "ds-000001", "sha256": H, "lineage": {"count": 0, "sha256": H}},
        {"dataset_id": "ds-000001", "sha256": H, "lineage": {"count": 2, "sha256": "x"}},
        {"dataset_id": "ds-000001", "sha256": H, "lineage": {"count": True, "sha256": H}},
    ],
)
def test_a_dataset_entry_logs_its_lineage_exactly_one_well_formed_way(facts):
    with pytest.raises(LedgerError) as info:
        make_entry("dataset.synthesized", "operator:o", facts)
    assert info.value.code == "E_ENTRY"


def test_the_audit_replay_fails_a_dataset_whose_document_is_missing_or_swapped():
    facts, document = _dataset(150)
    _, other = _dataset(150, salt="y")
    assert document is not None and other is not None
    registered = [
        make_entry(
            "module.registered",
            "site:s1",
            {
                "module_id": m["module_id"],
                "site_id": "s1",
                "manifest_sha256": H,
                "weights_sha256": m["weights_sha256"],
            },
        )
        for m in document.modules
    ]
    entries = [*registered, make_entry("dataset.synthesized", "operator:o", facts)]
    name = document.commitment().sha256
    for documents, code in (
        (_docs(document), None),
        ({}, "E_AUDIT_LINEAGE_MISSING"),
        ({name: other.to_bytes()}, "E_AUDIT_LINEAGE_COMMITMENT"),
    ):
        findings = Findings()
        st = replay(entries, findings, documents)
        assert [(f.code, f.entry) for f in findings.items] == ([(code, 150)] if code else [])
        assert len(st.datasets["ds-000001"].modules) == (150 if code is None else 0)


def test_contributors_are_the_modules_synthesis_gives_a_share():
    """Three modules cover classes 0 and 1, one sample per class: one module gives none, as in
    ffsecure.synthesis.plan_assignments; with more samples every module gives some."""
    from ffsecure.records.lineage import contributors

    mods = [{"module_id": m, "classes": [0, 1]} for m in ("c" * 32, "a" * 32, "b" * 32)]
    recipe = {"num_classes": 2, "per_class": 1}
    assert contributors(recipe, mods) == {"a" * 32, "b" * 32}
    assert contributors({**recipe, "per_class": 3}, mods) == {"a" * 32, "b" * 32, "c" * 32}
    assert contributors({**recipe, "num_classes": 1}, mods) == {"a" * 32}
    for bad in ({"num_classes": 2}, {"per_class": 1}, {**recipe, "per_class": 0}, [], None):
        with pytest.raises(LineageFormatError):
            contributors(bad, mods)
