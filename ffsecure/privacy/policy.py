"""The federation's privacy policy and the check the aggregator runs at registration.

The federation manifest may carry ``privacy_policy`` (null = no privacy
requirement)::

    {"max_membership_auroc": 0.6,            # strongest reported attack's AUROC
     "max_membership_tpr_at_1pct_fpr": 0.05,
     "max_near_copy_fraction": 0.01,
     "min_members": 20,                      # sizes a judged figure must be measured on
     "min_non_members": 20,
     "min_generated": 100}

Every key is optional. A present policy (even ``{}``) requires every module to carry a
privacy report: a limit that bound only the modules that chose to send a report would
bind only the honest ones. ``required`` is therefore always true; a manifest may spell
it (``true``), and one that says ``false`` is refused (``E_PRIVACY_POLICY_SCHEMA``, at
``federation create`` and wherever the manifest is parsed). A present policy limits the
membership-inference AUROC to :data:`DEFAULT_MAX_MEMBERSHIP_AUROC` (0.55) unless it sets
``max_membership_auroc`` itself (1.0 lifts the limit); the other limits are enforced
only when set. :data:`DEFAULTS` is the one home of these defaults: the aggregator, the
site node, ``aggregator modules show`` and the audit tools all read the policy through
:func:`effective_policy`.

When a module carries a report, every threshold of the effective policy is
enforced, and a report that lacks the figure a threshold needs is refused (it
cannot show that it complies). The membership AUROC and TPR compared are the
larger of the plain and the calibrated attack. If the module claims DP and
its report states a re-computed epsilon, the two must agree.

A figure counts only if it was measured soundly (:func:`measurement_problem`, the one
home of these rules): the report must state the sizes it was measured on, at least the
policy's ``min_members`` training images and ``min_non_members`` held-out images (every
figure) and ``min_generated`` samples (the near-copy fraction), and the near-copy
fraction must have been counted at a threshold chosen by the check's quantile rule
(``near_copy_quantile`` at least :data:`ffsecure.privacy.report.NEAR_COPY_QUANTILE`), not
set by hand, at least the floor :data:`ffsecure.privacy.report.NEAR_COPY_FLOOR`, and
taken over at least ``min_non_members`` held-out images beyond the floor
(``near_copy_holdout``). Otherwise a site could pass any limit by measuring two examples,
by counting near-copies at distance 0, or with a held-out split that duplicates its
training images.

A module with a DP claim signs no measured figure, whatever the federation
(:data:`ffsecure.privacy.report.DATA_DEPENDENT`, see
:func:`ffsecure.privacy.report.releasable`): a site that trains under DP releases nothing
about its data outside its claim. The claim stands in for those figures only where the
federation bounds it: :func:`ffsecure.privacy.report.dp_covers` (the module has a DP
claim and the federation's ``dp_policy`` sets ``max_epsilon`` and ``delta``, which the
aggregator enforces on every claim, required or not). A site can sign any epsilon (10^4
is honest and meaningless), so without that bound a DP claim would void every empirical
limit of this policy. Under a claim the federation bounds, a threshold on a figure the
report does not state is *covered by the DP claim*: not a failure, and shown as such
(``covered_by_dp`` in :meth:`PolicyVerdict.to_dict`). A covered module whose report
does state the figure (packages signed before this rule) is judged on it as before.
Every other module keeps the rule above: a figure it does not state is refused, so a DP
module in a federation that bounds no claim cannot pass a limit. :func:`evaluate`,
:func:`check_module` and :func:`site_verdict` therefore take the federation's
``dp_policy`` (keyword; ``None``, the default, covers nothing). The site still measures
the withheld figures and :func:`site_verdict` turns a threshold they exceed into a
warning for the site operator, never a refusal: the decision must not depend on
private data outside the claim.

A site keeps limits of its own (site.toml ``[privacy]``, :class:`SiteLimits`; the membership
AUROC at :data:`DEFAULT_MAX_MEMBERSHIP_AUROC` by default) and checks its modules against
them whether or not the federation sets a policy: :func:`site_verdict` judges each figure
at the stricter of the site's and the federation's limit (:func:`limits_in_force`, the one
rule), so a manifest may tighten a site's limit, never loosen it, and a failure names whose
limit it broke (``source`` in the verdict). The aggregator knows only the federation's.

:func:`evaluate` is pure (no I/O) and returns a :class:`PolicyVerdict` with
every threshold's PASS/FAIL and every problem, in a fixed order;
:func:`check_module` is the strict wrapper that raises the first problem as
:class:`PrivacyPolicyError` (``E_PRIVACY_POLICY``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from ffsecure.dp import SITE_MAX_EPSILON
from ffsecure.errors import FormatError, PolicyError
from ffsecure.privacy.report import (
    NEAR_COPY_FLOOR,
    NEAR_COPY_QUANTILE,
    check_report,
    dp_covers,
    has_dp_claim,
    releasable,
)
from ffsecure.records.fields import is_int, is_number

#: Largest count a ``min_*`` key may ask for (the report's own bound on counts).
MAX_COUNT = 1 << 40
# key -> (kind, low, high), bounds inclusive; kind "bool" (``required``: true only), "float" (a
# limit on a figure) or "int" (the fewest examples a judged figure must be measured on)
POLICY_FIELDS: dict[str, tuple[str, float, float]] = {
    "required": ("bool", 1, 1),
    "max_membership_auroc": ("float", 0.0, 1.0),
    "max_membership_tpr_at_1pct_fpr": ("float", 0.0, 1.0),
    "max_near_copy_fraction": ("float", 0.0, 1.0),
    "min_members": ("int", 1, MAX_COUNT),
    "min_non_members": ("int", 1, MAX_COUNT),
    "min_generated": ("int", 1, MAX_COUNT),
}
# A membership attack no better than guessing scores 0.5; 0.55 leaves room for the sampling error
# of a few hundred examples (docs/privacy.md) and refuses the leakiest DP cells of RESULTS.md.
DEFAULT_MAX_MEMBERSHIP_AUROC = 0.55
# The fewest members and non-members a judged figure may be measured on: the check's own floor
# for a held-out set (ffsecure.privacy.check.MIN_VALIDATION_NON_MEMBERS = 20). The smallest honest
# MedMNIST sites meet it: RetinaMNIST's class-4 site has 66 training images and its non-members
# are the test split's 20 class-4 images; BreastMNIST's malignant class has 21 validation images.
DEFAULT_MIN_MEMBERS = 20
DEFAULT_MIN_NON_MEMBERS = 20
# The fewest generated samples a near-copy fraction may be counted on: below 100 one sample is
# more than 1%, the share of unseen images the quantile rule itself counts as near-copies. An
# honest check generates DEFAULT_SAMPLES (1000), whatever the site's size.
DEFAULT_MIN_GENERATED = 100
DEFAULTS: dict[str, bool | float | int] = {
    "required": True,
    "max_membership_auroc": DEFAULT_MAX_MEMBERSHIP_AUROC,
    "min_members": DEFAULT_MIN_MEMBERS,
    "min_non_members": DEFAULT_MIN_NON_MEMBERS,
    "min_generated": DEFAULT_MIN_GENERATED,
}
EPSILON_RTOL = 1e-4
FIX_HINT = (
    "run `site-node privacy-check --attach` and retrain (e.g. with DP or fewer epochs) "
    "until it passes"
)

# policy key -> (what a person reads, plain report key, calibrated report key or None)
THRESHOLDS: dict[str, tuple[str, str, str | None]] = {
    "max_membership_auroc": ("membership AUROC", "membership_auroc", "membership_calibrated_auroc"),
    "max_membership_tpr_at_1pct_fpr": (
        "membership TPR at 1% FPR",
        "membership_tpr_at_1pct_fpr",
        "membership_calibrated_tpr_at_1pct_fpr",
    ),
    "max_near_copy_fraction": ("near-copy fraction", "near_copy_fraction", None),
}

# policy key of a minimum -> (report key it bounds, what a person reads)
MINIMA: dict[str, tuple[str, str]] = {
    "min_members": ("members", "members (training images)"),
    "min_non_members": ("non_members", "non-members (held-out images)"),
    "min_generated": ("generated", "generated samples"),
}
# threshold key -> the minima its figure depends on: every figure compares members with
# non-members; the near-copy fraction also counts generated samples
MEASURED_ON: dict[str, tuple[str, ...]] = {
    "max_membership_auroc": ("min_members", "min_non_members"),
    "max_membership_tpr_at_1pct_fpr": ("min_members", "min_non_members"),
    "max_near_copy_fraction": ("min_members", "min_non_members", "min_generated"),
}
MEASUREMENT_HINT = (
    "measure with `site-node privacy-check` at its defaults (no --threshold, the default "
    "--max-examples and --samples) on the site's own data; a site that holds fewer images "
    "of the module's classes cannot show that its module complies"
)


class PrivacyPolicyError(PolicyError):
    """A module's privacy report is missing or breaks the federation's privacy policy."""

    code = "E_PRIVACY_POLICY"


class PrivacyPolicySchemaError(FormatError):
    code = "E_PRIVACY_POLICY_SCHEMA"


#: Why ``required = false`` is refused (the message of ``E_PRIVACY_POLICY_SCHEMA``).
OPTIONAL_REPORT_REFUSED = (
    "privacy_policy.required = false is refused: a present privacy_policy requires every "
    "module to carry a privacy report, because a limit that binds only the modules that "
    "choose to send a report binds only the honest ones; leave `required` out (or true), "
    "or leave out the whole privacy_policy to set no privacy limit"
)


def _field_ok(value: Any, kind: str, low: float, high: float) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return is_int(value) and low <= value <= high
    return is_number(value) and low <= value <= high


def check_policy_fields(policy: Any) -> dict[str, Any]:
    """Schema of ``privacy_policy`` (known keys, types, ranges; ``required`` only true)."""
    if not isinstance(policy, dict):
        raise PrivacyPolicySchemaError("privacy_policy must be an object")
    unknown = sorted(k for k in policy if k not in POLICY_FIELDS)
    if unknown:
        raise PrivacyPolicySchemaError(
            f"privacy_policy has unknown keys {unknown[:5]}; known keys: {sorted(POLICY_FIELDS)}"
        )
    for key, value in policy.items():
        kind, low, high = POLICY_FIELDS[key]
        if not _field_ok(value, kind, low, high):
            wanted = {
                "bool": "true or false",
                "int": f"an integer in [{int(low)}, {int(high)}]",
                "float": f"a number in [{low:g}, {high:g}]",
            }[kind]
            raise PrivacyPolicySchemaError(f"privacy_policy.{key} must be {wanted}, got {value!r}")
    if policy.get("required") is False:
        raise PrivacyPolicySchemaError(
            OPTIONAL_REPORT_REFUSED, hint="remove `required = false` from [privacy_policy]"
        )
    return policy


def effective_policy(policy: dict[str, Any] | None) -> dict[str, Any] | None:
    """The policy in force: ``policy`` over :data:`DEFAULTS`; None when the federation sets none.

    ``required`` is true in every policy in force (see the module docstring): a ``false``
    that reached here without :func:`check_policy_fields` does not lift it.
    """
    if policy is None:
        return None
    return {**DEFAULTS, **policy, "required": True}


class LimitSource(StrEnum):
    """Who set the limit in force on a figure."""

    FEDERATION = "federation"  # the federation manifest's privacy_policy (or its default)
    SITE = "site"  # the site's own site.toml [privacy]


#: The site.toml table that holds a site's own limits (site_node.config), named in messages.
SITE_LIMITS_TABLE = "privacy"


@dataclass(frozen=True)
class SiteLimits:
    """A site's own limits on the figures it measures (site.toml ``[privacy]``).

    The field names are the keys of :data:`THRESHOLDS`; None sets no limit of the site's on
    that figure. A federation may tighten them, never loosen them (:func:`limits_in_force`).
    The membership AUROC defaults to :data:`DEFAULT_MAX_MEMBERSHIP_AUROC`, as in a present
    federation policy.
    """

    max_membership_auroc: float | None = DEFAULT_MAX_MEMBERSHIP_AUROC
    max_membership_tpr_at_1pct_fpr: float | None = None
    max_near_copy_fraction: float | None = None

    def get(self, key: str) -> float | None:
        """The site's limit on threshold ``key`` (a key of :data:`THRESHOLDS`), or None."""
        value: float | None = getattr(self, key)
        return value


