"""The privacy_report schema, the federation privacy policy and the registration check (pure
functions)."""

from __future__ import annotations

import pytest

from ffsecure.errors import FFSecureError
from ffsecure.privacy.policy import PrivacyPolicyError, check_module, check_policy_fields
from ffsecure.privacy.report import REPORT_FIELDS, check_report, manifest_report

GOOD = {
    "v": 1,
    "members": 200,
    "non_members": 200,
    "generated": 1000,
    "membership_auroc": 0.55,
    "membership_tpr_at_1pct_fpr": 0.02,
    "memorization_ratio": 1.1,
    "near_copy_fraction": 0.004,
    "near_copy_threshold": 0.12,
    "near_copy_quantile": 0.01,
    "near_copy_holdout": 200,
}
DP = {"epsilon": 7.9, "delta": 1e-5}
#: the federation manifest's dp_policy: required (its max_epsilon bounds every claim), not
#: required but bounding every claim all the same, or bounding none
REQUIRED = {"required": True, "max_epsilon": 8.0, "delta": 1e-5}
BOUNDED = {"required": False, "max_epsilon": 8.0, "delta": 1e-5}
NOT_REQUIRED = {"required": False, "max_epsilon": None, "delta": None}


def code(info) -> str:
    return info.value.code


def without(report: dict, *keys: str) -> dict:
    return {k: v for k, v in report.items() if k not in keys}


def test_a_complete_report_and_every_known_key_pass():
    assert check_report(GOOD) is GOOD
    full = {
        k: (lo if kind == "int" else (lo + hi) / 2 if hi < 10 else 1.0)
        for k, (kind, lo, hi) in REPORT_FIELDS.items()
    }
    full["v"] = 1
    check_report(full)


@pytest.mark.parametrize(
    "bad",
    [
        [1],
        {"membership_auroc": 1.5},
        {"membership_auroc": -0.1},
        {"membership_auroc": True},
        {"membership_auroc": "0.5"},
        {"members": 2.5},
        {"v": 2},
        {"surprise": 1},
        {"near_copy_fraction": float("nan")},
        {"membership_auroc": None},
    ],
)
def test_bad_reports_are_refused(bad):
    with pytest.raises(FFSecureError) as info:
        check_report(bad)
    assert code(info) == "E_PRIVACY_REPORT"


def test_manifest_report_keeps_numbers_only():
    full = {
        "membership": {
            "members": 10,
            "non_members": 12,
            "auroc": 0.61234567,
            "tpr_at_1pct_fpr": 0.1,
            "calibrated": {"auroc": 0.7, "tpr_at_1pct_fpr": 0.2},
            "mean_loss_members": 0.3,
        },
        "memorization": {
            "generated": 50,
            "ratio": 0.9,
            "near_copy_fraction": 0.02,
            "near_copy_threshold": 0.1,
            "near_copy_quantile": 0.01,
            "median_distance_generated": 0.2,
        },
        "accounting": {"dp": False},
    }
    rep = manifest_report(full, None)
    assert rep == {
        "v": 1,
        "members": 10,
        "non_members": 12,
        "membership_auroc": 0.612346,
        "membership_tpr_at_1pct_fpr": 0.1,
        "membership_calibrated_auroc": 0.7,
        "membership_calibrated_tpr_at_1pct_fpr": 0.2,
        "generated": 50,
        "memorization_ratio": 0.9,
        "near_copy_fraction": 0.02,
        "near_copy_threshold": 0.1,
        "near_copy_quantile": 0.01,
    }
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rep.values())


