"""The ``privacy_report`` of a module manifest: numbers only, schema-checked.

The report is a flat JSON object whose keys are all optional but, when
present, must be one of :data:`REPORT_FIELDS` with a number in the stated
range (integers where counts are meant). It holds measured figures only:
no image, no per-example value, nothing that names a patient. The full
report a site keeps locally (``privacy-report.json``) carries more detail;
:func:`manifest_report` extracts the signed part from it.

The figures of :data:`DATA_DEPENDENT` (example counts, membership-inference and
memorization figures) are measured on the site's training images without noise. A
module with a DP claim never signs them, whatever the federation: a site that trains
under DP (because the federation requires it, or by its own choice) releases nothing
about its data outside its claim. :func:`releasable` applies the rule and
:func:`manifest_report` uses it, so such a module's report holds only data-independent
figures (the version, the number of samples the site chose to generate, the near-copy
quantile rule, the epsilon re-computed from the claim's own parameters and its delta); the
measured figures stay in the site's local report, which is never sent.

Whether the DP claim then stands in for those figures where the privacy policy limits
them is :func:`dp_covers`, the one home of that rule: only a claim the federation
bounds, that is a ``dp_policy`` that sets ``max_epsilon`` and ``delta`` (always so when
it requires DP; the aggregator refuses a claim above either, required or not). A site
can sign any epsilon it likes (10^4 is honest and meaningless), so where the federation
bounds no claim a DP module cannot show that it meets the policy's empirical limits and
is refused.

Older packages whose DP module signed measured figures still parse: the schema does not
depend on the DP claim, the policy judges what the report states.
"""

from __future__ import annotations

from typing import Any

from ffsecure.errors import FormatError
from ffsecure.records import fields

REPORT_VERSION = 1
# The sizes a site measures with by default (`site-node privacy-check`, and `train` / `run` when the
# federation requires a report); here, torch-free, so that CLI option defaults can name them.
DEFAULT_SAMPLES = 1000  # generated samples for the memorization test
DEFAULT_MAX_EXAMPLES = 2000  # at most this many members and non-members in the membership attack
#: The check's near-copy rule: a generated sample nearer to a training image than this quantile
#: of held-out images' distances is a near-copy (ffsecure.privacy.memorization). A report states
#: the quantile it used (``near_copy_quantile``); the privacy policy refuses a lower one.
NEAR_COPY_QUANTILE = 0.01
#: The near-copy floor, an RMS distance (images in [-1, 1]): a held-out image nearer than this to
#: a training image duplicates it (the same image, or the same patient's repeat image on both
#: sides of a split) and is not an unseen image, so it does not set the threshold, which is
#: therefore never below the floor (ffsecure.privacy.memorization). 0.03 is about 4 gray levels
#: of 255, and half the smallest distance between distinct images in public data no site's check
#: reads: digits' test split lies >= 0.058 from its training split, and MedMNIST's validation
#: splits, apart from exact duplicates, >= 0.064 (RetinaMNIST), >= 0.070 (PneumoniaMNIST);
#: BreastMNIST's hold repeat frames of one scan from 0.007 up (docs/privacy.md). The privacy
#: policy refuses a near-copy figure counted below it.
NEAR_COPY_FLOOR = 0.03

# key -> (kind, low, high); kind "int" or "float"; bounds inclusive
REPORT_FIELDS: dict[str, tuple[str, float, float]] = {
    "v": ("int", REPORT_VERSION, REPORT_VERSION),
    "members": ("int", 1, 1 << 40),
    "non_members": ("int", 1, 1 << 40),
    "generated": ("int", 1, 1 << 40),
    "near_copy_searched": ("int", 1, 1 << 40),
    "membership_auroc": ("float", 0.0, 1.0),
    "membership_tpr_at_1pct_fpr": ("float", 0.0, 1.0),
    "membership_calibrated_auroc": ("float", 0.0, 1.0),
    "membership_calibrated_tpr_at_1pct_fpr": ("float", 0.0, 1.0),
    "memorization_ratio": ("float", 0.0, 1e6),
    "near_copy_fraction": ("float", 0.0, 1.0),
    "near_copy_threshold": ("float", 0.0, 1e6),
    "near_copy_quantile": ("float", 0.0, 1.0),
    "near_copy_holdout": ("int", 0, 1 << 40),
    "dp_epsilon_recomputed": ("float", 0.0, 1e6),
    "dp_delta": ("float", 0.0, 1.0),
}


