"""Bounded re-accounting of DP claims (ffsecure.dp): one set of bounds for plan, aggregator,
auditor."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from ffsecure import dp
from ffsecure.errors import DPError, FFSecureError
from site_node import refusals
from tests.dp_records import mean_embedding_record

GOOD = {
    "epsilon": 4.0,
    "delta": 1e-5,
    "noise_multiplier": 1.1,
    "sample_rate": 0.01,
    "steps": 100,
    "accountant": "rdp",
}


def test_a_claim_of_a_billion_steps_is_refused_before_the_accountant_allocates():
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(dp.DPClaimError) as info:
            dp.check_claim({**GOOD, "accountant": "prv", "steps": 1_000_000_000})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == "E_DP_CLAIM" and info.value.hint
    assert "steps must be an integer in [1, 100000]" in info.value.message
    assert peak < 1 << 20 and time.perf_counter() - t0 < 1.0


def test_the_prv_grid_is_sized_and_capped_before_it_is_built():
    params = {"noise_multiplier": 0.6, "sample_rate": 0.05, "steps": 10_000, "delta": 1e-5}
    assert dp.prv_grid_points(**params) > dp.MAX_PRV_GRID_POINTS  # ~1.4e7 points, ~20 s to build
    t0 = time.perf_counter()
    with pytest.raises(DPError, match="grid"):
        dp.compute_epsilon(**params, accountant="prv")
    assert time.perf_counter() - t0 < 5.0
    assert dp.compute_epsilon(**params, accountant="rdp") > 0  # rdp has no grid


def test_re_accounting_runs_under_a_time_budget():
    claim = {
        **GOOD,
        "accountant": "prv",
        "noise_multiplier": 1.0,
        "sample_rate": 0.02,
        "steps": 1000,
    }
    with pytest.raises(dp.DPClaimError, match="budget") as info:
        dp.check_claim(claim, budget_s=1e-4)
    # no judgement of the claim: its own code, which a site does not read as "understated"
    assert info.value.code == "E_DP_ACCOUNTING_TIMEOUT"
    assert "E_DP_ACCOUNTING_TIMEOUT" not in refusals.RERUN_CODES
    eps = dp.compute_epsilon(noise_multiplier=1.0, sample_rate=0.02, steps=1000, delta=1e-5)
    assert dp.check_claim({**claim, "epsilon": eps}).epsilon_recomputed == eps


@pytest.mark.parametrize(
    "edit, fragment",
    [
        ({"steps": "100"}, "not an integer"),
        ({"steps": True}, "not an integer"),
        ({"steps": 100.5}, "not an integer"),
        ({"noise_multiplier": float("nan")}, "not a finite number"),
        ({"noise_multiplier": 1e9}, "outside"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"sample_rate": 1.0, "steps": 20_000}, "passes over the data"),
        ({"delta": 1e-300}, "delta"),
        ({"steps": 0}, r"steps must be an integer in \[1, "),
        ({"steps": -0.0}, r"steps must be an integer in \[1, "),
        ({"steps": 0.0}, r"steps must be an integer in \[1, "),
        ({"delta": 0.999999}, r"delta must be in \[1e-20, 0.001\]"),
        ({"delta": 2e-3}, r"delta must be in \[1e-20, 0.001\]"),
        ({"sample_rate": 1e-4, "delta": 1e-4}, "not below the sample rate"),
        ({"epsilon": -1.0}, "claimed epsilon"),
        ({"accountant": "gdp"}, "unknown accountant"),
        ({"reproducible": True}, "seeded"),
    ],
)
def test_malformed_or_implausible_claims_are_refused_with_a_typed_code(edit, fragment):
    with pytest.raises(dp.DPClaimError, match=fragment) as info:
        dp.reaccount_claim({**GOOD, **edit})
    assert info.value.code == "E_DP_CLAIM"


def test_the_aggregator_requires_the_parameters_and_refuses_an_understated_claim():
    assert (
        dp.reaccount_claim({"epsilon": 4.0, "delta": 1e-5}) is None
    )  # the auditor: not re-accountable
    with pytest.raises(dp.DPClaimError, match="lacks"):
        dp.check_claim({"epsilon": 4.0, "delta": 1e-5})
    honest = dp.check_claim(GOOD)
    assert not honest.understated and honest.epsilon_recomputed < 4.0
    with pytest.raises(dp.DPClaimError, match="spend epsilon"):
        dp.check_claim({**GOOD, "epsilon": 0.5})


def test_plan_refuses_a_schedule_no_verifier_would_re_account():
    with pytest.raises(DPError, match="exceed the bounds"):
        dp.plan(dp.DPConfig(target_epsilon=8.0), n=200_000, batch_size=1, epochs=1)


#: A signed mean-embedding record as ``site-node train`` writes it (epsilon 4, PRV).
MEAN_EMBEDDING = mean_embedding_record(epsilon=3.999, noise_multiplier=1.083984375, n_features=1000)


@pytest.mark.parametrize(
    "edit, fragment",
    [
        # |count_weight| > 1: phi = [a, sqrt(1 - a^2) ...] is no unit vector, so the release's
        # sensitivity is not the 1 the accountant was fed
        ({"count_weight": 2.0}, "count_weight"),
        ({"count_weight": -0.5}, "count_weight"),
        ({"count_weight": 0.0}, "count_weight"),
        ({"count_weight": "0.5"}, "count_weight"),
        ({"feature_bandwidth": 0.0}, "feature_bandwidth"),
        ({"feature_bandwidth": float("inf")}, "feature_bandwidth"),
        ({"n_features": 0}, "n_features"),
        ({"n_features": 10**9}, "n_features"),
        ({"n_features": 1000.0}, "n_features"),
        ({"feature_seed": -1}, "feature_seed"),
        ({"feature_seed": "0"}, "feature_seed"),
        ({"feature_seed": True}, "feature_seed"),
        ({"max_grad_norm": True}, "max_grad_norm"),
    ],
)
def test_a_mean_embedding_record_whose_feature_map_is_out_of_bounds_is_refused(edit, fragment):
    assert not dp.check_claim(MEAN_EMBEDDING).understated  # the honest record passes
    with pytest.raises(dp.DPClaimError, match=fragment) as info:
        dp.check_claim({**MEAN_EMBEDDING, **edit})
    assert info.value.code == "E_DP_CLAIM"
    with pytest.raises(dp.DPClaimError, match=fragment):
        dp.reaccount_claim({**MEAN_EMBEDDING, **edit})  # the auditor's rule is the same


def test_a_site_s_claims_compose_by_the_tighter_of_two_sound_bounds():
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    claim = dp.DPClaim.from_record(GOOD, require_parameters=True)
    assert claim is not None
    alone = dp.site_epsilon([claim], 1e-5)
    assert alone <= claim.epsilon  # one module: judged as before
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    rdp = compute_rdp(q=0.01, noise_multiplier=1.1, steps=100, orders=orders)
    independent, _order = get_privacy_spent(orders=orders, rdp=[3 * r for r in rdp], delta=1e-5)
    three = dp.site_epsilon([claim] * 3, 1e-5)
    assert three == pytest.approx(float(independent), rel=1e-6) and alone < three
    # deltas that sum within the policy allow basic composition when it is tighter
    small = dp.DPClaim.from_record(
        {**GOOD, "epsilon": 0.96, "delta": 1e-6}, require_parameters=True
    )
    assert small is not None and dp.site_epsilon([small, small], 1e-5) <= 1.92
    with pytest.raises(dp.DPBudgetError, match="3 modules together spend epsilon") as info:
        dp.check_site_budget(
            [GOOD] * 3, {"required": True, "max_epsilon": three * 0.9, "delta": 1e-5}, site_id="s"
        )
    assert info.value.code == "E_DP_BUDGET"
    assert dp.check_site_budget([GOOD] * 3, {"required": False}, site_id="s") == 0.0


def test_a_policy_that_bounds_claims_composes_them_whether_or_not_it_requires_dp():
    """Where ``max_epsilon`` and ``delta`` are set, each DP claim stands in for the privacy
    policy's measured limits (``dp_covers``), required or not: the site's claims compose
    against ``max_epsilon``. Without required DP a module without DP is allowed beside them:
    it is judged by its privacy figures, composes with nothing and is never refused here."""
    claim = dp.DPClaim.from_record(GOOD, require_parameters=True)
    assert claim is not None
    two, three = (dp.site_epsilon([claim] * k, 1e-5) for k in (2, 3))
    bounded = {"required": False, "max_epsilon": (two + three) / 2, "delta": 1e-5}
    with pytest.raises(dp.DPBudgetError, match=r"3 modules with a DP claim \(of 5\)") as info:
        dp.check_site_budget([GOOD, None, GOOD, None, GOOD], bounded, site_id="s")
    assert info.value.code == "E_DP_BUDGET" and "above the federation's max_epsilon" in (
        info.value.message
    )
    assert dp.check_site_budget([GOOD, None, GOOD], bounded, site_id="s") == pytest.approx(two)
    # a new module without DP spends none of the DP budget, even where earlier claims are over
    assert dp.check_site_budget([GOOD] * 3 + [None], bounded, site_id="s") == pytest.approx(three)
    # a policy with only one of the two bounds bounds no claim: nothing composes
    for half in ({**bounded, "delta": None}, {**bounded, "max_epsilon": None}):
        assert dp.check_site_budget([GOOD] * 3, half, site_id="s") == 0.0


ZERO_STEPS = {**GOOD, "epsilon": 1e-9, "steps": 0}


def test_a_claim_of_zero_steps_is_refused_by_every_verifier():
    """Zero steps re-accounted to epsilon 0, so any number of such modules composed to a site
    epsilon of 0; plan never writes one, so every verifier refuses it (-0.0 included)."""
    with pytest.raises(DPError, match="zero steps"):
        dp.plan(dp.DPConfig(target_epsilon=1.0), n=100, batch_size=10, epochs=0)
    for steps in (0, -0.0, 0.0):
        record = {**ZERO_STEPS, "steps": steps}
        for verify in (
            dp.check_claim,  # the aggregator
            lambda r: dp.reaccount_claim(r, require_parameters=True),  # the auditor
            lambda r: dp.DPClaim.from_record(r, require_parameters=True),  # the site budget
        ):
            with pytest.raises(dp.DPClaimError, match=r"\[1, 100000\]") as info:
                verify(record)
            assert info.value.code == "E_DP_CLAIM"
    with pytest.raises(dp.DPClaimError):
        dp.check_site_budget(
            [ZERO_STEPS] * 1000, {"required": True, "max_epsilon": 1.0, "delta": 1e-5}, site_id="s"
        )
    with pytest.raises(DPError, match="steps"):
        dp.compute_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=0, delta=1e-5)


def test_a_claim_s_delta_is_bounded_where_claims_are_bounded():
    """Delta 0.999999 makes any epsilon meaningless; the same bound holds at plan (so an honest
    module is never refused), at every verifier, and in the federation's dp_policy."""
    assert dp.MAX_DELTA == 1e-3
    assert not dp.check_claim({**GOOD, "delta": dp.MAX_DELTA}).understated  # inclusive
    vacuous = {**GOOD, "epsilon": 1e-6, "delta": 0.999999}
    for verify in (dp.check_claim, lambda r: dp.reaccount_claim(r, require_parameters=True)):
        with pytest.raises(dp.DPClaimError, match="delta") as info:
            verify(vacuous)
        assert info.value.code == "E_DP_CLAIM"
    # DP-SGD: sample_rate = 1 / ceil(n / batch) >= 1 / n > delta for every honest plan
    for n, batch in ((66, 1), (66, 66), (1000, 64), (5000, 1)):
        planned = dp.plan(dp.DPConfig(target_epsilon=8.0), n=n, batch_size=batch, epochs=1)
        assert planned.delta < 1 / n <= planned.sample_rate
    with pytest.raises(DPError, match="above 0.001"):
        dp.plan(dp.DPConfig(target_epsilon=8.0, delta=5e-3), n=100, batch_size=10, epochs=1)
    with pytest.raises(DPError, match="above 0.001"):
        dp.plan_mean_embedding(dp.DPConfig(target_epsilon=8.0, delta=5e-3), n=100)
    from tests.unit.test_federation import make_manifest

    with pytest.raises(FFSecureError) as fed_info:
        make_manifest(dp_policy={"required": True, "max_epsilon": 8.0, "delta": 0.5})
    assert (
        fed_info.value.code == "E_MANIFEST_SCHEMA" and "dp_policy.delta" in fed_info.value.message
    )
    assert make_manifest(dp_policy={"required": True, "max_epsilon": 8.0, "delta": 1e-3})


