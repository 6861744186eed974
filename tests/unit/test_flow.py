"""The flow-matching generator family: bounded config, safetensors round trip, deterministic
sampling, training, DP-SGD under Opacus, and the CUDA path (``gpu`` marker)."""

from __future__ import annotations

import pytest
import torch

from ffsecure import generators as G
from ffsecure.dp import DPConfig
from ffsecure.errors import ConfigError, FormatError
from ffsecure.generators import flow
from ffsecure.privacy import membership

torch.set_num_threads(2)

SHAPE = (1, 8, 8)  # digits at their native size: the tests stay cheap


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """128 scikit-learn digits at 1x8x8 in [-1, 1] (shipped with scikit-learn)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:128], dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    return x.clamp(-1, 1), torch.tensor(d.target[:128], dtype=torch.int64)


@pytest.fixture(scope="module")
def fitted(digits):
    cfg = G.default_config("flow", image_shape=SHAPE, num_classes=10, size="tiny")
    gen = G.build("flow", cfg)
    report = gen.fit(*digits, G.TrainSettings(epochs=4, batch_size=32, lr=2e-3, seed=3))
    return gen, cfg, report


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ({"base_channels": 4096}, "base_channels"),
        ({"sample_steps": 100_000}, "sample_steps"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"solver": "rk45"}, "solver"),
        ({"time_sampling": "beta"}, "time_sampling"),
        ({"channel_mults": [1, 2, 2, 2]}, "channel_mults"),
        ({"guidance_scale": 2.0}, "label_dropout"),
        ({"base_channels": 256, "channel_mults": [8, 8, 8], "num_res_blocks": 4}, "parameters"),
        ({"pickle": 1}, "unknown"),
    ],
)
def test_oversize_or_unknown_flow_configs_are_refused(edit, fragment):
    cfg = {**G.default_config("flow", image_shape=(1, 28, 28), num_classes=2), **edit}
    with pytest.raises(ConfigError) as err:
        G.validate_config("flow", cfg)
    assert err.value.code == "E_GENERATOR_CONFIG" and fragment in str(err.value)


def test_flow_sizes_and_train_settings_exist_for_every_size():
    for size in G.SIZES:
        cfg = G.default_config("flow", image_shape=(3, 28, 28), num_classes=5, size=size)
        assert cfg["solver"] in ("euler", "heun") and 0 < cfg["ema_decay"] < 1
        assert G.default_train_settings("flow", size).epochs >= 1


def test_flow_round_trips_through_safetensors_and_the_tensor_checks(fitted):
    gen, cfg, _ = fitted
    weights = G.to_safetensors(gen)
    G.check_safetensors(weights, G.expected_tensor_specs("flow", cfg))
    again = G.from_state("flow", cfg, weights)
    assert torch.equal(gen.sample([0, 5, 9], seed=11), again.sample([0, 5, 9], seed=11))
    other = dict(cfg, embed_dim=cfg["embed_dim"] + 2)
    with pytest.raises(FormatError):
        G.from_state("flow", other, weights)


def test_flow_sampling_is_bit_identical_per_seed_and_differs_across_seeds(fitted):
    gen, _cfg, _ = fitted
    labels = [0, 1, 2, 3, 3, 3]
    out = gen.sample(labels, seed=5)
    assert out.shape == (6, *SHAPE) and out.dtype == torch.float32
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    assert torch.equal(out, gen.sample(labels, seed=5))
    assert not torch.equal(out, gen.sample(labels, seed=6))
    assert not torch.equal(out[3], out[4])  # draws of one class differ within a call
    assert gen.sample([], seed=0).shape == (0, *SHAPE)


def test_flow_fit_lowers_the_loss_and_is_repeatable(digits, fitted):
    _gen, cfg, report = fitted
    assert report.family == "flow" and report.steps == 4 * 4 and report.dp is None
    assert report.history[-1] < report.history[0]
    twin = G.build("flow", cfg)
    twin.fit(*digits, G.TrainSettings(epochs=4, batch_size=32, lr=2e-3, seed=3))
    assert G.to_safetensors(twin) == G.to_safetensors(fitted[0])


def test_flow_saves_the_weight_average_not_the_last_iterate(digits):
    cfg = G.default_config("flow", image_shape=SHAPE, num_classes=10, size="tiny")
    settings = G.TrainSettings(epochs=1, batch_size=32, lr=2e-3, seed=1)
    x, y = digits[0][:64], digits[1][:64]
    averaged = G.build("flow", cfg)
    averaged.fit(x, y, settings)
    last = G.build("flow", dict(cfg, ema_decay=0.0))
    last.fit(x, y, settings)
    # the same optimizer path (EMA changes no gradient), different saved weights
    assert G.to_safetensors(averaged) != G.to_safetensors(last)


def test_flow_trains_one_dp_sgd_run_under_opacus(digits):
    from opacus.validators import ModuleValidator

    cfg = G.default_config("flow", image_shape=SHAPE, num_classes=10, size="tiny")
    gen = G.build("flow", cfg)
    ModuleValidator.validate(gen.model.train(), strict=True)
    x, y = digits
    report = gen.fit(
        x[:64],
        y[:64],
        G.TrainSettings(epochs=1, batch_size=32, lr=2e-3, seed=0),
        dp=DPConfig(target_epsilon=8.0, reproducible=True),
    )
    assert report.dp is not None and 0 < report.dp["epsilon"] <= 8.0 + 1e-6
    G.check_safetensors(G.to_safetensors(gen), G.expected_tensor_specs("flow", cfg))
    assert torch.isfinite(gen.sample([1, 2], seed=0)).all()


def test_membership_attack_scores_flow_modules(fitted, digits):
    gen, _cfg, _ = fitted
    x, y = digits
    losses = membership.example_losses(gen, x[:8], y[:8], draws=2)
    assert losses.shape == (8,) and bool(torch.isfinite(losses).all())
    assert torch.equal(losses, membership.example_losses(gen, x[:8], y[:8], draws=2))


def test_heun_solver_differs_from_euler_on_the_same_weights(fitted):
    gen, cfg, _ = fitted
    euler = G.from_state("flow", dict(cfg, solver="euler"), G.to_safetensors(gen))
    assert not torch.equal(euler.sample([4, 7], seed=2), gen.sample([4, 7], seed=2))
    assert flow.TIME_SCALE > 1


@pytest.mark.gpu
def test_flow_trains_and_samples_on_cuda(digits):
    assert torch.cuda.is_available(), "the gpu marker needs a CUDA device"
    cfg = G.default_config("flow", image_shape=SHAPE, num_classes=10, size="tiny")
    gen = G.build("flow", cfg)
    report = gen.fit(*digits, G.TrainSettings(epochs=2, batch_size=32, seed=0, device="cuda"))
    assert report.history[-1] < report.history[0]
    assert next(gen.model.parameters()).device.type == "cpu"  # back on the CPU after fit
    out = gen.sample([0, 1, 2], seed=3, device="cuda")
    assert out.device.type == "cpu" and out.shape == (3, *SHAPE)
    assert torch.equal(out, gen.sample([0, 1, 2], seed=3, device="cuda"))
