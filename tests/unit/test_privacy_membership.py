"""Membership inference: the metrics, the per-example losses, and a memorizing generator being
flagged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffsecure import generators
from ffsecure.errors import FFSecureError
from ffsecure.privacy.check import membership_attack
from ffsecure.privacy.membership import auroc, example_losses, loss_based_attack, tpr_at_fpr


def test_auroc_known_answers():
    assert auroc([3, 4, 5], [0, 1, 2]) == 1.0
    assert auroc([0, 1, 2], [3, 4, 5]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    assert auroc([2, 0], [1]) == 0.5
    assert auroc([1, 3], [0, 2]) == 0.75  # pairs: (1>0), (1<2), (3>0), (3>2)


def test_auroc_matches_sklearn_on_random_scores():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    m, n = rng.normal(0.3, 1, 300), rng.normal(0, 1, 500)
    want = roc_auc_score(np.r_[np.ones(300), np.zeros(500)], np.r_[m, n])
    assert auroc(m, n) == pytest.approx(want, abs=1e-12)


def test_tpr_at_fpr():
    non = np.arange(100, dtype=float)  # 0..99; at 1% FPR one non-member (99) may pass: threshold 98
    assert tpr_at_fpr([98.5, 99.5, 50, 10], non, 0.01) == 0.5
    assert tpr_at_fpr([98.5, 99.5, 50, 10], non, 0.0) == 0.25  # only above the largest non-member
    assert tpr_at_fpr([200.0], non, 0.01) == 1.0
    assert tpr_at_fpr([-1.0], non, 0.01) == 0.0
    with pytest.raises(FFSecureError):
        auroc([], [1.0])
    with pytest.raises(FFSecureError):
        auroc([float("nan")], [1.0])


def _digits(n_members: int, n_non: int):
    from ffsecure.data import load_digits

    ds = load_digits()
    keep = ds.train_y < 4
    x, y = ds.train_x[keep], ds.train_y[keep]
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    m, n = perm[:n_members], perm[n_members : n_members + n_non]
    return (x[m], y[m]), (x[n], y[n])


@pytest.fixture(scope="module")
def memorizer():
    """A tiny cvae overfit on 16 images (many passes, no DP): a module that memorizes."""
    torch.set_num_threads(1)
    members, non_members = _digits(16, 64)
    cfg = generators.default_config("cvae", image_shape=(1, 16, 16), num_classes=4, size="tiny")
    gen = generators.build("cvae", cfg)
    gen.fit(*members, generators.TrainSettings(epochs=120, batch_size=16, lr=5e-3, seed=0))
    return gen, members, non_members


def test_losses_are_deterministic_and_per_example(memorizer):
    gen, members, _ = memorizer
    a = example_losses(gen, *members, seed=3)
    b = example_losses(gen, *members, seed=3)
    assert a.shape == (16,) and torch.equal(a, b)
    # an example's loss does not depend on the other examples scored with it (no batch coupling)
    x, y = members[0].clone(), members[1].clone()
    x[1:] = -x[1:]
    c = example_losses(gen, x, y, seed=3)
    assert c[0].item() == pytest.approx(a[0].item(), rel=1e-6)
    assert not torch.allclose(c[1:], a[1:])


def test_memorizing_generator_is_flagged(memorizer):
    from ffsecure.privacy.check import run_check
    from ffsecure.privacy.policy import PrivacyPolicyError, check_module

    gen, members, non_members = memorizer
    full = run_check(gen, members=members, non_members=non_members, n_generated=200, seed=0)
    mia, memo = full["membership"], full["memorization"]
    assert mia["auroc"] > 0.9 and mia["tpr_at_1pct_fpr"] > 0.3
    assert mia["mean_loss_members"] < mia["mean_loss_non_members"]
    assert memo["ratio"] < 0.8
    # its samples replay training images: far more near-copies than unseen real images produce (1%)
    assert memo["near_copy_fraction"] > 0.1 > memo["holdout_below_threshold"]
    report = full["manifest_report"]
    assert report["membership_auroc"] == round(mia["auroc"], 6)
    with pytest.raises(PrivacyPolicyError) as info:
        check_module(report, None, {"required": True, "max_membership_auroc": 0.6})
    assert info.value.code == "E_PRIVACY_POLICY"
    with pytest.raises(PrivacyPolicyError):
        check_module(report, None, {"max_near_copy_fraction": 0.05})


def test_the_check_judges_each_figure_at_its_worst_over_the_samplers(memorizer):
    """The cvae module is measured at its manifest's temperature and at every reference one."""
    from ffsecure.privacy.check import run_check

    gen, members, non_members = memorizer
    full = run_check(gen, members=members, non_members=non_members, n_generated=200, seed=0)
    samplers, worst = full["samplers"], full["worst_sampler"]
    assert {n: s["settings"] for n, s in samplers.items()} == {
        "manifest": {"temperature": 1.0},
        "cold": {"temperature": 0.5},
        "hot": {"temperature": 1.5},
    }
    fractions = {n: s["memorization"]["near_copy_fraction"] for n, s in samplers.items()}
    ratios = {n: s["memorization"]["ratio"] for n, s in samplers.items()}
    aurocs = {n: s["membership"]["auroc"] for n, s in samplers.items()}
    tprs = {n: s["membership"]["tpr_at_1pct_fpr"] for n, s in samplers.items()}
    report = full["manifest_report"]
    assert report["near_copy_fraction"] == round(max(fractions.values()), 6)
    assert report["memorization_ratio"] == round(min(ratios.values()), 6)
    assert report["membership_auroc"] == round(max(aurocs.values()), 6)
    assert report["membership_tpr_at_1pct_fpr"] == round(max(tprs.values()), 6)
    assert fractions[worst["near_copy_fraction"]] == max(fractions.values())
    assert ratios[worst["memorization_ratio"]] == min(ratios.values())
    assert aurocs[worst["membership_auroc"]] == max(aurocs.values())
    assert tprs[worst["membership_tpr_at_1pct_fpr"]] == max(tprs.values())
    # the loss attack does not sample: measured once, the same under every sampler
    assert full["membership"]["mean_loss_members"] < full["membership"]["mean_loss_non_members"]
    assert {s["membership"]["black_box"]["samples_per_class"] for s in samplers.values()} == {500}


