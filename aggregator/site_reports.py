"""ReportEvaluation: a site's aggregate metrics of a classifier, checked and recorded.

The request is parsed once, here, into an :class:`ffsecure.evalreport.EvaluationReport`
and checked against the federation's label space before anything is written
(``E_EVALUATION_RANGE``, ``E_EVALUATION_CLASSES``, ``E_EVALUATION_INCONSISTENT``,
``E_ARTIFACT_ID``). The site is the authenticated peer, never a request field.
The store then checks the classifier (``E_NO_CLASSIFIER``, ``E_CLASSIFIER_RETIRED``)
and, in one transaction, keeps the report and appends ``classifier.evaluated``
(facts: classifier id, site id, salted commitment), or returns the receipt of
the identical report sent earlier.
"""

from __future__ import annotations

import logging
import threading

from aggregator.auth import Peer
from aggregator.store.base import Store
from ffsecure import evalreport
from ffsecure.errors import FormatError
from ffsecure.evalreport import EvaluationReport
from ffsecure.ledger import make_entry
from ffsecure.records.entries import EntryType
from ffsecure.v1 import aggregator_pb2 as pb

log = logging.getLogger("aggregator.service")


def report_from_pb(request: pb.EvaluationReport, num_classes: int) -> EvaluationReport:
    """The typed, checked report of a request (FormatError E_EVALUATION_* / E_ARTIFACT_ID)."""
    confusion = None
    if len(request.confusion):
        flat = list(request.confusion)
        if len(flat) != num_classes * num_classes:
            raise FormatError(
                f"{len(flat)} confusion counts for {num_classes} classes (need "
                f"{num_classes * num_classes})",
                code="E_EVALUATION_CLASSES",
                hint="send num_classes * num_classes counts, row-major, or none",
            )
        confusion = tuple(
            tuple(flat[i * num_classes : (i + 1) * num_classes]) for i in range(num_classes)
        )
    report = EvaluationReport(
        classifier_id=request.classifier_id,
        n_test=int(request.n_test),
        accuracy=float(request.accuracy),
        auroc=float(request.macro_auroc) if request.HasField("macro_auroc") else None,
        per_class_recall=tuple(
            float(r.recall) if r.HasField("recall") else None for r in request.per_class_recall
        ),
        confusion=confusion,
    )
    return report.check(num_classes)


def record_evaluation(
    store: Store,
    lock: threading.RLock,
    *,
    num_classes: int,
    peer: Peer,
    request: pb.EvaluationReport,
) -> pb.EvaluationReceipt:
    report = report_from_pb(request, num_classes)
    salt = evalreport.new_salt()
    entry = make_entry(
        EntryType.CLASSIFIER_EVALUATED,
        peer.actor,
        evalreport.ledger_facts(report, peer.site_id, salt),
    )
    with lock:
        row, receipt = store.put_evaluation(
            site_id=peer.site_id, report=report.to_bytes(), salt=salt, entry=entry
        )
    log.info(
        "evaluation of classifier %s by site %s at entry %d%s",
        row.classifier_id,
        peer.site_id,
        receipt.index,
        " (existing)" if receipt.existing else "",
        extra={
            "event": "evaluation_reported",
            "peer_identity": peer.identity.uri,
            "classifier_id": row.classifier_id,
            "index": receipt.index,
            "existing": receipt.existing,
        },
    )
    return pb.EvaluationReceipt(
        classifier_id=row.classifier_id,
        salt=row.salt,
        index=receipt.index,
        entry=receipt.entry,
        tree_size=receipt.tree_size,
        checkpoint=receipt.checkpoint,
        inclusion_proof=list(receipt.inclusion_proof),
        existing=receipt.existing,
    )
