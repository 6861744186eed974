"""DP-SGD: settings refused before training, epsilon agrees with Opacus' own accountants."""

from __future__ import annotations

import math

import pytest
import torch

from ffsecure import dp
from ffsecure import generators as G
from ffsecure.errors import DPError
from ffsecure.torchutil import torch_threads

torch.set_num_threads(2)


def test_the_default_delta_gives_back_a_site_s_size_to_its_power_of_ten_only():
    """The delta is signed outside the claim: 1/(10 n) gave back a large site's exact n (or
    patient count); every site of 10,001 to 100,000 examples signs the same delta."""
    assert {dp.default_delta(n) for n in (10_001, 12_345, 54_321, 100_000)} == {1e-6}
    for n in (2, 9, 10, 11, 999, 1000, 1001, 12_345, 10**6, 10**6 + 1):
        assert dp.default_delta(n) <= 1 / (10 * n)
        assert dp.default_delta(n) > 1 / (100 * n) or dp.default_delta(n) == 1e-5


def test_default_delta_is_below_one_over_n():
    assert dp.default_delta(100) == 1e-5
    assert dp.default_delta(10_000) == 1e-5
    assert dp.default_delta(1_000_000) == pytest.approx(1e-7)
    assert dp.default_delta(1_000_001) == pytest.approx(1e-8)
    for n in (1, 10, 4708, 10**6):
        assert dp.default_delta(n) < 1 / n


@pytest.mark.parametrize(
    "config, kwargs, fragment",
    [
        (dp.DPConfig(target_epsilon=0.0), {}, "target_epsilon"),
        (dp.DPConfig(target_epsilon=-1.0), {}, "target_epsilon"),
        (dp.DPConfig(target_epsilon=float("inf")), {}, "target_epsilon"),
        (dp.DPConfig(target_epsilon=3.0, delta=0.0), {}, "delta"),
        (dp.DPConfig(target_epsilon=3.0, delta=-1e-6), {}, "delta"),
        (dp.DPConfig(target_epsilon=3.0, delta=1 / 200), {}, "1/n"),
        (dp.DPConfig(target_epsilon=3.0, delta=0.5), {}, "1/n"),
        (dp.DPConfig(target_epsilon=3.0, accountant="moments"), {}, "accountant"),
        (dp.DPConfig(target_epsilon=3.0, max_grad_norm=0.0), {}, "max_grad_norm"),
        (dp.DPConfig(target_epsilon=3.0, poisson=False), {}, "Poisson"),
        (dp.DPConfig(target_epsilon=3.0), {"epochs": 0}, "zero steps"),
        (dp.DPConfig(target_epsilon=3.0), {"batch_size": 0}, "zero steps"),
        (dp.DPConfig(target_epsilon=3.0), {"n": 0}, "zero steps"),
        (dp.DPConfig(target_epsilon=1e-9, accountant="rdp"), {}, "cannot be reached"),
    ],
    ids=[
        "eps-zero",
        "eps-negative",
        "eps-inf",
        "delta-zero",
        "delta-negative",
        "delta-1/n",
        "delta-half",
        "unknown-accountant",
        "clip-zero",
        "no-poisson",
        "zero-epochs",
        "zero-batch",
        "no-data",
        "unreachable",
    ],
)
def test_refused_dp_settings(config, kwargs, fragment):
    args = {"n": 200, "batch_size": 32, "epochs": 2, **kwargs}
    with pytest.raises(DPError) as info:
        dp.plan(config, **args)
    assert info.value.code == "E_DP"
    assert fragment in info.value.message
    assert info.value.hint


def test_plan_follows_opacus_step_counting():
    p = dp.plan(dp.DPConfig(target_epsilon=4.0, accountant="rdp"), n=250, batch_size=32, epochs=3)
    assert p.steps_per_epoch == 8 and p.steps == 24 and p.sample_rate == 1 / 8
    assert p.delta == 1e-5
    eps = dp.compute_epsilon(
        noise_multiplier=p.noise_multiplier,
        sample_rate=p.sample_rate,
        steps=p.steps,
        delta=p.delta,
        accountant="rdp",
    )
    assert eps <= 4.0
    # a slightly smaller noise multiplier overshoots: the plan is near the tightest noise that fits
    over = dp.compute_epsilon(
        noise_multiplier=p.noise_multiplier * 0.97,
        sample_rate=p.sample_rate,
        steps=p.steps,
        delta=p.delta,
        accountant="rdp",
    )
    assert over > eps


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_compute_epsilon_matches_opacus_accountant(accountant):
    from opacus.accountants import create_accountant

    acct = create_accountant(mechanism=accountant)
    for _ in range(50):
        acct.step(noise_multiplier=1.1, sample_rate=0.02)
    expected = acct.get_epsilon(delta=1e-5)
    got = dp.compute_epsilon(
        noise_multiplier=1.1, sample_rate=0.02, steps=50, delta=1e-5, accountant=accountant
    )
    assert got == expected
    assert 0 < got < math.inf


