"""Convolutional conditional VAE: the fast default generator family.

Architecture (all Opacus-compatible layers: Conv2d, Linear, GroupNorm,
Embedding; no BatchNorm, no transposed convolutions):

* encoder: three 3x3/4x4 convolutions (stride 1, 2, 2) -> ``(c2, H/4, W/4)``,
  flattened, joined with a label embedding, an MLP -> ``(mu, logvar)``;
* decoder: ``(z, label embedding)`` -> MLP -> ``(c2, H/4, W/4)`` -> two
  nearest-neighbour upsamplings, each followed by convolutions -> ``tanh``;
* a learned Gaussian prior per class ``p(z|y) = N(m_y, s_y^2)`` (config
  ``prior = "learned"``), so that classes occupy their own latent regions;
* a Gaussian likelihood with a learned per-channel scale ("sigma-VAE",
  Rybkin et al. 2021), which balances reconstruction against the KL term
  without a hand-tuned beta, and a linear KL warm-up.

Sampling draws ``z = m_y + temperature * s_y * eps`` with ``eps`` from a
local seeded generator. The default 1.0 samples the learned prior as
trained: a temperature below 1 trades diversity for sample quality, and the
classifier trained on the synthetic set loses by it (``benchmarks.temperature``
on BreastMNIST, pathological split, five paired seeds: mean accuracy 0.783 at
0.8, 0.817 at 1.0, 0.804 at 1.2; docs/simulate.md).

The temperature (:data:`SAMPLING_KEYS`) is read by ``sample``; gradient training
never reads it (the mean-embedding fit of :mod:`ffsecure.dp_embedding` fits the
decoder at it), so whoever holds the weights may sample them at any temperature,
and the site's privacy check also measures under :func:`reference_samplers`,
whatever the manifest says.

The label embedding and the likelihood scale are single ``Embedding``
layers called once per forward pass, as Opacus' per-sample gradient hooks
require.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ffsecure import dp as dpmod
from ffsecure import dp_embedding
from ffsecure.generators import training
from ffsecure.generators.base import Generator, ProgressFn, TrainReport, TrainSettings
from ffsecure.generators.sampling import check_labels
from ffsecure.generators.schema import Choice, Float, ImageShape, Int, IntList, config_error

MIN_LOG_SIGMA = math.log(0.01)
# The likelihood scale starts at 1 and is learned at the plain Adam rate, so it
# falls to its optimum (about 0.1 for MedMNIST) over the first epochs: early
# training is then dominated by the KL term and the model learns class
# structure through the label and the class prior before it spends latent
# capacity on detail. Starting it low (0.2) let the latent code carry the
# class and the per-class prior stop separating classes (measured on
# pneumoniamnist: synthetic-trained accuracy 0.61 instead of 0.83).
INIT_SIGMA = 1.0
SIGMA_RATE = 1.0
SAMPLE_CHUNK = 512

SCHEMA = {
    "image_shape": ImageShape(),
    "num_classes": Int(1, 1000),
    "latent_dim": Int(2, 256),
    "channels": IntList(2, 2, 4, 256),
    "hidden": Int(16, 2048),
    "embed_dim": Int(4, 256),
    "groups": Int(1, 32),
    "prior": Choice(("learned", "standard")),
    "temperature": Float(0.05, 2.0),
    "kl_warmup": Float(0.0, 1.0),
}

SIZES = {
    "tiny": {"latent_dim": 8, "channels": [8, 16], "hidden": 64, "embed_dim": 8, "groups": 4},
    "default": {
        "latent_dim": 24,
        "channels": [16, 32],
        "hidden": 256,
        "embed_dim": 32,
        "groups": 8,
    },
    "full": {"latent_dim": 32, "channels": [64, 128], "hidden": 512, "embed_dim": 64, "groups": 8},
}

TRAIN_SETTINGS = {
    "tiny": {"epochs": 3, "batch_size": 32, "lr": 3e-3, "embedding_steps": 40},
    "default": {"epochs": 20, "batch_size": 64, "lr": 2e-3, "embedding_steps": 300},
    "full": {"epochs": 60, "batch_size": 64, "lr": 1e-3, "embedding_steps": 1000},
}

#: Config keys that :meth:`CVAE.sample` reads and gradient training does not: the same weights
#: sample under any value of them.
SAMPLING_KEYS = frozenset({"temperature"})
# The temperatures the privacy check measures besides the manifest's (docs/privacy.md has the
# sweep behind them): the prior as trained (1.0), colder and hotter. Which way a memorizing
# module's figures move depends on the module (in the sweep's, near-copies rose from 0.68 at
# 1.0 to 0.73 at 0.5 and the nearest-sample AUROC from 0.96 to 0.98 at 1.5; in another,
# near-copies fell at 0.5), so both sides are measured.
REFERENCE_TEMPERATURES = {"standard": 1.0, "cold": 0.5, "hot": 1.5}


def default_config(*, image_shape: Sequence[int], num_classes: int, size: str) -> dict[str, Any]:
    return {
        "image_shape": [int(v) for v in image_shape],
        "num_classes": int(num_classes),
        **SIZES[size],
        "prior": "learned",
        "temperature": 1.0,
        "kl_warmup": 0.3,
    }


def extra_checks(config: dict[str, Any]) -> None:
    for c in config["channels"]:
        if c % config["groups"]:
            raise config_error(
                f"channels {config['channels']} must be multiples of groups={config['groups']}"
            )


def reference_samplers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Named settings of :data:`SAMPLING_KEYS` the privacy check measures ``config``'s weights
    under, fixed here (the same for every config)."""
    return {name: {"temperature": value} for name, value in REFERENCE_TEMPERATURES.items()}


