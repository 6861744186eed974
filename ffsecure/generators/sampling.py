"""Checks shared by every family's ``sample``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ffsecure.errors import DataError

MAX_SAMPLES_PER_CALL = 1_000_000


def check_labels(labels: Sequence[int] | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels to sample as an int64 CPU tensor; refuse out-of-range or absurd requests."""
    try:
        y = torch.as_tensor(labels, dtype=torch.int64).detach().to("cpu")
    except (TypeError, ValueError, RuntimeError):
        y = None
    if y is None or y.dim() > 1:
        raise DataError(
            "labels to sample must be a 1-D sequence",
            code="E_DATA_FORMAT",
            hint="pass one class index per wanted image",
        )
    y = y.reshape(-1)
    if y.numel() > MAX_SAMPLES_PER_CALL:
        raise DataError(
            f"asked for {y.numel()} samples in one call, more than {MAX_SAMPLES_PER_CALL}",
            code="E_DATA_FORMAT",
            hint="sample in smaller batches",
        )
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"labels to sample must be in [0, {num_classes - 1}]",
            code="E_DATA_FORMAT",
            hint="use class indices of the federation's label space",
        )
    return y
