"""Evaluate the federation's published classifier on this site's local test split.

The classifier is fetched with ``AggregatorClient.fetch_classifier`` (its
bytes hash to the ``classifier.trained`` entry, which is proven included in a
signed checkpoint), checked against the federation's label space and image
shape, and evaluated with :func:`ffsecure.classifier.evaluate` on the test
split of the configured data source (same label mapping and class filter as
training). Only aggregate metrics are kept (``STATE/classifiers/<id>/``).

:func:`send_metrics` (``site-node evaluate --send``) sends them back with
ReportEvaluation: accuracy, macro AUROC, per-class recall and the number of
test images, plus the confusion counts only when asked; never anything per
image. The receipt (salted commitment in a ``classifier.evaluated`` entry,
proven included in a signed checkpoint) is kept beside the metrics.
"""

from __future__ import annotations

import json

from ffsecure import pki, timefmt
from ffsecure.errors import VerificationError
from ffsecure.evalreport import EvaluationReport
from site_node.config import SiteConfig
from site_node.state import StateDir
from site_node.training import load_site_data


def evaluate_published(
    cfg: SiteConfig, trust, state: StateDir, client, classifier_id: str | None = None
) -> dict:
    # heavy: torch, only when evaluating (keeps --help fast)
    from ffsecure.classifier import evaluate
    from ffsecure.torchutil import torch_threads

    fed = trust.federation
    fetched = client.fetch_classifier(classifier_id)
    conf = fetched.config
    names = conf.get("class_names")
    if names is not None and list(names) != list(fed.label_space):
        raise VerificationError(
            f"classifier {fetched.classifier_id} has classes {names[:10]}, the federation "
            f"{fed.label_space[:10]}",
            code="E_CLASSIFIER_MISMATCH",
            hint="the aggregator published a classifier for another label space",
        )
    shape = conf.get("image_shape")
    if shape is not None and list(shape) != list(fed.image_shape):
        raise VerificationError(
            f"classifier {fetched.classifier_id} takes images {shape}, the federation "
            f"{list(fed.image_shape)}",
            code="E_CLASSIFIER_MISMATCH",
            hint="the aggregator published a classifier for another image shape",
        )
    model = fetched.model()
    data = load_site_data(cfg, fed)
    with torch_threads(cfg.train["threads"]):
        ev = evaluate(model, data.test_x, data.test_y, fed.num_classes)
    metrics = ev.to_dict()
    result = {
        "classifier_id": fetched.classifier_id,
        "sha256": fetched.sha256,
        "dataset_id": fetched.dataset_id,
        "module_ids": fetched.module_ids,
        "trained_index": fetched.trained_index,
        "published": fetched.published,
        "n_test": int(data.test_x.shape[0]),
        "classes": sorted({int(v) for v in data.test_y}),
        "metrics": metrics,
        "evaluated_at": timefmt.now_rfc3339(),
    }
    d = state.classifiers_dir / fetched.classifier_id
    d.mkdir(parents=True, exist_ok=True)
    pki.write_public_file(d / "weights.safetensors", fetched.weights)
    pki.write_public_file(
        d / "evaluation.json", (json.dumps(result, indent=2, sort_keys=True) + "\n").encode()
    )
    return result


def send_metrics(
    cfg: SiteConfig, state: StateDir, client, result: dict, *, include_confusion: bool = False
) -> dict:
    """Send the aggregate metrics of ``result`` (from :func:`evaluate_published`); returns what was
    sent and the aggregator's answer, also written into ``evaluation.json``."""

    report = EvaluationReport.from_metrics(
        result["classifier_id"], result["metrics"], include_confusion=include_confusion
    )
    receipt = client.report_evaluation(report, site_id=cfg.site_id)
    sent = {
        "sent": True,
        "fields": ["n_test", "accuracy", "auroc", "per_class_recall"]
        + (["confusion"] if include_confusion else []),
        "existing": receipt.existing,
        "index": receipt.index,
        "tree_size": receipt.tree_size,
        "report_sha256": receipt.report_sha256,
        "receipt": receipt.to_dict(),
    }
    path = state.classifiers_dir / result["classifier_id"] / "evaluation.json"
    saved = json.loads(path.read_text())
    saved["report"] = sent
    pki.write_public_file(path, (json.dumps(saved, indent=2, sort_keys=True) + "\n").encode())
    return sent
