"""Ledger entry construction and validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffsecure import canonical
from ffsecure.errors import LedgerError
from ffsecure.records.entries import ENTRY_TYPES, entry_bytes, make_entry, validate_entry

MID = "0123456789abcdef0123456789abcdef"
H = "ab" * 32

GOOD_FACTS = {
    "module.registered": {
        "module_id": MID,
        "site_id": "st-mary",
        "manifest_sha256": H,
        "weights_sha256": H,
        "classes": [0, 1],
    },
    "dataset.synthesized": {
        "dataset_id": "ds1",
        "modules": [{"module_id": MID, "manifest_sha256": H}],
        "sha256": H,
        "seed": 7,
    },
    "classifier.trained": {"classifier_id": "c1", "dataset_id": "ds1", "sha256": H},
    "classifier.published": {"classifier_id": "c1"},
    "classifier.evaluated": {"classifier_id": "c1", "site_id": "st-mary", "report_sha256": H},
    "module.deletion_requested": {"module_id": MID, "reason": "site withdrew consent"},
    "module.deleted": {"module_id": MID, "reason": "r", "destroyed": ["wrapped_dek", "blob"]},
    "dataset.retired": {"dataset_id": "ds1", "reason": "r"},
    "classifier.retired": {"classifier_id": "c1", "reason": "r"},
    "cert.revoked": {"serial": "01ab", "reason": "keyCompromise"},
    "key.rotated": {"key": "kek", "new_key_id": "k2"},
    "crl.loaded": {
        "crl_number": 7,
        "crl_sha256": H,
        "this_update": "2026-11-22T12:00:00Z",
        "next_update": "2026-12-22T12:00:00Z",
        "issuer_sha256": H,
        "revoked": 2,
    },
    "federation.loaded": {
        "federation_id": "fed-demo",
        "federation_sha256": H,
        "created_at": "2026-11-01T09:30:00Z",
    },
}


def test_every_type_has_a_good_example():
    assert set(GOOD_FACTS) == set(ENTRY_TYPES)


@pytest.mark.parametrize("kind", sorted(ENTRY_TYPES))
def test_make_and_validate_round_trip(kind):
    e = make_entry(kind, "site:st-mary", GOOD_FACTS[kind], time="2026-11-22T12:00:00Z")
    data = entry_bytes(e)
    assert data == canonical.dumps(e)
    assert validate_entry(data) == e
    assert data.startswith(b'{"actor":"site:st-mary","facts":')


def test_default_time_is_utc_seconds():
    e = make_entry("classifier.published", "operator:alice", {"classifier_id": "c1"})
    assert len(e["time"]) == 20 and e["time"].endswith("Z")


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda e: e.update(type="module.exploded"), "unknown"),
        (lambda e: e.update(type=["module.registered"]), "unknown"),
        (lambda e: e.update(actor="root"), "actor"),
        (lambda e: e.update(actor="site:"), "actor"),
        (lambda e: e.update(time="2026-11-22 12:00:00"), "RFC 3339"),
        (lambda e: e.update(time="2026-02-30T12:00:00Z"), "real date"),
        (lambda e: e.update(v=2), "version"),
        (lambda e: e.update(extra=1), "keys"),
        (lambda e: e["facts"].pop("weights_sha256"), "lacks"),
        (lambda e: e["facts"].update(module_id="../../etc"), "module id"),
        (lambda e: e["facts"].update(manifest_sha256="AB" * 32), "SHA-256"),
        (lambda e: e["facts"].update(weights=[0.1, 0.2]), "not allowed"),
        (lambda e: e["facts"].update(extra={"images": "..."}), "not allowed"),
        (lambda e: e["facts"].update(note="x" * 70000), "bytes"),
    ],
)
def test_bad_entries_are_refused(mutate, fragment):
    e = make_entry(
        "module.registered",
        "site:st-mary",
        dict(GOOD_FACTS["module.registered"]),
        time="2026-11-22T12:00:00Z",
    )
    mutate(e)
    with pytest.raises(LedgerError) as info:
        entry_bytes(e)
    assert info.value.code == "E_ENTRY"
    assert fragment in info.value.message


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda f: f.update(crl_number="7"), "crl_number"),
        (lambda f: f.update(crl_number=-1), "crl_number"),
        (lambda f: f.update(crl_number=True), "crl_number"),
        (lambda f: f.update(crl_number=7.0), "crl_number"),
        (lambda f: f.update(this_update="2026-11-22"), "this_update"),
        (lambda f: f.update(next_update="2026-02-30T12:00:00Z"), "next_update"),
        (lambda f: f.update(crl_sha256="AB" * 32), "SHA-256"),
        (lambda f: f.pop("issuer_sha256"), "lacks"),
    ],
)
def test_crl_loaded_facts_are_typed(mutate, fragment):
    facts = dict(GOOD_FACTS["crl.loaded"])
    mutate(facts)
    with pytest.raises(LedgerError) as info:
        make_entry("crl.loaded", "aggregator", facts, time="2026-11-22T12:00:00Z")
    assert info.value.code == "E_ENTRY" and fragment in info.value.message


def test_crl_loaded_without_next_update_is_well_formed():
    facts = dict(GOOD_FACTS["crl.loaded"], next_update=None)
    entry = make_entry("crl.loaded", "aggregator", facts, time="2026-11-22T12:00:00Z")
    assert validate_entry(entry_bytes(entry))["facts"]["next_update"] is None


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda f: f.update(federation_sha256="AB" * 32), "SHA-256"),
        (lambda f: f.update(federation_sha256="ab" * 31), "SHA-256"),
        (lambda f: f.update(federation_sha256=None), "SHA-256"),
        (lambda f: f.update(federation_id="Fed Demo"), "federation id"),
        (lambda f: f.update(federation_id=7), "federation id"),
        (lambda f: f.update(created_at="2026-11-01"), "created_at"),
        (lambda f: f.update(created_at="2026-02-30T09:30:00Z"), "created_at"),
        (lambda f: f.update(dp_policy={"required": False}), "must be exactly"),
        (lambda f: f.update(revoked=2), "must be exactly"),
        (lambda f: f.pop("federation_sha256"), "lacks"),
        (lambda f: f.pop("created_at"), "lacks"),
    ],
)
def test_federation_loaded_facts_are_exactly_three_typed_ones(mutate, fragment):
    facts = dict(GOOD_FACTS["federation.loaded"])
    mutate(facts)
    with pytest.raises(LedgerError) as info:
        make_entry("federation.loaded", "aggregator", facts, time="2026-11-22T12:00:00Z")
    assert info.value.code == "E_ENTRY" and fragment in info.value.message


def test_non_canonical_bytes_are_refused():
    e = make_entry(
        "classifier.published", "aggregator", {"classifier_id": "c1"}, time="2026-11-22T12:00:00Z"
    )
    data = entry_bytes(e)
    for bad in (data.replace(b":", b": ", 1), data + b"\n", b" " + data, b'{"v":1,' + data[1:]):
        with pytest.raises(LedgerError) as info:
            validate_entry(bad)
        assert info.value.code == "E_ENTRY"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_parser(data):
    try:
        validate_entry(data)
    except LedgerError as exc:
        assert exc.code == "E_ENTRY"
