"""Generator families: configs, safetensors round-trip and validation, determinism, Opacus
compatibility."""

from __future__ import annotations

import json
import struct

import pytest
import torch
import torch.nn.functional as F

from ffsecure import generators as G
from ffsecure.errors import ConfigError, DataError, FormatError

torch.set_num_threads(2)

SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """300 scikit-learn digits at 1x16x16 in [-1, 1] (shipped with scikit-learn)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:300], dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    x = F.interpolate(x, size=SHAPE[1:], mode="bilinear", align_corners=False).clamp(-1, 1)
    return x, torch.tensor(d.target[:300], dtype=torch.int64)


@pytest.fixture(scope="module")
def fitted_cvae(digits):
    cfg = G.default_config("cvae", image_shape=SHAPE, num_classes=10, size="tiny")
    gen = G.build("cvae", cfg)
    report = gen.fit(*digits, G.default_train_settings("cvae", "tiny", seed=7))
    return gen, cfg, report


def _tamper_header(weights: bytes, edit) -> bytes:
    (n,) = struct.unpack("<Q", weights[:8])
    header = json.loads(weights[8 : 8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + weights[8 + n :]


# ---- configs -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(G.FAMILIES))
@pytest.mark.parametrize("size", ["tiny", "default", "full"])
def test_default_configs_validate_and_specs_match_build(family, size):
    cfg = G.default_config(family, image_shape=(3, 28, 28), num_classes=7, size=size)
    assert G.validate_config(family, cfg) == cfg
    specs = G.expected_tensor_specs(family, cfg)
    built = G.build(family, cfg).model.state_dict()
    assert specs == {k: (tuple(v.shape), "F32") for k, v in built.items()}


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda c: c.update(extra=1), "unknown"),
        (lambda c: c.pop("latent_dim"), "missing"),
        (lambda c: c.update(latent_dim=10**9), "latent_dim"),
        (lambda c: c.update(image_shape=[2, 28, 28]), "channels"),
        (lambda c: c.update(image_shape=[1, 30, 28]), "height"),
        (lambda c: c.update(image_shape=[1, 28, 68]), "width"),
        (lambda c: c.update(num_classes=1001), "num_classes"),
        (lambda c: c.update(temperature=float("nan")), "temperature"),
        (lambda c: c.update(latent_dim=True), "latent_dim"),
        (
            lambda c: c.update(channels=[256, 256], hidden=2048, image_shape=[3, 64, 64]),
            "parameters",
        ),
    ],
)
def test_hostile_cvae_configs_are_refused(edit, fragment):
    cfg = G.default_config("cvae", image_shape=(1, 28, 28), num_classes=2)
    edit(cfg)
    with pytest.raises(ConfigError) as info:
        G.validate_config("cvae", cfg)
    assert info.value.code == "E_GENERATOR_CONFIG"
    assert fragment in info.value.message


def test_unknown_family_is_refused():
    with pytest.raises(ConfigError) as info:
        G.default_config("gan", image_shape=SHAPE, num_classes=2)
    assert info.value.code == "E_GENERATOR_CONFIG"


def test_specs_are_computed_without_allocating():
    cfg = G.default_config("cvae", image_shape=(3, 64, 64), num_classes=1000, size="full")
    specs = G.expected_tensor_specs("cvae", cfg)
    assert specs["label.weight"] == ((1000, cfg["embed_dim"] + 2 * cfg["latent_dim"]), "F32")


# ---- round trip and determinism ------------------------------------------------------------


def test_cvae_round_trip_gives_identical_samples(fitted_cvae):
    gen, cfg, report = fitted_cvae
    assert report.steps == 3 * 10 and report.dp is None and len(report.history) == 3
    assert report.history[-1] < report.history[0]
    weights = G.to_safetensors(gen)
    again = G.from_state("cvae", json.loads(json.dumps(cfg)), weights)
    labels = [0, 1, 2, 3, 9, 9]
    a, b = gen.sample(labels, seed=11), again.sample(labels, seed=11)
    assert a.shape == (6, *SHAPE) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert float(a.min()) >= -1.0 and float(a.max()) <= 1.0
    assert not torch.equal(a, gen.sample(labels, seed=12))
    assert G.to_safetensors(again) == weights


def test_cvae_fit_is_repeatable_bit_for_bit(digits, fitted_cvae):
    _gen, cfg, _report = fitted_cvae
    x, y = digits
    settings = G.TrainSettings(epochs=1, batch_size=64, lr=3e-3, seed=3)
    a, b = G.build("cvae", cfg), G.build("cvae", cfg)
    a.fit(x[:128], y[:128], settings)
    b.fit(x[:128], y[:128], settings)
    assert G.to_safetensors(a) == G.to_safetensors(b)
    c = G.build("cvae", cfg)
    c.fit(x[:128], y[:128], G.TrainSettings(epochs=1, batch_size=64, lr=3e-3, seed=4))
    assert G.to_safetensors(c) != G.to_safetensors(a)


def test_cvae_samples_follow_the_class(fitted_cvae, digits):
    """Class-conditional: per-class sample means are closer to their own class mean than to
    others'."""
    gen, _cfg, _ = fitted_cvae
    x, y = digits
    hits = 0
    for k in range(10):
        mean = gen.sample([k] * 64, seed=k).mean(0).flatten()
        dists = torch.stack([(x[y == j].mean(0).flatten() - mean).norm() for j in range(10)])
        hits += int(dists.argmin()) == k
    assert hits >= 6


