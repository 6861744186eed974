"""Typed ledger entry records: one per entry type, parsed with the entry rules, bytes kept."""

from __future__ import annotations

import pytest

from ffsecure import canonical
from ffsecure.audit.findings import Findings
from ffsecure.audit.lineage import HANDLERS, replay
from ffsecure.errors import LedgerError
from ffsecure.records.entries import (
    ENTRY_TYPES,
    RECORDS,
    DatasetSynthesized,
    EntryType,
    ModuleRef,
    entry_bytes,
    entry_from_dict,
    make_entry,
    parse_entry,
)
from tests.unit.test_entries import GOOD_FACTS, MID

TIME = "2026-11-22T12:00:00Z"
H = "ab" * 32

#: The required facts as the entry rules listed them before the records existed; a dataset's
#: lineage is now ``modules`` or a ``lineage`` commitment (exactly one, checked by the rules).
REQUIRED_BEFORE = {
    "module.registered": ("module_id", "site_id", "manifest_sha256", "weights_sha256"),
    "dataset.synthesized": ("dataset_id", "sha256"),
    "classifier.trained": ("classifier_id", "dataset_id", "sha256"),
    "classifier.published": ("classifier_id",),
    "classifier.evaluated": ("classifier_id", "site_id", "report_sha256"),
    "module.deletion_requested": ("module_id", "reason"),
    "module.deleted": ("module_id", "reason", "destroyed"),
    "dataset.retired": ("dataset_id", "reason"),
    "classifier.retired": ("classifier_id", "reason"),
    "cert.revoked": ("serial", "reason"),
    "key.rotated": ("key", "new_key_id"),
    "crl.loaded": ("crl_number", "crl_sha256", "this_update", "next_update", "issuer_sha256"),
    "federation.loaded": ("federation_id", "federation_sha256", "created_at"),
}


def test_every_entry_type_has_exactly_one_record_class():
    assert set(RECORDS) == set(EntryType) == set(ENTRY_TYPES)
    assert all(cls.TYPE is kind for kind, cls in RECORDS.items())
    assert len(set(RECORDS.values())) == len(EntryType)


def test_the_required_facts_read_from_the_records_are_the_rules_of_before():
    assert {str(kind): facts for kind, facts in ENTRY_TYPES.items()} == REQUIRED_BEFORE


def test_every_entry_type_has_a_replay_handler():
    missing = [kind.value for kind in EntryType if kind not in HANDLERS]
    assert missing == [], f"add a handler to ffsecure.audit.lineage.HANDLERS for {missing}"
    assert set(HANDLERS) == set(EntryType)


@pytest.mark.parametrize("kind", list(EntryType))
def test_parse_entry_round_trips_the_bytes_of_make_entry(kind):
    entry = make_entry(kind, "site:st-mary", GOOD_FACTS[kind], time=TIME)
    data = entry_bytes(entry)
    record = parse_entry(data)
    assert type(record) is RECORDS[kind] and record.type is kind
    assert record.to_bytes() == data == canonical.dumps(record.to_dict())
    assert record.to_dict() == entry and entry_from_dict(entry) == record
    assert (record.time, record.actor) == (TIME, "site:st-mary")
    for name in ENTRY_TYPES[kind]:
        if name != "modules":
            assert getattr(record, name) == GOOD_FACTS[kind][name]


def test_make_entry_stores_the_plain_string_of_an_entry_type():
    entry = make_entry(EntryType.CLASSIFIER_PUBLISHED, "aggregator", {"classifier_id": "c1"})
    assert type(entry["type"]) is str and entry["type"] == "classifier.published"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"actor":"aggregator","facts":{},"time":"2026-11-22T12:00:00Z",'
        b'"type":"module.exploded","v":1}',
        b'{"actor":"aggregator","facts":{"classifier_id":"c1"},"time":"2026-11-22T12:00:00Z",'
        b'"type":"classifier.published","v":1}\n',
        b'{"actor":"aggregator","facts":{"classifier_id":"c1\\n"},"time":"2026-11-22T12:00:00Z",'
        b'"type":"classifier.published","v":1}',
    ],
)
def test_parse_entry_refuses_what_validate_entry_refuses(data):
    with pytest.raises(LedgerError) as info:
        parse_entry(data)
    assert info.value.code == "E_ENTRY"


def test_entry_from_dict_checks_before_it_builds_a_record():
    entry = make_entry("classifier.published", "aggregator", {"classifier_id": "c1"}, time=TIME)
    entry["facts"]["classifier_id"] = "../c1"
    with pytest.raises(LedgerError, match="artifact id"):
        entry_from_dict(entry)


def test_a_lineage_is_read_into_module_references():
    facts = {"dataset_id": "d1", "sha256": H, "modules": [MID, {"module_id": MID}]}
    facts["modules"].append({"module_id": MID, "weights_sha256": H})
    record = parse_entry(entry_bytes(make_entry("dataset.synthesized", "aggregator", facts)))
    assert isinstance(record, DatasetSynthesized)
    assert record.modules == (ModuleRef(MID), ModuleRef(MID), ModuleRef(MID, H))


@pytest.mark.parametrize("modules", [5, "x", [{"weights_sha256": H}], [MID, 3], None])
def test_an_unreadable_lineage_is_none_not_an_error(modules):
    facts = {"dataset_id": "d1", "sha256": H, "modules": modules}
    record = parse_entry(entry_bytes(make_entry("dataset.synthesized", "aggregator", facts)))
    assert record.modules is None


def test_a_deletion_whose_destroyed_list_holds_objects_is_a_finding_not_a_crash():
    registered = make_entry(
        "module.registered",
        "site:s1",
        {"module_id": MID, "site_id": "s1", "manifest_sha256": H, "weights_sha256": H},
    )
    deleted = make_entry(
        "module.deleted",
        "aggregator",
        {"module_id": MID, "reason": "r", "destroyed": [{}], "weights_sha256": H},
    )
    findings = Findings()
    replay([registered, deleted], findings)
    assert [(f.code, f.entry) for f in findings.items] == [("E_AUDIT_NOT_SHREDDED", 1)]