def _data(n=160):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    x = (torch.rand(n, 1, 8, 8, generator=g) * 0.4 - 0.7) + y.view(-1, 1, 1, 1) * 0.5
    return x.clamp(-1, 1), y


@pytest.mark.parametrize("family", sorted(G.FAMILIES))
def test_dp_fit_reports_epsilon_agreeing_with_opacus(family, caplog):
    from opacus.accountants import create_accountant

    x, y = _data()
    cfg = G.default_config(family, image_shape=(1, 8, 8), num_classes=3, size="tiny")
    gen = G.build(family, cfg)
    seen = []
    settings = G.TrainSettings(epochs=2, batch_size=32, lr=2e-3, seed=1)
    mechanism = "dp-sgd"  # what this test checks (cvae's auto is mean-embedding)
    config = dp.DPConfig(3.0, max_grad_norm=1.0, accountant="rdp", mechanism=mechanism)
    with caplog.at_level("DEBUG", logger="ffsecure.generators.training"):
        report = gen.fit(
            x,
            y,
            settings,
            dp=config,
            progress=lambda e, t, loss, eps: seen.append((e, t, loss, eps)),
        )
    rec = report.dp
    assert set(rec) == {
        "target_epsilon",
        "epsilon",
        "delta",
        "noise_multiplier",
        "sample_rate",
        "steps",
        "max_grad_norm",
        "accountant",
        "mechanism",
    }
    assert (
        rec["target_epsilon"] == 3.0 and rec["accountant"] == "rdp" and rec["max_grad_norm"] == 1.0
    )
    assert rec["delta"] == dp.default_delta(160) and rec["steps"] == report.steps == 10
    assert rec["sample_rate"] == 1 / 5
    assert (
        0 < rec["epsilon"] <= 3.0
    )  # Opacus' noise search returns a sigma whose epsilon is <= target
    assert rec["epsilon"] == dp.compute_epsilon(
        noise_multiplier=rec["noise_multiplier"],
        sample_rate=rec["sample_rate"],
        steps=rec["steps"],
        delta=rec["delta"],
        accountant="rdp",
    )
    fresh = create_accountant(mechanism="rdp")
    fresh.history = [(rec["noise_multiplier"], rec["sample_rate"], rec["steps"])]
    assert rec["epsilon"] == fresh.get_epsilon(delta=rec["delta"])
    # progress reports epsilon spent so far, growing each epoch, ending at the report's epsilon
    assert [s[0] for s in seen] == [1, 2] and all(s[1] == 2 for s in seen)
    assert 0 < seen[0][3] < seen[1][3] == rec["epsilon"]
    # and a log line every 5% of the steps (here every step), for a site without a terminal
    lines = [r for r in caplog.records if getattr(r, "event", None) == "dp_fit_progress"]
    assert [r.step for r in lines] == list(range(1, 11)) and {r.steps for r in lines} == {10}
    spent = [r.epsilon for r in lines]
    assert spent == sorted(spent) and spent[0] < spent[-1] == rec["epsilon"]
    assert lines[-1].getMessage() == f"dp-sgd fit: step 10/10 (100%), epsilon spent {spent[-1]:.3f}"
    # the loss is measured on the private batches without noise: no log line carries it
    assert not [r.getMessage() for r in caplog.records if "loss" in r.getMessage()]
    # hooks are gone: the module serialises and samples as a plain module
    out = G.from_state(family, cfg, G.to_safetensors(gen)).sample([0, 1, 2], seed=0)
    assert out.shape == (3, 1, 8, 8)
    assert not any(hasattr(p, "grad_sample") for p in gen.model.parameters())


def test_dp_fit_with_prv_accountant_is_repeatable_only_under_the_research_switch():
    x, y = _data(96)
    cfg = G.default_config("cvae", image_shape=(1, 8, 8), num_classes=3, size="tiny")
    settings = G.TrainSettings(epochs=1, batch_size=32, lr=2e-3, seed=5)
    config = dp.DPConfig(target_epsilon=8.0, reproducible=True, mechanism="dp-sgd")
    a, b = G.build("cvae", cfg), G.build("cvae", cfg)
    ra = a.fit(x, y, settings, dp=config)
    rb = b.fit(x, y, settings, dp=config)
    assert ra.dp["accountant"] == "prv" and ra.dp["epsilon"] <= 8.0
    assert ra.dp == rb.dp and ra.dp["reproducible"] is True  # the switch shows in the report
    assert G.to_safetensors(a) == G.to_safetensors(b)
    c = G.build("cvae", cfg)
    rc = c.fit(x, y, settings, dp=dp.DPConfig(8.0, mechanism="dp-sgd"))  # default: OS CSPRNG
    assert "reproducible" not in rc.dp and G.to_safetensors(c) != G.to_safetensors(a)
    assert ra.dp["epsilon"] == dp.compute_epsilon(
        noise_multiplier=ra.dp["noise_multiplier"],
        sample_rate=ra.dp["sample_rate"],
        steps=ra.dp["steps"],
        delta=ra.dp["delta"],
        accountant="prv",
    )


