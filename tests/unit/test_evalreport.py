"""Sites' evaluation reports: built from real metrics, bounded, self-consistent, committed to by a
salted hash."""

from __future__ import annotations

import math

import pytest
import torch

from ffsecure import canonical
from ffsecure.classifier import build_model, evaluate, model_config
from ffsecure.errors import FormatError
from ffsecure.evalreport import EvaluationReport, commitment, ledger_facts, new_salt

torch.set_num_threads(1)


def _metrics() -> dict:
    cfg = model_config("cnn", image_shape=(1, 8, 8), num_classes=4, width=4)
    x = torch.randn(23, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 3] * 7 + [0, 1])  # no image of class 2
    return evaluate(build_model(cfg, seed=0), x, y, 4).to_dict()


@pytest.mark.parametrize("confusion", [False, True])
def test_real_metrics_make_a_valid_report_that_round_trips(confusion):
    m = _metrics()
    report = EvaluationReport.from_metrics("clf-000007", m, include_confusion=confusion).check(4)
    assert report.per_class_recall[2] is None and (report.confusion is not None) == confusion
    data = report.to_bytes()
    assert canonical.loads_canonical(data) == report.to_dict()
    assert EvaluationReport.from_dict(canonical.loads(data)) == report


def test_the_commitment_hides_behind_a_salt_and_binds_the_report():
    report = EvaluationReport("clf-1", 4, 0.75, None, (1.0, 0.5))
    s1, s2 = new_salt(), new_salt()
    assert commitment(report, s1) != commitment(report, s2)
    assert commitment(report, s1) != commitment(
        EvaluationReport("clf-1", 4, 0.5, None, (1.0, 0.0)), s1
    )
    facts = ledger_facts(report, "st-mary", s1)
    assert facts == {
        "classifier_id": "clf-1",
        "site_id": "st-mary",
        "report_sha256": commitment(report, s1),
    }
    with pytest.raises(FormatError):
        commitment(report, "../salt")


@pytest.mark.parametrize(
    "bad, code",
    [
        (dict(n_test=True), "E_EVALUATION_RANGE"),
        (dict(n_test=4.0), "E_EVALUATION_RANGE"),
        (dict(accuracy=math.inf), "E_EVALUATION_RANGE"),
        (dict(accuracy=True), "E_EVALUATION_RANGE"),
        (dict(auroc=-0.5), "E_EVALUATION_RANGE"),
        (dict(per_class_recall=(None, None)), "E_EVALUATION_INCONSISTENT"),
        (dict(per_class_recall=(1.0,)), "E_EVALUATION_CLASSES"),
        (dict(confusion=((3, 0), (1, 1))), "E_EVALUATION_INCONSISTENT"),  # sums to 5, not 4
        (
            dict(confusion=((2, 1), (0, 1))),
            "E_EVALUATION_INCONSISTENT",
        ),  # recall of class 0 is 2/3, not 1
        (dict(confusion=((3, 0), (-1, 2))), "E_EVALUATION_RANGE"),
        (dict(classifier_id="a/b"), "E_ARTIFACT_ID"),
    ],
)
def test_out_of_range_or_inconsistent_reports_are_refused(bad, code):
    fields = dict(
        classifier_id="clf-1",
        n_test=4,
        accuracy=0.75,
        auroc=None,
        per_class_recall=(1.0, 0.5),
        confusion=None,
    )
    fields.update(bad)
    with pytest.raises(FormatError) as err:
        EvaluationReport(**fields).check(2)
    assert err.value.code == code
