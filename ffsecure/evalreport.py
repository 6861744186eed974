"""A site's evaluation report: how a classifier did on the site's own test data, in aggregate.

The report holds numbers only: the classifier id, the number of test
images, accuracy, macro AUROC (or none), the recall of each class of the
federation's label space (``None`` where the site has no test image of the
class) and, when the site chooses to send it, the confusion matrix
(counts). Nothing per image. :meth:`EvaluationReport.check` bounds every
field against the label space and checks that the numbers agree with each
other, raising :class:`~ffsecure.errors.FormatError` with a stable code:

* ``E_EVALUATION_RANGE``: a number outside its range (accuracy, AUROC and
  recalls in [0, 1], finite; 1 <= n_test <= MAX_TEST_IMAGES; counts bounded);
* ``E_EVALUATION_CLASSES``: a per-class list whose length is not the label
  space's (or a confusion matrix that is not num_classes x num_classes);
* ``E_EVALUATION_INCONSISTENT``: numbers that contradict each other
  (accuracy not a multiple of 1/n_test, confusion counts not summing to
  n_test, recalls or accuracy other than the confusion matrix gives).

The public ledger never carries the numbers (they are derived from the
site's patients): its ``classifier.evaluated`` entry holds
:func:`commitment`, the SHA-256 of the canonical report together with a
random salt the aggregator draws, so the log binds the stored report without
revealing it, and a site that knows its report checks its receipt.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from ffsecure import canonical
from ffsecure.errors import FormatError
from ffsecure.records import fields
from ffsecure.records.ids import SALT, check_artifact_id

REPORT_VERSION = 1
MAX_TEST_IMAGES = 100_000_000
#: Two floats a site computed as k / n and the aggregator recomputes may differ by rounding only.
TOLERANCE = 1e-9


def _range(message: str) -> FormatError:
    return FormatError(
        message,
        code="E_EVALUATION_RANGE",
        hint="send the metrics ffsecure.classifier.evaluate computed, unchanged",
    )


def _inconsistent(message: str) -> FormatError:
    return FormatError(
        message,
        code="E_EVALUATION_INCONSISTENT",
        hint="send the metrics ffsecure.classifier.evaluate computed, unchanged",
    )


def _range_error(exc: fields.FieldError) -> FormatError:
    return _range(f"{exc.key} is {exc.value!r}, not {exc.expect}")


#: The report's numbers (NaN, the infinities and bools are out of range: E_EVALUATION_RANGE).
N_TEST = fields.Int(1, MAX_TEST_IMAGES, expect=f"an integer in 1..{MAX_TEST_IMAGES}")
UNIT = fields.Float(0.0, 1.0, expect="a number in [0, 1]")
#: Confusion counts, checked after the matrix is known to be num_classes x num_classes.
COUNTS = fields.List(
    fields.List(fields.Int(0, MAX_TEST_IMAGES, expect=f"an integer in 0..{MAX_TEST_IMAGES}"))
)
NUMBERS_SPEC = fields.Table(
    {"n_test": N_TEST, "accuracy": UNIT, "macro AUROC": fields.Nullable(UNIT)}
)
#: The stored record (``to_dict``): its exact key set and version; the values are then checked
#: by :meth:`EvaluationReport.check`.
RECORD_SPEC = fields.Table(
    {
        "v": fields.Int(REPORT_VERSION, REPORT_VERSION),
        **{
            name: fields.Opaque()
            for name in (
                "classifier_id",
                "n_test",
                "accuracy",
                "auroc",
                "per_class_recall",
                "confusion",
            )
        },
    }
)


def _format_error(exc: fields.FieldError) -> FormatError:
    return FormatError(
        "not an evaluation report record",
        code="E_EVALUATION_FORMAT",
        hint="build it with EvaluationReport.to_dict",
    )


@dataclass(frozen=True)
class EvaluationReport:
    """Aggregate metrics of one classifier on one site's test data."""

    classifier_id: str
    n_test: int
    accuracy: float
    auroc: float | None
    per_class_recall: tuple[float | None, ...]
    confusion: tuple[tuple[int, ...], ...] | None = None

    @classmethod
    def from_metrics(
        cls, classifier_id: str, metrics: dict, *, include_confusion: bool = False
    ) -> EvaluationReport:
        """From :meth:`ffsecure.classifier.Evaluation.to_dict` (``accuracy``, ``auroc``, ...)."""
        return cls(
            classifier_id=classifier_id,
            n_test=int(metrics["n"]),
            accuracy=float(metrics["accuracy"]),
            auroc=None if metrics.get("auroc") is None else float(metrics["auroc"]),
            per_class_recall=tuple(
                None if r is None else float(r) for r in metrics["per_class_recall"]
            ),
            confusion=tuple(tuple(int(c) for c in row) for row in metrics["confusion"])
            if include_confusion
            else None,
        )

    def check(self, num_classes: int) -> EvaluationReport:
        """Raise FormatError (E_EVALUATION_*) unless every number is in range and they agree."""
        check_artifact_id(
            self.classifier_id,
            "classifier id",
            hint="report the id the classifier was fetched under",
        )
        numbers = {"n_test": self.n_test, "accuracy": self.accuracy, "macro AUROC": self.auroc}
        numbers = fields.check(NUMBERS_SPEC, numbers, error=_range_error)
        n, accuracy = numbers["n_test"], numbers["accuracy"]
        if len(self.per_class_recall) != num_classes:
            raise FormatError(
                f"{len(self.per_class_recall)} per-class recalls for a label space of "
                f"{num_classes} classes",
                code="E_EVALUATION_CLASSES",
                hint="send one recall per class of the federation's label space, in label order",
            )
        recalls = [
            fields.check(fields.Nullable(UNIT), r, f"recall of class {k}", error=_range_error)
            for k, r in enumerate(self.per_class_recall)
        ]
        if all(r is None for r in recalls):
            raise _inconsistent("no class has a recall, but the report counts test images")
        if abs(accuracy * n - round(accuracy * n)) > TOLERANCE * max(1, n):
            raise _inconsistent(
                f"accuracy {accuracy!r} is not a whole number of correct images out of {n}"
            )
        if self.confusion is not None:
            self._check_confusion(self.confusion, num_classes, accuracy, recalls)
        return self

    def _check_confusion(
        self,
        cm: tuple[tuple[int, ...], ...],
        num_classes: int,
        accuracy: float,
        recalls: list[float | None],
    ) -> None:
        if len(cm) != num_classes or any(len(row) != num_classes for row in cm):
            raise FormatError(
                f"the confusion matrix is not {num_classes} x {num_classes}",
                code="E_EVALUATION_CLASSES",
                hint="send num_classes * num_classes counts, row-major",
            )
        fields.check(COUNTS, [list(row) for row in cm], "confusion", error=_range_error)
        total = sum(sum(row) for row in cm)
        if total != self.n_test:
            raise _inconsistent(f"the confusion counts sum to {total}, not n_test {self.n_test}")
        correct = sum(cm[k][k] for k in range(num_classes))
        if abs(correct / self.n_test - accuracy) > TOLERANCE:
            raise _inconsistent(
                f"accuracy {accuracy!r} is not {correct}/{self.n_test} "
                "as the confusion matrix gives"
            )
        for k, r in enumerate(recalls):
            support = sum(cm[k])
            if (r is None) != (support == 0) or (
                r is not None and abs(cm[k][k] / support - r) > TOLERANCE
            ):
                raise _inconsistent(
                    f"recall of class {k} ({r!r}) is not what the confusion matrix gives"
                )

    def to_dict(self) -> dict:
        """The canonical record (what is stored and, with a salt, hashed into the ledger)."""
        return {
            "v": REPORT_VERSION,
            "classifier_id": self.classifier_id,
            "n_test": self.n_test,
            "accuracy": float(self.accuracy),
            "auroc": None if self.auroc is None else float(self.auroc),
            "per_class_recall": [None if r is None else float(r) for r in self.per_class_recall],
            "confusion": None if self.confusion is None else [list(row) for row in self.confusion],
        }

    @classmethod
    def from_dict(cls, d: dict) -> EvaluationReport:
        fields.check(RECORD_SPEC, d, "evaluation report", error=_format_error)
        return cls(
            d["classifier_id"],
            d["n_test"],
            d["accuracy"],
            d["auroc"],
            tuple(d["per_class_recall"]),
            None if d["confusion"] is None else tuple(tuple(row) for row in d["confusion"]),
        )

    def to_bytes(self) -> bytes:
        return canonical.dumps(self.to_dict())


