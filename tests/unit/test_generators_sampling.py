"""Each generator family declares the config keys only its sampler reads and the reference
samplers the privacy check measures under (ffsecure.generators.sampler_variants).

Whoever holds a module's weights samples them as they like, so the site's privacy check must
not depend on the sampler a federation manifest names: these keys are the ones an aggregator
may change without retraining, and the reference samplers are fixed by the library.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from ffsecure import generators as G

torch.set_num_threads(2)

SHAPE = (1, 16, 16)


def _family_module(family: str):
    return importlib.import_module(f"ffsecure.generators.{family}")


def _guidable(family: str, size: str = "tiny") -> dict:
    """The family's config at ``size``, trained to be guidable (label dropout) where it can be."""
    config = G.default_config(family, image_shape=SHAPE, num_classes=10, size=size)
    if "label_dropout" in config:
        config["label_dropout"] = 0.1
    return config


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """64 scikit-learn digits at 1x16x16 in [-1, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:64], dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    x = F.interpolate(x, size=SHAPE[1:], mode="bilinear", align_corners=False).clamp(-1, 1)
    return x, torch.tensor(d.target[:64], dtype=torch.int64)


@pytest.mark.parametrize("family", sorted(G.FAMILIES))
def test_every_family_declares_sampling_keys_of_its_own_config_schema(family):
    keys = G.sampling_keys(family)
    assert keys and keys <= set(_family_module(family).SCHEMA)
    # the architecture never depends on them: the same tensors under any value
    config = _guidable(family)
    for settings in _family_module(family).reference_samplers(config).values():
        assert set(settings) == keys
        assert G.expected_tensor_specs(family, {**config, **settings}) == (
            G.expected_tensor_specs(family, config)
        )


def test_the_sampling_keys_are_the_sampler_settings_of_each_family():
    assert G.sampling_keys("flow") == {"solver", "sample_steps", "guidance_scale"}
    assert G.sampling_keys("ddpm") == {"sample_steps", "guidance_scale"}
    assert G.sampling_keys("cvae") == {"temperature"}


@pytest.mark.parametrize("family", sorted(G.FAMILIES))
def test_changing_a_sampling_key_changes_no_trained_tensor(family, digits):
    """Two fits that differ in every sampling key give the same weights, bit for bit."""
    config = _guidable(family)
    references = list(_family_module(family).reference_samplers(config).values())
    other = next(s for s in references if any(config[k] != v for k, v in s.items()))
    settings = G.TrainSettings(epochs=1, batch_size=32, lr=2e-3, seed=3)
    fitted = []
    for sampler in ({}, other):
        gen = G.build(family, {**config, **sampler})
        gen.fit(*digits, settings)
        fitted.append(gen.model.state_dict())
    assert fitted[0].keys() == fitted[1].keys()
    for name, tensor in fitted[0].items():
        assert torch.equal(tensor, fitted[1][name]), name


@pytest.mark.parametrize("family", sorted(G.FAMILIES))
@pytest.mark.parametrize("size", ["tiny", "default", "full"])
def test_sampler_variants_share_the_weights_and_differ_in_sampling_keys_only(family, size):
    gen = G.build(family, _guidable(family, size))
    variants = G.sampler_variants(gen)
    assert next(iter(variants)) == "manifest" and variants["manifest"] is gen
    keys = G.sampling_keys(family)
    seen = []
    for name, variant in variants.items():
        assert variant.model is gen.model, name
        assert {k: v for k, v in variant.config.items() if k not in keys} == {
            k: v for k, v in gen.config.items() if k not in keys
        }
        settings = {k: variant.config[k] for k in keys}
        assert settings not in seen, f"{name} samples as an earlier sampler does"
        seen.append(settings)
    assert gen.config == _guidable(family, size)  # the manifest's config is left as it was


def test_the_reference_samplers_do_not_depend_on_the_manifest():
    """A manifest's sampler adds a variant; it never removes or changes a reference one."""
    base = G.build("flow", G.default_config("flow", image_shape=SHAPE, num_classes=10))
    hostile = G.build("flow", {**base.config, "sample_steps": 1})
    assert set(G.sampler_variants(hostile)) == {"manifest", "standard", "coarse"}
    reference = G.sampler_variants(hostile)["standard"].config
    assert reference["sample_steps"] == 8 and reference["solver"] == "heun"
    # the default size's own sampler is the standard one: measured once, as the manifest's
    assert set(G.sampler_variants(base)) == {"manifest", "coarse"}
    guided = G.build("flow", {**base.config, "label_dropout": 0.1})
    assert G.sampler_variants(guided)["guided"].config["guidance_scale"] == 3.0


@pytest.mark.parametrize("family", sorted(G.FAMILIES))
def test_every_reference_sampler_samples_differently(family):
    gen = G.build(family, _guidable(family))
    labels = torch.arange(4)
    drawn = {name: v.sample(labels, seed=5) for name, v in G.sampler_variants(gen).items()}
    names = sorted(drawn)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.equal(drawn[a], drawn[b]), (a, b)