def test_under_a_dp_claim_the_manifest_report_keeps_only_data_independent_figures():
    """Counts, membership and memorization figures are measured without noise: a module with
    a DP claim never signs them, whatever the federation's DP policy."""
    from ffsecure.privacy.report import DATA_DEPENDENT, measured_report, releasable, withheld

    full = {
        "membership": {"members": 10, "non_members": 12, "auroc": 0.61, "tpr_at_1pct_fpr": 0.1},
        "memorization": {
            "generated": 50,
            "ratio": 0.9,
            "near_copy_fraction": 0.02,
            "near_copy_threshold": 0.1,
            "near_copy_quantile": 0.01,
        },
        "accounting": {"dp": True, "epsilon_recomputed": 7.9, "delta": 1e-5},
    }
    covered = {
        "v": 1,
        "generated": 50,
        "near_copy_quantile": 0.01,  # the site's rule, not a figure of its data
        "dp_epsilon_recomputed": 7.9,
        "dp_delta": 1e-5,
    }
    assert manifest_report(full, DP) == covered
    measured = measured_report(full)
    assert releasable(measured, DP) == covered
    assert withheld(measured, DP) == sorted(set(measured) & DATA_DEPENDENT)
    assert withheld(measured, None) == []
    assert releasable(measured, None) == measured
    assert set(REPORT_FIELDS) - DATA_DEPENDENT == {
        "v",
        "generated",
        "near_copy_quantile",
        "dp_epsilon_recomputed",
        "dp_delta",
    }


@pytest.mark.parametrize(
    "policy",
    [
        {},
        {"required": True},
        {"max_membership_auroc": 0.6, "max_near_copy_fraction": 0.01},
        {"max_membership_tpr_at_1pct_fpr": 0.05, "min_members": 1, "min_generated": 1000},
    ],
)
def test_good_policies(policy):
    assert check_policy_fields(policy) is policy


@pytest.mark.parametrize(
    "policy",
    [
        [],
        {"required": 1},
        {"max_membership_auroc": 1.2},
        {"max_membership_auroc": "0.6"},
        {"max_near_copy_fraction": -0.1},
        {"max_auroc": 0.6},
        {"max_membership_auroc": True},
        {"required": False},
        {"required": False, "max_membership_tpr_at_1pct_fpr": 0.05},
        {"min_members": 0},
        {"min_non_members": 20.0},
        {"min_generated": True},
        {"min_members": 1 << 41},
    ],
)
def test_bad_policies_are_refused(policy):
    with pytest.raises(FFSecureError) as info:
        check_policy_fields(policy)
    assert code(info) == "E_PRIVACY_POLICY_SCHEMA"


def test_no_policy_accepts_anything_well_formed():
    check_module(None, None, None)
    check_module(GOOD, None, None)
    check_module(GOOD, None, {})


def test_every_present_policy_requires_a_report():
    """A limit binds every module: a module without a report is refused under any present
    policy, even one that (unchecked) says required = false; no policy asks for nothing."""
    for policy in ({"required": True}, {}, {"max_membership_auroc": 0.55}, {"required": False}):
        with pytest.raises(PrivacyPolicyError) as info:
            check_module(None, None, policy)
        assert (
            code(info) == "E_PRIVACY_POLICY" and "requires a privacy report" in info.value.message
        )
    check_module(None, None, None)


@pytest.mark.parametrize(
    "policy, report, needle",
    [
        ({"max_membership_auroc": 0.54}, GOOD, "membership AUROC 0.55"),
        (
            {"max_membership_auroc": 0.6},
            {**GOOD, "membership_calibrated_auroc": 0.75},
            "membership AUROC 0.75",
        ),
        ({"max_membership_tpr_at_1pct_fpr": 0.01}, GOOD, "TPR at 1% FPR 0.02"),
        ({"max_near_copy_fraction": 0.001}, GOOD, "near-copy fraction 0.004"),
        (
            {"max_near_copy_fraction": 0.01},
            without(GOOD, "near_copy_fraction"),
            "does not state it",
        ),
    ],
)
def test_reports_breaking_the_policy_are_refused(policy, report, needle):
    with pytest.raises(PrivacyPolicyError) as info:
        check_module(report, None, policy)
    assert code(info) == "E_PRIVACY_POLICY"
    assert needle in info.value.message
    assert info.value.hint


