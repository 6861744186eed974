"""Nearest-neighbour distances, the memorization figures and the closest-pairs PNG."""

from __future__ import annotations

import math

import pytest
import torch

from ffsecure.errors import FFSecureError
from ffsecure.privacy.memorization import closest_pairs_png, memorization, nearest, summary


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_nearest_matches_brute_force():
    q, r = _images(7, 1), _images(11, 2)
    d, idx = nearest(q, r, k=3, chunk=2, reference_chunk=4)  # the reference in 3 chunks
    brute = torch.stack([torch.stack([(qi - rj).pow(2).mean().sqrt() for rj in r]) for qi in q])
    want, want_idx = torch.topk(brute, 3, dim=1, largest=False)
    assert torch.allclose(d, want, atol=1e-6)
    assert torch.equal(idx, want_idx)
    assert torch.all(d[:, 0] <= d[:, 1])


def test_copies_are_all_near_copies_and_fresh_samples_are_not():
    train, holdout = _images(64, 1), _images(400, 2)
    copies = train[:20] + 0.001  # almost exact replays of training images
    res = memorization(copies, train, holdout)
    assert res["near_copy_fraction"] == 1.0
    assert res["ratio"] < 0.02
    assert res["near_copy_threshold"] == pytest.approx(
        float(torch.quantile(nearest(holdout, train)[0][:, 0].double(), 0.01)), rel=1e-6
    )
    fresh = memorization(_images(400, 3), train, holdout)  # same distribution, never trained on
    assert fresh["near_copy_fraction"] <= 0.04
    assert 0.8 < fresh["ratio"] < 1.25
    assert torch.equal(res["nn_gen"], torch.arange(20))


def test_explicit_threshold_and_summary_is_json_ready():
    train, holdout = _images(16, 1), _images(16, 2)
    res = memorization(train[:4], train, holdout, threshold=1e-9)
    assert res["near_copy_fraction"] == 1.0 and res["near_copy_quantile"] is None
    s = summary(res)
    assert "d_gen" not in s and all(not isinstance(v, torch.Tensor) for v in s.values())
    assert math.isfinite(s["median_distance_holdout"])


@pytest.mark.parametrize("bad", [torch.zeros(0, 1, 8, 8), torch.zeros(3, 8, 8), [1, 2]])
def test_bad_images_are_refused(bad):
    with pytest.raises(FFSecureError) as info:
        nearest(bad, _images(3, 0))
    assert info.value.code == "E_DATA_FORMAT"


def test_shape_mismatch_and_bad_quantile_are_refused():
    with pytest.raises(FFSecureError):
        nearest(_images(2, 0), torch.zeros(2, 1, 4, 4))
    with pytest.raises(FFSecureError):
        memorization(_images(2, 0), _images(2, 1), _images(2, 2), quantile=1.5)


def test_closest_pairs_png(tmp_path):
    train, holdout = _images(16, 1), _images(16, 2)
    gen = torch.cat([train[:3], _images(5, 4)])
    res = memorization(gen, train, holdout)
    out = closest_pairs_png(
        tmp_path / "pairs.png",
        gen,
        train,
        res["d_gen"],
        res["nn_gen"],
        n=4,
        threshold=res["near_copy_threshold"],
    )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_held_out_duplicates_of_training_images_do_not_set_the_threshold():
    """Held-out images within the floor of a training image are left out of the quantile; with
    none beyond it the threshold is the floor itself, and the count says none set it."""
    from ffsecure.privacy.memorization import reference
    from ffsecure.privacy.report import NEAR_COPY_FLOOR

    train = _images(64, 1)
    duplicates = reference(train, train[:10] + 0.001)
    assert duplicates.threshold == NEAR_COPY_FLOOR and duplicates.unseen.numel() == 0
    mixed = torch.cat([train[:10], _images(100, 2)])
    ref = reference(train, mixed)
    assert ref.unseen.numel() == 100
    want = float(torch.quantile(nearest(_images(100, 2), train)[0][:, 0].double(), 0.01))
    assert ref.threshold == pytest.approx(want, rel=1e-6)
    res = memorization(train[:5], train, mixed)
    assert res["near_copy_holdout"] == 100 and res["near_copy_fraction"] == 1.0