def test_dp_settings_are_refused_before_training():
    x, y = _data(50)
    gen = G.build(
        "cvae", G.default_config("cvae", image_shape=(1, 8, 8), num_classes=3, size="tiny")
    )
    before = G.to_safetensors(gen)
    with pytest.raises(DPError):
        gen.fit(
            x,
            y,
            G.TrainSettings(epochs=1, batch_size=8),
            dp=dp.DPConfig(target_epsilon=2.0, delta=0.05),
        )
    assert G.to_safetensors(gen) == before


@pytest.mark.parametrize("family", sorted(G.FAMILIES))
def test_dp_fit_survives_empty_poisson_batches(family):
    """Poisson sampling with rate 1/20 leaves about a third of the batches empty; each still takes a
    step."""
    x, y = _data(20)
    gen = G.build(
        family, G.default_config(family, image_shape=(1, 8, 8), num_classes=3, size="tiny")
    )
    report = gen.fit(
        x,
        y,
        G.TrainSettings(epochs=1, batch_size=1, seed=0),
        dp=dp.DPConfig(target_epsilon=50.0, accountant="rdp", mechanism="dp-sgd"),
    )
    assert report.steps == report.dp["steps"] == 20
    assert report.dp["sample_rate"] == 1 / 20 and report.dp["epsilon"] <= 50.0
    assert math.isfinite(report.final_loss)


#: Steps per epoch k for which Opacus' own count, ``int(1 / (1 / k))``, is k - 1 in floating point.
SHORT_BY_ONE = [k for k in range(1, 1001) if int(1 / (1 / k)) != k]


def test_the_private_loader_runs_the_plan_s_steps_for_every_k():
    """Opacus runs ``int(1 / sample_rate)`` steps per epoch: 92 for the plan's 1/93 (and 70 k
    up to 1000 in all), so the loader disagreed with the plan and DP-SGD stopped for 6-7% of
    site sizes. The loader the fit makes private runs exactly the plan's steps, and
    make_private, which accounts at ``1 / len(loader)``, accounts at the plan's sample rate."""
    from ffsecure.generators.training import _make_private

    assert SHORT_BY_ONE[:4] == [93, 99, 105, 117] and len(SHORT_BY_ONE) == 70
    config = dp.DPConfig(8.0, accountant="rdp", mechanism="dp-sgd")
    for batch_size in (1, 64):
        settings = G.TrainSettings(epochs=1, batch_size=batch_size, seed=0)
        for k in range(1, 401):  # 93 to 398: 19 of them short by one
            n = k * batch_size - batch_size // 2  # every n in ((k - 1) b, k b] takes k steps
            # the plan's schedule for n (dp.plan); its noise search is not what this checks
            per_epoch = math.ceil(n / batch_size)
            planned = dp.DPPlan(8.0, 1e-5, 1.0, 1.0 / per_epoch, per_epoch, per_epoch, 1.0, "rdp")
            net = torch.nn.Linear(1, 1)
            _, optimizer, loader, _ = _make_private(
                net,
                torch.optim.Adam(net.parameters()),
                torch.zeros(n, 1),
                torch.zeros(n),
                settings,
                config,
                planned,
            )
            assert len(loader) == planned.steps_per_epoch == k, (batch_size, k)
            assert 1 / len(loader) == planned.sample_rate == loader.sample_rate
            assert optimizer.expected_batch_size == int(n * planned.sample_rate)


def test_a_dp_sgd_fit_at_a_size_opacus_counted_one_step_short_trains_to_its_plan():
    """93 images at batch size 1: the fit used to stop on "Opacus loader length disagrees with
    the DP plan" (92 steps against 93). It trains, takes the plan's 93 steps, and its epsilon
    is the accountant's for those steps at the plan's sample rate."""
    x, y = _data(93)
    gen = G.build(
        "cvae", G.default_config("cvae", image_shape=(1, 8, 8), num_classes=3, size="tiny")
    )
    config = dp.DPConfig(target_epsilon=8.0, accountant="rdp", mechanism="dp-sgd")
    with torch_threads(1):  # 93 steps of one image: two threads contend on ops this small
        report = gen.fit(x, y, G.TrainSettings(epochs=1, batch_size=1, seed=0), dp=config)
    rec = report.dp
    assert rec["sample_rate"] == 1 / 93 and int(1 / rec["sample_rate"]) == 92  # Opacus' count
    assert report.steps == rec["steps"] == 93  # the plan's: ceil(93 / 1) steps, one epoch
    assert 0 < rec["epsilon"] <= 8.0 and math.isfinite(report.final_loss)
    assert rec["epsilon"] == dp.compute_epsilon(  # the accountant's, for the plan's steps
        noise_multiplier=rec["noise_multiplier"],
        sample_rate=rec["sample_rate"],
        steps=rec["steps"],
        delta=rec["delta"],
        accountant="rdp",
    )