def test_limits_are_inclusive():
    check_module(
        GOOD,
        None,
        {
            "required": True,
            "max_membership_auroc": 0.55,
            "max_near_copy_fraction": 0.004,
            "max_membership_tpr_at_1pct_fpr": 0.02,
        },
    )


def test_report_epsilon_must_agree_with_the_dp_claim():
    check_module({**GOOD, "dp_epsilon_recomputed": 7.9, "dp_delta": 1e-5}, DP, None)
    with pytest.raises(PrivacyPolicyError) as info:
        check_module({**GOOD, "dp_epsilon_recomputed": 3.0}, DP, None)
    assert "disagrees" in info.value.message
    with pytest.raises(PrivacyPolicyError):
        check_module({**GOOD, "dp_epsilon_recomputed": 3.0}, None, None)


def test_malformed_report_is_a_policy_refusal_at_registration():
    with pytest.raises(PrivacyPolicyError):
        check_module({"membership_auroc": 3}, None, None)


def test_manifests_schema_check_the_privacy_fields():
    from tests.unit.test_federation import make_manifest

    assert make_manifest(
        privacy_policy={"required": True, "max_membership_auroc": 0.6}
    ).privacy_policy
    with pytest.raises(FFSecureError) as info:
        make_manifest(privacy_policy={"max_membership_auroc": 7})
    assert code(info) == "E_MANIFEST_SCHEMA"
    from ffsecure.package import build_manifest

    fed = make_manifest()
    ok = build_manifest(
        federation=fed, site_id="st-mary", weights=b"w", classes=[0], seed=0, privacy_report=GOOD
    )
    assert ok.privacy_report == GOOD
    for bad in ({"membership_auroc": 7}, {"membership_auroc": 0.5, "note": "x"}):
        with pytest.raises(FFSecureError) as info:
            build_manifest(
                federation=fed,
                site_id="st-mary",
                weights=b"w",
                classes=[0],
                seed=0,
                privacy_report=bad,
            )
        assert code(info) == "E_MANIFEST_SCHEMA"


def test_a_present_policy_limits_the_membership_auroc_to_055_by_default():
    """The digits cvae's AUROC at epsilon 8 (0.575, benchmarks/RESULTS.md) is refused by default."""
    from ffsecure.privacy.policy import DEFAULT_MAX_MEMBERSHIP_AUROC, effective_policy

    assert DEFAULT_MAX_MEMBERSHIP_AUROC == 0.55
    leaky = {**GOOD, "membership_auroc": 0.575}
    for policy in ({}, {"required": True}, {"max_near_copy_fraction": 0.5}):
        with pytest.raises(PrivacyPolicyError) as info:
            check_module(leaky, None, policy)
        assert "membership AUROC 0.575 is above the federation's limit 0.55" in info.value.message
        assert "the policy default" in info.value.message
    calibrated = {**GOOD, "membership_auroc": 0.5, "membership_calibrated_auroc": 0.56}
    with pytest.raises(PrivacyPolicyError):
        check_module(calibrated, None, {"required": True})  # the stronger attack counts
    check_module(GOOD, None, {"required": True})  # 0.55 itself passes: limits are inclusive
    check_module(leaky, None, {"required": True, "max_membership_auroc": 0.6})  # its own limit
    check_module(leaky, None, {"max_membership_auroc": 1.0})  # 1.0 lifts the limit
    check_module(leaky, None, None)  # no policy: nothing is limited
    assert effective_policy(None) is None
    sizes = {"min_members": 20, "min_non_members": 20, "min_generated": 100}
    assert effective_policy({}) == {"required": True, "max_membership_auroc": 0.55, **sizes}
    assert effective_policy({"required": True, "max_membership_auroc": 0.7}) == {
        "required": True,
        "max_membership_auroc": 0.7,
        **sizes,
    }