#: Figures computed from the site's training images without noise: released only by a module
#: without a DP claim (:func:`releasable`). Every other key of :data:`REPORT_FIELDS` is fixed by
#: the site's choices (the samples generated, the near-copy quantile) or by the DP claim's own
#: parameters.
DATA_DEPENDENT: frozenset[str] = frozenset(
    {
        "members",
        "non_members",
        "near_copy_searched",
        "membership_auroc",
        "membership_tpr_at_1pct_fpr",
        "membership_calibrated_auroc",
        "membership_calibrated_tpr_at_1pct_fpr",
        "memorization_ratio",
        "near_copy_fraction",
        "near_copy_threshold",
        "near_copy_holdout",
    }
)


def has_dp_claim(dp: Any) -> bool:
    """Whether a module manifest's ``dp`` field is a DP claim (a record, not null)."""
    return isinstance(dp, dict)


def bounds_dp_claims(dp_policy: Any) -> bool:
    """Whether a federation's ``dp_policy`` bounds every DP claim: it sets ``max_epsilon`` and
    ``delta`` (a required policy always does; ``ffsecure.package.check_policy`` refuses a
    claim above either, required or not)."""
    return (
        isinstance(dp_policy, dict)
        and dp_policy.get("max_epsilon") is not None
        and dp_policy.get("delta") is not None
    )


def dp_covers(dp: Any, dp_policy: Any) -> bool:
    """Whether a module's DP claim stands in for the figures its report does not state (the
    one rule).

    True only when ``dp`` (the module manifest's field) is a DP claim and ``dp_policy`` (the
    federation manifest's field) bounds it (:func:`bounds_dp_claims`). Anything else is false.
    """
    return has_dp_claim(dp) and bounds_dp_claims(dp_policy)


def withholds(dp: Any) -> bool:
    """Whether a module keeps the figures of :data:`DATA_DEPENDENT` out of its signed report:
    whenever it has a DP claim, whatever the federation."""
    return has_dp_claim(dp)


def releasable(report: dict[str, Any], dp: Any) -> dict[str, Any]:
    """The part of ``report`` a module with manifest field ``dp`` may sign.

    All of it without a DP claim; under one, only the keys outside :data:`DATA_DEPENDENT`.
    """
    if not withholds(dp):
        return dict(report)
    return {key: value for key, value in report.items() if key not in DATA_DEPENDENT}


def withheld(report: dict[str, Any], dp: Any) -> list[str]:
    """The keys of ``report`` that :func:`releasable` keeps local, sorted."""
    return sorted(set(report) - set(releasable(report, dp)))


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


def measured_report(full: dict[str, Any]) -> dict[str, int | float]:
    """Every figure of a full local report (``privacy-report.json``) in the manifest's keys.

    What the site measured, released or not: :func:`manifest_report` is the part it signs.
    """
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
        "near_copy_searched": memo.get("train"),  # every training image of the classes
        "memorization_ratio": memo.get("ratio"),
        "near_copy_fraction": memo.get("near_copy_fraction"),
        "near_copy_threshold": memo.get("near_copy_threshold"),
        "near_copy_quantile": memo.get("near_copy_quantile"),  # None: set by hand
        "near_copy_holdout": memo.get("near_copy_holdout"),
        "dp_epsilon_recomputed": acct.get("epsilon_recomputed"),
        "dp_delta": acct.get("delta"),
    }
    for key, value in pairs.items():
        if value is None:
            continue
        kind = REPORT_FIELDS[key][0]
        if key == "dp_delta":  # the claim's own delta, exactly: 6 decimals would turn 5e-8 to 0
            out[key] = float(value)
        else:
            out[key] = int(value) if kind == "int" else round(float(value), 6)
    return check_report(out)


def manifest_report(full: dict[str, Any], dp: Any) -> dict[str, int | float]:
    """The signed, numbers-only part of a full local report, for a module whose ``dp`` is given.

    The figures of :data:`DATA_DEPENDENT` stay out under a DP claim (see :func:`releasable`).
    """
    return check_report(releasable(measured_report(full), dp))
