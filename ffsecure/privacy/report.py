"""The ``privacy_report`` of a module manifest: numbers only, schema-checked.

The report is a flat JSON object whose keys are all optional but, when
present, must be one of :data:`REPORT_FIELDS` with a number in the stated
range (integers where counts are meant). It holds measured figures only:
no image, no per-example value, nothing that names a patient. The full
report a site keeps locally (``privacy-report.json``) carries more detail;
:func:`manifest_report` extracts the signed part from it.
"""

from __future__ import annotations

from typing import Any

from ffsecure.errors import FormatError
from ffsecure.records import fields

REPORT_VERSION = 1
# The sizes a site measures with by default (`site-node privacy-check`, and `train` / `run` when the
# federation requires a report); here, torch-free, so that CLI option defaults can name them.
DEFAULT_SAMPLES = 1000  # generated samples for the memorization test
DEFAULT_MAX_EXAMPLES = 2000  # at most this many members and as many non-members

# key -> (kind, low, high); kind "int" or "float"; bounds inclusive
REPORT_FIELDS: dict[str, tuple[str, float, float]] = {
    "v": ("int", REPORT_VERSION, REPORT_VERSION),
    "members": ("int", 1, 1 << 40),
    "non_members": ("int", 1, 1 << 40),
    "generated": ("int", 1, 1 << 40),
    "membership_auroc": ("float", 0.0, 1.0),
    "membership_tpr_at_1pct_fpr": ("float", 0.0, 1.0),
    "membership_calibrated_auroc": ("float", 0.0, 1.0),
    "membership_calibrated_tpr_at_1pct_fpr": ("float", 0.0, 1.0),
    "memorization_ratio": ("float", 0.0, 1e6),
    "near_copy_fraction": ("float", 0.0, 1.0),
    "near_copy_threshold": ("float", 0.0, 1e6),
    "dp_epsilon_recomputed": ("float", 0.0, 1e6),
    "dp_delta": ("float", 0.0, 1.0),
}


class PrivacyReportError(FormatError):
    """A ``privacy_report`` has an unknown key or a value of the wrong type or range."""

    code = "E_PRIVACY_REPORT"


def _spec(kind: str, low: float, high: float) -> fields.Field:
    bounded = fields.Int(int(low), int(high)) if kind == "int" else fields.Float(low, high)
    return fields.Field(bounded, default=fields.OMIT)


#: The declarative form of :data:`REPORT_FIELDS`: every key optional, none unknown.
REPORT_SPEC = fields.Table({key: _spec(*bounds) for key, bounds in REPORT_FIELDS.items()})


def _report_error(exc: fields.FieldError) -> PrivacyReportError:
    hint = "produce the report with `site-node privacy-check`"
    if exc.problem is fields.Problem.UNKNOWN:
        message = (
            f"privacy_report has unknown keys {list(exc.keys[:5])}; "
            f"known keys: {sorted(REPORT_FIELDS)}"
        )
    elif exc.problem is fields.Problem.TYPE and exc.key == "privacy_report":
        message = f"privacy_report must be an object, not {type(exc.value).__name__}"
    elif exc.problem is fields.Problem.TYPE:
        kind = REPORT_FIELDS[exc.key.partition(".")[2]][0]
        wanted = "an integer" if kind == "int" else "a number"
        message = f"{exc.key} must be {wanted}, got {exc.value!r}"
    else:
        low, high = REPORT_FIELDS[exc.key.partition(".")[2]][1:]
        message = f"{exc.key} = {exc.value!r} is outside [{low:g}, {high:g}]"
    return PrivacyReportError(message, hint=hint)


def check_report(report: Any) -> dict[str, int | float]:
    """Check a manifest ``privacy_report``; return it unchanged or raise ``E_PRIVACY_REPORT``."""
    fields.check(REPORT_SPEC, report, "privacy_report", error=_report_error)
    return report


def manifest_report(full: dict[str, Any]) -> dict[str, int | float]:
    """The signed, numbers-only part of a full local report (``privacy-report.json``)."""
    out: dict[str, int | float] = {"v": REPORT_VERSION}
    mem, memo, acct = (
        full.get("membership") or {},
        full.get("memorization") or {},
        full.get("accounting") or {},
    )
    pairs = {
        "members": mem.get("members"),
        "non_members": mem.get("non_members"),
        "membership_auroc": mem.get("auroc"),
        "membership_tpr_at_1pct_fpr": mem.get("tpr_at_1pct_fpr"),
        "membership_calibrated_auroc": (mem.get("calibrated") or {}).get("auroc"),
        "membership_calibrated_tpr_at_1pct_fpr": (mem.get("calibrated") or {}).get(
            "tpr_at_1pct_fpr"
        ),
        "generated": memo.get("generated"),
        "memorization_ratio": memo.get("ratio"),
        "near_copy_fraction": memo.get("near_copy_fraction"),
        "near_copy_threshold": memo.get("near_copy_threshold"),
        "dp_epsilon_recomputed": acct.get("epsilon_recomputed"),
        "dp_delta": acct.get("delta"),
    }
    for key, value in pairs.items():
        if value is None:
            continue
        kind = REPORT_FIELDS[key][0]
        out[key] = int(value) if kind == "int" else round(float(value), 6)
    return check_report(out)