def test_evaluate_gives_every_threshold_and_every_problem():
    from ffsecure.privacy.policy import evaluate

    policy = {
        "required": True,
        "max_near_copy_fraction": 0.001,
        "max_membership_tpr_at_1pct_fpr": 0.05,
    }
    verdict = evaluate({**GOOD, "membership_auroc": 0.6}, None, policy)
    assert not verdict.passes and verdict.required and verdict.has_report
    rows = {c.key: (c.limit, c.value, c.passes, c.default) for c in verdict.thresholds}
    assert rows == {
        "max_membership_auroc": (0.55, 0.6, False, True),
        "max_membership_tpr_at_1pct_fpr": (0.05, 0.02, True, False),
        "max_near_copy_fraction": (0.001, 0.004, False, False),
    }
    assert [p.code for p in verdict.problems] == ["E_PRIVACY_POLICY"] * 2
    assert "membership AUROC 0.6" in verdict.problems[0].message  # check_module raises this one
    assert "near-copy fraction 0.004" in verdict.problems[1].message
    missing = evaluate(None, None, {"required": True})
    assert not missing.passes and missing.thresholds == () and not missing.has_report
    assert evaluate(GOOD, None, None).passes and evaluate(GOOD, None, None).policy is None


DP_SIGNED = {"v": 1, "generated": 1000, "dp_epsilon_recomputed": 7.9, "dp_delta": 1e-5}
STRICT = {
    "required": True,
    "max_membership_auroc": 0.5,
    "max_membership_tpr_at_1pct_fpr": 0.01,
    "max_near_copy_fraction": 0.001,
}


def test_a_dp_claim_covers_thresholds_on_figures_its_report_does_not_state():
    from ffsecure.privacy.policy import evaluate

    verdict = evaluate(DP_SIGNED, DP, STRICT, dp_policy=REQUIRED)
    assert verdict.passes and verdict.dp_claim and verdict.problems == ()
    assert all(c.covered_by_dp and c.passes and c.value is None for c in verdict.thresholds)
    shown = verdict.to_dict()
    assert shown["dp_claim"] is True and shown["dp_covers"] is True and shown["passes"] is True
    assert shown["covered_by_dp"] == [
        "max_membership_auroc",
        "max_membership_tpr_at_1pct_fpr",
        "max_near_copy_fraction",
    ]
    assert all(row["covered_by_dp"] for row in shown["thresholds"])
    check_module(DP_SIGNED, DP, STRICT, dp_policy=REQUIRED)
    # the claim must still agree with the epsilon the report re-computed
    with pytest.raises(PrivacyPolicyError, match="disagrees"):
        check_module({**DP_SIGNED, "dp_epsilon_recomputed": 3.0}, DP, STRICT, dp_policy=REQUIRED)
    # a required report is still required
    with pytest.raises(PrivacyPolicyError, match="requires a privacy report"):
        check_module(None, DP, STRICT, dp_policy=REQUIRED)


def test_a_dp_claim_covers_only_where_the_federation_bounds_every_claim():
    from ffsecure.privacy.report import dp_covers

    assert dp_covers(DP, REQUIRED) and dp_covers(DP, BOUNDED)
    epsilon_only = {"required": False, "max_epsilon": 8.0, "delta": None}
    for dp_policy in (NOT_REQUIRED, epsilon_only, None, {}, {"required": True}, []):
        assert not dp_covers(DP, dp_policy), dp_policy
    for dp in (None, 7.9, "dp"):
        assert not dp_covers(dp, REQUIRED), dp


HUGE = {"epsilon": 1e4, "delta": 1e-5}  # an honest claim that protects nobody
HUGE_SIGNED = {"v": 1, "generated": 1000, "dp_epsilon_recomputed": 1e4, "dp_delta": 1e-5}


