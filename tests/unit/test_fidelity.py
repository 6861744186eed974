"""Fidelity metrics: KID and k-NN precision/recall behave as their definitions say."""

from __future__ import annotations

import torch

from ffsecure import fidelity


def _features(n: int, seed: int, d: int = 16) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_kid_of_a_set_against_itself_is_near_zero_and_against_noise_is_large():
    real = _features(300, 0)
    same_distribution = _features(300, 1)
    shifted = _features(300, 2) * 3.0 + 2.0
    assert abs(fidelity.kid(real, real)) < 0.05
    assert abs(fidelity.kid(real, same_distribution)) < 0.5
    assert fidelity.kid(real, shifted) > 50 * max(abs(fidelity.kid(real, same_distribution)), 0.01)


def test_precision_and_recall_of_identical_sets_are_one():
    real = _features(200, 3)
    assert fidelity.precision_recall(real, real.clone()) == (1.0, 1.0)


def test_a_collapsed_set_is_precise_but_has_no_recall():
    real = _features(200, 4)
    collapsed = real[:1].repeat(200, 1) + 1e-4 * _features(200, 5)
    precision, recall = fidelity.precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.1
    far = _features(200, 6) + 20.0
    assert fidelity.precision_recall(real, far) == (0.0, 0.0)


def test_evaluate_reports_every_class_and_skips_classes_without_two_images():
    x = torch.rand(60, 1, 8, 8) * 2 - 1
    y = torch.arange(60) % 3
    y[y == 2] = 1
    y[0] = 2  # class 2: a single real image
    report = fidelity.evaluate(
        x, y, x.clone(), y.clone(), 3, feature_net=torch.nn.Flatten()
    ).to_dict()
    rows = {row["cls"]: row for row in report["per_class"]}
    assert rows[0]["precision"] == 1.0 and rows[0]["recall"] == 1.0
    # a PSD kernel gives k(a, b) <= (k(a, a) + k(b, b)) / 2, so a set against itself is <= 0
    assert rows[0]["kid"] <= 0.0
    assert rows[2]["kid"] is None and rows[2]["real"] == 1
    assert report["precision_mean"] == 1.0 and report["k"] == fidelity.NEAREST_K
