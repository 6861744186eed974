"""Class-conditional flow matching (rectified flow) with a small UNet and an EMA of the weights.

* Model: the GroupNorm UNet of :mod:`ffsecure.generators.ddpm` (Conv2d,
  Linear, GroupNorm, Embedding only, each called once per forward pass, so
  Opacus can wrap it), fed a continuous time ``t`` in [0, 1] scaled by
  ``TIME_SCALE`` into the same sinusoidal embedding. It predicts a velocity.
* Training (Lipman et al. 2023; Liu et al. 2023): ``x_t = (1 - t) x0 + t x1``
  with ``x0`` Gaussian noise and ``x1`` a training image, target velocity
  ``x1 - x0``, one squared error per example. ``t`` is uniform or
  logit-normal (Esser et al. 2024: more weight on the middle of the path,
  where the velocity is hardest to predict). With ``label_dropout > 0`` the
  class is replaced by a "no class" token at that rate, which enables
  classifier-free guidance.
* Weight averaging: an exponential moving average of the weights with decay
  ``min(ema_decay, (1 + k) / (10 + k))`` after step ``k`` (the warm-up keeps
  a short fit from averaging in its random start). The average replaces the
  trained weights at the end of ``fit``: what is saved, signed and sampled is
  the EMA. Under DP-SGD the average is post-processing of the private
  iterates, so the guarantee is unchanged. The shared training loop
  (:mod:`ffsecure.generators.training`) has no per-step hook, so the average
  is folded in at the start of each step's loss, from the weights the
  previous step left, and once more after the last step.
* Sampling: a deterministic ODE solve from ``t = 0`` (noise) to ``t = 1``
  over ``sample_steps`` equal steps, Euler or Heun (Heun's last step is an
  Euler step, as in Karras et al. 2022); the only randomness is the initial
  noise, drawn from a local generator seeded by ``seed``, so a sample is
  bit-identical per seed on the CPU (the exact-unlearning contract).
  ``guidance_scale`` = 1 is plain conditional sampling.

The config names the architecture and the sampler exactly; no schedule is
stored, so the weights file holds learned parameters only (the UNet's). The
sampler's keys (:data:`SAMPLING_KEYS`) are read by ``sample`` only: whoever holds
the weights may sample them under any value, so the site's privacy check also
measures under :func:`reference_samplers`, whatever the manifest says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ffsecure.generators import ddpm, training
from ffsecure.generators.base import Generator, ProgressFn, TrainReport, TrainSettings
from ffsecure.generators.sampling import check_labels
from ffsecure.generators.schema import Choice, Float, Int

SAMPLE_CHUNK = 256
TIME_SCALE = 1000.0  # t in [0, 1] -> the sinusoidal embedding's usual range
EMA_WARMUP = 10.0

SCHEMA = {
    **ddpm.UNET_SCHEMA,
    "time_sampling": Choice(("uniform", "logit_normal")),
    "solver": Choice(("euler", "heun")),
    "sample_steps": Int(1, 256),
    "guidance_scale": Float(1.0, 20.0),
    "label_dropout": Float(0.0, 0.5),
    "ema_decay": Float(0.0, 0.9999),
}

SIZES = {
    "tiny": {
        "base_channels": 8,
        "channel_mults": [1, 2],
        "num_res_blocks": 1,
        "embed_dim": 32,
        "groups": 4,
        "solver": "heun",
        "sample_steps": 4,
        "guidance_scale": 1.0,
        "label_dropout": 0.0,
        "ema_decay": 0.99,
    },
    "default": {
        "base_channels": 16,
        "channel_mults": [1, 2, 2],
        "num_res_blocks": 1,
        "embed_dim": 64,
        "groups": 8,
        "solver": "heun",
        "sample_steps": 8,
        "guidance_scale": 1.0,
        "label_dropout": 0.0,
        "ema_decay": 0.995,
    },
    "full": {
        "base_channels": 64,
        "channel_mults": [1, 2, 2],
        "num_res_blocks": 2,
        "embed_dim": 256,
        "groups": 8,
        "solver": "heun",
        "sample_steps": 32,
        "guidance_scale": 1.0,
        "label_dropout": 0.0,
        "ema_decay": 0.999,
    },
}

TRAIN_SETTINGS = {
    "tiny": {"epochs": 2, "batch_size": 32, "lr": 2e-3},
    "default": {"epochs": 40, "batch_size": 64, "lr": 2e-3},
    "full": {"epochs": 100, "batch_size": 128, "lr": 5e-4},
}

#: Config keys that only :meth:`Flow.sample` reads: training never does, so the same weights
#: sample under any value of them.
SAMPLING_KEYS = frozenset({"solver", "sample_steps", "guidance_scale"})
# The samplers the privacy check measures besides the manifest's (docs/privacy.md has the
# sweep behind them): the default size's Heun solve; a two-step Euler solve, which showed the
# most near-copies of every step count in each memorizing module measured (one step shows
# none: it returns the class average); and, where the model can be guided, guidance 3.
STANDARD_SAMPLER = {key: SIZES["default"][key] for key in SAMPLING_KEYS}
COARSE_SAMPLER = {"solver": "euler", "sample_steps": 2, "guidance_scale": 1.0}
GUIDED_SCALE = 3.0


def default_config(*, image_shape: Sequence[int], num_classes: int, size: str) -> dict[str, Any]:
    return {
        "image_shape": [int(v) for v in image_shape],
        "num_classes": int(num_classes),
        "time_sampling": "logit_normal",
        **SIZES[size],
    }


def extra_checks(config: dict[str, Any]) -> None:
    ddpm.check_unet_config(config)


def reference_samplers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Named settings of :data:`SAMPLING_KEYS` the privacy check measures ``config``'s weights
    under, fixed here: ``standard``, ``coarse``, and ``guided`` for a model trained to be
    guided (``label_dropout`` > 0)."""
    samplers = {"standard": dict(STANDARD_SAMPLER), "coarse": dict(COARSE_SAMPLER)}
    if config["label_dropout"] > 0:
        samplers["guided"] = {**STANDARD_SAMPLER, "guidance_scale": GUIDED_SCALE}
    return samplers


