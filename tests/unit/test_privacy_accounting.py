"""Epsilon re-computed from recorded DP parameters matches Opacus and what training reported."""

from __future__ import annotations

import math

import pytest
import torch

from ffsecure.errors import FFSecureError
from ffsecure.privacy.accounting import recompute


def _record(eps: float, *, sigma=1.1, q=0.01, steps=1000, delta=1e-5, accountant="rdp") -> dict:
    return {
        "epsilon": eps,
        "delta": delta,
        "noise_multiplier": sigma,
        "sample_rate": q,
        "steps": steps,
        "accountant": accountant,
        "target_epsilon": 8.0,
        "max_grad_norm": 1.0,
    }


def _opacus_rdp(sigma, q, steps, delta) -> float:
    """Opacus' RDP analysis called directly (orders as its accountant uses them)."""
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
    from opacus.accountants.rdp import RDPAccountant

    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders)
    eps, _alpha = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(eps)


@pytest.mark.parametrize(
    "sigma, q, steps, delta",
    [(1.1, 0.01, 1000, 1e-5), (0.8, 0.25, 600, 7.8e-4), (4.0, 1 / 32, 3200, 1e-6)],
)
def test_rdp_recompute_matches_opacus_analysis(sigma, q, steps, delta):
    want = _opacus_rdp(sigma, q, steps, delta)
    got = recompute(_record(want, sigma=sigma, q=q, steps=steps, delta=delta))
    assert got["matches"] is True
    assert got["epsilon_recomputed"] == pytest.approx(want, rel=1e-12)
    assert got["epsilon_claimed"] == want and got["steps"] == steps


def test_rdp_known_value():
    # sigma 1.1, q 0.01, 1000 steps, delta 1e-5 with Opacus' default RDP orders
    got = recompute(_record(_opacus_rdp(1.1, 0.01, 1000, 1e-5)))["epsilon_recomputed"]
    assert (
        1.0 < got < 3.0
    )  # the RDP bound for this classic setting (Abadi et al. report ~2 with moments)
    assert got == pytest.approx(_opacus_rdp(1.1, 0.01, 1000, 1e-5))


def test_prv_recompute_matches_a_fresh_opacus_prv_accountant():
    from opacus.accountants import PRVAccountant

    acct = PRVAccountant()
    acct.history = [(1.3, 0.05, 400)]
    want = float(acct.get_epsilon(delta=1e-5))
    got = recompute(_record(want, sigma=1.3, q=0.05, steps=400, accountant="prv"))
    assert got["matches"] and got["epsilon_recomputed"] == pytest.approx(want, rel=1e-9)


def test_a_claim_the_parameters_do_not_give_is_refused():
    true_eps = _opacus_rdp(1.1, 0.01, 1000, 1e-5)
    with pytest.raises(FFSecureError) as info:
        recompute(_record(true_eps * 0.5))
    assert info.value.code == "E_DP_EPSILON_MISMATCH"
    assert "claims" in info.value.message
    loose = recompute(_record(true_eps * 0.5), strict=False)
    assert loose["matches"] is False and loose["epsilon_recomputed"] == pytest.approx(true_eps)


def test_incomplete_record_and_no_dp():
    assert recompute(None) == {"dp": False}
    rec = _record(1.0)
    del rec["noise_multiplier"]
    with pytest.raises(FFSecureError) as info:
        recompute(rec)
    assert info.value.code == "E_DP" and "noise_multiplier" in info.value.message


def test_epsilon_reported_by_dp_training_is_recomputed_exactly():
    """A real DP-SGD fit (Opacus): the manifest's dp record gives back the epsilon training
    reported."""
    from ffsecure import generators
    from ffsecure.dp import DPConfig

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 16, 16, generator=g) * 2 - 1
    y = torch.randint(0, 4, (48,), generator=g)
    cfg = generators.default_config("cvae", image_shape=(1, 16, 16), num_classes=4, size="tiny")
    gen = generators.build("cvae", cfg)
    settings = generators.TrainSettings(epochs=2, batch_size=16, lr=2e-3, seed=0)
    report = gen.fit(
        x, y, settings, dp=DPConfig(target_epsilon=4.0, accountant="rdp", mechanism="dp-sgd")
    )
    assert report.dp["steps"] == 6 and report.dp["sample_rate"] == pytest.approx(1 / 3)
    got = recompute(report.dp)
    assert got["matches"] is True
    assert got["epsilon_recomputed"] == pytest.approx(report.dp["epsilon"], rel=1e-9)
    assert report.dp["epsilon"] <= 4.0 + 1e-9
    assert math.isclose(
        got["epsilon_recomputed"],
        _opacus_rdp(report.dp["noise_multiplier"], 1 / 3, 6, report.dp["delta"]),
        rel_tol=1e-9,
    )