@pytest.mark.parametrize(
    "dp_policy", [NOT_REQUIRED, {"required": False, "max_epsilon": 1e4, "delta": None}, None]
)
def test_a_dp_claim_the_federation_does_not_bound_covers_no_threshold(dp_policy):
    """Epsilon 10^4 without figures would pass every empirical limit if the claim covered."""
    from ffsecure.privacy.policy import evaluate

    verdict = evaluate(HUGE_SIGNED, HUGE, STRICT, dp_policy=dp_policy)
    assert not verdict.passes and verdict.dp_claim and not verdict.claim_covers
    assert [c.covered_by_dp or c.passes for c in verdict.thresholds] == [False] * 3
    shown = verdict.to_dict()
    assert shown["covered_by_dp"] == [] and shown["dp_covers"] is False
    assert len(verdict.problems) == 3
    with pytest.raises(PrivacyPolicyError) as info:
        check_module(HUGE_SIGNED, HUGE, STRICT, dp_policy=dp_policy)
    assert code(info) == "E_PRIVACY_POLICY"
    assert "membership AUROC" in info.value.message and "does not state it" in info.value.message
    assert "the federation bounds no DP claim" in info.value.message
    assert "cannot stand in for the figure" in info.value.message
    assert "never signs" in info.value.hint and "dp_policy.max_epsilon and delta" in info.value.hint
    # the same module under a federation that bounds DP claims: covered (the aggregator's
    # federation policy check, not this policy, refuses an epsilon above max_epsilon)
    assert evaluate(HUGE_SIGNED, HUGE, STRICT, dp_policy=REQUIRED).passes
    assert evaluate(HUGE_SIGNED, HUGE, STRICT, dp_policy=BOUNDED).passes
    # the default dp_policy covers nothing
    assert not evaluate(HUGE_SIGNED, HUGE, STRICT).passes


def test_without_a_dp_claim_a_report_lacking_a_figure_is_still_refused():
    from ffsecure.privacy.policy import evaluate

    verdict = evaluate({"v": 1, "generated": 1000}, None, STRICT)
    assert not verdict.passes and verdict.to_dict()["covered_by_dp"] == []
    assert len(verdict.problems) == 3
    assert all("does not state it" in p.message for p in verdict.problems)


def test_a_dp_module_that_signed_its_figures_is_judged_on_them():
    """Packages signed before the rule: the figures they state are held to the thresholds."""
    from ffsecure.privacy.policy import evaluate

    old = {**GOOD, "dp_epsilon_recomputed": 7.9, "dp_delta": 1e-5}
    verdict = evaluate(old, DP, STRICT, dp_policy=REQUIRED)
    assert not verdict.passes
    assert [c.covered_by_dp for c in verdict.thresholds] == [False] * 3
    with pytest.raises(PrivacyPolicyError, match="membership AUROC 0.55"):
        check_module(old, DP, STRICT, dp_policy=REQUIRED)
    # partly stated: the stated figure is judged, the missing ones are covered
    partial = {
        **DP_SIGNED,
        **{k: GOOD[k] for k in ("members", "non_members", "near_copy_threshold")},
        "near_copy_holdout": GOOD["near_copy_holdout"],
        "near_copy_fraction": 0.0,
        "near_copy_quantile": 0.01,
    }
    checks = evaluate(partial, DP, STRICT, dp_policy=REQUIRED).thresholds
    rows = {c.key: (c.passes, c.covered_by_dp) for c in checks}
    assert rows["max_near_copy_fraction"] == (True, False)
    assert rows["max_membership_auroc"] == (True, True)


def test_the_site_verdict_warns_on_withheld_figures_but_never_refuses_a_dp_module():
    from ffsecure.privacy.policy import site_verdict

    measured = {**GOOD, "dp_epsilon_recomputed": 7.9, "dp_delta": 1e-5}
    verdict = site_verdict(measured, DP, STRICT, dp_policy=REQUIRED)
    assert verdict.passes and verdict.problems == ()
    assert len(verdict.warnings) == 3
    assert "membership AUROC 0.55 is above the federation's limit 0.5" in verdict.warnings[0]
    assert all("the DP claim covers it" in w for w in verdict.warnings)
    assert verdict.to_dict()["warnings"] == list(verdict.warnings)
    # the same figures without a DP claim are signed and refuse the module, without warnings
    plain = site_verdict(GOOD, None, STRICT, dp_policy=REQUIRED)
    assert not plain.passes and plain.warnings == () and len(plain.problems) == 3
    # under the policy's limits: no warning
    lax = {"required": True, "max_membership_auroc": 1.0}
    assert site_verdict(measured, DP, lax, dp_policy=REQUIRED).warnings == ()


