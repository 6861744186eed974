"""The ``privacy_report`` of a module manifest: numbers only, schema-checked.

The report is a flat JSON object whose keys are all optional but, when
present, must be one of :data:`REPORT_FIELDS` with a number in the stated
range (integers where counts are meant). It holds measured figures only:
no image, no per-example value, nothing that names a patient. The full
report a site keeps locally (``privacy-report.json``) carries more detail;
:func:`manifest_report` extracts the signed part from it.
"""

from __future__ import annotations

import math
from typing import Any

from ffsecure.errors import FormatError

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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_report(report: Any) -> dict[str, int | float]:
    """Check a manifest ``privacy_report``; return it unchanged or raise ``E_PRIVACY_REPORT``."""
    hint = "produce the report with `site-node privacy-check`"
    if not isinstance(report, dict):
        raise PrivacyReportError(
            f"privacy_report must be an object, not {type(report).__name__}", hint=hint
        )
    unknown = sorted(k for k in report if k not in REPORT_FIELDS)
    if unknown:
        raise PrivacyReportError(
            f"privacy_report has unknown keys {unknown[:5]}; known keys: {sorted(REPORT_FIELDS)}",
            hint=hint,
        )
    for key, value in report.items():
        kind, low, high = REPORT_FIELDS[key]
        if not _is_number(value) or (kind == "int" and not isinstance(value, int)):
            raise PrivacyReportError(
                f"privacy_report.{key} must be {'an integer' if kind == 'int' else 'a number'}"
                f", got {value!r}",
                hint=hint,
            )
        if not low <= value <= high:
            raise PrivacyReportError(
                f"privacy_report.{key} = {value!r} is outside [{low:g}, {high:g}]", hint=hint
            )
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
