"""Figures for simulation results: real-vs-synthetic sample grids and a method bar chart.

Matplotlib with the non-interactive Agg backend; every function writes one
PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _pyplot():
    # heavy: matplotlib, only when a figure is drawn
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _to_display(x: torch.Tensor) -> np.ndarray:
    """(C,H,W) in [-1,1] -> (H,W) or (H,W,3) in [0,1]."""
    arr = ((x.detach().cpu().float().clamp(-1, 1) + 1) / 2).numpy()
    return arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))


def _pick(x: torch.Tensor, y: torch.Tensor, cls: int, n: int) -> list[torch.Tensor]:
    """``n`` images of class ``cls`` spread evenly over its rows, so that a synthetic class
    drawn from several modules shows draws of each."""
    idx = torch.nonzero(y == cls).flatten()
    if idx.numel() > n:
        idx = idx[torch.linspace(0, idx.numel() - 1, n).round().long()]
    return [x[i] for i in idx]


def sample_grid(
    path: str | Path,
    real_x: torch.Tensor,
    real_y: torch.Tensor,
    syn_x: torch.Tensor,
    syn_y: torch.Tensor,
    class_names: Sequence[str],
    *,
    per_class: int = 8,
    title: str | None = None,
) -> Path:
    """One row per class: ``per_class`` real images on the left, synthetic ones on the right."""
    plt = _pyplot()
    k = len(class_names)
    cols = 2 * per_class + 1
    fig, axes = plt.subplots(k, cols, figsize=(cols * 0.55 + 1.5, k * 0.6 + 0.8), squeeze=False)
    for r, name in enumerate(class_names):
        real = _pick(real_x, real_y, r, per_class)
        syn = _pick(syn_x, syn_y, r, per_class)
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            img = None
            if c < per_class and c < len(real):
                img = real[c]
            elif c > per_class and c - per_class - 1 < len(syn):
                img = syn[c - per_class - 1]
            if img is not None:
                ax.imshow(_to_display(img), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[r][0].set_ylabel(str(name)[:14], rotation=0, ha="right", va="center", fontsize=7)
    axes[0][per_class // 2].set_title("real", fontsize=8)
    axes[0][per_class + 1 + per_class // 2].set_title("synthetic", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def method_bars(
    path: str | Path, results: dict[str, Any], methods: Sequence[str], *, title: str | None = None
) -> Path:
    """Accuracy and AUROC of each method side by side."""
    plt = _pyplot()
    acc = [results[m]["accuracy"] for m in methods]
    auc = [results[m]["auroc"] if results[m]["auroc"] is not None else 0.0 for m in methods]
    xs = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    b1 = ax.bar(xs - 0.2, acc, 0.4, label="accuracy")
    b2 = ax.bar(xs + 0.2, auc, 0.4, label="AUROC")
    for bars in (b1, b2):
        for bar in bars:
            ax.annotate(
                f"{bar.get_height():.3f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(xs)
    ax.set_xticklabels(methods)
    ax.set_ylim(0, 1.08)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