def test_a_dp_claim_above_the_site_s_ceiling_covers_no_measured_limit():
    """Red team: an operator's ``max_epsilon = 100`` let a flow module "DP, epsilon 100" with
    membership AUROC 0.871 (limit 0.55) pass with a warning. Above the site's own ceiling
    (dp.max_epsilon, 8 by default) the measured figures are judged as without DP: a refusal."""
    from ffsecure.privacy.policy import site_verdict

    hostile = {"required": True, "max_epsilon": 100.0, "delta": 1e-5}
    claim = {"epsilon": 100.0, "delta": 1e-5}
    measured = {**GOOD, "membership_auroc": 0.871, "dp_epsilon_recomputed": 100.0}
    verdict = site_verdict(measured, claim, {}, dp_policy=hostile)
    assert not verdict.passes and verdict.warnings == ()
    (problem,) = verdict.problems
    assert "membership AUROC measured here is above the federation's limit 0.55" in (
        problem.message
    )
    assert "0.871" not in problem.message  # a refusal is logged: it names no withheld figure
    assert "epsilon 100" in problem.message and "ceiling 8 (dp.max_epsilon)" in problem.message
    assert "dp.target_epsilon" in (problem.hint or "")
    assert verdict.to_dict()["covered_by_dp"] == []
    # within the ceiling the claim still covers the figure (a warning); a site that raised its
    # ceiling passes its own in
    for epsilon, ceiling in ((8.0, 8.0), (100.0, 100.0)):
        within = site_verdict(
            {**measured, "dp_epsilon_recomputed": epsilon},
            {**claim, "epsilon": epsilon},
            {},
            dp_policy=hostile,
            max_epsilon=ceiling,
        )
        assert within.passes and len(within.warnings) == 1
    # figures within the limits pass whatever the epsilon
    good = {**GOOD, "dp_epsilon_recomputed": 100.0}
    assert site_verdict(good, claim, {}, dp_policy=hostile).passes


def test_a_dp_site_signs_no_figure_where_dp_is_not_required():
    """A site that trains under DP by its own choice withholds its figures as under required
    DP: the claim covers them where the federation bounds it, and nothing covers them (the
    site refuses the module, as the aggregator would) where it bounds none."""
    from ffsecure.privacy.policy import site_verdict

    measured = {**GOOD, "dp_epsilon_recomputed": 7.9, "dp_delta": 1e-5}
    bounded = site_verdict(measured, DP, STRICT, dp_policy=BOUNDED)
    assert bounded.passes and bounded.claim_covers and len(bounded.warnings) == 3
    assert [c.value for c in bounded.thresholds] == [None] * 3
    unbounded = site_verdict(measured, DP, STRICT, dp_policy=NOT_REQUIRED)
    assert not unbounded.passes and not unbounded.claim_covers and unbounded.warnings == ()
    assert [c.value for c in unbounded.thresholds] == [None] * 3
    assert all("bounds no DP claim" in p.message for p in unbounded.problems)
    lax = {"required": True, "max_membership_auroc": 1.0}
    assert not site_verdict(measured, DP, lax, dp_policy=NOT_REQUIRED).passes