def new_salt() -> str:
    """32 random hex digits (128 bits) for :func:`commitment`."""
    return secrets.token_hex(16)


def commitment(report: EvaluationReport, salt: str) -> str:
    """SHA-256 (hex) of the canonical ``{"report": ..., "salt": ...}``: hides and
    binds the report."""
    if not SALT.matches(salt):
        raise FormatError(
            "the commitment salt is not 32 lowercase hex digits", code="E_EVALUATION_FORMAT"
        )
    return hashlib.sha256(canonical.dumps({"report": report.to_dict(), "salt": salt})).hexdigest()


def ledger_facts(report: EvaluationReport, site_id: str, salt: str) -> dict:
    """Facts of the ``classifier.evaluated`` entry: ids and the commitment, never the numbers."""
    return {
        "classifier_id": report.classifier_id,
        "site_id": site_id,
        "report_sha256": commitment(report, salt),
    }


def summary(report_dict: dict, classes: Sequence[str] | None = None) -> dict:
    """The numbers an operator reads (``aggregator status``): drops the confusion matrix."""
    out = {k: report_dict[k] for k in ("n_test", "accuracy", "auroc", "per_class_recall")}
    out["confusion_sent"] = report_dict.get("confusion") is not None
    if classes is not None:
        recalls = zip(classes, report_dict["per_class_recall"], strict=True)
        out["per_class_recall"] = dict(recalls)
    return out
