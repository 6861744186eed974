"""DP-SGD randomness drawn from the operating system's CSPRNG, with no seed anywhere.

Why this module exists: the privacy of DP-SGD rests on two secrets, the
Gaussian noise added to each step's summed clipped gradient and the Poisson
sampling that picks each step's batch (amplification by subsampling assumes
the batch is hidden). Whoever can reproduce either one can subtract the noise
or read the batch, and the (epsilon, delta) claim then protects against
nobody. A module's manifest publishes its training ``seed`` (for weight
initialisation), so neither secret may ever be derived from it.

Opacus offers this as ``PrivacyEngine(secure_mode=True)``, but that mode
imports ``torchcsprng``, which has no build for the torch this project pins
(Opacus 1.6.0 skips its own secure-mode tests for that reason). This module
supplies the same two sources of randomness from ``os.urandom`` (Linux:
``getrandom(2)``, the kernel's ChaCha20 CSPRNG) and plugs them into exactly
the two places Opacus draws them:

- :class:`OsNoiseDPOptimizer` overrides ``DPOptimizer.add_noise``;
- :class:`OsPoissonSampler` overrides ``UniformWithReplacementSampler.__iter__``.

:func:`use_os_randomness` switches the optimizer and the loader that
``PrivacyEngine.make_private`` returned to these classes (they add no state),
and refuses any other Opacus class (an Opacus upgrade that changes the
classes fails loudly instead of silently falling back to a seeded generator).

Properties (what a verifier can rely on, and what it cannot):

- Fresh OS randomness on every draw: each step's noise and each step's batch
  mask read new bytes from the kernel. There is no seed, no key and no
  generator state in this process to log, store, sign or recover later; two
  runs of one configuration differ.
- Uniforms: 53 independent random bits per double, ``(k + 0.5) * 2**-53``,
  so never 0 or 1. A record is in a batch iff its uniform is below the
  sample rate (as Opacus' sampler), i.e. with probability ``q`` up to 2**-53.
- Gaussian noise: Box-Muller in float64 (both outputs used). As Opacus'
  secure mode does against floating-point attacks on the noise (Mironov 2012;
  Holohan and Braghin 2021, section 5.1), each noise value is the sum of four
  such samples divided by two (same variance), then cast to the gradient's
  dtype. This makes the low-order bits of the noise hard to invert; it is not
  an exact discrete Gaussian, and the float32 sum ``gradient + noise`` still
  rounds (docs/privacy.md states the caveat).
- Single samples are bounded by ``sqrt(2 * 53 * ln 2)`` ~ 8.6 standard
  deviations (the smallest uniform); the sum of four reaches 17. The DP
  accounting assumes an untruncated Gaussian; the mass cut off is below 1e-17.
- Cost: 32 bytes of OS randomness per noise value (four Gaussians), read in
  one ``os.urandom`` call per parameter tensor.
"""

from __future__ import annotations

import math
import os

import torch
from opacus.data_loader import DPDataLoader
from opacus.optimizers.optimizer import (
    DPOptimizer,
    _check_processed_flag,
    _mark_as_processed,
)
from opacus.utils.uniform_sampler import UniformWithReplacementSampler

__all__ = [
    "OsNoiseDPOptimizer",
    "OsPoissonSampler",
    "gaussian_noise",
    "uniform",
    "use_os_randomness",
]

_MASK_53 = (1 << 53) - 1
#: Gaussian samples summed per noise value (Opacus secure_mode: 2n with n = 2), divided by 2.
_SUMMANDS = 4


def uniform(count: int) -> torch.Tensor:
    """``count`` float64 uniforms in (0, 1), 53 random bits each, from the OS CSPRNG."""
    raw = torch.frombuffer(bytearray(os.urandom(8 * count)), dtype=torch.int64)
    mantissa = (raw >> 11) & _MASK_53  # arithmetic shift: mask off the sign extension
    return (mantissa.to(torch.float64) + 0.5) * 2.0**-53


def _standard_normal(count: int) -> torch.Tensor:
    """``count`` float64 N(0, 1) samples by Box-Muller on OS uniforms."""
    half = (count + 1) // 2
    u = uniform(2 * half)
    radius = torch.sqrt(-2.0 * torch.log(u[:half]))
    angle = (2.0 * math.pi) * u[half:]
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])[:count]


def gaussian_noise(std: float, reference: torch.Tensor) -> torch.Tensor:
    """N(0, std^2) noise shaped, typed and placed like ``reference`` (sum of 4 samples / 2)."""
    if std == 0:
        return torch.zeros_like(reference)
    n = reference.numel()
    z = _standard_normal(_SUMMANDS * n).view(_SUMMANDS, n).sum(dim=0) / 2.0
    return (z * float(std)).to(dtype=reference.dtype).view(reference.shape).to(reference.device)


class OsNoiseDPOptimizer(DPOptimizer):
    """Opacus' flat-clipping DPOptimizer whose noise comes from the OS CSPRNG."""

    def add_noise(self) -> None:
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            noise = gaussian_noise(self.noise_multiplier * self.max_grad_norm, p.summed_grad)
            p.grad = (p.summed_grad + noise).view_as(p)
            _mark_as_processed(p.summed_grad)


class OsPoissonSampler(UniformWithReplacementSampler):
    """Opacus' Poisson batch sampler whose coin flips come from the OS CSPRNG."""

    def __iter__(self):
        for _ in range(self.steps):
            mask = uniform(self.num_samples) < self.sample_rate
            yield mask.nonzero(as_tuple=False).reshape(-1).tolist()


def use_os_randomness(optimizer: DPOptimizer, loader: DPDataLoader) -> None:
    """Switch what ``make_private`` returned to OS noise and OS Poisson sampling, in place.

    Raises ``RuntimeError`` for any other Opacus class than the plain flat-clipping
    optimizer and the single-process Poisson loader, so that nothing runs seeded.
    """
    sampler = getattr(loader, "batch_sampler", None)
    if (
        sampler is None
        or type(optimizer) is not DPOptimizer
        or type(sampler) is not UniformWithReplacementSampler
    ):
        raise RuntimeError(
            f"cannot draw DP randomness from the OS for {type(optimizer).__name__} / "
            f"{type(sampler).__name__}: only DPOptimizer with Poisson sampling is supported"
        )
    optimizer.__class__ = OsNoiseDPOptimizer
    optimizer.generator = None
    sampler.__class__ = OsPoissonSampler
    sampler.generator = None
