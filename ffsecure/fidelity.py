"""Sample fidelity per class: KID and k-NN precision/recall on classifier features.

Utility (accuracy of a classifier trained on synthetic data) says whether the
synthetic set works; fidelity says how it differs from the real one, per
class, so that a blurry or collapsed generator shows up as a number rather
than in a picture.

* Features: the penultimate layer (global-average-pooled) of a classifier
  trained on the real **training** split only (in ``ffsecure simulate`` the
  centralized baseline, which is exactly that; otherwise
  :func:`train_feature_net`). The test split is never used here, so nothing
  chosen by this metric has seen test data.
* KID (Binkowski et al. 2018): the unbiased estimate of the squared MMD with
  the polynomial kernel ``k(a, b) = (a.b / d + 1)^3``; 0 in expectation when
  both sets come from the same distribution, larger is worse. It can be
  slightly negative for two samples of one distribution.
* Precision and recall (Kynkaenniemi et al. 2019): each set's manifold is
  the union of balls around its points with the radius of the k-th nearest
  neighbour (k = 3) within the set; precision is the fraction of synthetic
  points inside the real manifold (sharpness), recall the fraction of real
  points inside the synthetic manifold (diversity). A generator that repeats
  one image per class has high precision at best and recall near 0.

Each class is measured on at most ``max_per_class`` images per side, a
seeded subsample (the metric protects nobody, so a public seed is right).
A class with fewer than two images on either side gets ``None``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ffsecure import classifier

__all__ = [
    "ClassFidelity",
    "FidelityReport",
    "evaluate",
    "feature_extractor",
    "features",
    "kid",
    "precision_recall",
    "train_feature_net",
]

NEAREST_K = 3
MAX_PER_CLASS = 1000
FEATURE_BATCH = 512
FEATURE_NET_WIDTH = 16
EXACT = "donot_use_mm_for_euclid_dist"  # a point's distance to itself is exactly 0


@dataclass(frozen=True)
class ClassFidelity:
    cls: int
    real: int
    synthetic: int
    kid: float | None
    precision: float | None
    recall: float | None


@dataclass(frozen=True)
class FidelityReport:
    per_class: tuple[ClassFidelity, ...]
    features: str
    k: int

    def _mean(self, name: str) -> float | None:
        values = [getattr(c, name) for c in self.per_class if getattr(c, name) is not None]
        return round(sum(values) / len(values), 6) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "k": self.k,
            "kid_mean": self._mean("kid"),
            "precision_mean": self._mean("precision"),
            "recall_mean": self._mean("recall"),
            "per_class": [asdict(c) for c in self.per_class],
        }


def kid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Unbiased squared MMD between feature sets (N, d) and (M, d), cubic polynomial kernel."""
    a, b = real.double(), fake.double()
    n, m, d = a.shape[0], b.shape[0], a.shape[1]
    if n < 2 or m < 2:
        raise ValueError("KID needs at least two points on each side")

    def kernel(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u @ v.T / d + 1.0) ** 3

    k_aa, k_bb, k_ab = kernel(a, a), kernel(b, b), kernel(a, b)
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (n * (n - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    return float(within_a + within_b - 2.0 * k_ab.mean())


def _radii(points: torch.Tensor, k: int) -> torch.Tensor:
    dist = torch.cdist(points, points, compute_mode=EXACT)
    # the k-th nearest neighbour other than the point itself (index 0 is the point, distance 0)
    return dist.kthvalue(min(k + 1, points.shape[0]), dim=1).values


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    inside = (torch.cdist(points, centres, compute_mode=EXACT) <= radii[None, :]).any(dim=1)
    return float(inside.double().mean())


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, *, k: int = NEAREST_K
) -> tuple[float, float]:
    """Improved precision and recall of ``fake`` against ``real`` (both (N, d) features)."""
    a, b = real.double(), fake.double()
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("precision/recall need at least two points on each side")
    precision = _coverage(b, a, _radii(a, k))
    recall = _coverage(a, b, _radii(b, k))
    return precision, recall


def feature_extractor(model: nn.Module) -> nn.Module:
    """A copy of a trained :mod:`ffsecure.classifier` model that returns its
    penultimate features."""
    net = copy.deepcopy(model).to("cpu").eval()
    if isinstance(net, classifier.SmallCNN):
        return nn.Sequential(net.lowpass, net.features)
    inner = getattr(net, "net", None)  # resnet18 behind its low-pass front end
    if inner is not None and isinstance(getattr(inner, "fc", None), nn.Linear):
        inner.fc = nn.Identity()
        return net
    raise TypeError(f"no feature layer known for {type(model).__name__}")


def train_feature_net(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    *,
    seed: int = 0,
    device: str = "cpu",
    epochs: int = 5,
) -> nn.Module:
    """A small CNN trained on the real training split, as a feature extractor."""
    cfg = classifier.model_config(
        "cnn",
        image_shape=tuple(train_x.shape[1:]),
        num_classes=num_classes,
        width=FEATURE_NET_WIDTH,
    )
    settings = classifier.TrainConfig(epochs=epochs, min_steps=300, seed=seed, device=device)
    return feature_extractor(classifier.train_classifier(cfg, train_x, train_y, settings).model)


@torch.no_grad()
def features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Features of ``x`` (N,C,H,W in [-1,1]) in batches, on the CPU."""
    net = net.to("cpu").eval()
    out = [net(x[i : i + FEATURE_BATCH].float()) for i in range(0, x.shape[0], FEATURE_BATCH)]
    if not out:
        return torch.empty(0, 0)
    return torch.cat(out).flatten(1)


def _subsample(x: torch.Tensor, limit: int, rng: torch.Generator) -> torch.Tensor:
    if x.shape[0] <= limit:
        return x
    return x[torch.randperm(x.shape[0], generator=rng)[:limit]]


def evaluate(
    real_x: torch.Tensor,
    real_y: torch.Tensor,
    syn_x: torch.Tensor,
    syn_y: torch.Tensor,
    num_classes: int,
    *,
    feature_net: nn.Module,
    features_name: str = "classifier trained on the real training split",
    max_per_class: int = MAX_PER_CLASS,
    k: int = NEAREST_K,
    seed: int = 0,
) -> FidelityReport:
    """KID, precision and recall of the synthetic images of each class against the real ones."""
    rng = torch.Generator().manual_seed(int(seed))
    rows = []
    for cls in range(num_classes):
        real = _subsample(real_x[real_y == cls], max_per_class, rng)
        fake = _subsample(syn_x[syn_y == cls], max_per_class, rng)
        if real.shape[0] < 2 or fake.shape[0] < 2:
            rows.append(ClassFidelity(cls, real.shape[0], fake.shape[0], None, None, None))
            continue
        fr, ff = features(feature_net, real), features(feature_net, fake)
        precision, recall = precision_recall(fr, ff, k=k)
        rows.append(
            ClassFidelity(
                cls,
                real.shape[0],
                fake.shape[0],
                round(kid(fr, ff), 6),
                round(precision, 4),
                round(recall, 4),
            )
        )
    return FidelityReport(per_class=tuple(rows), features=features_name, k=k)
