"""Memorization: how close generated samples come to the training images.

For each generated sample the distance to its nearest training image
(``d_gen``) is compared with the same distance for real images the generator
never saw (``d_holdout``). A generator that only learned the distribution
produces samples about as far from the training set as fresh real images
are; one that memorized produces samples much closer: copies.

The training set searched is every training image of the module's classes, never a
subsample (the membership attack may subsample for its cost; this test must not): a copy
of an image left out of the search would be measured against its neighbours and not
counted, so a subsample of ``n`` of ``N`` images shrinks the near-copy fraction by about
``n / N``. :func:`nearest` searches exhaustively in chunks; the held-out distances are
computed once per check (:func:`reference`) and every sampler's samples are measured
against them (:func:`measure`).

Distances are root-mean-square pixel differences in the pipeline's ``[-1, 1]``
scale (L2 divided by ``sqrt(C*H*W)``), so a threshold means the same for every
image size. Figures:

* ``ratio``: median ``d_gen`` / median ``d_holdout`` (well below 1 = copying);
* ``near_copy_fraction``: the fraction of generated samples closer to a
  training image than ``near_copy_threshold``, which by default is the 1%
  quantile of ``d_holdout``: a sample nearer to a training image than 99% of
  unseen real images are is counted as a near-copy. With no memorization about
  1% of samples pass it by chance (fewer for blurrier generators). A held-out
  image nearer to a training image than the floor
  (:data:`~ffsecure.privacy.report.NEAR_COPY_FLOOR`) duplicates it (the same patient's
  repeat image on both sides of a split) and is no unseen image: it does not set the
  threshold, which is the quantile of the others (``near_copy_holdout`` of them) and so
  never below the floor. Otherwise a few duplicates in the held-out split shrink the
  threshold until no copy counts. Too few held-out images beyond the floor leave the
  quantile meaningless: the privacy policy then refuses the figure.
  ``near_copy_quantile`` names the quantile used, None when the threshold was given
  by hand: the privacy policy counts a near-copy fraction only at the quantile rule
  (:func:`ffsecure.privacy.policy.measurement_problem`).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ffsecure.errors import DataError
from ffsecure.files import write_secret_file
from ffsecure.plots import _pyplot, _to_display
from ffsecure.privacy.report import NEAR_COPY_FLOOR, NEAR_COPY_QUANTILE


def _flat(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] == 0:
        raise DataError(
            "images must be a non-empty (N, C, H, W) tensor",
            code="E_DATA_FORMAT",
            hint="pass images in the pipeline's tensor layout",
        )
    return x.detach().to("cpu", torch.float32).reshape(x.shape[0], -1)


def nearest(
    queries: torch.Tensor,
    reference: torch.Tensor,
    *,
    k: int = 1,
    chunk: int = 512,
    reference_chunk: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMS distance and index of the ``k`` nearest ``reference`` images of every
    query: ``(N, k)`` each.

    Exhaustive: every query against every reference image, ``chunk`` queries by
    ``reference_chunk`` references at a time (in float64, so that a duplicate reads as a
    distance of about 0, not float32 noise), so the memory it needs is bounded by the chunks
    and not by the reference set's size.
    """
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
    for start in range(0, q.shape[0], chunk):
        best_d, best_i = _nearest_chunk(q[start : start + chunk].double(), r, k, reference_chunk)
        dists.append(best_d * scale)
        idxs.append(best_i)
    return torch.cat(dists).float(), torch.cat(idxs)