def _mechanism(dp: Any, images: torch.Tensor) -> str:
    return dpmod.resolve_mechanism(
        getattr(dp, "mechanism", "auto"),
        "cvae",
        int(images.shape[0]),
        getattr(dp, "target_epsilon", None),
    )


def _gn(groups: int, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels)


class CVAENet(nn.Module):
    """The torch module; ``forward`` returns one training loss per example."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        c, h, w = config["image_shape"]
        c1, c2 = config["channels"]
        g = config["groups"]
        self.image_shape = (c, h, w)
        self.latent_dim = zd = config["latent_dim"]
        self.embed_dim = e = config["embed_dim"]
        self.learned_prior = config["prior"] == "learned"
        self.feat_shape = (c2, h // 4, w // 4)
        feat = c2 * (h // 4) * (w // 4)
        hid = config["hidden"]
        # one embedding row per class: encoder/decoder conditioning (+ prior mean and log-variance)
        self.label = nn.Embedding(config["num_classes"], e + (2 * zd if self.learned_prior else 0))
        self.encoder = nn.Sequential(
            nn.Conv2d(c, c1, 3, 1, 1),
            _gn(g, c1),
            nn.SiLU(),
            nn.Conv2d(c1, c1, 4, 2, 1),
            _gn(g, c1),
            nn.SiLU(),
            nn.Conv2d(c1, c2, 4, 2, 1),
            _gn(g, c2),
            nn.SiLU(),
            nn.Flatten(),
        )
        self.enc_mlp = nn.Sequential(nn.Linear(feat + e, hid), nn.SiLU(), nn.Linear(hid, 2 * zd))
        self.dec_mlp = nn.Sequential(nn.Linear(zd + e, hid), nn.SiLU(), nn.Linear(hid, feat))
        self.decoder = nn.Sequential(
            _gn(g, c2),
            nn.SiLU(),
            nn.Conv2d(c2, c2, 3, 1, 1),
            _gn(g, c2),
            nn.SiLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c2, c1, 3, 1, 1),
            _gn(g, c1),
            nn.SiLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c1, c1, 3, 1, 1),
            _gn(g, c1),
            nn.SiLU(),
            nn.Conv2d(c1, c, 3, 1, 1),
        )
        # learned per-channel log-scale of the Gaussian likelihood (sigma-VAE)
        self.log_sigma = nn.Embedding(1, c)

    def reset_extra(self) -> None:
        with torch.no_grad():
            self.log_sigma.weight.fill_(math.log(INIT_SIGMA) / SIGMA_RATE)
            if self.learned_prior:
                # start the class priors at N(0, I) with small offsets
                self.label.weight[:, self.embed_dim + self.latent_dim :].zero_()
                self.label.weight[:, self.embed_dim : self.embed_dim + self.latent_dim].mul_(0.1)

    def _split(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e, zd = self.embed_dim, self.latent_dim
        cond = emb[:, :e]
        if self.learned_prior:
            return cond, emb[:, e : e + zd], emb[:, e + zd :].clamp(-6.0, 4.0)
        zeros = torch.zeros(emb.shape[0], zd, device=emb.device, dtype=emb.dtype)
        return cond, zeros, zeros

    def decode(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        feat = self.dec_mlp(torch.cat([z, cond], dim=1)).view(-1, *self.feat_shape)
        return torch.tanh(self.decoder(feat))

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, beta: float
    ) -> torch.Tensor:
        emb = self.label(y)
        cond, prior_mu, prior_logvar = self._split(emb)
        stats = self.enc_mlp(torch.cat([self.encoder(x), cond], dim=1))
        mu, logvar = stats[:, : self.latent_dim], stats[:, self.latent_dim :].clamp(-10.0, 6.0)
        z = mu + torch.exp(0.5 * logvar) * eps
        recon = self.decode(z, cond)
        raw = self.log_sigma(torch.zeros_like(y))  # (B, C)
        log_sigma = MIN_LOG_SIGMA + F.softplus(SIGMA_RATE * raw - MIN_LOG_SIGMA)
        _, h, w = self.image_shape
        sq = (x - recon).pow(2).sum(dim=(2, 3))  # (B, C)
        nll = (0.5 * sq * torch.exp(-2.0 * log_sigma) + h * w * log_sigma).sum(dim=1)
        kl = 0.5 * (
            prior_logvar
            - logvar
            + (torch.exp(logvar) + (mu - prior_mu).pow(2)) * torch.exp(-prior_logvar)
            - 1.0
        ).sum(dim=1)
        return (nll + beta * kl) / float(math.prod(self.image_shape))


class CVAE(Generator):
    family = "cvae"

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self._net = CVAENet(self.config)

    @property
    def model(self) -> nn.Module:
        return self._net

    def fit(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        settings: TrainSettings,
        *,
        dp: Any | None = None,
        progress: ProgressFn | None = None,
    ) -> TrainReport:
        images, labels = training.check_data(
            images, labels, self.config["image_shape"], self.config["num_classes"]
        )
        if dp is not None and _mechanism(dp, images) == "mean-embedding":
            return dp_embedding.fit_cvae(
                self,
                images,
                labels,
                settings,
                dpmod.plan_mean_embedding(dp, n=int(images.shape[0])),
                reproducible=dp.reproducible is True,
                progress=progress,
            )
        warmup = self.config["kl_warmup"]

        def loss_fn(module, x, y, rng, frac):
            eps = torch.randn(x.shape[0], self.config["latent_dim"], generator=rng, device=x.device)
            beta = 1.0 if warmup <= 0 else min(1.0, frac / warmup)
            return module(x, y, eps, beta)

        return training.train(
            self._net,
            images,
            labels,
            settings,
            family=self.family,
            loss_fn=loss_fn,
            dp=dp,
            progress=progress,
            grad_clip=None if dp is not None else 10.0,
        )

    @torch.no_grad()
    def sample(
        self, labels: Sequence[int] | torch.Tensor, seed: int, *, device: str = "cpu"
    ) -> torch.Tensor:
        y = check_labels(labels, self.config["num_classes"]).to(device)
        net = self._net.to(device).eval()
        rng = torch.Generator(device=device).manual_seed(int(seed))
        eps = torch.randn(y.shape[0], self.config["latent_dim"], generator=rng, device=device)
        if y.shape[0] == 0:
            return torch.empty(0, *self.config["image_shape"])
        chunks = []
        for start in range(0, y.shape[0], SAMPLE_CHUNK):
            yc = y[start : start + SAMPLE_CHUNK]
            cond, prior_mu, prior_logvar = net._split(net.label(yc))
            z = (
                prior_mu
                + self.config["temperature"]
                * torch.exp(0.5 * prior_logvar)
                * eps[start : start + SAMPLE_CHUNK]
            )
            chunks.append(net.decode(z, cond).clamp(-1.0, 1.0).to("cpu", torch.float32))
        net.to("cpu")
        return torch.cat(chunks)