def test_a_mean_embedding_claim_on_a_module_the_release_cannot_train_is_refused():
    """The family <-> mechanism table has one home (dp.MEAN_EMBEDDING_FAMILIES): the site
    refuses to train a ddpm by the release, and every verifier refuses a ddpm claiming it."""
    import dataclasses

    from ffsecure.generators import default_config
    from ffsecure.package import build_manifest, check_policy
    from tests.unit.test_federation import LABELS, SHAPE, make_manifest

    with pytest.raises(DPError, match="cannot train a ddpm"):
        dp.resolve_mechanism("mean-embedding", "ddpm", 100)
    with pytest.raises(DPError, match="cannot train a ddpm"):
        dp.check_family("mean-embedding", "ddpm")
    dp.check_family("mean-embedding", "cvae")
    dp.check_family("dp-sgd", "ddpm")
    ddpm = {
        "family": "ddpm",
        "config": default_config("ddpm", image_shape=SHAPE, num_classes=len(LABELS), size="tiny"),
    }
    fed = make_manifest(generator=ddpm)
    manifest = build_manifest(
        federation=fed, site_id="st-mary", weights=b"w", classes=[0], seed=0, dp=MEAN_EMBEDDING
    )
    assert not dp.check_claim(MEAN_EMBEDDING).understated  # the record alone is honest
    with pytest.raises(dp.DPClaimError, match="cannot train a ddpm") as info:
        check_policy(manifest, fed)  # verify_package (aggregator) and the audit run this
    assert info.value.code == "E_DP_CLAIM"
    # the same record on a cvae module, and a dp-sgd record on the ddpm module, pass
    cvae = make_manifest()
    check_policy(
        build_manifest(
            federation=cvae, site_id="st-mary", weights=b"w", classes=[0], seed=0, dp=MEAN_EMBEDDING
        ),
        cvae,
    )
    check_policy(dataclasses.replace(manifest, dp={**GOOD, "mechanism": "dp-sgd"}), fed)


def test_a_site_re_run_whose_own_accounting_times_out_decides_nothing(tmp_path):
    """The site's re-run of an aggregator's E_DP_CLAIM: its own accounting on a busy machine
    can run out of time too, which says nothing about the claim (not an agreement)."""
    claim = {**GOOD, "accountant": "prv", "noise_multiplier": 1.0, "sample_rate": 0.02}
    claim["steps"] = 1000

    def busy_claim_step(sent, federation):
        dp.check_claim(claim, budget_s=1e-4)  # the real accountant, out of time

    with pytest.raises(refusals._Inconclusive, match="E_DP_ACCOUNTING_TIMEOUT"):
        refusals._first_failure(None, None, (("DP claim", busy_claim_step),))