def test_a_figure_measured_on_too_few_examples_does_not_count():
    """`privacy-check --max-examples 2` measures any AUROC it likes: the policy bounds the sizes
    a judged figure was measured on (defaults 20 members, 20 non-members, 100 samples)."""
    from ffsecure.privacy.policy import DEFAULTS, evaluate

    assert (DEFAULTS["min_members"], DEFAULTS["min_non_members"], DEFAULTS["min_generated"]) == (
        20,
        20,
        100,
    )
    tiny = {**GOOD, "members": 2, "non_members": 2, "membership_auroc": 0.5}
    verdict = evaluate(tiny, None, STRICT)
    assert not verdict.passes and [c.passes for c in verdict.thresholds] == [False] * 3
    assert all("measured on 2 members" in c.measurement for c in verdict.thresholds)
    assert verdict.to_dict()["thresholds"][0]["measurement"] == verdict.thresholds[0].measurement
    with pytest.raises(PrivacyPolicyError) as info:
        check_module(tiny, None, STRICT)
    assert code(info) == "E_PRIVACY_POLICY"
    assert "membership AUROC 0.5 does not count" in info.value.message
    assert "fewer than the federation's minimum 20 (min_members, the policy default)" in (
        info.value.message
    )
    assert "--max-examples" in info.value.hint
    for edit, needle in (
        ({"non_members": 19}, "19 non-members"),
        ({"generated": 99}, "99 generated samples"),
        (without(GOOD, "members"), "does not state how many members"),
    ):
        report = edit if "v" in edit else {**GOOD, **edit}
        with pytest.raises(PrivacyPolicyError, match=needle):
            check_module(report, None, {"max_near_copy_fraction": 0.01})
    # the smallest honest sites pass at the defaults: RetinaMNIST's class-4 site (66 training
    # images, its 20 class-4 test images as non-members), BreastMNIST's 21 malignant val images
    for members, non_members in ((66, 20), (147, 21)):
        small = {**GOOD, "members": members, "non_members": non_members}
        small["near_copy_holdout"] = non_members
        check_module(small, None, {"max_near_copy_fraction": 0.01})
    # the federation sets its own minima, stricter or looser
    with pytest.raises(PrivacyPolicyError, match=r"minimum 500 \(min_members\)"):
        check_module(GOOD, None, {"min_members": 500})
    check_module(
        {**GOOD, "members": 2, "non_members": 2}, None, {"min_members": 2, "min_non_members": 2}
    )
    # a DP claim the federation bounds still covers withheld figures: no size is asked for
    check_module(DP_SIGNED, DP, STRICT, dp_policy=REQUIRED)


@pytest.mark.parametrize(
    "edit, needle",
    [
        ({"near_copy_threshold": 0.0}, "near-copy threshold 0, below the floor 0.03"),
        # a held-out split that duplicates training images shrank it (BreastMNIST's val split)
        ({"near_copy_threshold": 0.00834}, "near-copy threshold 0.00834, below the floor 0.03"),
        (without(GOOD, "near_copy_threshold"), "does not state the near-copy threshold"),
        (without(GOOD, "near_copy_quantile"), "set by hand (--threshold)"),
        ({"near_copy_quantile": 0.001}, "0.001 quantile of held-out images' distances, below"),
        ({"near_copy_searched": GOOD["members"] - 1}, "search covered"),
        # most held-out images duplicate a training image: the quantile of the rest means nothing
        (
            {"near_copy_holdout": 19},
            "only 19 of its 200 held-out images lie at least 0.03 from every training image",
        ),
    ],
)
def test_a_near_copy_fraction_counts_only_at_the_check_s_threshold_rule(edit, needle):
    report = edit if "v" in edit else {**GOOD, **edit}
    with pytest.raises(PrivacyPolicyError) as info:
        check_module(report, None, {"max_near_copy_fraction": 0.01})
    assert code(info) == "E_PRIVACY_POLICY" and needle in info.value.message
    assert "near-copy fraction 0.004 does not count" in info.value.message
    check_module(report, None, {})  # no near-copy limit: the near-copy rule is not asked
    check_module({**GOOD, "near_copy_quantile": 0.05}, None, {"max_near_copy_fraction": 0.01})


