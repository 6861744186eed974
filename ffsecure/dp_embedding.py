"""DP mean-embedding mechanism (DP-MERF): one noisy release, a generator fit to it for free.

Harder et al. 2021 ("DP-MERF"), the family DPImageBench lists as DP-MERF/DP-NTK:
instead of adding noise to every gradient step (DP-SGD), a site releases once
a low-dimensional statistic of its data and fits its generator to that
statistic; the fit is post-processing and costs no privacy.

Features. ``phi(x)`` is data-independent and public: random Fourier features
of the pixels (Rahimi and Recht 2007) of an RBF kernel of length scale
``bandwidth * sqrt(d)`` (``d`` pixels), drawn from ``feature_seed`` (a public
seed, recorded in the module's signed DP record: the features are not secret,
only the noise is), plus one constant component ``count_weight``::

    phi(x) = [a, sqrt(1 - a^2) / sqrt(D) * cos(W x), sqrt(1 - a^2) / sqrt(D) * sin(W x)]

so ``||phi(x)||_2 = 1`` exactly for every ``x`` (``cos^2 + sin^2 = 1``), and
the first component of a class's sum is ``a`` times its count.

Release. For every class ``c`` the site holds, ``S[c] = sum_{y_i = c} phi(x_i)``
plus ``N(0, sigma^2 I)`` noise from the OS CSPRNG (:func:`ffsecure.dprandom.gaussian_noise`;
never from a seed unless ``reproducible``, the research switch). Adding or
removing one example changes one column by ``phi(x)``, norm 1: the L2
sensitivity of the whole release is 1, so it is one Gaussian mechanism with
noise multiplier ``sigma``. Its (epsilon, delta) is what Opacus' accountant
gives for ``noise_multiplier = sigma, sample_rate = 1, steps = 1``
(:func:`ffsecure.dp.compute_epsilon`), and ``sigma`` is Opacus' own search for
the target (:func:`ffsecure.dp.plan_mean_embedding`); so the DP claim has the
existing format and :func:`ffsecure.dp.reaccount_claim` and the audit's
``dp-claims`` check re-account it unchanged.

Fit. The generator is the ``cvae`` family's decoder with its learned class
prior (the sampling path of :meth:`ffsecure.generators.cvae.CVAE.sample`), so
the module is an ordinary ``cvae`` package (same config, tensors, sampling,
determinism). It minimises ``||mean phi(G(z, c)) - S_noisy[c] / n_noisy[c]||^2``
summed over the site's classes; the encoder is left at its seeded
initialisation (it never sees data). Progress is reported every few percent
of the steps, with the epsilon spent (all of it, at the release).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ffsecure import dp as dpmod
from ffsecure.errors import ConfigError
from ffsecure.generators.base import ProgressFn, TrainReport, TrainSettings

__all__ = [
    "DEFAULT_FEATURES",
    "FIT_DEFAULTS",
    "FeatureSpec",
    "NoisyEmbedding",
    "features",
    "fit_cvae",
    "release",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSpec:
    """The public feature map: seed, number of frequencies, length scale, count weight."""

    seed: int = 0
    n_features: int = 1000
    bandwidth: float = 0.5
    count_weight: float = 0.5

    def __post_init__(self) -> None:
        dpmod.check_feature_map(**self.record())  # rows of norm 1, or E_DP

    def record(self) -> dict[str, Any]:
        """The flat fields the signed DP record carries (``Scalars`` only)."""
        return {
            "feature_seed": self.seed,
            "n_features": self.n_features,
            "feature_bandwidth": self.bandwidth,
            "count_weight": self.count_weight,
        }


#: Chosen on scikit-learn digits (public), see docs/privacy.md "Mean-embedding defaults".
DEFAULT_FEATURES = FeatureSpec()
#: Generator fit: samples per class per step, Adam learning rate (chosen on digits); the step
#: count is ``TrainSettings.embedding_steps`` (the family's size sets it).
FIT_DEFAULTS = {"batch": 128, "lr": 2e-3}


def _frequencies(spec: FeatureSpec, dim: int) -> torch.Tensor:
    """``W`` of shape ``(dim, D)``: N(0, 1 / (bandwidth^2 dim)), from the public seed only."""
    rng = torch.Generator().manual_seed(int(spec.seed))
    scale = 1.0 / (float(spec.bandwidth) * math.sqrt(dim))
    return torch.randn(dim, spec.n_features, generator=rng, dtype=torch.float32) * scale


def features(x: torch.Tensor, spec: FeatureSpec, w: torch.Tensor | None = None) -> torch.Tensor:
    """``phi(x)`` for a batch ``(N, C, H, W)``: ``(N, 1 + 2D)``, every row of norm exactly 1."""
    flat = x.reshape(x.shape[0], -1).to(torch.float32)
    w = _frequencies(spec, flat.shape[1]) if w is None else w
    proj = flat @ w
    a = float(spec.count_weight)
    scale = math.sqrt(1.0 - a * a) / math.sqrt(spec.n_features)
    const = torch.full((flat.shape[0], 1), a, dtype=proj.dtype)
    return torch.cat([const, scale * torch.cos(proj), scale * torch.sin(proj)], dim=1)


@dataclass(frozen=True)
class NoisyEmbedding:
    """The released statistic: per class, the noisy sum; what the fit reads."""

    classes: list[int]
    sums: torch.Tensor  # (len(classes), 1 + 2D), noise included

    def targets(self, spec: FeatureSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """Per class: the noisy mean embedding (without the constant) and the noisy count (>= 1)."""
        counts = (self.sums[:, 0] / float(spec.count_weight)).clamp(min=1.0)
        return self.sums[:, 1:] / counts[:, None], counts


def class_sums(
    images: torch.Tensor, labels: torch.Tensor, spec: FeatureSpec, classes: list[int]
) -> torch.Tensor:
    """``S[c] = sum_{y_i = c} phi(x_i)`` for each class in ``classes``, before any noise."""
    w = _frequencies(spec, int(images[0].numel()))
    out = torch.zeros(len(classes), 1 + 2 * spec.n_features, dtype=torch.float64)
    for start in range(0, images.shape[0], 1024):
        phi = features(images[start : start + 1024], spec, w).double()
        y = labels[start : start + 1024]
        for row, c in enumerate(classes):
            out[row] += phi[y == c].sum(dim=0)
    return out


def release(
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: FeatureSpec,
    sigma: float,
    *,
    noise_seed: int | None = None,
) -> NoisyEmbedding:
    """The one DP release: per-class sums plus N(0, sigma^2) noise from the OS CSPRNG.

    ``noise_seed`` (research only, ``reproducible``) draws the noise from a seeded
    generator instead; a site never sets it.
    """
    # heavy: opacus (dprandom imports it), only when a DP release is made
    from ffsecure import dprandom

    classes = sorted({int(v) for v in labels})
    sums = class_sums(images, labels, spec, classes)
    if noise_seed is None:
        noise = dprandom.gaussian_noise(float(sigma), sums)
    else:
        rng = torch.Generator().manual_seed(int(noise_seed))
        noise = torch.randn(sums.shape, generator=rng, dtype=torch.float64) * float(sigma)
    return NoisyEmbedding(classes=classes, sums=(sums + noise).float())


def _sample_train(net: Any, y: torch.Tensor, eps: torch.Tensor, temperature: float):
    """The cvae sampling path of ``CVAE.sample``, with gradients (what the fit trains)."""
    cond, prior_mu, prior_logvar = net._split(net.label(y))
    z = prior_mu + temperature * torch.exp(0.5 * prior_logvar) * eps
    return net.decode(z, cond)


def fit_cvae(
    gen: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
    dp_plan: dpmod.DPPlan,
    *,
    spec: FeatureSpec = DEFAULT_FEATURES,
    reproducible: bool = False,
    progress: ProgressFn | None = None,
    fit: dict[str, Any] | None = None,
) -> TrainReport:
    """Release the noisy embedding of ``images`` once, then fit ``gen``'s decoder to it."""
    # heavy-free: generators.training imports torch only
    from ffsecure.generators import training

    start = time.perf_counter()
    fit = {**FIT_DEFAULTS, "steps": settings.embedding_steps, **(fit or {})}
    if not isinstance(fit["steps"], int) or not 1 <= fit["steps"] <= dpmod.MAX_STEPS:
        raise ConfigError(
            f"embedding_steps must be an integer in [1, {dpmod.MAX_STEPS}], got {fit['steps']!r}",
            code="E_TRAIN_SETTINGS",
            hint="use the family's default (TrainSettings.embedding_steps)",
        )
    noisy = release(
        images,
        labels,
        spec,
        dp_plan.noise_multiplier,
        noise_seed=training._seed(settings.seed, 4) if reproducible else None,
    )
    epsilon = dpmod.compute_epsilon(
        noise_multiplier=dp_plan.noise_multiplier,
        sample_rate=dp_plan.sample_rate,
        steps=dp_plan.steps,
        delta=dp_plan.delta,
        accountant=dp_plan.accountant,
    )
    del images, labels  # nothing below reads the data: the rest is post-processing
    net = gen.model
    training.init_weights(net, settings.seed)
    net.train()
    history = _fit_decoder(net, gen.config, noisy, spec, settings, fit, epsilon, progress)
    net.eval()
    report = dp_plan.report(epsilon)
    report.update(mechanism="mean-embedding", **spec.record())
    if reproducible:
        report["reproducible"] = True
    return TrainReport(
        family=gen.family,
        epochs=1,
        steps=int(fit["steps"]),
        final_loss=history[-1],
        seconds=time.perf_counter() - start,
        dp=report,
        history=history,
    )


