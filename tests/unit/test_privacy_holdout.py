"""The non-member pool of the membership attack: validation split first, test split otherwise.

MedMNIST's test splits are a different collection from its training splits, so an
attack with test non-members measures the shift; :func:`held_out_pool` takes the
validation split when it has enough images of the module's classes.
"""

from __future__ import annotations

import pytest
import torch

from ffsecure.privacy.check import MIN_VALIDATION_NON_MEMBERS, held_out_pool
from ffsecure.privacy.membership import auroc_interval


def _split(labels: list[int], fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.tensor(labels, dtype=torch.int64)
    return torch.full((len(labels), 1, 4, 4), fill), y


def test_the_validation_split_is_used_when_it_holds_enough_images_of_the_classes():
    n = MIN_VALIDATION_NON_MEMBERS
    test = _split([0] * 50 + [1] * 50, 0.0)
    val = _split([0] * n + [2] * 30, 1.0)
    (x, y), split = held_out_pool([0], test, val)
    assert split == "val"
    assert y.tolist() == [0] * n and bool((x == 1.0).all())


def test_the_test_split_is_used_when_the_validation_split_is_short_or_missing():
    n = MIN_VALIDATION_NON_MEMBERS
    test = _split([0] * 50 + [1] * 7, 0.0)
    short = _split([0] * (n - 1) + [1] * 100, 1.0)  # many images, too few of class 0
    for val in (short, None):
        (x, y), split = held_out_pool([0], test, val)
        assert split == "test"
        assert y.tolist() == [0] * 50 and bool((x == 0.0).all())
    (_x, y), split = held_out_pool([0, 1], test, short)
    assert split == "val" and y.numel() == n - 1 + 100


def test_the_auroc_interval_is_hanley_and_mcneil_s():
    # A = 0.5, 21 and 21: Q1 = Q2 = 1/3, var = (0.25 + 20/12 + 20/12) / 441, half 1.96 sqrt(var)
    lo, hi = auroc_interval(0.5, 21, 21)
    half = 1.96 * ((0.25 + 40 / 12) / 441) ** 0.5
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert 0.17 < half < 0.18  # a chance-level attack on 21 + 21 images can read 0.67
    lo, hi = auroc_interval(0.5, 500, 500)
    assert hi - 0.5 == pytest.approx(0.0358, abs=5e-4)
    assert auroc_interval(1.0, 10, 10) == (1.0, 1.0) and auroc_interval(0.99, 3, 3)[1] == 1.0
