"""Red team: the DP-SGD loss's own randomness must not come from the published seed.

A module manifest publishes ``seed``. ``ffsecure.generators.training.train`` seeds
``model_rng`` (the VAE's reparameterisation noise, the ddpm's timesteps and noise, the
flow's times and noise) from it also under DP, and every family draws that randomness
by position in the batch (``torch.randn(b, ...)``). Whoever knows the seed therefore
knows which draw each batch position gets, and adding one example to a batch shifts
the draws of every example after it (and, through the stream's offset, of every later
step). Conditional on the published stream, one example then moves a step's sum of
clipped gradients by more than the clipping norm C, while the accountant assumes at
most C: its (epsilon, delta) is not proven for what runs. With the stream seeded from
the OS (secret), the draws are i.i.d. and unknown, the usual coupling gives
sensitivity C again.
"""

from __future__ import annotations

import torch

from ffsecure import generators
from ffsecure.dp import DPConfig
from ffsecure.generators import training
from ffsecure.generators.base import TrainSettings


def _clipped_sum(net, cfg, x, y, rng_seed: int, clip: float) -> torch.Tensor:
    """One DP-SGD step's sum of clipped per-example gradients, the cvae loss as fit draws it."""
    rng = torch.Generator().manual_seed(rng_seed)
    eps = torch.randn(x.shape[0], cfg["latent_dim"], generator=rng)  # by batch position
    total = None
    for i in range(x.shape[0]):
        net.zero_grad()
        net(x[i : i + 1], y[i : i + 1], eps[i : i + 1], 1.0).sum().backward()
        g = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
        g = g * min(1.0, clip / float(g.norm()))
        total = g if total is None else total + g
    return total


def test_with_the_published_stream_one_example_moves_a_step_by_more_than_the_clip_norm():
    cfg = generators.default_config("cvae", image_shape=(1, 16, 16), num_classes=2, size="tiny")
    net = generators.build("cvae", cfg).model
    training.init_weights(net, 0)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(9, 1, 16, 16, generator=g) * 2 - 1
    y = torch.randint(0, 2, (9,), generator=g)
    public = training._seed(0, 2)  # what train() seeds model_rng with: the manifest's seed
    without = _clipped_sum(net, cfg, x[1:], y[1:], public, clip=1.0)
    with_x = _clipped_sum(net, cfg, x, y, public, clip=1.0)
    assert float((with_x - without).norm()) > 1.5  # the accountant assumes at most 1.0


def test_under_dp_the_loss_randomness_is_not_the_published_seed_s_stream():
    seen: list[torch.Tensor] = []

    def loss_fn(module, x, y, rng, _frac):
        seen.append(torch.randn(4, generator=rng, device=x.device))
        return module(x.flatten(1)).squeeze(1).pow(2)

    g = torch.Generator().manual_seed(0)
    images = torch.rand(16, 1, 2, 2, generator=g) * 2 - 1
    labels = torch.zeros(16, dtype=torch.int64)
    settings = TrainSettings(epochs=1, batch_size=8, lr=1e-3, seed=7)
    dp = DPConfig(target_epsilon=8.0, delta=1e-3, mechanism="dp-sgd")
    public = torch.randn(4, generator=torch.Generator().manual_seed(training._seed(7, 2)))
    firsts = []
    for _ in range(2):
        seen.clear()
        net = torch.nn.Linear(4, 1)
        training.train(net, images, labels, settings, family="ddpm", loss_fn=loss_fn, dp=dp)
        firsts.append(seen[0])
    assert not torch.equal(firsts[0], public), "DP loss randomness derived from the manifest seed"
    assert not torch.equal(firsts[0], firsts[1])


def test_without_dp_or_with_the_research_switch_the_loss_randomness_stays_seeded():
    seen: list[torch.Tensor] = []

    def loss_fn(module, x, y, rng, _frac):
        seen.append(torch.randn(4, generator=rng, device=x.device))
        return module(x.flatten(1)).squeeze(1).pow(2)

    images = torch.zeros(16, 1, 2, 2)
    labels = torch.zeros(16, dtype=torch.int64)
    settings = TrainSettings(epochs=1, batch_size=8, lr=1e-3, seed=7)
    public = torch.randn(4, generator=torch.Generator().manual_seed(training._seed(7, 2)))
    for dp in (
        None,
        DPConfig(target_epsilon=8.0, delta=1e-3, mechanism="dp-sgd", reproducible=True),
    ):
        seen.clear()
        training.train(
            torch.nn.Linear(4, 1), images, labels, settings, family="ddpm", loss_fn=loss_fn, dp=dp
        )
        assert torch.equal(seen[0], public)
