"""The interface every generator family implements.

Conventions shared by the whole pipeline:

* images are ``float32`` tensors of shape ``(N, C, H, W)`` with values in
  ``[-1, 1]``; labels are ``int64`` class indices in the federation's label
  space (``0 .. num_classes-1``), not site-local indices;
* a generator is fully described by ``(family, config)`` plus its weights as
  safetensors; :func:`ffsecure.generators.from_state` rebuilds it from those
  alone, and no pickle is ever involved;
* ``sample(labels, seed)`` is deterministic for a given seed on a given
  device type, so that a synthesized dataset can be regenerated exactly from
  its recipe (module ids + seeds).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TrainSettings:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    device: str = "cpu"
    # generator-fit steps of the DP mean-embedding mechanism (ffsecure.dp_embedding)
    embedding_steps: int = 300


@dataclass
class TrainReport:
    family: str
    epochs: int
    steps: int
    final_loss: float
    seconds: float
    dp: dict[str, Any] | None = None  # DP parameters and achieved epsilon, or None
    history: list[float] = field(default_factory=list)


# progress(epoch, total_epochs, loss, epsilon_or_None)
ProgressFn = Callable[[int, int, float, "float | None"], None]


class Generator(abc.ABC):
    """A class-conditional generator module."""

    family: str

    def __init__(self, config: dict[str, Any]):
        self.config = dict(config)

    @property
    @abc.abstractmethod
    def model(self) -> torch.nn.Module:
        """The underlying torch module (what DP-SGD wraps and safetensors stores)."""

    @abc.abstractmethod
    def fit(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        settings: TrainSettings,
        *,
        dp: Any | None = None,
        progress: ProgressFn | None = None,
    ) -> TrainReport:
        """Train on ``images`` (N,C,H,W in [-1,1]) and global ``labels``."""

    @abc.abstractmethod
    def sample(
        self, labels: Sequence[int] | torch.Tensor, seed: int, *, device: str = "cpu"
    ) -> torch.Tensor:
        """Return one image per label, (len(labels),C,H,W) in [-1,1]; deterministic per seed."""