def test_fit_refuses_bad_data(fitted_cvae):
    gen, _cfg, _ = fitted_cvae
    with pytest.raises(DataError):
        gen.fit(
            torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64), G.TrainSettings(epochs=1)
        )
    with pytest.raises(DataError):
        gen.fit(torch.zeros(4, *SHAPE), torch.full((4,), 10), G.TrainSettings(epochs=1))
    with pytest.raises(DataError):
        gen.fit(
            torch.full((4, *SHAPE), 3.0),
            torch.zeros(4, dtype=torch.int64),
            G.TrainSettings(epochs=1),
        )
    with pytest.raises(DataError):
        gen.sample([0, 10], seed=0)
    with pytest.raises(DataError):
        gen.sample([[0, 1]], seed=0)
    with pytest.raises(DataError):
        gen.sample([-1], seed=0)


# ---- safetensors validation ----------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_and_specs(fitted_cvae):
    gen, cfg, _ = fitted_cvae
    return G.to_safetensors(gen), G.expected_tensor_specs("cvae", cfg), cfg


def test_check_safetensors_accepts_the_real_file(weights_and_specs):
    weights, specs, _ = weights_and_specs
    G.check_safetensors(weights, specs)


def _first_two(header):
    names = sorted(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0]
    )
    return names[0], names[1]


@pytest.mark.parametrize(
    "mutate, code",
    [
        (lambda w: struct.pack("<Q", 1 << 40) + w[8:], "E_SAFETENSORS_HEADER"),
        (lambda w: struct.pack("<Q", len(w)) + w[8:], "E_SAFETENSORS_HEADER"),
        (lambda w: w[:5], "E_SAFETENSORS_HEADER"),
        (lambda w: w[:-4], "E_SAFETENSORS_HEADER"),
        (lambda w: w + b"\0\0\0\0", "E_SAFETENSORS_HEADER"),
        (lambda w: struct.pack("<Q", 5) + b'{"a":' + w[13:], "E_SAFETENSORS_HEADER"),
        (
            lambda w: _tamper_header(
                w,
                lambda h: h[_first_two(h)[1]].__setitem__(
                    "data_offsets",
                    [
                        h[_first_two(h)[1]]["data_offsets"][0] - 4,
                        h[_first_two(h)[1]]["data_offsets"][1] - 4,
                    ],
                ),
            ),
            "E_SAFETENSORS_HEADER",
        ),
        (
            lambda w: _tamper_header(
                w,
                lambda h: h.__setitem__(
                    "extra.weight", {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
                ),
            ),
            "E_TENSOR_NAME",
        ),
        (
            lambda w: _tamper_header(
                w, lambda h: h.__setitem__("log_sigma.renamed", h.pop("log_sigma.weight"))
            ),
            "E_TENSOR_NAME",
        ),
        (
            lambda w: _tamper_header(
                w, lambda h: h["log_sigma.weight"].__setitem__("dtype", "I32")
            ),
            "E_TENSOR_DTYPE",
        ),
        (
            lambda w: _tamper_header(
                w,
                lambda h: h["label.weight"].__setitem__(
                    "shape", list(reversed(h["label.weight"]["shape"]))
                ),
            ),
            "E_TENSOR_SHAPE",
        ),
    ],
    ids=[
        "huge-header-len",
        "header-past-end",
        "truncated-prefix",
        "truncated-data",
        "trailing-bytes",
        "bad-json",
        "overlapping-offsets",
        "extra-tensor",
        "missing-tensor",
        "dtype-mismatch",
        "shape-mismatch",
    ],
)
def test_check_safetensors_error_codes(weights_and_specs, mutate, code):
    weights, specs, cfg = weights_and_specs
    bad = mutate(weights)
    with pytest.raises(FormatError) as info:
        G.check_safetensors(bad, specs)
    assert info.value.code == code
    with pytest.raises(FormatError) as again:
        G.from_state("cvae", cfg, bad)
    assert again.value.code == code


def test_missing_tensor_in_a_valid_file_is_refused(weights_and_specs):
    from safetensors.torch import load, save

    weights, specs, _ = weights_and_specs
    tensors = load(weights)
    tensors.pop("log_sigma.weight")
    with pytest.raises(FormatError) as info:
        G.check_safetensors(save(tensors), specs)
    assert info.value.code == "E_TENSOR_NAME"


def test_non_finite_weights_are_refused(weights_and_specs):
    from safetensors.torch import load, save

    weights, _specs, cfg = weights_and_specs
    tensors = load(weights)
    tensors["log_sigma.weight"] = torch.full_like(tensors["log_sigma.weight"], float("nan"))
    with pytest.raises(FormatError) as info:
        G.from_state("cvae", cfg, save(tensors))
    assert info.value.code == "E_TENSOR_VALUE"


def test_weights_of_another_config_are_refused(weights_and_specs):
    weights, _specs, cfg = weights_and_specs
    other = dict(cfg, latent_dim=cfg["latent_dim"] + 1)
    with pytest.raises(FormatError) as info:
        G.from_state("cvae", other, weights)
    assert info.value.code == "E_TENSOR_SHAPE"


# ---- Opacus compatibility ------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(G.FAMILIES))
def test_opacus_validator_accepts_family(family):
    from opacus.validators import ModuleValidator

    for size in ("tiny", "default"):
        model = G.build(
            family, G.default_config(family, image_shape=(3, 28, 28), num_classes=5, size=size)
        ).model
        model.train()
        ModuleValidator.validate(model, strict=True)
        assert not any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()
        )


