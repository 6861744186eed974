"""A site's stored upload receipt is read strictly: damage is a typed error, never a silent other
value."""

from __future__ import annotations

import base64

import pytest

from ffsecure.errors import FormatError
from ffsecure.records.receipts import Receipt
from site_node.client import kept_receipt

RECEIPT = Receipt(
    module_id="ab" * 16,
    index=3,
    entry=b'{"type":"module.registered"}',
    tree_size=5,
    checkpoint="ffsecure.local/log\n5\nroot\n",
    inclusion_proof=[b"\x01" * 32, b"\x02" * 32],
    existing=False,
)


def test_a_kept_receipt_reads_back_as_it_was():
    assert kept_receipt(RECEIPT.to_dict()) == RECEIPT


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda d: d.pop("entry"), "it has no entry"),
        (lambda d: d.update(index="3"), "its index is not an integer"),
        (lambda d: d.update(tree_size=True), "its tree_size is not an integer"),
        (lambda d: d.update(existing="no"), "its existing is not true or false"),
        (lambda d: d.update(inclusion_proof="AQ=="), "its inclusion_proof is not a list"),
        (lambda d: d.update(entry="!" + d["entry"]), "its entry is not canonical base64"),
        (lambda d: d.update(entry=d["entry"][:-1]), "its entry is not canonical base64"),
        (
            lambda d: d["inclusion_proof"].append(None),
            "its inclusion_proof is not canonical base64",
        ),
    ],
)
def test_a_damaged_receipt_is_refused_with_what_is_wrong(damage, why):
    d = RECEIPT.to_dict()
    damage(d)
    with pytest.raises(FormatError) as info:
        kept_receipt(d)
    assert (
        info.value.code == "E_STATE_CORRUPT"
        and info.value.message == f"a stored upload receipt is damaged: {why}"
    )
    assert "backup" in info.value.hint


def test_the_unused_bits_of_the_last_base64_character_are_not_ignored():
    d = RECEIPT.to_dict()
    proof = d["inclusion_proof"][0]  # 32 bytes: 44 characters ending in one '=', two unused bits
    assert proof.endswith("=") and base64.b64decode(proof) == b"\x01" * 32
    twin = proof[:-2] + chr(ord(proof[-2]) + 1) + "="
    assert base64.b64decode(twin) == b"\x01" * 32  # a lenient decoder reads the same bytes
    d["inclusion_proof"][0] = twin
    with pytest.raises(FormatError, match="inclusion_proof is not canonical base64"):
        kept_receipt(d)


def test_a_receipt_that_is_not_an_object_is_refused():
    with pytest.raises(FormatError, match="it is not a JSON object"):
        kept_receipt(["not", "a", "receipt"])