def _fit_decoder(
    net: Any,
    config: dict[str, Any],
    noisy: NoisyEmbedding,
    spec: FeatureSpec,
    settings: TrainSettings,
    fit: dict[str, Any],
    epsilon: float,
    progress: ProgressFn | None,
) -> list[float]:
    """Adam on ``sum_c ||mean phi(G(z, c)) - target_c||^2``; returns the loss per progress block."""
    targets, _counts = noisy.targets(spec)
    dim = math.prod(config["image_shape"])
    w = _frequencies(spec, dim)
    rng = torch.Generator().manual_seed(training_seed(settings.seed))
    params = [p for name, p in net.named_parameters() if not name.startswith(("encoder", "enc_"))]
    optimizer = torch.optim.Adam(params, lr=float(fit["lr"]))
    steps, batch = int(fit["steps"]), int(fit["batch"])
    y = torch.tensor(noisy.classes, dtype=torch.int64).repeat_interleave(batch)
    every = dpmod.progress_interval(steps)
    history: list[float] = []
    running = 0.0
    report_line = _progress_logger(progress, steps, epsilon)
    for step in range(1, steps + 1):
        eps = torch.randn(y.shape[0], config["latent_dim"], generator=rng)
        fake = _sample_train(net, y, eps, float(config["temperature"]))
        mean_phi = features(fake, spec, w)[:, 1:].view(len(noisy.classes), batch, -1).mean(1)
        loss = (mean_phi - targets).pow(2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += float(loss.detach())
        if step % every == 0 or step == steps:
            history.append(running / (every if step % every == 0 else step % every))
            running = 0.0
            report_line(step, history[-1])
    return history


def training_seed(seed: int) -> int:
    """The latent-noise stream of the fit (public: it only drives the generator's own sampling)."""
    return (int(seed) * 1_000_003 + 2 * 7919) % (2**63 - 1)


def _progress_logger(
    progress: ProgressFn | None, steps: int, epsilon: float
) -> Callable[[int, float], None]:
    def line(step: int, loss: float) -> None:
        dpmod.log_progress(log, "mean-embedding", step, steps, epsilon, " (at the release)")
        if progress is not None:
            progress(step, steps, loss, epsilon)

    return line
