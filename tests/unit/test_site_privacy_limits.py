"""A site's own privacy limits (site.toml [privacy]): the stricter of the site's and the
federation's limit on each figure, whatever the federation's manifest says (pure functions)."""

from __future__ import annotations

import dataclasses

from ffsecure.privacy.policy import (
    DEFAULT_MAX_MEMBERSHIP_AUROC,
    THRESHOLDS,
    LimitSource,
    SiteLimits,
    limits_in_force,
    site_verdict,
)
from tests.unit.test_privacy_policy import DP, GOOD, NOT_REQUIRED, REQUIRED

#: a module that leaks: membership AUROC 0.61, above the default 0.55
LEAKY = {**GOOD, "membership_auroc": 0.61}
SITE_KEY = "site.toml privacy.max_membership_auroc"


def test_the_site_s_limits_are_the_federation_s_threshold_keys_with_its_default():
    assert [field.name for field in dataclasses.fields(SiteLimits)] == list(THRESHOLDS)
    assert SiteLimits().max_membership_auroc == DEFAULT_MAX_MEMBERSHIP_AUROC == 0.55


def test_without_a_federation_policy_the_site_s_own_limit_refuses_a_module():
    verdict = site_verdict(LEAKY, None, None, site=SiteLimits())
    assert not verdict.passes and verdict.policy is None and verdict.required is False
    (problem,) = verdict.problems
    assert problem.code == "E_PRIVACY_POLICY"
    assert f"membership AUROC 0.61 is above this site's limit 0.55 ({SITE_KEY})" in (
        problem.message
    )
    assert "site.toml [privacy]" in (problem.hint or "")
    (check,) = verdict.thresholds
    assert check.source is LimitSource.SITE and verdict.to_dict()["thresholds"][0]["source"] == (
        "site"
    )
    # the same module within the site's limit passes; without limits of its own nothing is judged
    assert site_verdict(GOOD, None, None, site=SiteLimits()).passes
    assert site_verdict(LEAKY, None, None).passes


def test_a_federation_limit_looser_than_the_site_s_does_not_loosen_it():
    """`max_membership_auroc = 1.0` in the manifest lifts the federation's default, not the
    site's 0.55; a stricter federation limit binds and is named as the federation's."""
    lifted = {"max_membership_auroc": 1.0}
    assert site_verdict(LEAKY, None, lifted).passes  # the aggregator's verdict
    verdict = site_verdict(LEAKY, None, lifted, site=SiteLimits())
    assert not verdict.passes and verdict.required is True
    assert f"is above this site's limit 0.55 ({SITE_KEY})" in verdict.problems[0].message
    strict = site_verdict(LEAKY, None, {"max_membership_auroc": 0.5}, site=SiteLimits())
    assert "is above the federation's limit 0.5 (max_membership_auroc)" in (
        strict.problems[0].message
    )
    # each figure on its own: the site's near-copy limit binds where the federation sets none
    own = SiteLimits(max_membership_auroc=0.7, max_near_copy_fraction=0.001)
    both = site_verdict(GOOD, None, {"max_membership_auroc": 0.6}, site=own)
    assert [(c.key, c.source, c.passes) for c in both.thresholds] == [
        ("max_membership_auroc", LimitSource.FEDERATION, True),
        ("max_near_copy_fraction", LimitSource.SITE, False),
    ]


def test_limits_in_force_take_the_lower_and_name_the_federation_at_a_tie():
    policy = {"max_membership_auroc": 0.55, "max_near_copy_fraction": 0.05}
    site = SiteLimits(max_membership_tpr_at_1pct_fpr=0.1, max_near_copy_fraction=0.01)
    limits = limits_in_force(policy, site)
    assert {key: (limit.value, limit.source) for key, limit in limits.items()} == {
        "max_membership_auroc": (0.55, LimitSource.FEDERATION),
        "max_membership_tpr_at_1pct_fpr": (0.1, LimitSource.SITE),
        "max_near_copy_fraction": (0.01, LimitSource.SITE),
    }
    assert limits_in_force({}, None)["max_membership_auroc"].default is True
    assert limits_in_force(None, None) == {}


def test_a_dp_claim_within_the_site_s_ceiling_covers_the_site_s_own_limits():
    """The DP exemption is unchanged: within the site's ceiling the withheld figures above the
    site's limit are a warning, never a refusal, also where the federation sets no privacy
    policy (the site's ceiling bounds its claim there); above it they refuse the module."""
    measured = {**LEAKY, "dp_epsilon_recomputed": 7.9, "dp_delta": 1e-5}
    for policy, dp_policy in (
        (None, None),
        (None, NOT_REQUIRED),
        ({"max_membership_auroc": 1.0}, REQUIRED),
    ):
        verdict = site_verdict(measured, DP, policy, dp_policy=dp_policy, site=SiteLimits())
        assert verdict.passes, (policy, dp_policy)
        assert [c.covered_by_dp for c in verdict.thresholds] == [True]
        (warning,) = verdict.warnings
        assert f"is above this site's limit 0.55 ({SITE_KEY})" in warning
    above = site_verdict(measured, DP, None, site=SiteLimits(), max_epsilon=4.0)
    assert not above.passes and "this site's limit 0.55" in above.problems[0].message
    assert "above this site's ceiling 4 (dp.max_epsilon)" in above.problems[0].message


def test_a_federation_s_low_measurement_minima_do_not_loosen_the_site_s_limit():
    """A figure measured on 3 members and 3 non-members fails the site's limit (default minima
    20); a manifest with `min_members = 1` lowers the federation's minima, not the site's."""
    tiny = {**GOOD, "members": 3, "non_members": 3, "membership_auroc": 0.5}
    assert not site_verdict(tiny, None, None, site=SiteLimits()).passes
    loose = {"max_membership_auroc": 1.0, "min_members": 1, "min_non_members": 1}
    assert site_verdict(tiny, None, loose).passes  # the federation's own verdict
    verdict = site_verdict(tiny, None, loose, site=SiteLimits())
    assert not verdict.passes
    (check,) = verdict.thresholds
    assert check.source is LimitSource.SITE and "fewer than" in (check.measurement or "")
