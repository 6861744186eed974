"""Log checks on in-memory logs: localisation of each fault, without a federation or a store."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ffsecure import canonical
from ffsecure.audit.findings import Findings
from ffsecure.audit.logcheck import check_log
from ffsecure.audit.trusted import TrustedCheckpoint
from ffsecure.ledger.checkpoint import Checkpoint, make_vkey, sign_checkpoint
from ffsecure.ledger.merkle import MemoryTree, leaf_hash
from ffsecure.records.entries import make_entry

ORIGIN = "example.org/audit-test/log"


@pytest.fixture(scope="module")
def key():
    return Ed25519PrivateKey.generate()


def entries(n: int) -> list[bytes]:
    return [
        canonical.dumps(
            make_entry(
                "cert.revoked",
                "operator:ca",
                {"serial": f"{i:04x}", "reason": "superseded"},
                time=f"2026-11-22T12:{i // 60:02d}:{i % 60:02d}Z",
            )
        )
        for i in range(n)
    ]


def notes(key, data: list[bytes], sizes) -> dict[str, bytes]:
    tree = MemoryTree([leaf_hash(e) for e in data])
    return {
        str(s): sign_checkpoint(Checkpoint(ORIGIN, s, tree.root(s)), ORIGIN, key).encode()
        for s in sizes
    }


def run(key, data, cps, trusted=()):
    f = Findings()
    kept = [TrustedCheckpoint(label, note) for label, note in trusted]
    state = check_log(make_vkey(ORIGIN, key.public_key()), data, cps, f, trusted=kept)
    return state, f.items


def test_clean_log_has_no_findings(key):
    data = entries(20)
    state, found = run(key, data, notes(key, data, [1, 5, 9, 20]))
    assert found == [] and state.verified and state.good_sizes == [1, 5, 9, 20]


def test_each_changed_entry_is_bracketed_by_the_checkpoints_around_it(key):
    data = entries(20)
    cps = notes(key, data, [4, 10, 20])
    for i in (0, 3, 4, 9, 12, 19):
        changed = list(data)
        changed[i] = changed[i].replace(b'"superseded"', b'"unspecified"')
        _, found = run(key, changed, cps)
        f = found[0]
        lo = max([s for s in (0, 4, 10) if s <= i])
        hi = min(s for s in (4, 10, 20) if s > i)
        assert (
            f.code == "E_AUDIT_ROOT_MISMATCH"
            and f.checkpoint == hi
            and f.entries == tuple(range(lo, hi))
        )
        # every later checkpoint fails too (it covers the same changed prefix)
        assert [x.checkpoint for x in found[1:]] == [s for s in (4, 10, 20) if s > hi]
        assert {x.code for x in found} == {"E_AUDIT_ROOT_MISMATCH"}


def test_checkpoint_per_entry_names_the_changed_entry_exactly(key):
    data = entries(8)
    cps = notes(key, data, range(1, 9))
    changed = list(data)
    changed[5] = changed[5].replace(b'"superseded"', b'"unspecified"')
    _, found = run(key, changed, cps)
    first = [f for f in found if f.code == "E_AUDIT_ROOT_MISMATCH"][0]
    assert (first.entry, first.entry_type, first.checkpoint) == (5, "cert.revoked", 6)


def test_every_adjacent_swap_is_named(key):
    data = entries(16)
    cps = notes(key, data, [3, 16])
    for j in range(3, 15):
        swapped = list(data)
        swapped[j], swapped[j + 1] = swapped[j + 1], swapped[j]
        _, found = run(key, swapped, cps)
        reorder = [f for f in found if f.code == "E_AUDIT_REORDERED"]
        assert len(reorder) == 1 and reorder[0].entry == j and reorder[0].entries == (j, j + 1)
        assert [f.entry for f in found if f.code == "E_AUDIT_TIME_ORDER"] == [j + 1]


def test_unsigned_tail_and_missing_checkpoints(key):
    data = entries(10)
    _, found = run(key, data + entries(12)[10:], notes(key, data, [10]))
    (f,) = found
    assert f.code == "E_AUDIT_UNSIGNED_TAIL" and f.entry == 10 and f.entries == (10, 11)
    _, found = run(key, data, {})
    assert [f.code for f in found] == ["E_AUDIT_NO_CHECKPOINT"]


def test_checkpoint_named_for_another_size_or_log(key):
    data = entries(6)
    cps = notes(key, data, [3, 6])
    cps["4"] = cps.pop("3")
    _, found = run(key, data, cps)
    assert [(f.code, f.checkpoint) for f in found] == [("E_AUDIT_CHECKPOINT_NAME", 4)]
    other = "example.org/other/log"
    tree = MemoryTree([leaf_hash(e) for e in data])
    foreign = sign_checkpoint(Checkpoint(other, 6, tree.root(6)), ORIGIN, key).encode()
    _, found = run(key, data, {"6": foreign})
    assert [f.code for f in found] == ["E_AUDIT_CHECKPOINT_SIGNATURE"]


def test_trusted_checkpoints_bracket_a_rewrite(key):
    data = entries(12)
    old = notes(key, data, [4, 7, 12])
    rewritten = list(data)
    rewritten[5] = rewritten[5].replace(b'"superseded"', b'"unspecified"')
    new = notes(key, rewritten, [4, 7, 12])  # the operator re-signed everything
    state, found = run(key, rewritten, new)
    assert found == [] and state.verified
    _, found = run(key, rewritten, new, trusted=[("t4", old["4"]), ("t7", old["7"])])
    (f,) = found
    assert (
        f.code == "E_AUDIT_FORK"
        and f.entries == (4, 5, 6)
        and f.checkpoint == 7
        and "split view" in f.message
    )


def test_malformed_entry_is_named_even_without_a_type(key):
    data = entries(5)
    cps = notes(key, data, [5])
    bad = list(data)
    bad[2] = b"not json at all"
    _, found = run(key, bad, cps)
    codes = {(f.code, f.entry) for f in found}
    assert ("E_AUDIT_ENTRY", 2) in codes and ("E_AUDIT_ROOT_MISMATCH", 2) in codes
