"""The demo's accuracy chart: each method before and after a site is forgotten."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ffsecure.plots import _pyplot

METHODS = ("federatedfactory", "centralized", "fedavg")
LABELS = {
    "federatedfactory": "FederatedFactory",
    "centralized": "centralized (upper bound)",
    "fedavg": "FedAvg",
}


def accuracy_chart(
    path: str | Path, accuracy: dict[str, dict[str, Any]], *, title: str | None = None
) -> Path:
    """Grouped bars: one group per method, accuracy before and after the deletion."""
    plt = _pyplot()
    methods = [
        m for m in METHODS if accuracy.get("before", {}).get(m) or accuracy.get("after", {}).get(m)
    ]
    xs = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for offset, when, colour in ((-0.2, "before", "#4c72b0"), (0.2, "after", "#dd8452")):
        vals = [((accuracy.get(when) or {}).get(m) or {}).get("accuracy") or 0.0 for m in methods]
        bars = ax.bar(xs + offset, vals, 0.4, label=f"{when} the deletion", color=colour)
        for bar in bars:
            ax.annotate(
                f"{bar.get_height():.3f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(xs)
    ax.set_xticklabels([LABELS[m] for m in methods], fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.1)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
