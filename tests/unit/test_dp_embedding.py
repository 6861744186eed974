"""The DP mean-embedding mechanism: sensitivity 1, one Gaussian release, accounted as Opacus does.

The accountant's epsilon is checked against an independent computation (the analytic
Gaussian mechanism, Balle and Wang 2018); the release's sensitivity against adversarial
inputs and neighbouring data sets; the noise against the OS CSPRNG; the fit against the
package's tensor checks and the family's deterministic sampling.
"""

from __future__ import annotations

import math

import pytest
import torch

from ffsecure import dp, dp_embedding
from ffsecure import generators as G
from ffsecure.errors import DPError
from ffsecure.privacy import membership
from ffsecure.privacy.check import run_check

torch.set_num_threads(1)

SHAPE = (1, 8, 8)
SPEC = dp_embedding.FeatureSpec(seed=7, n_features=64, bandwidth=0.5, count_weight=0.5)
#: Opacus' PRV accountant discretises the privacy-loss distribution with eps_error = 0.01: its
#: epsilon lies within 0.01 of the exact one (and Opacus' noise search stops within its own
#: tolerance below the target), so the two computations must agree to 0.02.
PRV_TOLERANCE = 0.02


def _phi_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def analytic_gaussian_epsilon(sigma: float, delta: float) -> float:
    """Balle and Wang 2018, Theorem 8 (sensitivity 1), solved for epsilon by bisection."""

    def delta_of(eps: float) -> float:
        return _phi_cdf(1 / (2 * sigma) - eps * sigma) - math.exp(eps) * _phi_cdf(
            -1 / (2 * sigma) - eps * sigma
        )

    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_of(mid) > delta else (lo, mid)
    return hi


def _data(n: int = 90, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = (y.view(-1, 1, 1, 1).float() / 2 - 0.5) + 0.3 * torch.randn(n, *SHAPE, generator=g)
    return x.clamp(-1, 1), y


def _tiny_cvae() -> G.Generator:
    return G.build("cvae", G.default_config("cvae", image_shape=SHAPE, num_classes=3, size="tiny"))


@pytest.mark.parametrize("target", [1.0, 2.0, 4.0, 8.0])
def test_mean_embedding_epsilon_equals_the_analytic_gaussian_mechanism(target):
    plan = dp.plan_mean_embedding(dp.DPConfig(target_epsilon=target, delta=1e-5), n=1000)
    assert (plan.sample_rate, plan.steps, plan.max_grad_norm) == (1.0, 1, 1.0)
    eps = dp.compute_epsilon(
        noise_multiplier=plan.noise_multiplier, sample_rate=1.0, steps=1, delta=1e-5
    )
    exact = analytic_gaussian_epsilon(plan.noise_multiplier, 1e-5)
    assert abs(eps - exact) <= PRV_TOLERANCE, (target, eps, exact)
    assert target - PRV_TOLERANCE <= exact <= target + PRV_TOLERANCE


@pytest.mark.parametrize(
    "sigma, rate, steps", [(1.0, 0.01, 1000), (1.5, 0.05, 200), (0.8, 0.02, 500)]
)
def test_dp_sgd_epsilon_equals_opacus_rdp_run_independently(sigma, rate, steps):
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    rdp = compute_rdp(q=rate, noise_multiplier=sigma, steps=steps, orders=orders)
    independent, _order = get_privacy_spent(orders=orders, rdp=rdp, delta=1e-5)
    ours = dp.compute_epsilon(
        noise_multiplier=sigma, sample_rate=rate, steps=steps, delta=1e-5, accountant="rdp"
    )
    assert ours == pytest.approx(float(independent), rel=1e-9)
    prv = dp.compute_epsilon(noise_multiplier=sigma, sample_rate=rate, steps=steps, delta=1e-5)
    assert prv <= ours + 0.02  # PRV is the tighter accountant, never looser than RDP


@pytest.mark.parametrize("fill", ["all -1", "all +1", "random"])
def test_every_feature_vector_has_norm_at_most_one(fill):
    n = 16
    x = {
        "all -1": -torch.ones(n, *SHAPE),
        "all +1": torch.ones(n, *SHAPE),
        "random": torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(3)) * 2 - 1,
    }[fill]
    norms = dp_embedding.features(x, SPEC).double().norm(dim=1)
    assert bool((norms <= 1.0 + 1e-6).all()), norms.max()


@pytest.mark.parametrize(
    "edit", [{"count_weight": 1.5}, {"count_weight": 0.0}, {"bandwidth": 0.0}, {"n_features": 0}]
)
def test_a_feature_map_whose_rows_are_not_unit_vectors_cannot_be_built(edit):
    with pytest.raises(DPError, match="feature|count_weight|bandwidth") as info:
        dp_embedding.FeatureSpec(**edit)
    assert info.value.code == "E_DP"


def test_release_for_neighbouring_data_sets_differs_by_at_most_one():
    x, y = _data()
    classes = [0, 1, 2]
    full = dp_embedding.class_sums(x, y, SPEC, classes)
    for drop in (0, 1, 45, 89):
        keep = torch.arange(x.shape[0]) != drop
        minus_one = dp_embedding.class_sums(x[keep], y[keep], SPEC, classes)
        diff = float((full - minus_one).norm())
        assert diff <= 1.0 + 1e-6 and diff > 0.99  # exactly phi(x_drop), norm 1