def test_a_report_from_before_the_holdout_count_is_judged_by_its_threshold():
    """Reports signed before near_copy_holdout existed still count where their threshold meets
    the floor (modules registered then stay valid after an upgrade), not where it is below."""
    legacy = without(without(GOOD, "near_copy_holdout"), "near_copy_searched")
    check_module(legacy, None, {"max_near_copy_fraction": 0.01})
    with pytest.raises(PrivacyPolicyError) as info:
        check_module(
            {**legacy, "near_copy_threshold": 0.00834}, None, {"max_near_copy_fraction": 0.01}
        )
    assert "below the floor 0.03" in info.value.message


def test_a_replaying_generator_measured_at_threshold_0_is_refused():
    """A "generator" that replays 20 training images: 1.0 near-copies at the check's rule, 0.0
    at --threshold 0; the figure measured at 0 states no quantile and does not count."""
    torch = pytest.importorskip("torch")
    from ffsecure.privacy import memorization
    from ffsecure.privacy.policy import evaluate
    from ffsecure.privacy.report import measured_report

    torch.manual_seed(0)
    members, holdout = torch.rand(50, 1, 8, 8) * 2 - 1, torch.rand(50, 1, 8, 8) * 2 - 1
    replayed = members[:20].clone()
    policy = {"max_near_copy_fraction": 0.01, "max_membership_auroc": 1.0, "min_generated": 20}
    sizes = {"membership": {"members": 50, "non_members": 50, "auroc": 0.5}}
    verdicts = {}
    for threshold in (None, 0.0):
        memo = memorization.memorization(replayed, members, holdout, threshold=threshold)
        report = measured_report({**sizes, "memorization": memorization.summary(memo)})
        verdicts[threshold] = evaluate(report, None, policy).thresholds[-1]
    rule, zero = verdicts[None], verdicts[0.0]
    assert rule.value == 1.0 and rule.measurement is None and not rule.passes
    assert zero.value == 0.0 and not zero.passes
    assert "below the floor 0.03" in zero.measurement


def test_a_policy_that_makes_the_report_optional_cannot_be_published():
    """`required = false` with limits bound only modules that chose to send a report: refused
    wherever a federation manifest is built or parsed; a policy without `required` requires."""
    from ffsecure.privacy.policy import OPTIONAL_REPORT_REFUSED, effective_policy
    from site_node.privacy import report_required
    from tests.unit.test_federation import make_manifest

    with pytest.raises(FFSecureError) as info:
        check_policy_fields({"required": False, "max_membership_auroc": 0.6})
    assert code(info) == "E_PRIVACY_POLICY_SCHEMA"
    assert info.value.message == OPTIONAL_REPORT_REFUSED and "binds only the honest" in (
        info.value.message
    )
    with pytest.raises(FFSecureError) as info:
        make_manifest(privacy_policy={"required": False, "max_membership_auroc": 0.6})
    assert code(info) == "E_MANIFEST_SCHEMA" and "required = false is refused" in (
        info.value.message
    )
    # the template's form (no `required`): every module must carry a report, the site measures
    templated = make_manifest(privacy_policy={"max_membership_auroc": 0.6})
    assert effective_policy(templated.privacy_policy)["required"] is True
    assert report_required(templated) and not report_required(make_manifest())


def test_the_site_s_gate_judges_at_the_site_s_own_ceiling():
    """site_node.privacy.judge (the gate of train and privacy-check) takes the site's
    dp.max_epsilon: a site that raised its ceiling knowingly gets its claim's cover up to it,
    and the default is SITE_MAX_EPSILON."""
    from types import SimpleNamespace

    from site_node.privacy import judge

    federation = SimpleNamespace(
        privacy_policy={}, dp_policy={"required": True, "max_epsilon": 100.0, "delta": 1e-5}
    )
    full = {
        "membership": {"members": 300, "non_members": 100, "auroc": 0.871},
        "memorization": {"generated": 1000},
        "accounting": {"epsilon_recomputed": 20.0, "delta": 1e-5},
    }
    claim = {"epsilon": 20.0, "delta": 1e-5}
    assert not judge(full, claim, federation).passes  # 20 is above the default ceiling 8
    assert judge(full, claim, federation, max_epsilon=20.0).passes
