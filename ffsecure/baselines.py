"""Reference points for FederatedFactory: a centralized upper bound and FedAvg.

* ``centralized``: the same classifier trained on the union of every site's
  real training data (what no federation may do; the upper bound).
* ``fedavg``: McMahan et al. (2017). Each round every site starts from the
  global weights, trains ``local_epochs`` on its own data (same classifier,
  same optimiser as the centralized run, constant learning rate), and the
  server averages the weights (and BatchNorm statistics) in proportion to site
  size. Under a pathological split each site sees one class, so local
  updates pull the shared model toward that class and the average forgets
  the others: the collapse is measured here, not quoted.

Both are deterministic for a seed on the CPU (per-site, per-round seeds are
derived from the run seed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from ffsecure.classifier import (
    TrainConfig,
    TrainResult,
    build_model,
    train_classifier,
    validate_config,
)
from ffsecure.errors import ConfigError
from ffsecure.partition import Partition

# progress(round, rounds)
RoundFn = Callable[[int, int], None]


def centralized(
    cfg: dict[str, Any], x: torch.Tensor, y: torch.Tensor, settings: TrainConfig, progress=None
) -> TrainResult:
    """The classifier trained on all real training data at once."""
    return train_classifier(cfg, x, y, settings, progress=progress)


@dataclass
class FedAvgConfig:
    rounds: int = 10
    local_epochs: int = 1
    lr: float = 2e-3
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FedAvgResult:
    model: torch.nn.Module
    config: dict[str, Any]
    settings: dict[str, Any]
    round_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def average_states(
    states: list[dict[str, torch.Tensor]], weights: list[float]
) -> dict[str, torch.Tensor]:
    """Weighted average of state dicts; integer buffers (BatchNorm step counts) are rounded."""
    total = float(sum(weights))
    if not states or total <= 0:
        raise ConfigError("FedAvg needs at least one site with data")
    out: dict[str, torch.Tensor] = {}
    for key, ref in states[0].items():
        acc = torch.zeros_like(ref, dtype=torch.float64)
        for state, w in zip(states, weights, strict=True):
            acc += state[key].to(torch.float64) * (w / total)
        out[key] = acc.round().to(ref.dtype) if not ref.is_floating_point() else acc.to(ref.dtype)
    return out


def fedavg(
    cfg: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    partition: Partition,
    settings: FedAvgConfig | None = None,
    *,
    progress: RoundFn | None = None,
) -> FedAvgResult:
    """Federated averaging over ``partition`` of the training set ``(x, y)``."""
    settings = settings or FedAvgConfig()
    cfg = validate_config(cfg)
    if settings.rounds < 1 or settings.local_epochs < 1:
        raise ConfigError(
            "FedAvg needs at least one round and one local epoch", hint="pass --fedavg-rounds >= 1"
        )
    start = time.perf_counter()
    global_state = {
        k: v.clone() for k, v in build_model(cfg, seed=settings.seed).state_dict().items()
    }
    sites = [idx for idx in partition.indices if len(idx) > 0]
    sizes = [float(len(idx)) for idx in sites]
    local = TrainConfig(
        epochs=settings.local_epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        augment=False,
        schedule="constant",
        device=settings.device,
    )
    round_losses: list[float] = []
    for r in range(settings.rounds):
        states, losses = [], []
        for s, idx in enumerate(sites):
            ix = torch.as_tensor(idx, dtype=torch.int64)
            seed = settings.seed * 1_000_003 + r * 1_009 + s  # distinct per (run, round, site)
            res = train_classifier(
                cfg, x[ix], y[ix], replace(local, seed=seed), init_state=global_state
            )
            states.append(res.model.state_dict())
            losses.append(res.losses[-1])
        global_state = average_states(states, sizes)
        weighted = sum(loss * n for loss, n in zip(losses, sizes, strict=True))
        round_losses.append(weighted / sum(sizes))
        if progress is not None:
            progress(r + 1, settings.rounds)
    model = build_model(cfg, seed=settings.seed)
    model.load_state_dict(global_state)
    return FedAvgResult(
        model.eval(), cfg, settings.to_dict(), round_losses, time.perf_counter() - start
    )
