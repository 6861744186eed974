"""Red team: what a malicious or curious aggregator can make a site release or record by
its replies alone (no CA key; the site's own code path, the aggregator's answers forged).

* A refusal that arrives after the whole envelope was sent says nothing about what the
  aggregator kept: it holds the HPKE key and has opened the module. The site must still
  count that module against its own DP budget, or its next module takes the site over it.
* ``GetUploadStatus`` answering ``DELETED`` for a module the aggregator never registered
  must not make the site record a deletion it never verified.
* A refusal's message is the aggregator's text: it reaches the operator's terminal and
  the human log, so it must not carry control characters (fake lines, ANSI escapes).
"""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest

from aggregator.home import LogSigner
from ffsecure import envelope
from ffsecure.dp import DPBudgetError
from ffsecure.errors import FFSecureError
from ffsecure.v1 import aggregator_pb2 as pb
from site_node import sync
from site_node.budget import check_release
from site_node.client import AggregatorClient, error_from_rpc, refusal
from site_node.config import DPLimits
from site_node.state import ModuleRecord, StateDir
from tests.dp_records import DP_SGD_CLAIM

POLICY = {"required": True, "max_epsilon": 4.5, "delta": 1e-5}
CLAIM = DP_SGD_CLAIM  # 3.70 alone, 4.86 twice (RDP)
LIMITS = DPLimits()  # the site.toml defaults (8): the federation's 4.5 binds here
FIRST, NEW = "a" * 32, "f" * 32


def _trust():
    _private, public = envelope.generate_keypair("x25519")
    federation = SimpleNamespace(
        dp_policy=dict(POLICY),
        hpke_public_key=public,
        hpke_key_id=envelope.key_id(public),
        hpke_suite="x25519",
        federation_id="fedtest",
    )
    return SimpleNamespace(federation=federation, identity=SimpleNamespace(site_id="st-mary"))


def _state(tmp_path) -> StateDir:
    state = StateDir(tmp_path / "state").ensure()
    record = ModuleRecord(
        FIRST, "trained", "2026-01-01T00:00:00Z", [0], 10, "fp", train={"dp": dict(CLAIM)}
    )
    state.save_module(record)
    state.package_path(FIRST).write_bytes(b"signed package bytes")
    return state


class CuriousAggregator:
    """Receives every byte of the envelope, keeps it, and answers a permanent refusal."""

    def __init__(self, code: str):
        self.code = code
        self.kept: list[bytes] = []

    def upload(self, sealed: bytes, **_kw):
        self.kept.append(sealed)
        raise refusal(
            self.code,
            "the module fails the federation's privacy policy",
            hint="train a new module",
            status=grpc.StatusCode.INVALID_ARGUMENT,
        )


@pytest.mark.parametrize("code", ["E_PRIVACY_POLICY", "E_SIGNATURE", "E_DUPLICATE_MODULE"])
def test_a_module_refused_after_it_was_sent_still_counts_against_the_budget(tmp_path, code):
    state, trust, agg = _state(tmp_path), _trust(), CuriousAggregator(code)
    (result,) = sync.upload_queue(
        state, agg, trust, state.pending(), defer_transient=False, limits=LIMITS
    )
    assert result["outcome"] == "refused" and result["error"]["by"] == "aggregator"
    assert len(agg.kept) == 1  # the whole envelope left the site: the aggregator opens it
    # the site's next module with the same claim composes with it to 4.86 > 4.5
    with pytest.raises(DPBudgetError) as info:
        check_release(state, POLICY, LIMITS, site_id="st-mary", module_id=NEW, dp=CLAIM)
    assert info.value.code == "E_DP_BUDGET" and FIRST in info.value.message


class ForgedDeletedStatus:
    """``GetUploadStatus`` says DELETED, for a module it never registered (no receipt)."""

    def __init__(self):
        self.chunks = 0

    def GetUploadStatus(self, request, timeout=None):  # noqa: N802 - the gRPC method's name
        return pb.UploadStatus(upload_id=request.upload_id, state=pb.UploadStatus.DELETED)

    def UploadModule(self, chunks, timeout=None):  # noqa: N802 - the gRPC method's name
        self.chunks += sum(1 for _ in chunks)
        raise AssertionError("a deleted module is not sent again")


