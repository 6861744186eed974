"""Memorization: how close generated samples come to the training images.

For each generated sample the distance to its nearest training image
(``d_gen``) is compared with the same distance for real images the generator
never saw (``d_holdout``). A generator that only learned the distribution
produces samples about as far from the training set as fresh real images
are; one that memorized produces samples much closer: copies.

Distances are root-mean-square pixel differences in the pipeline's ``[-1, 1]``
scale (L2 divided by ``sqrt(C*H*W)``), so a threshold means the same for every
image size. Figures:

* ``ratio``: median ``d_gen`` / median ``d_holdout`` (well below 1 = copying);
* ``near_copy_fraction``: the fraction of generated samples closer to a
  training image than ``near_copy_threshold``, which by default is the 1%
  quantile of ``d_holdout``: a sample nearer to a training image than 99% of
  unseen real images are is counted as a near-copy. With no memorization about
  1% of samples pass it by chance (fewer for blurrier generators).
  ``near_copy_quantile`` names the quantile used, None when the threshold was given
  by hand: the privacy policy counts a near-copy fraction only at the quantile rule
  (:func:`ffsecure.privacy.policy.measurement_problem`).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ffsecure.errors import DataError
from ffsecure.files import write_secret_file
from ffsecure.plots import _pyplot, _to_display
from ffsecure.privacy.report import NEAR_COPY_QUANTILE


def _flat(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] == 0:
        raise DataError(
            "images must be a non-empty (N, C, H, W) tensor",
            code="E_DATA_FORMAT",
            hint="pass images in the pipeline's tensor layout",
        )
    return x.detach().to("cpu", torch.float32).reshape(x.shape[0], -1)


def nearest(
    queries: torch.Tensor, reference: torch.Tensor, *, k: int = 1, chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMS distance and index of the ``k`` nearest ``reference`` images of every
    query: ``(N, k)`` each."""
    q, r = _flat(queries), _flat(reference)
    if q.shape[1] != r.shape[1]:
        raise DataError(
            f"queries have {q.shape[1]} values per image, the reference {r.shape[1]}",
            code="E_DATA_FORMAT",
            hint="compare images of the same shape",
        )
    k = min(k, r.shape[0])
    scale = 1.0 / math.sqrt(q.shape[1])
    dists, idxs = [], []
    r64 = r.double()
    for start in range(0, q.shape[0], chunk):
        d = torch.cdist(q[start : start + chunk].double(), r64)
        val, idx = torch.topk(d, k, dim=1, largest=False)
        dists.append(val * scale)
        idxs.append(idx)
    return torch.cat(dists).float(), torch.cat(idxs)


def memorization(
    generated: torch.Tensor,
    train: torch.Tensor,
    holdout: torch.Tensor,
    *,
    threshold: float | None = None,
    quantile: float = NEAR_COPY_QUANTILE,
) -> dict[str, Any]:
    """Distances of ``generated`` and ``holdout`` images to their nearest
    ``train`` image, and the figures.

    Returns the summary figures plus ``d_gen``/``nn_gen`` tensors (per generated
    sample: distance and index of the nearest training image) for plotting.
    """
    if not 0 < quantile < 1:
        raise DataError(
            f"quantile must be in (0, 1), got {quantile!r}",
            code="E_DATA_FORMAT",
            hint="use e.g. 0.01",
        )
    d_gen, nn_gen = nearest(generated, train)
    d_hold, _ = nearest(holdout, train)
    d_gen, nn_gen, d_hold = d_gen[:, 0], nn_gen[:, 0], d_hold[:, 0]
    tau = (
        float(torch.quantile(d_hold.double(), quantile)) if threshold is None else float(threshold)
    )
    med_gen, med_hold = float(d_gen.median()), float(d_hold.median())
    return {
        "generated": int(d_gen.numel()),
        "holdout": int(d_hold.numel()),
        "train": int(train.shape[0]),
        "median_distance_generated": med_gen,
        "median_distance_holdout": med_hold,
        "min_distance_generated": float(d_gen.min()),
        "ratio": med_gen / med_hold if med_hold > 0 else float("inf"),
        "near_copy_threshold": tau,
        "near_copy_quantile": None if threshold is not None else quantile,
        "near_copy_fraction": float((d_gen < tau).double().mean()),
        "holdout_below_threshold": float((d_hold < tau).double().mean()),
        "d_gen": d_gen,
        "nn_gen": nn_gen,
    }


def closest_pairs_png(
    path: str | Path,
    generated: torch.Tensor,
    train: torch.Tensor,
    d_gen: torch.Tensor,
    nn_gen: torch.Tensor,
    *,
    n: int = 12,
    threshold: float | None = None,
    title: str | None = None,
) -> Path:
    """A PNG of the ``n`` generated samples closest to a training image, above
    those training images."""
    plt = _pyplot()
    order = torch.argsort(d_gen)[: max(1, min(n, d_gen.numel()))].tolist()
    fig, axes = plt.subplots(2, len(order), figsize=(len(order) * 0.9 + 1.0, 2.6), squeeze=False)
    for col, i in enumerate(order):
        for row, img in enumerate((generated[i], train[int(nn_gen[i])])):
            ax = axes[row][col]
            ax.imshow(_to_display(img), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            copy = threshold is not None and float(d_gen[i]) < threshold
            for spine in ax.spines.values():
                spine.set_color("red" if copy else "black")
                spine.set_linewidth(2.0 if copy else 0.5)
        axes[1][col].set_xlabel(f"{float(d_gen[i]):.3f}", fontsize=7)
    axes[0][0].set_ylabel("generated", fontsize=7)
    axes[1][0].set_ylabel("nearest\ntraining", fontsize=7)
    fig.suptitle(
        title or "closest generated/training pairs (RMS distance; red = near-copy)", fontsize=8
    )
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)
    write_secret_file(out, png.getvalue())  # 0600: it shows training images as they are
    return out


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready part of :func:`memorization`'s result (no tensors)."""
    return {k: v for k, v in result.items() if not isinstance(v, (torch.Tensor, np.ndarray))}
