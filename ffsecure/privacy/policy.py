"""The federation's privacy policy and the check the aggregator runs at registration.

The federation manifest may carry ``privacy_policy`` (null = no privacy
requirement)::

    {"required": true,                       # a module must carry a privacy_report
     "max_membership_auroc": 0.6,            # strongest reported attack's AUROC
     "max_membership_tpr_at_1pct_fpr": 0.05,
     "max_near_copy_fraction": 0.01}

Every key is optional; ``required`` defaults to false, and a missing
threshold is not enforced. When a module carries a report, every threshold
the policy sets is enforced, and a report that lacks the figure a threshold
needs is refused (it cannot show that it complies). The membership AUROC and
TPR compared are the larger of the plain and the calibrated attack. If the
module claims DP and its report states a re-computed epsilon, the two must
agree. :func:`check_module` is pure (no I/O) and raises
:class:`PrivacyPolicyError` (``E_PRIVACY_POLICY``).
"""

from __future__ import annotations

import math
from typing import Any

from ffsecure.errors import FormatError, PolicyError
from ffsecure.privacy.report import check_report

POLICY_FIELDS: dict[str, tuple[float, float] | None] = {
    "required": None,  # bool
    "max_membership_auroc": (0.0, 1.0),
    "max_membership_tpr_at_1pct_fpr": (0.0, 1.0),
    "max_near_copy_fraction": (0.0, 1.0),
}
EPSILON_RTOL = 1e-4


class PrivacyPolicyError(PolicyError):
    """A module's privacy report is missing or breaks the federation's privacy policy."""

    code = "E_PRIVACY_POLICY"


class PrivacyPolicySchemaError(FormatError):
    code = "E_PRIVACY_POLICY_SCHEMA"


def check_policy_fields(policy: Any) -> dict[str, Any]:
    """Schema of ``privacy_policy`` (known keys, bool/number types, ranges)."""
    if not isinstance(policy, dict):
        raise PrivacyPolicySchemaError("privacy_policy must be an object")
    unknown = sorted(k for k in policy if k not in POLICY_FIELDS)
    if unknown:
        raise PrivacyPolicySchemaError(f"privacy_policy has unknown keys {unknown[:5]}; "
                                       f"known keys: {sorted(POLICY_FIELDS)}")
    for key, value in policy.items():
        bounds = POLICY_FIELDS[key]
        if bounds is None:
            if not isinstance(value, bool):
                raise PrivacyPolicySchemaError(f"privacy_policy.{key} must be true or false")
            continue
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not bounds[0] <= value <= bounds[1]):
            raise PrivacyPolicySchemaError(
                f"privacy_policy.{key} must be a number in [{bounds[0]:g}, {bounds[1]:g}], got {value!r}")
    return policy


def _strongest(report: dict[str, Any], plain: str, calibrated: str) -> float | None:
    values = [report[k] for k in (plain, calibrated) if k in report]
    return max(values) if values else None


def check_module(report: dict[str, Any] | None, dp: dict[str, Any] | None,
                 policy: dict[str, Any] | None) -> None:
    """Refuse (``E_PRIVACY_POLICY``) a module whose ``privacy_report`` breaks ``policy``.

    ``report`` and ``dp`` are the module manifest's fields, ``policy`` the
    federation manifest's ``privacy_policy``. Pure: reads nothing, writes nothing.
    """
    hint = "run `site-node privacy-check --attach` and retrain (e.g. with DP or fewer epochs) until it passes"
    if report is not None:
        try:
            check_report(report)
        except FormatError as exc:
            raise PrivacyPolicyError(exc.message, hint=exc.hint) from None
        eps = report.get("dp_epsilon_recomputed")
        if eps is not None:
            if not isinstance(dp, dict):
                raise PrivacyPolicyError("the privacy report states a DP epsilon but the module has no DP claim",
                                         hint="attach the report produced for this module")
            claimed = dp.get("epsilon")
            if not math.isclose(eps, claimed, rel_tol=EPSILON_RTOL, abs_tol=1e-6):
                raise PrivacyPolicyError(
                    f"the re-computed epsilon {eps:g} disagrees with the module's claimed epsilon {claimed:g}",
                    hint="the DP parameters in the manifest do not give the claimed epsilon; retrain")
    if not policy:
        return
    if report is None:
        if policy.get("required", False):
            raise PrivacyPolicyError("the federation requires a privacy report; the module has none", hint=hint)
        return
    checks = (
        ("max_membership_auroc", "membership AUROC",
         _strongest(report, "membership_auroc", "membership_calibrated_auroc")),
        ("max_membership_tpr_at_1pct_fpr", "membership TPR at 1% FPR",
         _strongest(report, "membership_tpr_at_1pct_fpr", "membership_calibrated_tpr_at_1pct_fpr")),
        ("max_near_copy_fraction", "near-copy fraction", report.get("near_copy_fraction")),
    )
    for key, what, value in checks:
        limit = policy.get(key)
        if limit is None:
            continue
        if value is None:
            raise PrivacyPolicyError(f"the federation limits the {what} ({key} = {limit:g}) but the "
                                     "module's privacy report does not state it", hint=hint)
        if value > limit:
            raise PrivacyPolicyError(f"{what} {value:g} is above the federation's limit {limit:g} ({key})",
                                     hint=hint)
