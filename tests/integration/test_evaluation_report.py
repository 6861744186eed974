"""ReportEvaluation over real mTLS: a site's aggregate metrics are checked, stored once, shown to
the operator, committed to in the ledger (classifier.evaluated), and the exported bundle still
verifies."""

from __future__ import annotations

import hashlib
import json
import math

import grpc
import pytest
from click.testing import CliRunner

from aggregator.store import open_home_store
from ffsecure import canonical
from ffsecure.errors import LedgerError
from ffsecure.evalreport import EvaluationReport, commitment
from ffsecure.ledger import make_entry, validate_entry
from ffsecure.v1 import aggregator_pb2 as pb
from site_node.client import AggregatorError, RetryPolicy
from tests.federation_fixture import LABELS, build_federation

# 10 test images over classes 0, 1 and 3 (the site holds no image of class 2): 7 correct.
CONFUSION = ((3, 1, 0, 0), (0, 2, 1, 0), (0, 0, 0, 0), (1, 0, 0, 2))
REPORT = EvaluationReport("clf-1", 10, 0.7, 0.85, (0.75, 2 / 3, None, 2 / 3), CONFUSION)


def _operator(prog, *args) -> dict:
    if prog == "aggregator":
        from aggregator.cli import cli
    else:
        from ffsecure.cli import cli
    res = CliRunner().invoke(cli, [*map(str, args), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()  # log lines may come first
    return json.loads("\n".join(lines[lines.index("{") :]))


def _lineage(fed, srv) -> None:
    """A real module of st-mary, a dataset and two classifiers made from it (clf-1 published, clf-2
    retired)."""
    sealed, pkg = fed.make_package("st-mary", classes=(0, 1, 3))
    with fed.client("st-mary", srv.address) as c:
        mid = c.upload(sealed, module_id=pkg.manifest.module_id, site_id="st-mary").module_id
    modules = [{"module_id": mid, "weights_sha256": pkg.manifest.weights_sha256}]
    with open_home_store(fed.home) as store:
        store.put_artifact(
            "dataset",
            "ds-1",
            {"modules": modules},
            None,
            make_entry(
                "dataset.synthesized",
                "operator:test",
                {"dataset_id": "ds-1", "modules": modules, "sha256": "aa" * 32},
            ),
        )
        for cid in ("clf-1", "clf-2"):
            blob = cid.encode() * 8
            meta = {
                "classifier_id": cid,
                "dataset_id": "ds-1",
                "sha256": hashlib.sha256(blob).hexdigest(),
                "modules": modules,
                "config": {"architecture": "cnn"},
            }
            store.put_artifact(
                "classifier",
                cid,
                meta,
                blob,
                make_entry(
                    "classifier.trained",
                    "operator:test",
                    {
                        "classifier_id": cid,
                        "dataset_id": "ds-1",
                        "sha256": meta["sha256"],
                        "modules": modules,
                    },
                ),
            )
        store.set_artifact_status(
            "classifier",
            "clf-1",
            "published",
            make_entry("classifier.published", "operator:test", {"classifier_id": "clf-1"}),
        )
        store.set_artifact_status(
            "classifier",
            "clf-2",
            "retired",
            make_entry(
                "classifier.retired", "operator:test", {"classifier_id": "clf-2", "reason": "test"}
            ),
        )


def _state(fed) -> tuple:
    with open_home_store(fed.home) as store:
        return (
            store.size(),
            store.root_hash(),
            [(r.site_id, r.classifier_id, r.entry_index) for r in store.list_evaluations()],
        )


def _request(**change) -> pb.EvaluationReport:
    fields = dict(
        classifier_id="clf-1",
        n_test=10,
        accuracy=0.7,
        macro_auroc=0.85,
        per_class_recall=[
            pb.ClassRecall(recall=0.75),
            pb.ClassRecall(recall=2 / 3),
            pb.ClassRecall(),
            pb.ClassRecall(recall=2 / 3),
        ],
        confusion=[c for row in CONFUSION for c in row],
    )
    fields.update(change)
    return pb.EvaluationReport(**{k: v for k, v in fields.items() if v is not None})


BAD = {
    "accuracy above 1": (_request(accuracy=1.5), "E_EVALUATION_RANGE"),
    "accuracy below 0": (_request(accuracy=-0.1), "E_EVALUATION_RANGE"),
    "accuracy NaN": (_request(accuracy=math.nan), "E_EVALUATION_RANGE"),
    "AUROC infinite": (_request(macro_auroc=math.inf), "E_EVALUATION_RANGE"),
    "recall above 1": (
        _request(per_class_recall=[pb.ClassRecall(recall=1.2)] * 4, confusion=[]),
        "E_EVALUATION_RANGE",
    ),
    "no test image": (_request(n_test=0, confusion=[]), "E_EVALUATION_RANGE"),
    "too many test images": (_request(n_test=10**12, confusion=[]), "E_EVALUATION_RANGE"),
    "three recalls for four classes": (
        _request(per_class_recall=[pb.ClassRecall(recall=0.5)] * 3),
        "E_EVALUATION_CLASSES",
    ),
    "confusion of the wrong size": (_request(confusion=[1] * 9), "E_EVALUATION_CLASSES"),
    "confusion not summing to n_test": (_request(n_test=11), "E_EVALUATION_INCONSISTENT"),
    "accuracy not what the confusion gives": (_request(accuracy=0.8), "E_EVALUATION_INCONSISTENT"),
    "accuracy not k / n_test": (_request(accuracy=0.71, confusion=[]), "E_EVALUATION_INCONSISTENT"),
    "unknown classifier": (_request(classifier_id="clf-9"), "E_NO_CLASSIFIER"),
    "classifier id with path characters": (_request(classifier_id="../clf-1"), "E_ARTIFACT_ID"),
    "retired classifier": (_request(classifier_id="clf-2"), "E_CLASSIFIER_RETIRED"),
}
STATUS = {
    "E_NO_CLASSIFIER": grpc.StatusCode.NOT_FOUND,
    "E_CLASSIFIER_RETIRED": grpc.StatusCode.FAILED_PRECONDITION,
}


def test_report_is_checked_stored_once_shown_and_audited(tmp_path):
    fed = build_federation(tmp_path / "fed")
    with fed.serve() as srv:
        _lineage(fed, srv)
        with fed.client("st-mary", srv.address) as mary, fed.client("st-john", srv.address) as john:
            # -- the report is stored under the caller and committed to in the ledger --------------
            before = _state(fed)[0]
            first = mary.report_evaluation(REPORT, site_id="st-mary")
            assert not first.existing and first.index == before and first.tree_size == before + 1
            entry = validate_entry(first.entry)
            assert entry["type"] == "classifier.evaluated" and entry["actor"] == "site:st-mary"
            assert entry["facts"] == {
                "classifier_id": "clf-1",
                "site_id": "st-mary",
                "report_sha256": commitment(REPORT, first.salt),
            }
            assert b"0.7" not in first.entry  # the public entry carries no metric
            with open_home_store(fed.home) as store:
                (row,) = store.list_evaluations("clf-1")
                assert (
                    row.site_id == "st-mary"
                    and row.report == REPORT.to_dict()
                    and row.entry_index == first.index
                )
                assert store.verify_integrity()["evaluations"] == 1

            # -- a re-sent identical report adds nothing and answers the same entry ----------------
            state = _state(fed)
            again = mary.report_evaluation(REPORT, site_id="st-mary")
            assert again.existing and again.index == first.index and again.salt == first.salt
            assert again.entry == first.entry and _state(fed) == state

            # -- other numbers for the same classifier from the same site: refused, nothing changes
            with pytest.raises(AggregatorError) as err:
                mary.report_evaluation(
                    EvaluationReport("clf-1", 10, 0.7, 0.9, REPORT.per_class_recall, CONFUSION)
                )
            assert (
                err.value.code == "E_EVALUATION_EXISTS"
                and err.value.status == grpc.StatusCode.ALREADY_EXISTS
            )
            assert _state(fed) == state

            # -- out-of-range or inconsistent reports: typed refusals that change nothing ----------
            for case, (request, code) in BAD.items():
                with pytest.raises(grpc.RpcError) as err:
                    mary.stub.ReportEvaluation(request, timeout=10)
                got = dict(err.value.trailing_metadata())
                assert got.get("ffsecure-error-code") == code, case
                assert err.value.code() == STATUS.get(code, grpc.StatusCode.INVALID_ARGUMENT), case
                assert _state(fed) == state, case

            # -- st-john's identical numbers are st-john's report, whatever it sends ---------------
            john_receipt = john.report_evaluation(REPORT)
            assert (
                not john_receipt.existing
                and validate_entry(john_receipt.entry)["actor"] == "site:st-john"
            )
            with pytest.raises(LedgerError) as err:  # st-john's receipt never passes as st-mary's
                john.report_evaluation(REPORT, site_id="st-mary")
            assert err.value.code == "E_RECEIPT"
        # A certificate of another CA naming st-mary never reaches the service; a revoked one is
        # refused.
        state = _state(fed)
        forged = fed.foreign_site("st-mary")
        with fed.client(
            "st-mary", srv.address, creds=forged, retry=RetryPolicy(max_attempts=1)
        ) as c:
            with pytest.raises(AggregatorError) as err:
                c.report_evaluation(
                    EvaluationReport("clf-1", 10, 0.7, 0.1, REPORT.per_class_recall)
                )
            assert err.value.status == grpc.StatusCode.UNAVAILABLE
        assert _state(fed) == state
        fed.revoke_site("st-john")  # a site that uploaded no module, so the audit below stays clean
        srv.runtime.deps.authenticator.crl.current()  # loaded and recorded (crl.loaded) first
        state = _state(fed)
        with fed.client("st-john", srv.address, retry=RetryPolicy(max_attempts=1)) as c:
            with pytest.raises(AggregatorError) as err:
                c.report_evaluation(
                    EvaluationReport("clf-1", 10, 0.7, 0.1, REPORT.per_class_recall)
                )
            assert err.value.code == "E_CERT_REVOKED"
        assert _state(fed) == state

    # -- the operator sees both sites' metrics for the current classifier -----------------------
    home = fed.home.root
    status = _operator("aggregator", "status", "--dir", home)
    evals = status["current_classifier"]["site_evaluations"]
    assert [e["site_id"] for e in evals] == ["st-mary", "st-john"]
    assert evals[0]["accuracy"] == 0.7 and evals[0]["auroc"] == 0.85 and evals[0]["n_test"] == 10
    assert (
        evals[0]["per_class_recall"] == dict(zip(LABELS, REPORT.per_class_recall, strict=True))
        and evals[0]["confusion_sent"]
    )
    text = CliRunner().invoke(
        __import__("aggregator.cli", fromlist=["cli"]).cli, ["status", "--dir", str(home)]
    )
    assert "st-mary: accuracy 0.7000, AUROC 0.8500 on 10 images" in text.output, text.output

    # -- the exported bundle verifies and its report names the evaluations ----------------------
    bundle, ca = tmp_path / "bundle", tmp_path / "ca.pem"
    ca.write_bytes(fed.ca_pem)
    _operator("aggregator", "ledger", "export", "--dir", home, "--out", bundle)
    verdict = _operator("ffsecure", "audit", "verify", bundle, "--ca", ca)
    assert verdict["verdict"] == "VERIFIED" and verdict["findings"] == [], verdict["findings"]
    _operator("ffsecure", "audit", "report", bundle, "--ca", ca, "--out", tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert (
        f"st-mary (entry {first.index})" in html and f"st-john (entry {john_receipt.index})" in html
    )
    assert "classifier clf-1 evaluated by st-mary" in html
    # the entries in the bundle are exactly the receipts' entries
    lines = (bundle / "entries.jsonl").read_bytes().splitlines()
    assert (
        lines[first.index] == first.entry
        and canonical.loads(lines[john_receipt.index])["actor"] == "site:st-john"
    )