# ---- ddpm ----------------------------------------------------------------------------------


def test_ddpm_tiny_trains_and_samples_on_cpu(digits):
    x, y = digits
    cfg = G.default_config("ddpm", image_shape=SHAPE, num_classes=10, size="tiny")
    gen = G.build("ddpm", cfg)
    losses = []
    report = gen.fit(
        x[:96],
        y[:96],
        G.TrainSettings(epochs=2, batch_size=32, lr=2e-3, seed=0),
        progress=lambda e, t, loss, eps: losses.append((e, t, loss, eps)),
    )
    assert report.family == "ddpm" and report.steps == 6 and report.dp is None
    assert [step[0] for step in losses] == [1, 2] and all(step[3] is None for step in losses)
    assert all(0 < step[2] < 5 for step in losses)
    out = gen.sample([0, 3, 9], seed=4)
    assert out.shape == (3, *SHAPE) and out.dtype == torch.float32
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    assert torch.equal(out, gen.sample([0, 3, 9], seed=4))
    assert not torch.equal(out, gen.sample([0, 3, 9], seed=5))
    again = G.from_state("ddpm", cfg, G.to_safetensors(gen))
    assert torch.equal(out, again.sample([0, 3, 9], seed=4))
    assert gen.sample([], seed=0).shape == (0, *SHAPE)


def test_ddpm_guidance_and_fit_repeatability(digits):
    x, y = digits
    cfg = dict(
        G.default_config("ddpm", image_shape=SHAPE, num_classes=10, size="tiny"),
        guidance_scale=2.0,
        sample_steps=4,
    )
    settings = G.TrainSettings(epochs=1, batch_size=32, lr=2e-3, seed=2)
    a, b = G.build("ddpm", cfg), G.build("ddpm", cfg)
    a.fit(x[:64], y[:64], settings)
    b.fit(x[:64], y[:64], settings)
    assert G.to_safetensors(a) == G.to_safetensors(b)
    guided = a.sample([1, 2], seed=0)
    plain = G.from_state("ddpm", dict(cfg, guidance_scale=1.0), G.to_safetensors(a)).sample(
        [1, 2], seed=0
    )
    assert guided.shape == plain.shape == (2, *SHAPE)
    assert not torch.equal(guided, plain)


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda c: c.update(sample_steps=c["timesteps"] + 1), "sample_steps"),
        (lambda c: c.update(guidance_scale=3.0, label_dropout=0.0), "label_dropout"),
        (lambda c: c.update(channel_mults=[1, 2, 2, 2]), "channel_mults"),
        (lambda c: c.update(embed_dim=33), "even"),
        (lambda c: c.update(schedule="sigmoid"), "schedule"),
        (
            lambda c: c.update(base_channels=256, channel_mults=[8, 8, 8], num_res_blocks=4),
            "parameters",
        ),
    ],
)
def test_hostile_ddpm_configs_are_refused(edit, fragment):
    cfg = G.default_config("ddpm", image_shape=(1, 28, 28), num_classes=2)
    edit(cfg)
    with pytest.raises(ConfigError) as info:
        G.validate_config("ddpm", cfg)
    assert info.value.code == "E_GENERATOR_CONFIG"
    assert fragment in info.value.message


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_check_finite_finds_nan_and_inf_in_every_float_dtype(dtype):
    from safetensors.torch import save

    from ffsecure.generators.state import TensorValueError, check_finite

    big = torch.finfo(dtype).max
    fine = {
        "a": torch.tensor([0.0, -0.0, big, -big, torch.finfo(dtype).tiny], dtype=dtype),
        "n": torch.arange(6, dtype=torch.int64),
    }
    check_finite(save(fine))  # extremes, zeros and subnormal-adjacent values are finite
    for bad in (float("nan"), float("inf"), float("-inf")):
        tensors = dict(fine, b=torch.tensor([1.0, bad], dtype=dtype))
        with pytest.raises(TensorValueError) as info:
            check_finite(save(tensors), module_id="0" * 32)
        assert info.value.code == "E_TENSOR_VALUE" and info.value.tensor == "b"
        assert "module " + "0" * 32 in info.value.message