def _client(stub, log_vkey: str) -> AggregatorClient:
    client = AggregatorClient(
        "127.0.0.1:9", ca_cert_pem=b"", cert_pem=b"", key_pem=b"", log_vkey=log_vkey
    )
    client.stub = stub
    return client


def test_a_deleted_status_without_its_receipt_records_no_deletion(tmp_path):
    state, trust = _state(tmp_path), _trust()
    vkey = LogSigner.generate("fedtest.example/log").vkey
    with _client(ForgedDeletedStatus(), vkey) as client, pytest.raises(FFSecureError):
        sync.upload_queue(
            state, client, trust, state.pending(), defer_transient=False, limits=LIMITS
        )
    record = state.load_module(FIRST)
    # nothing verified says the module was registered, let alone deleted
    assert record.status != "deleted" and record.deletion is None


class _Refused(grpc.RpcError):
    def __init__(self, details: str):
        self._details = details

    def code(self):
        return grpc.StatusCode.INVALID_ARGUMENT

    def details(self):
        return self._details

    def trailing_metadata(self):
        return (("ffsecure-error-code", "E_PRIVACY_POLICY"), ("ffsecure-error-hint", "retrain"))


def test_a_refusal_message_reaches_the_operator_without_control_characters():
    """gRPC carries any text in a status message (measured with grpc 1.85: ESC, CR and LF
    arrive as sent); the site prints it on the operator's terminal and in human log lines."""
    forged = (
        "[E_PRIVACY_POLICY] bad\x1b[2J\x1b[32mmodule X: registered at ledger index 7\nfake line\r"
    )
    err = error_from_rpc(_Refused(forged))
    assert err.code == "E_PRIVACY_POLICY"
    assert err.message.isprintable(), repr(err.message)
    assert "registered at ledger index 7" in err.message  # shown, escaped, not dropped


class DeletedWithReceipt(ForgedDeletedStatus):
    """An honest DELETED status: it carries the module's registration receipt."""

    def __init__(self, receipt):
        super().__init__()
        self.receipt = receipt

    def GetUploadStatus(self, request, timeout=None):  # noqa: N802 - the gRPC method's name
        return pb.UploadStatus(
            upload_id=request.upload_id, state=pb.UploadStatus.DELETED, receipt=self.receipt
        )

    def GetConsistencyProof(self, request, timeout=None):  # noqa: N802
        raise AssertionError("no stored checkpoint: nothing to prove")


def test_a_deleted_status_with_its_verified_receipt_is_kept_with_it(tmp_path):
    from ffsecure.ledger import Checkpoint, leaf_hash
    from ffsecure.records.entries import entry_bytes, make_entry
    from ffsecure.records.receipts import Receipt

    state, trust = _state(tmp_path), _trust()
    signer = LogSigner.generate("fedtest.example/log")
    entry = entry_bytes(
        make_entry(
            "module.registered",
            "site:st-mary",
            {
                "module_id": FIRST,
                "site_id": "st-mary",
                "manifest_sha256": "1" * 64,
                "weights_sha256": "2" * 64,
            },
        )
    )
    note = signer.sign(Checkpoint(signer.name, 1, leaf_hash(entry)))
    receipt = Receipt(0, entry, 1, note, [], True, module_id=FIRST).to_pb()
    with (
        _client(DeletedWithReceipt(receipt), signer.vkey) as client,
        pytest.raises(FFSecureError) as info,
    ):
        sync.upload_queue(
            state, client, trust, state.pending(), defer_transient=False, limits=LIMITS
        )
    assert info.value.code == "E_MODULE_DELETED"
    record = state.load_module(FIRST)
    assert record.status == "deleted" and record.receipt["module_id"] == FIRST
    assert record.deletion["verified"] is False
    assert state.read_checkpoint() == note