class FlowNet(ddpm.UNet):
    """The UNet as a velocity field: ``forward(x_t, t, y)`` with ``t`` in [0, 1]
    (``y`` = ``num_classes`` is the "no class" token)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return super().forward(x, t.float() * TIME_SCALE, y)


def flow_losses(
    module: nn.Module, x1: torch.Tensor, y: torch.Tensor, t: torch.Tensor, x0: torch.Tensor
) -> torch.Tensor:
    """Per-example flow-matching error at times ``t`` (B,) from noise ``x0`` to images ``x1``."""
    tt = t.view(-1, 1, 1, 1)
    xt = (1.0 - tt) * x0 + tt * x1
    return (module(xt, t, y) - (x1 - x0)).pow(2).flatten(1).mean(dim=1)


class _WeightAverage:
    """EMA of a module's parameters with the warm-up ``(1 + k) / (10 + k)``."""

    def __init__(self, net: nn.Module, decay: float):
        self.net, self.decay = net, decay
        self.shadow: list[torch.Tensor] | None = None
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        params = [p.detach() for p in self.net.parameters()]
        if self.shadow is None:
            self.shadow = [p.clone() for p in params]
            return
        rate = min(self.decay, (1.0 + self.updates) / (EMA_WARMUP + self.updates))
        for avg, p in zip(self.shadow, params, strict=True):
            avg.lerp_(p.to(avg.device), 1.0 - rate)
        self.updates += 1

    @torch.no_grad()
    def copy_to_net(self) -> None:
        if self.shadow is None:  # pragma: no cover - fit always takes a step
            return
        for avg, p in zip(self.shadow, self.net.parameters(), strict=True):
            p.copy_(avg.to(p.device))


class Flow(Generator):
    family = "flow"

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self._net = FlowNet(self.config)

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
        cfg = self.config
        images, labels = training.check_data(images, labels, cfg["image_shape"], cfg["num_classes"])
        drop, null = cfg["label_dropout"], cfg["num_classes"]
        average = _WeightAverage(self._net, cfg["ema_decay"])

        def loss_fn(module, x, y, rng, _frac):
            average.update()  # the weights the previous step left
            b = x.shape[0]
            if cfg["time_sampling"] == "logit_normal":
                t = torch.sigmoid(torch.randn(b, generator=rng, device=x.device))
            else:
                t = torch.rand(b, generator=rng, device=x.device)
            noise = torch.randn(x.shape, generator=rng, device=x.device)
            if drop > 0:
                mask = torch.rand(b, generator=rng, device=x.device) < drop
                y = torch.where(mask, torch.full_like(y, null), y)
            return flow_losses(module, x, y, t, noise)

        report = training.train(
            self._net,
            images,
            labels,
            settings,
            family=self.family,
            loss_fn=loss_fn,
            dp=dp,
            progress=progress,
            grad_clip=None if dp is not None else 1.0,
        )
        average.update()  # the weights of the last step
        average.copy_to_net()
        self._net.eval()
        return report

    @torch.no_grad()
    def sample(
        self, labels: Sequence[int] | torch.Tensor, seed: int, *, device: str = "cpu"
    ) -> torch.Tensor:
        cfg = self.config
        y = check_labels(labels, cfg["num_classes"]).to(device)
        net = self._net.to(device).eval()
        rng = torch.Generator(device=device).manual_seed(int(seed))
        noise = torch.randn(y.shape[0], *cfg["image_shape"], generator=rng, device=device)
        chunks = [
            self._solve(net, noise[i : i + SAMPLE_CHUNK], y[i : i + SAMPLE_CHUNK])
            for i in range(0, y.shape[0], SAMPLE_CHUNK)
        ]
        net.to("cpu")
        if not chunks:
            return torch.empty(0, *cfg["image_shape"])
        return torch.cat(chunks).clamp(-1.0, 1.0).to("cpu", torch.float32)

    def _velocity(self, net: FlowNet, x: torch.Tensor, t: float, y: torch.Tensor) -> torch.Tensor:
        tt = torch.full((y.shape[0],), t, device=x.device)
        scale = self.config["guidance_scale"]
        if scale == 1.0:
            return net(x, tt, y)
        null = torch.full_like(y, self.config["num_classes"])
        cond, uncond = net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null])).chunk(2)
        return uncond + scale * (cond - uncond)

    def _solve(self, net: FlowNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        steps = self.config["sample_steps"]
        heun = self.config["solver"] == "heun"
        for i in range(steps):
            t, dt = i / steps, 1.0 / steps
            v = self._velocity(net, x, t, y)
            if heun and i + 1 < steps:
                v_next = self._velocity(net, x + dt * v, t + dt, y)
                v = 0.5 * (v + v_next)
            x = x + dt * v
        return x
