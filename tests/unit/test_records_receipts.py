"""One receipt record: its kept JSON is byte-for-byte what sites kept before, on disk and wire."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from ffsecure.errors import FormatError
from ffsecure.records.entries import parse_entry
from ffsecure.records.receipts import EvaluationReceipt, Receipt
from ffsecure.records.wire import RETRYABLE, is_retryable
from ffsecure.v1 import aggregator_pb2 as pb
from site_node.client import kept_receipt

OLD_MODULE = (
    Path(__file__).resolve().parents[1] / "compat" / "demo-1de472d" / "site-1" / "module.json"
)


def _damaged(why: str) -> FormatError:
    return FormatError(f"damaged: {why}", code="E_TEST")


def test_a_receipt_kept_by_the_previous_release_reads_and_writes_back_the_same_json():
    kept = json.loads(OLD_MODULE.read_text())["receipt"]
    receipt = Receipt.from_dict(kept, damaged=_damaged)
    assert receipt.module_id == kept["module_id"] and len(receipt.inclusion_proof) > 0
    assert receipt.to_dict() == kept
    written = json.dumps(receipt.to_dict(), indent=2, sort_keys=True)  # as site state writes it
    assert written == json.dumps(kept, indent=2, sort_keys=True)
    assert parse_entry(receipt.entry).to_dict()["facts"]["module_id"] == receipt.module_id
    assert kept_receipt(kept) == receipt


def test_the_protobuf_form_carries_every_field_both_ways():
    receipt = Receipt(
        index=4,
        entry=b"{}",
        tree_size=9,
        checkpoint="origin\n9\nroot\n",
        inclusion_proof=[b"\x01" * 32, b"\x02" * 32],
        existing=True,
        module_id="ab" * 16,
    )
    message = pb.Receipt.FromString(receipt.to_pb().SerializeToString())
    assert Receipt.from_pb(message) == receipt


def test_a_store_receipt_has_no_module_id_until_the_service_names_it():
    receipt = Receipt(1, b"{}", 2, "note", [b"\x03" * 32], existing=False)
    assert "module_id" not in receipt.to_dict() and receipt.to_pb().module_id == ""


def test_the_evaluation_receipt_composes_a_receipt_and_keeps_the_old_keys():
    inner = Receipt(7, b"{}", 8, "note", [b"\x04" * 32], existing=False)
    receipt = EvaluationReceipt("c1", "5" * 32, inner, report_sha256="6" * 64)
    kept = receipt.to_dict()
    assert list(kept) == [
        "classifier_id",
        "salt",
        "index",
        "entry",
        "tree_size",
        "checkpoint",
        "inclusion_proof",
        "existing",
        "report_sha256",
    ]
    assert (receipt.index, receipt.tree_size, receipt.existing) == (7, 8, False)
    assert (receipt.entry, receipt.checkpoint) == (b"{}", "note")
    assert receipt.inclusion_proof == [b"\x04" * 32]


def test_damage_is_the_callers_error():
    with pytest.raises(FormatError) as info:
        Receipt.from_dict({"module_id": "x"}, damaged=_damaged)
    assert info.value.code == "E_TEST" and info.value.message == "damaged: it has no index"


@pytest.mark.parametrize(
    "status, code, retry",
    [
        (grpc.StatusCode.UNAVAILABLE, None, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, None, True),
        (grpc.StatusCode.ABORTED, "E_UPLOAD_BUSY", True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "E_RATE_LIMIT", True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "E_UPLOAD_QUOTA", False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "E_DISK_FULL", False),
        (grpc.StatusCode.INVALID_ARGUMENT, "E_RATE_LIMIT", False),
        (grpc.StatusCode.PERMISSION_DENIED, None, False),
        (None, None, False),
    ],
)
def test_a_client_retries_only_what_may_pass(status, code, retry):
    assert is_retryable(status, code) is retry
    assert (status in RETRYABLE) is (retry and status != grpc.StatusCode.RESOURCE_EXHAUSTED)