def test_noise_comes_from_the_os_unless_the_research_switch_is_set():
    x, y = _data()
    a = dp_embedding.release(x, y, SPEC, 2.0)
    b = dp_embedding.release(x, y, SPEC, 2.0)
    assert not torch.equal(a.sums, b.sums)
    clean = dp_embedding.class_sums(x, y, SPEC, a.classes).float()
    assert 1.5 < float((a.sums - clean).std()) < 2.5  # N(0, sigma^2) around the true sums
    r1 = dp_embedding.release(x, y, SPEC, 2.0, noise_seed=11)
    r2 = dp_embedding.release(x, y, SPEC, 2.0, noise_seed=11)
    assert torch.equal(r1.sums, r2.sums)


def test_two_fits_differ_and_the_reproducible_switch_repeats_them():
    x, y = _data()
    settings = G.TrainSettings(seed=3, embedding_steps=5)
    cfg = dp.DPConfig(target_epsilon=4.0, mechanism="mean-embedding")
    a, b = _tiny_cvae(), _tiny_cvae()
    a.fit(x, y, settings, dp=cfg)
    b.fit(x, y, settings, dp=cfg)
    assert G.to_safetensors(a) != G.to_safetensors(b)
    rep = dp.DPConfig(target_epsilon=4.0, mechanism="mean-embedding", reproducible=True)
    c, d = _tiny_cvae(), _tiny_cvae()
    rc = c.fit(x, y, settings, dp=rep)
    d.fit(x, y, settings, dp=rep)
    assert G.to_safetensors(c) == G.to_safetensors(d) and rc.dp["reproducible"] is True


def test_fit_on_the_noisy_statistic_gives_a_checked_module_that_samples_deterministically():
    x, y = _data()
    gen = _tiny_cvae()
    seen: list[tuple] = []
    report = gen.fit(
        x,
        y,
        G.TrainSettings(seed=1, embedding_steps=40),
        dp=dp.DPConfig(target_epsilon=8.0, mechanism="mean-embedding"),
        progress=lambda *args: seen.append(args),
    )
    rec = report.dp
    assert rec["mechanism"] == "mean-embedding" and rec["epsilon"] <= 8.0
    assert (rec["sample_rate"], rec["steps"]) == (1.0, 1)
    assert {"feature_seed", "n_features", "feature_bandwidth", "count_weight"} <= set(rec)
    checked = dp.check_claim(rec)
    assert not checked.understated
    assert checked.epsilon_recomputed == pytest.approx(rec["epsilon"], rel=1e-9)
    # progress: a line every 5% of the steps, each with the epsilon spent (all at the release)
    assert len(seen) == 20 and seen[-1][:2] == (40, 40)
    assert all(s[3] == rec["epsilon"] for s in seen)
    blob = G.to_safetensors(gen)
    cfg = gen.config
    G.check_safetensors(blob, G.expected_tensor_specs("cvae", cfg))
    again = G.from_state("cvae", cfg, blob)
    one = again.sample([0, 1, 2, 2], seed=5)
    assert torch.equal(one, again.sample([0, 1, 2, 2], seed=5))
    assert torch.equal(one, gen.sample([0, 1, 2, 2], seed=5))
    assert not torch.equal(one, again.sample([0, 1, 2, 2], seed=6))


def test_mean_embedding_is_refused_for_a_family_it_cannot_train():
    with pytest.raises(DPError, match="mean-embedding"):
        dp.resolve_mechanism("mean-embedding", "ddpm", 100)
    with pytest.raises(DPError, match="unknown DP mechanism"):
        dp.resolve_mechanism("laplace", "cvae", 100)
    assert dp.resolve_mechanism("auto", "cvae", 100, 1.0) == "mean-embedding"
    # on digits the mean-embedding release led DP-SGD at epsilon 1 and at epsilon 8
    assert dp.resolve_mechanism("auto", "cvae", 100, 8.0) == "mean-embedding"
    assert dp.resolve_mechanism("auto", "cvae", 5000, 16.0) == "mean-embedding"
    assert dp.resolve_mechanism("dp-sgd", "cvae", 100, 1.0) == "dp-sgd"  # pinned: kept
    assert dp.resolve_mechanism("auto", "ddpm", 100, 1.0) == "dp-sgd"


def test_privacy_check_runs_the_black_box_attack_on_a_mean_embedding_module():
    x, y = _data(120)
    gen = _tiny_cvae()
    report = gen.fit(
        x[:60],
        y[:60],
        G.TrainSettings(seed=2, embedding_steps=20),
        dp=dp.DPConfig(8.0, mechanism="mean-embedding"),
    )
    full = run_check(
        gen,
        members=(x[:60], y[:60]),
        non_members=(x[60:], y[60:]),
        dp=report.dp,
        n_generated=60,
    )
    mia = full["membership"]
    assert mia["attack"] == "nearest-sample" and "mean_loss_members" not in mia
    assert 0.0 <= mia["auroc"] <= 1.0 and mia["auroc"] == mia["black_box"]["auroc"]
    assert full["accounting"]["matches"] is True
    # measured on the members without noise: kept local, never in the signed part
    assert set(full["manifest_report"]) == {
        "v",
        "generated",
        "near_copy_quantile",
        "dp_epsilon_recomputed",
        "dp_delta",
    }
    assert "membership_auroc" in full["withheld"] and "members" in full["withheld"]


def test_black_box_attack_separates_copies_from_strangers():
    """A 'generator' that replays its members is caught by the nearest-sample attack."""

    class Replay:
        family = "cvae"
        config = {"image_shape": list(SHAPE), "num_classes": 3}

        def __init__(self, x, y):
            self.x, self.y = x, y

        def sample(self, labels, seed):
            pool = self.x[self.y == int(labels[0])]
            return pool[torch.arange(len(labels)) % pool.shape[0]]

    x, y = _data(120)
    result = membership.black_box_attack(Replay(x[:60], y[:60]), (x[:60], y[:60]), (x[60:], y[60:]))
    assert result["auroc"] == 1.0 and result["mean_distance_members"] < 1e-6