@dataclass(frozen=True)
class Limit:
    """The limit in force on one figure, and who set it."""

    value: float
    source: LimitSource
    default: bool = False  # the federation policy's default, not written in its manifest


def limits_in_force(policy: dict[str, Any] | None, site: SiteLimits | None) -> dict[str, Limit]:
    """The limit on each figure: the stricter of the federation's and the site's (the one rule).

    ``policy`` is the federation manifest's ``privacy_policy`` (its defaults applied,
    :func:`effective_policy`; None sets no limit), ``site`` the site's own limits (None: the
    site sets none, as at the aggregator). A figure neither sets is absent. At equal values
    the federation's limit is named, as the aggregator would name it. The same rule as the
    site's DP ceiling (``site_node.config.DPLimits``): the federation may tighten a site's
    limit, never loosen it.
    """
    effective = effective_policy(policy) or {}
    raw = policy or {}
    limits: dict[str, Limit] = {}
    for key in THRESHOLDS:
        candidates = []
        if effective.get(key) is not None:
            candidates.append(Limit(effective[key], LimitSource.FEDERATION, key not in raw))
        own = None if site is None else site.get(key)
        if own is not None:
            candidates.append(Limit(own, LimitSource.SITE))
        if candidates:
            limits[key] = min(candidates, key=lambda limit: limit.value)  # first of equals
    return limits