def _nearest_chunk(
    q64: torch.Tensor, r: torch.Tensor, k: int, reference_chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest of ``r`` to each row of ``q64`` (L2, unscaled), over ``r`` in chunks."""
    best_d = torch.empty(q64.shape[0], 0, dtype=torch.float64)
    best_i = torch.empty(q64.shape[0], 0, dtype=torch.int64)
    for start in range(0, r.shape[0], reference_chunk):
        d = torch.cdist(q64, r[start : start + reference_chunk].double())
        val, idx = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False)
        best_d = torch.cat([best_d, val], dim=1)
        best_i = torch.cat([best_i, idx + start], dim=1)
        if best_d.shape[1] > k:
            best_d, keep = torch.topk(best_d, k, dim=1, largest=False)
            best_i = torch.gather(best_i, 1, keep)
    return best_d, best_i


@dataclass(frozen=True)
class NearCopyReference:
    """What every sampler's samples are measured against: the training images searched, the
    held-out images' distances to them and the threshold those give (:func:`reference`)."""

    train: torch.Tensor  # every training image searched for a sample's nearest
    d_holdout: torch.Tensor  # per held-out image: RMS distance to its nearest training image
    threshold: float
    quantile: float | None  # None: the threshold was set by hand

    @property
    def unseen(self) -> torch.Tensor:
        return _unseen(self.d_holdout)


def _unseen(d_holdout: torch.Tensor) -> torch.Tensor:
    """The held-out distances at or beyond the floor: those the threshold is a quantile of (a
    held-out image nearer to a training image duplicates it)."""
    return d_holdout[d_holdout >= NEAR_COPY_FLOOR]


def reference(
    train: torch.Tensor,
    holdout: torch.Tensor,
    *,
    threshold: float | None = None,
    quantile: float = NEAR_COPY_QUANTILE,
) -> NearCopyReference:
    """The held-out images' distances to their nearest ``train`` image and the near-copy
    threshold: ``threshold`` when given, else the ``quantile`` of the distances at or beyond
    the floor (:data:`~ffsecure.privacy.report.NEAR_COPY_FLOOR`; the floor itself when none
    is). Computed once per check: it does not depend on the samples."""
    if not 0 < quantile < 1:
        raise DataError(
            f"quantile must be in (0, 1), got {quantile!r}",
            code="E_DATA_FORMAT",
            hint="use e.g. 0.01",
        )
    d_hold = nearest(holdout, train)[0][:, 0]
    if threshold is not None:
        return NearCopyReference(train, d_hold, float(threshold), None)
    unseen = _unseen(d_hold)
    tau = float(torch.quantile(unseen.double(), quantile)) if unseen.numel() else 0.0
    return NearCopyReference(train, d_hold, max(tau, NEAR_COPY_FLOOR), quantile)


def measure(generated: torch.Tensor, ref: NearCopyReference) -> dict[str, Any]:
    """Distances of ``generated`` images to their nearest training image of ``ref``, and the
    figures against ``ref``'s held-out distances.

    Returns the summary figures plus ``d_gen``/``nn_gen`` tensors (per generated
    sample: distance and index of the nearest training image) for plotting.
    """
    d_gen, nn_gen = nearest(generated, ref.train)
    d_gen, nn_gen, d_hold, tau = d_gen[:, 0], nn_gen[:, 0], ref.d_holdout, ref.threshold
    med_gen, med_hold = float(d_gen.median()), float(d_hold.median())
    return {
        "generated": int(d_gen.numel()),
        "holdout": int(d_hold.numel()),
        "train": int(ref.train.shape[0]),
        "median_distance_generated": med_gen,
        "median_distance_holdout": med_hold,
        "min_distance_generated": float(d_gen.min()),
        "ratio": med_gen / med_hold if med_hold > 0 else float("inf"),
        "near_copy_threshold": tau,
        "near_copy_quantile": ref.quantile,
        "near_copy_floor": NEAR_COPY_FLOOR,
        "near_copy_holdout": int(ref.unseen.numel()),
        "near_copy_fraction": float((d_gen < tau).double().mean()),
        "holdout_below_threshold": float((d_hold < tau).double().mean()),
        "d_gen": d_gen,
        "nn_gen": nn_gen,
    }


def memorization(
    generated: torch.Tensor,
    train: torch.Tensor,
    holdout: torch.Tensor,
    *,
    threshold: float | None = None,
    quantile: float = NEAR_COPY_QUANTILE,
) -> dict[str, Any]:
    """:func:`measure` of ``generated`` against :func:`reference` of ``train`` and ``holdout``."""
    return measure(generated, reference(train, holdout, threshold=threshold, quantile=quantile))


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
