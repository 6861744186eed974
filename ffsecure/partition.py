"""Split a labelled training set across simulated sites (label skew), seeded.

Schemes, as in the federated-learning literature:

* ``pathological``: each site holds exactly ``classes_per_site`` classes
  (McMahan et al. 2017's shards, by class). With one class per site and as
  many sites as classes, site *i* holds all of class *i*: the extreme skew
  under which FedAvg collapses and FederatedFactory does not.
* ``dirichlet``: per class, site shares drawn from Dirichlet(alpha)
  (Hsu et al. 2019); small alpha = strong skew.
* ``iid``: a uniform random split.

Every sample goes to exactly one site; a split that would leave a class with
no site, or a site with no data, is refused (``E_CONFIG``). The same labels,
scheme, parameters and seed always give the same split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ffsecure.errors import ConfigError

SCHEMES = ("pathological", "dirichlet", "iid")
DIRICHLET_MIN_SIZE = 2  # samples every site must receive
DIRICHLET_MAX_TRIES = 1000


@dataclass
class Partition:
    """Which training indices each site holds."""

    scheme: str
    seed: int
    num_classes: int
    indices: list[np.ndarray]  # per site, sorted int64 indices into the training set
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def num_sites(self) -> int:
        return len(self.indices)

    def sizes(self) -> list[int]:
        return [int(len(i)) for i in self.indices]

    def site_classes(self, labels: Sequence[int] | np.ndarray) -> list[list[int]]:
        """The classes present at each site."""
        y = _as_labels(labels)
        return [sorted(int(c) for c in np.unique(y[idx])) for idx in self.indices]

    def to_dict(self, labels: Sequence[int] | np.ndarray | None = None) -> dict[str, Any]:
        out = {
            "scheme": self.scheme,
            "seed": self.seed,
            "num_sites": self.num_sites,
            "params": dict(self.params),
            "sizes": self.sizes(),
        }
        if labels is not None:
            out["counts"] = count_table(self, labels).tolist()
        return out


def _as_labels(labels: Sequence[int] | np.ndarray, num_classes: int | None = None) -> np.ndarray:
    y = labels.numpy() if hasattr(labels, "numpy") else np.asarray(labels)
    y = np.asarray(y).reshape(-1)
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ConfigError("labels must be integer class indices", hint="pass int64 class indices")
    y = y.astype(np.int64)
    if num_classes is not None:
        if int(num_classes) < 1:
            raise ConfigError(f"number of classes must be positive, not {num_classes}")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ConfigError(
                f"labels range over [{y.min()}, {y.max()}], outside 0..{num_classes - 1}",
                hint="labels must be indices into the label space",
            )
    return y


def _check_sites(num_sites: int) -> int:
    if not isinstance(num_sites, (int, np.integer)) or num_sites < 1:
        raise ConfigError(
            f"number of sites must be a positive integer, not {num_sites!r}",
            hint="pass --sites N with N >= 1",
        )
    return int(num_sites)


def pathological(
    labels,
    *,
    num_classes: int,
    num_sites: int | None = None,
    classes_per_site: int = 1,
    seed: int = 0,
) -> Partition:
    """Each site holds exactly ``classes_per_site`` distinct classes.

    One class per site: site *i* holds class ``i mod K`` (sites sharing a class
    split its samples evenly after a seeded shuffle). More classes per site:
    site *i* holds ``perm[(i*k + j) mod K]`` for a seeded class permutation,
    so the classes cover the label space whenever ``sites * k >= K``.
    """
    y = _as_labels(labels, num_classes)
    k_total = int(num_classes)
    num_sites = _check_sites(k_total if num_sites is None else num_sites)
    k = int(classes_per_site)
    if not 1 <= k <= k_total:
        raise ConfigError(
            f"classes per site must be between 1 and {k_total}, not {classes_per_site}",
            hint="pass --classes-per-site within the label space",
        )
    if num_sites * k < k_total:
        raise ConfigError(
            f"{num_sites} sites x {k} classes each cannot cover {k_total} classes",
            hint=f"use at least {-(-k_total // k)} sites or more classes per site",
        )
    rng = np.random.default_rng(seed)
    order = np.arange(k_total) if k == 1 else rng.permutation(k_total)
    site_classes = [[int(order[(i * k + j) % k_total]) for j in range(k)] for i in range(num_sites)]
    holders: dict[int, list[int]] = {c: [] for c in range(k_total)}
    for site, classes in enumerate(site_classes):
        for c in classes:
            holders[c].append(site)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
    for c in range(k_total):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        for site, chunk in zip(holders[c], np.array_split(idx, len(holders[c])), strict=True):
            parts[site].append(chunk)
    indices = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
    _check_nonempty(indices, "pathological")
    return Partition(
        "pathological",
        seed,
        k_total,
        indices,
        {"classes_per_site": k, "site_classes": site_classes},
    )


def dirichlet(
    labels,
    *,
    num_classes: int,
    num_sites: int,
    alpha: float = 0.5,
    seed: int = 0,
    min_size: int = DIRICHLET_MIN_SIZE,
) -> Partition:
    """Per-class site shares drawn from Dirichlet(alpha); redrawn until every site holds
    at least ``min_size`` samples (Hsu et al. 2019; the usual FedLab/FedML recipe)."""
    y = _as_labels(labels, num_classes)
    num_sites = _check_sites(num_sites)
    if not (isinstance(alpha, (int, float)) and np.isfinite(alpha) and alpha > 0):
        raise ConfigError(
            f"Dirichlet alpha must be a positive number, not {alpha!r}",
            hint="pass --alpha, e.g. 0.1 (strong skew) to 100 (near IID)",
        )
    if len(y) < num_sites * min_size:
        raise ConfigError(
            f"{len(y)} samples cannot give {num_sites} sites {min_size} each",
            hint="use fewer sites",
        )
    rng = np.random.default_rng(seed)
    for _ in range(DIRICHLET_MAX_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
        for c in range(int(num_classes)):
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            shares = rng.dirichlet(np.full(num_sites, float(alpha)))
            cuts = (np.cumsum(shares) * len(idx)).astype(np.int64)[:-1]
            for site, chunk in enumerate(np.split(idx, cuts)):
                parts[site].append(chunk)
        indices = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(len(i) for i in indices) >= min_size:
            return Partition(
                "dirichlet",
                seed,
                int(num_classes),
                indices,
                {"alpha": float(alpha), "min_size": min_size},
            )
    raise ConfigError(
        f"no Dirichlet({alpha}) split gave each of {num_sites} sites {min_size} samples "
        f"in {DIRICHLET_MAX_TRIES} draws",
        hint="raise --alpha or use fewer sites",
    )


def iid(labels, *, num_classes: int, num_sites: int, seed: int = 0) -> Partition:
    """A uniform random split into near-equal parts."""
    y = _as_labels(labels, num_classes)
    num_sites = _check_sites(num_sites)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    indices = [np.sort(p).astype(np.int64) for p in np.array_split(perm, num_sites)]
    _check_nonempty(indices, "iid")
    return Partition("iid", seed, int(num_classes), indices, {})


def _check_nonempty(indices: list[np.ndarray], scheme: str) -> None:
    empty = [i for i, idx in enumerate(indices) if len(idx) == 0]
    if empty:
        raise ConfigError(
            f"{scheme} split leaves site(s) {empty} without data",
            hint="use fewer sites for this data set",
        )


def make_partition(
    scheme: str,
    labels,
    *,
    num_classes: int,
    num_sites: int | None = None,
    alpha: float = 0.5,
    classes_per_site: int = 1,
    seed: int = 0,
) -> Partition:
    """Dispatch on ``scheme``; ``num_sites`` defaults to one per class."""
    sites = num_classes if num_sites is None else num_sites
    if scheme == "pathological":
        return pathological(
            labels,
            num_classes=num_classes,
            num_sites=sites,
            classes_per_site=classes_per_site,
            seed=seed,
        )
    if scheme == "dirichlet":
        return dirichlet(labels, num_classes=num_classes, num_sites=sites, alpha=alpha, seed=seed)
    if scheme == "iid":
        return iid(labels, num_classes=num_classes, num_sites=sites, seed=seed)
    raise ConfigError(
        f"unknown partition scheme {scheme!r}", hint=f"use one of {', '.join(SCHEMES)}"
    )


def count_table(partition: Partition, labels) -> np.ndarray:
    """Site x class sample counts, shape ``(num_sites, num_classes)``."""
    y = _as_labels(labels)
    return np.stack(
        [np.bincount(y[idx], minlength=partition.num_classes) for idx in partition.indices]
    )


def render_table(partition: Partition, labels, class_names: Sequence[str] | None = None):
    """A ``rich.table.Table`` of site x class counts with row and column totals."""
    # rich only when rendering: keeps `ffsecure --help` fast
    from rich.table import Table

    counts = count_table(partition, labels)
    names = (
        list(class_names)
        if class_names is not None
        else [str(c) for c in range(partition.num_classes)]
    )
    table = Table(title=f"{partition.scheme} split, seed {partition.seed}")
    table.add_column("site")
    for n in names:
        table.add_column(n, justify="right")
    table.add_column("total", justify="right")
    for s, row in enumerate(counts):
        table.add_row(f"site-{s}", *[str(int(v)) for v in row], str(int(row.sum())))
    totals = counts.sum(axis=0)
    table.add_row("total", *[str(int(v)) for v in totals], str(int(totals.sum())), style="bold")
    return table


def format_table(partition: Partition, labels, class_names: Sequence[str] | None = None) -> str:
    """The same table as plain text (for logs and markdown-less terminals)."""
    counts = count_table(partition, labels)
    names = (
        list(class_names)
        if class_names is not None
        else [str(c) for c in range(partition.num_classes)]
    )
    header = ["site", *names, "total"]
    rows = [
        [f"site-{s}", *[str(int(v)) for v in row], str(int(row.sum()))]
        for s, row in enumerate(counts)
    ]
    totals = counts.sum(axis=0)
    rows.append(["total", *[str(int(v)) for v in totals], str(int(totals.sum()))])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = enumerate(zip(row, widths, strict=True))
        return "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in cells)

    return "\n".join([fmt(header), *[fmt(r) for r in rows]])
