"""DP-SGD noise and Poisson sampling from the OS CSPRNG (ffsecure.dprandom)."""

from __future__ import annotations

import math

import pytest
import torch

from ffsecure import dprandom


def test_uniforms_are_strictly_inside_the_unit_interval_and_never_repeat():
    u = dprandom.uniform(200_000)
    assert u.dtype == torch.float64 and bool((u > 0).all()) and bool((u < 1).all())
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    assert not torch.equal(u[:1000], dprandom.uniform(1000))


def test_gaussian_noise_has_the_asked_deviation_the_reference_dtype_and_shape():
    ref = torch.zeros(300, 1000, dtype=torch.float32)
    z = dprandom.gaussian_noise(2.5, ref)
    assert z.shape == ref.shape and z.dtype == torch.float32
    assert abs(float(z.mean())) < 0.02 and float(z.std()) == pytest.approx(2.5, rel=0.01)
    kurtosis = float(((z / z.std()) ** 4).mean())
    assert kurtosis == pytest.approx(3.0, abs=0.05)  # Gaussian, not uniform (1.8)
    assert not torch.equal(z, dprandom.gaussian_noise(2.5, ref))
    assert torch.equal(dprandom.gaussian_noise(0.0, ref), ref)


def test_poisson_sampler_draws_each_record_with_the_sample_rate():
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    sampler = UniformWithReplacementSampler(num_samples=1000, sample_rate=0.1, steps=50)
    sampler.__class__ = dprandom.OsPoissonSampler
    batches = list(sampler)
    assert len(batches) == 50 and all(b == sorted(set(b)) for b in batches)
    mean = sum(map(len, batches)) / 50
    assert abs(mean - 100) < 4 * math.sqrt(1000 * 0.1 * 0.9 / 50)
    assert batches != list(sampler)


def test_only_the_plain_opacus_optimizer_and_poisson_loader_are_switched():
    with pytest.raises(RuntimeError, match="only DPOptimizer with Poisson sampling"):
        dprandom.use_os_randomness(
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1),
            torch.utils.data.DataLoader([1, 2, 3]),
        )