def test_untrained_generator_shows_no_membership_signal():
    members, non_members = _digits(64, 64)
    cfg = generators.default_config("cvae", image_shape=(1, 16, 16), num_classes=4, size="tiny")
    gen = generators.build("cvae", cfg)  # never saw either set
    res = membership_attack(gen, members, non_members, dp=None)
    assert 0.35 < res["auroc"] < 0.65


def test_ddpm_losses_and_calibrated_attack():
    members, non_members = _digits(12, 12)
    cfg = generators.default_config("ddpm", image_shape=(1, 16, 16), num_classes=4, size="tiny")
    gen, ref = generators.build("ddpm", cfg), generators.build("ddpm", cfg)
    gen.fit(*members, generators.TrainSettings(epochs=2, batch_size=12, lr=2e-3, seed=0))
    ref.fit(*non_members, generators.TrainSettings(epochs=2, batch_size=12, lr=2e-3, seed=1))
    losses = example_losses(gen, *members, draws=3)
    assert losses.shape == (12,) and torch.isfinite(losses).all() and (losses > 0).all()
    res = loss_based_attack(gen, members, non_members, reference=ref, draws=3)
    assert set(res["calibrated"]) == {"auroc", "tpr_at_1pct_fpr"}
    assert 0.0 <= res["calibrated"]["auroc"] <= 1.0


def test_unknown_family_and_bad_labels_are_refused(memorizer):
    gen, members, _ = memorizer
    with pytest.raises(FFSecureError) as info:
        example_losses(object(), *members)
    assert info.value.code == "E_DATA_FORMAT"
    with pytest.raises(FFSecureError):
        example_losses(gen, members[0], members[1] + 10)


def test_the_membership_attack_alone_is_judged_at_its_worst_sampler(memorizer):
    """``simulate``'s and the benchmarks' attack measures what ``privacy-check`` measures:
    the strongest attack under every sampler, not the manifest's alone."""
    import copy

    from ffsecure.privacy.membership import black_box_attack

    trained, members, non_members = memorizer
    # the same weights under a manifest naming the coldest temperature: its samples sit at
    # each class's mean, near no training image in particular
    gen = copy.copy(trained)
    gen.config = {**trained.config, "temperature": 0.05}
    dp = {"mechanism": "mean-embedding"}  # the loss attack does not apply: samples decide
    variants = generators.sampler_variants(gen)
    aurocs = {
        name: black_box_attack(variant, members, non_members, seed=0)["auroc"]
        for name, variant in variants.items()
    }
    worst = max(aurocs, key=lambda name: aurocs[name])
    assert worst != "manifest" and aurocs[worst] > aurocs["manifest"]
    mia = membership_attack(gen, members, non_members, dp=dp, seed=0)
    assert mia["attack"] == "nearest-sample"
    assert (mia["sampler"], mia["auroc"]) == (worst, aurocs[worst])
    assert mia["samplers"] == aurocs  # each sampler's figure, the manifest's among them
    assert mia["tpr_sampler"] in variants
    # with the loss attack, the strongest of both at the worst sampler
    both = membership_attack(gen, members, non_members, dp=None, seed=0)
    assert both["auroc"] >= aurocs[worst] and both["sampler"] in variants


def test_the_check_times_the_attack_and_the_memorization_test_apart(memorizer, monkeypatch):
    """Each timing holds its own work: a clock that moves only inside the memorization test
    leaves the attack's time at 0."""
    from ffsecure.privacy import check

    gen, members, non_members = memorizer
    clock = [0.0]
    real = check.memorization.measure

    def slow(*args, **kwargs):
        clock[0] += 1000.0
        return real(*args, **kwargs)

    monkeypatch.setattr(check.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(check.memorization, "measure", slow)
    full = check.run_check(gen, members=members, non_members=non_members, n_generated=50)
    assert full["timings"]["membership_s"] == 0.0
    assert full["timings"]["memorization_s"] == 1000.0 * len(full["samplers"])


def test_the_check_logs_its_progress_per_sampler_and_no_figure(memorizer, caplog):
    """A long check (ddpm: minutes) shows progress in a service's log, one line per sampler;
    the figures stay in the 0600 report."""
    import logging

    from ffsecure.privacy.check import run_check

    gen, members, non_members = memorizer
    with caplog.at_level(logging.INFO, logger="ffsecure.privacy.check"):
        full = run_check(gen, members=members, non_members=non_members, n_generated=50)
    lines = [r for r in caplog.records if getattr(r, "event", None) == "privacy_check_progress"]
    assert [r.sampler for r in lines] == list(full["samplers"])
    assert [r.done for r in lines] == list(range(1, len(full["samplers"]) + 1))
    text = " ".join(r.getMessage() for r in lines)
    assert f"of {len(full['samplers'])}" in text
    auroc = f"{full['membership']['auroc']:.3f}"
    assert "auroc" not in text.lower() and auroc not in text
