"""Class-conditional diffusion model (DDPM training, DDIM sampling) with a small UNet.

* UNet of GroupNorm residual blocks over ``len(channel_mults)`` resolutions
  (at most three: H, H/2, H/4), with a sinusoidal time embedding through an
  MLP and a class embedding added to it; every layer is one Opacus supports
  (Conv2d, Linear, GroupNorm, Embedding), and each is called once per
  forward pass, as per-sample gradient hooks require.
* Training: the epsilon-prediction objective of Ho et al. (2020) on a cosine
  (Nichol & Dhariwal 2021) or linear noise schedule with ``timesteps``
  steps, one loss per example. With ``label_dropout > 0`` the class is
  replaced by a learned "no class" token at that rate, which enables
  classifier-free guidance (Ho & Salimans 2022) at sampling time.
* Sampling: deterministic DDIM (eta = 0, Song et al. 2021) over
  ``sample_steps`` evenly spaced timesteps; the only randomness is the
  initial noise, drawn from a local generator seeded by ``seed``.
  ``guidance_scale`` = 1 is plain conditional sampling; > 1 extrapolates
  away from the unconditional prediction.

The noise schedule is computed from the config, not stored, so the weights
file holds learned parameters only. The sampler's keys (:data:`SAMPLING_KEYS`) are
read by ``sample`` only: whoever holds the weights may sample them under any value,
so the site's privacy check also measures under :func:`reference_samplers`, whatever
the manifest says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ffsecure.generators import training
from ffsecure.generators.base import Generator, ProgressFn, TrainReport, TrainSettings
from ffsecure.generators.sampling import check_labels
from ffsecure.generators.schema import Choice, Float, ImageShape, Int, IntList, config_error

SAMPLE_CHUNK = 256

# The UNet's own keys, shared with the flow family (ffsecure/generators/flow.py).
UNET_SCHEMA = {
    "image_shape": ImageShape(),
    "num_classes": Int(1, 1000),
    "base_channels": Int(8, 256),
    "channel_mults": IntList(1, 3, 1, 8),
    "num_res_blocks": Int(1, 4),
    "embed_dim": Int(16, 1024),
    "groups": Int(1, 32),
}

SCHEMA = {
    **UNET_SCHEMA,
    "timesteps": Int(10, 4000),
    "schedule": Choice(("cosine", "linear")),
    "sample_steps": Int(1, 4000),
    "guidance_scale": Float(1.0, 20.0),
    "label_dropout": Float(0.0, 0.5),
}

SIZES = {
    "tiny": {
        "base_channels": 8,
        "channel_mults": [1, 2],
        "num_res_blocks": 1,
        "embed_dim": 32,
        "groups": 4,
        "timesteps": 100,
        "sample_steps": 10,
        "guidance_scale": 1.0,
        "label_dropout": 0.1,
    },
    "default": {
        "base_channels": 32,
        "channel_mults": [1, 2, 2],
        "num_res_blocks": 1,
        "embed_dim": 128,
        "groups": 8,
        "timesteps": 1000,
        "sample_steps": 50,
        "guidance_scale": 1.5,
        "label_dropout": 0.1,
    },
    "full": {
        "base_channels": 64,
        "channel_mults": [1, 2, 2],
        "num_res_blocks": 2,
        "embed_dim": 256,
        "groups": 8,
        "timesteps": 1000,
        "sample_steps": 100,
        "guidance_scale": 1.5,
        "label_dropout": 0.1,
    },
}

TRAIN_SETTINGS = {
    "tiny": {"epochs": 2, "batch_size": 32, "lr": 2e-3},
    "default": {"epochs": 40, "batch_size": 64, "lr": 1e-3},
    "full": {"epochs": 100, "batch_size": 128, "lr": 2e-4},
}

#: Config keys that only :meth:`DDPM.sample` reads: training never does, so the same weights
#: sample under any value of them (``timesteps`` and ``schedule`` are trained with).
SAMPLING_KEYS = frozenset({"sample_steps", "guidance_scale"})
# The samplers the privacy check measures besides the manifest's (docs/privacy.md has the
# sweep behind them): ten DDIM steps, where the figures had settled (10, 25 and 50 steps
# agreed to 0.003; fewer steps return noisy images, which show no near-copy), valid for every
# schedule (timesteps >= 10); and, where the model can be guided, guidance 3.
STANDARD_SAMPLER = {"sample_steps": 10, "guidance_scale": 1.0}
GUIDED_SCALE = 3.0


def default_config(*, image_shape: Sequence[int], num_classes: int, size: str) -> dict[str, Any]:
    return {
        "image_shape": [int(v) for v in image_shape],
        "num_classes": int(num_classes),
        "schedule": "cosine",
        **SIZES[size],
    }


def check_unet_config(config: dict[str, Any]) -> None:
    """Cross-key rules of the UNet and of classifier-free guidance (ddpm and flow)."""
    _c, h, w = config["image_shape"]
    levels = len(config["channel_mults"])
    if h % (2 ** (levels - 1)) or w % (2 ** (levels - 1)):
        raise config_error(f"image size {h}x{w} cannot be halved {levels - 1} times")
    for mult in config["channel_mults"]:
        if (config["base_channels"] * mult) % config["groups"]:
            raise config_error("base_channels * every channel_mult must be a multiple of groups")
    if config["guidance_scale"] != 1.0 and config["label_dropout"] == 0.0:
        raise config_error(
            "guidance_scale other than 1 needs label_dropout > 0 (an unconditional model)"
        )
    if config["embed_dim"] % 2:
        raise config_error("embed_dim must be even")


def extra_checks(config: dict[str, Any]) -> None:
    check_unet_config(config)
    if config["sample_steps"] > config["timesteps"]:
        raise config_error(
            f"sample_steps {config['sample_steps']} exceeds timesteps {config['timesteps']}"
        )


def reference_samplers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Named settings of :data:`SAMPLING_KEYS` the privacy check measures ``config``'s weights
    under, fixed here: ``standard``, and ``guided`` for a model trained to be guided
    (``label_dropout`` > 0)."""
    samplers = {"standard": dict(STANDARD_SAMPLER)}
    if config["label_dropout"] > 0:
        samplers["guided"] = {**STANDARD_SAMPLER, "guidance_scale": GUIDED_SCALE}
    return samplers