def strongest(report: dict[str, Any] | None, plain: str, calibrated: str | None) -> float | None:
    """The larger of the plain and the calibrated attack's figure (what the policy compares)."""
    if not report:
        return None
    values = [report[k] for k in (plain, calibrated) if k is not None and k in report]
    return max(values) if values else None


@dataclass(frozen=True)
class ThresholdCheck:
    """One threshold of the effective policy against the module's report."""

    key: str
    what: str
    limit: float
    value: float | None  # None: the report does not state it (or there is no report)
    default: bool  # the limit is the policy default, not set by the federation
    source: LimitSource = LimitSource.FEDERATION  # who set the limit
    dp_claim: bool = False  # the module carries a DP claim
    claim_covers: bool = False  # ... and the federation bounds it (report.dp_covers)
    # why the stated figure does not count (measured on too few, or at a hand-set threshold)
    measurement: str | None = None

    @property
    def covered_by_dp(self) -> bool:
        """The report does not state the figure because the module's DP claim covers it."""
        return self.claim_covers and self.value is None

    @property
    def passes(self) -> bool:
        return self.covered_by_dp or (
            self.value is not None and self.measurement is None and self.value <= self.limit
        )


@dataclass(frozen=True)
class PolicyVerdict:
    """Every threshold and every problem of one module under one policy (no problems: passes)."""

    policy: dict[str, Any] | None  # the effective policy
    required: bool
    has_report: bool
    thresholds: tuple[ThresholdCheck, ...]
    problems: tuple[PrivacyPolicyError, ...]
    dp_claim: bool = False  # the module carries a DP claim
    claim_covers: bool = False  # ... and the federation bounds it (report.dp_covers)
    # the site's own figures, measured but not released, above a threshold (site_verdict only)
    warned: tuple[ThresholdCheck, ...] = ()

    @property
    def passes(self) -> bool:
        return not self.problems

    @property
    def warnings(self) -> tuple[str, ...]:
        """Each of :attr:`warned` for the site operator, with the figure: for the local report
        and the operator's screen only, never a log (:func:`ffsecure.privacy.report.releasable`
        keeps these figures out of the signed report)."""
        return tuple(
            f"{_threshold_problem(c).message}; measured here, not released: the DP claim covers it"
            for c in self.warned
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the effective policy, each threshold's figures and verdict, the problems."""
        return {
            "policy": self.policy,
            "required": self.required,
            "has_report": self.has_report,
            "dp_claim": self.dp_claim,
            "dp_covers": self.claim_covers,
            "passes": self.passes,
            "thresholds": [
                {
                    "key": c.key,
                    "what": c.what,
                    "limit": c.limit,
                    "value": c.value,
                    "passes": c.passes,
                    "covered_by_dp": c.covered_by_dp,
                    "default": c.default,
                    "source": str(c.source),
                    "measurement": c.measurement,
                }
                for c in self.thresholds
            ],
            "covered_by_dp": [c.key for c in self.thresholds if c.covered_by_dp],
            "problems": [p.message for p in self.problems],
            "warnings": list(self.warnings),
        }


def _malformed(report: dict[str, Any] | None) -> PrivacyPolicyError | None:
    """A report that breaks its schema (its figures mean nothing), or None."""
    if report is None:
        return None
    try:
        check_report(report)
    except FormatError as exc:
        return PrivacyPolicyError(exc.message, hint=exc.hint)
    return None


def _epsilon_problems(
    report: dict[str, Any] | None, dp: dict[str, Any] | None
) -> list[PrivacyPolicyError]:
    """The report's re-computed epsilon against the module's DP claim."""
    if not report:
        return []
    eps = report.get("dp_epsilon_recomputed")
    if eps is None:
        return []
    if not isinstance(dp, dict):
        return [
            PrivacyPolicyError(
                "the privacy report states a DP epsilon but the module has no DP claim",
                hint="attach the report produced for this module",
            )
        ]
    claimed = dp["epsilon"]  # ModuleManifest.validate requires it, a number
    if not math.isclose(eps, claimed, rel_tol=EPSILON_RTOL, abs_tol=1e-6):
        return [
            PrivacyPolicyError(
                f"the re-computed epsilon {eps:g} disagrees with the module's claimed epsilon "
                f"{claimed:g}",
                hint="the DP parameters in the manifest do not give the claimed epsilon; retrain",
            )
        ]
    stated, delta = report.get("dp_delta"), dp["delta"]  # validate requires a number
    # exact, or rounded to 6 decimals as reports signed before the delta was kept exact were
    if stated is not None and not (
        math.isclose(stated, delta, rel_tol=1e-9, abs_tol=0.0) or stated == round(delta, 6)
    ):
        return [
            PrivacyPolicyError(
                f"the privacy report states delta {stated:g} but the module's DP claim is at "
                f"delta {delta:g}",
                hint="attach the report produced for this module (site-node privacy-check)",
            )
        ]
    return []


def measurement_problem(
    key: str, report: dict[str, Any], raw: dict[str, Any] | None, effective: dict[str, Any]
) -> str | None:
    """Why the figure of threshold ``key`` in ``report`` does not count, or None (the one rule).

    The report must state every size of :data:`MEASURED_ON` at least at the effective
    policy's minimum; the near-copy fraction must also have been counted by the check's
    threshold rule (:func:`_near_copy_problem`).
    ``raw`` is the federation's policy as signed (to name a default as such), None where the
    federation sets none (a site's own limits: the policy defaults apply).
    """
    asks = "a figure needs" if raw is None else "the federation requires"
    for minimum in MEASURED_ON[key]:
        count_key, what = MINIMA[minimum]
        need, have = effective[minimum], report.get(count_key)
        if have is None:
            return (
                f"the report does not state how many {what} it was measured on ({count_key}); "
                f"{asks} at least {need} ({_named(minimum, raw)})"
            )
        if have < need:
            return (
                f"it was measured on {have} {what}, fewer than {_whose(raw)} minimum "
                f"{need} ({_named(minimum, raw)})"
            )
    if key != "max_near_copy_fraction":
        return None
    return _near_copy_problem(report, raw, effective)


def _whose(raw: dict[str, Any] | None) -> str:
    """Whose minimum a size falls short of: the federation's, or the defaults' (``raw`` None)."""
    return "the" if raw is None else "the federation's"


def _named(minimum: str, raw: dict[str, Any] | None) -> str:
    """A minimum's key for a message, marked as the policy default where ``raw`` sets none."""
    return minimum if raw is not None and minimum in raw else f"{minimum}, the policy default"


def _near_copy_problem(
    report: dict[str, Any], raw: dict[str, Any] | None, effective: dict[str, Any]
) -> str | None:
    """Why a near-copy fraction was not counted by the check's rule, or None.

    Its threshold must be the quantile rule's (``near_copy_quantile`` stated and at least
    :data:`~ffsecure.privacy.report.NEAR_COPY_QUANTILE`: a hand-set threshold,
    ``privacy-check --threshold``, states none), at least the floor
    :data:`~ffsecure.privacy.report.NEAR_COPY_FLOOR` (0 counts no sample at all, and a
    threshold below the floor only exact replays), and a quantile of at least
    ``min_non_members`` held-out images beyond the floor (``near_copy_holdout``): held-out
    images that duplicate training images do not set it, and if few others are left the
    quantile means nothing. A report from before ``near_copy_holdout`` existed states no such
    count: its figure counts when the rules above hold (the floor catches the shrunken
    threshold that duplicates make), so the modules registered then are not all refused
    after an upgrade; a site that omits the key now gains nothing it could not get by
    stating any figure, since the figures are its own word. ``near_copy_searched``, where
    stated, is at least ``members``: the search covers the attack's members and more.
    """
    threshold, quantile = report.get("near_copy_threshold"), report.get("near_copy_quantile")
    if threshold is None:
        return "the report does not state the near-copy threshold (near_copy_threshold)"
    if threshold < NEAR_COPY_FLOOR:
        return (
            f"it was counted at near-copy threshold {threshold:g}, below the floor "
            f"{NEAR_COPY_FLOOR:g}: a generated sample that close to a training image is a "
            "copy whatever the held-out images say (a held-out split that duplicates training "
            "images shrinks the threshold until no copy counts)"
        )
    if quantile is None:
        return (
            "the report does not state the rule its near-copy threshold came from "
            "(near_copy_quantile): a threshold set by hand (--threshold) can be chosen to "
            "count no copy"
        )
    if quantile < NEAR_COPY_QUANTILE:
        return (
            f"its near-copy threshold is the {quantile:g} quantile of held-out images' "
            f"distances, below the check's rule ({NEAR_COPY_QUANTILE:g}): a lower threshold "
            "counts fewer copies"
        )
    searched, members = report.get("near_copy_searched"), report.get("members")
    if searched is not None and members is not None and searched < members:
        return (
            f"its nearest-image search covered {searched} training images, fewer than the "
            f"{members} members the check sampled: a copy of the others is not counted"
        )
    unseen, need = report.get("near_copy_holdout"), effective["min_non_members"]
    if unseen is None:
        return None  # a report from before the count existed: see the docstring
    if unseen < need:
        return (
            f"only {unseen} of its {report.get('non_members')} held-out images lie at least "
            f"{NEAR_COPY_FLOOR:g} from every training image (the others duplicate one), fewer "
            f"than {_whose(raw)} minimum {need} "
            f"({_named('min_non_members', raw)}) for the near-copy threshold to be their quantile"
        )
    return None


def _site_minima(minima: dict[str, Any]) -> dict[str, Any]:
    """The measurement minima a site's own limit is judged at: the federation's where they are
    stricter, never below the defaults (a manifest may tighten a site's limit, not loosen it:
    ``min_members = 1`` must not let a figure measured on 3 images pass the site's 0.55)."""
    return {
        **minima,
        **{k: max(minima.get(k, DEFAULTS[k]), DEFAULTS[k]) for k in MINIMA},
    }


def _threshold_checks(
    report: dict[str, Any] | None,
    limits: dict[str, Limit],
    raw: dict[str, Any] | None,
    minima: dict[str, Any],
    *,
    claim: bool = False,
    covers: bool = False,
) -> tuple[ThresholdCheck, ...]:
    """Each limit of ``limits`` against ``report``. ``raw`` (the federation's policy as signed;
    None: it sets none) and ``minima`` (the effective policy, or the defaults) judge how a
    figure was measured (:func:`measurement_problem`); ``claim`` and
    ``covers``: the module has a DP claim, and it stands in for a figure the report lacks."""
    checks = []
    site_minima = _site_minima(minima)
    for key, limit in limits.items():
        what, plain, calibrated = THRESHOLDS[key]
        value = strongest(report, plain, calibrated)
        own = limit.source == LimitSource.SITE
        checks.append(
            ThresholdCheck(
                key=key,
                what=what,
                limit=limit.value,
                default=limit.default,
                source=limit.source,
                value=value,
                dp_claim=claim,
                claim_covers=covers,
                measurement=(
                    None
                    if value is None or report is None
                    else measurement_problem(
                        key, report, None if own else raw, site_minima if own else minima
                    )
                ),
            )
        )
    return tuple(checks)


#: A DP module's report lacks a figure but the federation bounds no DP claim.
UNCOVERED_HINT = (
    "a DP module never signs figures measured on its training images; the federation "
    "operator bounds every DP claim (dp_policy.max_epsilon and delta, a new signed "
    "manifest), or the site trains without DP so that its report states the figures"
)


#: A figure over this site's own limit: the site.toml key that set it may be raised, knowingly.
SITE_FIX_HINT = (
    f"{FIX_HINT}; the limit is this site's own (site.toml [{SITE_LIMITS_TABLE}]): raise it "
    "only knowingly, and never above what the federation allows"
)


def _limit_words(check: ThresholdCheck) -> tuple[str, str, str]:
    """Who set ``check``'s limit, whose it is, and the key that sets it, for a message."""
    if check.source is LimitSource.SITE:
        return "this site", "this site's", f"site.toml {SITE_LIMITS_TABLE}.{check.key}"
    return "the federation", "the federation's", check.key


def _threshold_problem(check: ThresholdCheck) -> PrivacyPolicyError:
    setter, whose, name = _limit_words(check)
    fix = SITE_FIX_HINT if check.source is LimitSource.SITE else FIX_HINT
    if check.value is None and check.dp_claim and not check.claim_covers:
        return PrivacyPolicyError(
            f"{setter} limits the {check.what} ({name} = {check.limit:g}) but the "
            "module's privacy report does not state it, and the federation bounds no DP "
            "claim (its dp_policy sets no max_epsilon and delta), so the module's DP claim "
            "cannot stand in for the figure",
            hint=UNCOVERED_HINT,
        )
    if check.value is None:
        return PrivacyPolicyError(
            f"{setter} limits the {check.what} ({name} = "
            f"{check.limit:g}) but the module's privacy report does not "
            "state it",
            hint=fix,
        )
    source = ", the policy default" if check.default else ""
    if check.measurement is not None:
        return PrivacyPolicyError(
            f"the {check.what} {check.value:g} does not count against {whose} limit "
            f"({name} = {check.limit:g}{source}): {check.measurement}",
            hint=MEASUREMENT_HINT,
        )
    return PrivacyPolicyError(
        f"{check.what} {check.value:g} is above {whose} limit {check.limit:g} ({name}{source})",
        hint=fix,
    )


def evaluate(
    report: dict[str, Any] | None,
    dp: dict[str, Any] | None,
    policy: dict[str, Any] | None,
    *,
    dp_policy: dict[str, Any] | None = None,
) -> PolicyVerdict:
    """Each threshold's PASS/FAIL and every problem of a module under the federation's policy.

    ``report`` and ``dp`` are the module manifest's fields, ``policy`` and ``dp_policy``
    the federation manifest's ``privacy_policy`` (defaults applied here) and ``dp_policy``
    (whether the DP claim may cover a figure, :func:`~ffsecure.privacy.report.dp_covers`).
    Pure.
    """
    return _evaluate(report, dp, policy, limits_in_force(policy, None), dp_policy)


def _evaluate(
    report: dict[str, Any] | None,
    dp: dict[str, Any] | None,
    policy: dict[str, Any] | None,
    limits: dict[str, Limit],
    dp_policy: dict[str, Any] | None,
) -> PolicyVerdict:
    """:func:`evaluate` at ``limits`` (:func:`limits_in_force`, the site's own included)."""
    effective = effective_policy(policy)
    required = effective is not None  # a present policy always requires a report
    claim, covers = has_dp_claim(dp), dp_covers(dp, dp_policy)
    malformed = _malformed(report)
    if malformed is not None:
        return PolicyVerdict(effective, required, True, (), (malformed,), claim, covers)
    problems = _epsilon_problems(report, dp)
    if not limits:  # neither the federation nor the site limits a figure
        return PolicyVerdict(None, False, report is not None, (), tuple(problems), claim, covers)
    if report is None:
        problems.append(
            PrivacyPolicyError(
                "the federation requires a privacy report; the module has none", hint=FIX_HINT
            )
        )
        return PolicyVerdict(effective, required, False, (), tuple(problems), claim, covers)
    minima = effective or DEFAULTS
    checks = _threshold_checks(report, limits, policy, minima, claim=claim, covers=covers)
    problems += [_threshold_problem(c) for c in checks if not c.passes]
    return PolicyVerdict(effective, required, True, checks, tuple(problems), claim, covers)


def site_verdict(
    measured: dict[str, Any],
    dp: dict[str, Any] | None,
    policy: dict[str, Any] | None,
    *,
    dp_policy: dict[str, Any] | None = None,
    max_epsilon: float = SITE_MAX_EPSILON,
    site: SiteLimits | None = None,
) -> PolicyVerdict:
    """The site's verdict on its own measurement, before it signs: what the aggregator will find,
    and the site's own limits.

    ``measured`` holds every figure the site measured
    (:func:`ffsecure.privacy.report.measured_report`); ``site`` is the site's own limits
    (site.toml ``[privacy]``; None: only the federation's). Each figure is judged at the
    stricter of the federation's and the site's limit (:func:`limits_in_force`), and a
    failure names whose limit it broke. A module without a DP claim signs what it measured
    and is judged on it. A module with one is judged on the part it will sign
    (:func:`~ffsecure.privacy.report.releasable`), exactly as at registration; each limit
    the withheld figures exceed becomes a warning in ``warnings`` (for the site operator, in
    the local report), never a problem, where the claim covers them: the federation bounds
    every claim (:func:`~ffsecure.privacy.report.dp_covers`), or it sets no privacy policy
    and only the site's own limits apply. Where the federation sets a policy but bounds no
    claim, nothing covers the figures: the module fails, as the aggregator would refuse it.

    That exemption holds only for a claim at most ``max_epsilon``, the site's own ceiling
    (site.toml ``dp.max_epsilon``; default :data:`ffsecure.dp.SITE_MAX_EPSILON`): the
    federation's ``max_epsilon`` is the operator's choice, and a claim of epsilon 100 it allows
    protects nobody. Above the ceiling the measured figures are judged as without DP, and a
    threshold they exceed is a problem: the site does not release the module (nothing about
    the figures leaves it; they stay unsigned).
    """
    limits = limits_in_force(policy, site)
    signed = releasable(measured, dp)
    if not has_dp_claim(dp):  # it signs what it measured
        return _evaluate(signed, dp, policy, limits, dp_policy)
    verdict = evaluate(signed, dp, policy, dp_policy=dp_policy)  # what the aggregator finds
    if not limits or (policy is not None and not dp_covers(dp, dp_policy)):
        return verdict
    raw, minima = policy, effective_policy(policy) or DEFAULTS
    local = _threshold_checks(measured, limits, raw, minima)  # every figure, as without DP
    assert dp is not None  # has_dp_claim
    epsilon = dp["epsilon"]  # ModuleManifest.validate requires it, a number
    if epsilon > max_epsilon:
        above = tuple(_above_ceiling(c, epsilon, max_epsilon) for c in local if not c.passes)
        return replace(verdict, thresholds=local, problems=verdict.problems + above)
    covered = _threshold_checks(signed, limits, raw, minima, claim=True, covers=True)
    warned = tuple(c for c in local if c.value is not None and not c.passes)
    return replace(verdict, thresholds=covered, warned=warned)


def _above_ceiling(check: ThresholdCheck, epsilon: float, ceiling: float) -> PrivacyPolicyError:
    """A measured figure over its limit, for a DP claim above the site's own ceiling.

    The message names the figure and the limit, never the value nor the sizes it was measured
    on: a refusal is logged and kept in the module's record, and these figures stay out of the
    signed report; the local report holds them.
    """
    _setter, whose, name = _limit_words(check)
    source = ", the policy default" if check.default else ""
    fails = "does not count against" if check.measurement is not None else "is above"
    return PrivacyPolicyError(
        f"the {check.what} measured here {fails} {whose} limit {check.limit:g} "
        f"({name}{source}), and the module's DP claim (epsilon {epsilon:g}) is above this "
        f"site's ceiling {ceiling:g} (dp.max_epsilon), so it does not cover the figure; the "
        "figures are in the local privacy report",
        hint="train at an epsilon within dp.max_epsilon (site.toml dp.target_epsilon), or "
        f"until the measured figures pass; {_threshold_problem(check).hint}",
    )


def check_module(
    report: dict[str, Any] | None,
    dp: dict[str, Any] | None,
    policy: dict[str, Any] | None,
    *,
    dp_policy: dict[str, Any] | None = None,
) -> None:
    """Refuse (``E_PRIVACY_POLICY``) a module whose report breaks ``policy``: its first problem.

    ``report`` and ``dp`` are the module manifest's fields, ``policy`` and ``dp_policy``
    the federation manifest's ``privacy_policy`` and ``dp_policy`` (see :func:`evaluate`).
    Pure: reads nothing, writes nothing.
    """
    verdict = evaluate(report, dp, policy, dp_policy=dp_policy)
    if verdict.problems:
        raise verdict.problems[0]