def alphas_cumprod(schedule: str, timesteps: int) -> torch.Tensor:
    """Cumulative signal fractions ``abar_t`` for t = 0..T-1 (float64)."""
    if schedule == "cosine":
        s = 0.008
        t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    else:
        scale = 1000.0 / timesteps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.emb = nn.Linear(emb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.skip(x) if self.skip is not None else x)


class UNet(nn.Module):
    """Predicts the noise in ``x_t`` given the timestep and the class
    (``num_classes`` = no class)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        c = config["image_shape"][0]
        base, e, g = config["base_channels"], config["embed_dim"], config["groups"]
        chans = [base * m for m in config["channel_mults"]]
        self.embed_dim = e
        self.null_class = config["num_classes"]
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.class_emb = nn.Embedding(config["num_classes"] + 1, e)
        self.conv_in = nn.Conv2d(c, chans[0], 3, 1, 1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = chans[0]
        for i, ch in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(config["num_res_blocks"]):
                blocks.append(ResBlock(prev, ch, e, g))
                prev = ch
            self.down.append(blocks)
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, 2, 1))
        self.mid1 = ResBlock(prev, prev, e, g)
        self.mid2 = ResBlock(prev, prev, e, g)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(chans))):
            ch = chans[i]
            if i < len(chans) - 1:
                self.upsample.append(nn.Conv2d(prev, ch, 3, 1, 1))
                prev = ch
            blocks = nn.ModuleList()
            for j in range(config["num_res_blocks"]):
                blocks.append(ResBlock(prev + ch if j == 0 else ch, ch, e, g))
                prev = ch
            self.up.append(blocks)
        self.norm_out = nn.GroupNorm(g, prev)
        self.conv_out = nn.Conv2d(prev, c, 3, 1, 1)

    def reset_extra(self) -> None:
        with torch.no_grad():  # start as the zero predictor's neighbour: small output layer
            self.conv_out.weight.mul_(0.1)
            if self.conv_out.bias is not None:  # always: Conv2d's default bias=True
                self.conv_out.bias.zero_()

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.embed_dim)) + self.class_emb(y)
        h = self.conv_in(x)
        skips = []
        for i, blocks in enumerate(self.down):
            for block in cast(nn.ModuleList, blocks):  # a ModuleList of ResBlocks
                h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid2(self.mid1(h, emb), emb)
        for k, blocks in enumerate(self.up):
            if k > 0:
                h = self.upsample[k - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = torch.cat([h, skips.pop()], dim=1)
            for block in cast(nn.ModuleList, blocks):  # a ModuleList of ResBlocks
                h = block(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class DDPM(Generator):
    family = "ddpm"

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self._net = UNet(self.config)

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
        abar = alphas_cumprod(cfg["schedule"], cfg["timesteps"]).float().to(settings.device)
        drop = cfg["label_dropout"]

        def loss_fn(module, x, y, rng, _frac):
            b = x.shape[0]
            t = torch.randint(0, cfg["timesteps"], (b,), generator=rng, device=x.device)
            noise = torch.randn(x.shape, generator=rng, device=x.device)
            if drop > 0:
                mask = torch.rand(b, generator=rng, device=x.device) < drop
                y = torch.where(mask, torch.full_like(y, cfg["num_classes"]), y)
            a = abar[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x + (1 - a).sqrt() * noise
            return (module(xt, t, y) - noise).pow(2).flatten(1).mean(dim=1)

        return training.train(
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

    @torch.no_grad()
    def sample(
        self, labels: Sequence[int] | torch.Tensor, seed: int, *, device: str = "cpu"
    ) -> torch.Tensor:
        cfg = self.config
        y = check_labels(labels, cfg["num_classes"]).to(device)
        net = self._net.to(device).eval()
        rng = torch.Generator(device=device).manual_seed(int(seed))
        noise = torch.randn(y.shape[0], *cfg["image_shape"], generator=rng, device=device)
        abar = alphas_cumprod(cfg["schedule"], cfg["timesteps"])
        steps = (
            torch.linspace(cfg["timesteps"] - 1, 0, cfg["sample_steps"], dtype=torch.float64)
            .round()
            .long()
        )
        steps = torch.unique_consecutive(steps).tolist()
        chunks = [
            self._ddim(net, noise[i : i + SAMPLE_CHUNK], y[i : i + SAMPLE_CHUNK], abar, steps)
            for i in range(0, y.shape[0], SAMPLE_CHUNK)
        ]
        net.to("cpu")
        if not chunks:
            return torch.empty(0, *cfg["image_shape"])
        return torch.cat(chunks).to("cpu", torch.float32)

    def _ddim(
        self, net: UNet, x: torch.Tensor, y: torch.Tensor, abar: torch.Tensor, steps: list[int]
    ) -> torch.Tensor:
        scale = self.config["guidance_scale"]
        null = torch.full_like(y, self.config["num_classes"])
        x0 = x
        for i, t in enumerate(steps):
            a = float(abar[t])
            a_prev = float(abar[steps[i + 1]]) if i + 1 < len(steps) else 1.0
            tt = torch.full_like(y, t)
            if scale != 1.0:
                both = net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null]))
                cond, uncond = both.chunk(2)
                eps = uncond + scale * (cond - uncond)
            else:
                eps = net(x, tt, y)
            x0 = ((x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1.0, 1.0)
            eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
            x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
        return x0
