"""The DP diagnosis benchmarks: the membership-attack control and the site-size summary.

The control must read far from 0.5 where the held-out images differ from the training
images as a collection and near 0.5 where they do not, with no generator involved; the
site-size summary must divide each run by the centralized model of its own seed.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import dp_size, mia_control


def _write_npz(path, rng):
    """Class 0: one distribution everywhere. Class 1: test images brighter than the rest, and
    only 5 validation images, so the test split is its non-member set."""

    def draw(n, label, shift=0.0):
        images = np.clip(rng.normal(100 + shift, 30, size=(n, 8, 8)), 0, 255).astype(np.uint8)
        return images, np.full((n, 1), label, dtype=np.uint8)

    parts = {}
    for split, sizes in {"train": (120, 120), "val": (60, 5), "test": (60, 60)}.items():
        x0, y0 = draw(sizes[0], 0)
        x1, y1 = draw(sizes[1], 1, shift=60.0 if split == "test" else 0.0)
        parts[f"{split}_images"] = np.concatenate([x0, x1])
        parts[f"{split}_labels"] = np.concatenate([y0, y1])
    np.savez(path, **parts)


def test_the_control_separates_a_shifted_split_and_not_a_matching_one(tmp_path):
    path = tmp_path / "toy.npz"
    _write_npz(path, np.random.default_rng(0))
    points = {
        p["class"]: p for p in mia_control.control_points(f"npz:{path}", seed=0, data_root=None)
    }
    same, shifted = points[0], points[1]
    assert (same["non_member_split"], same["reference_split"]) == ("val", "test")
    assert (shifted["non_member_split"], shifted["reference_split"]) == ("test", "val")
    assert (same["members"], same["non_members"], same["reference_images"]) == (120, 60, 60)
    assert (shifted["non_members"], shifted["reference_images"]) == (60, 5)
    # members and validation images come from one distribution: chance level
    assert 0.35 < same["control_auroc"] < 0.65
    lo, hi = same["control_auroc_ci95"]
    assert lo < 0.5 < hi
    # brighter test images lie farther from the (unshifted) reference: the split separates them
    assert shifted["control_auroc"] > 0.9
    page = mia_control.markdown({"meta": {}, "points": list(points.values())})
    assert "| 60 (test) | 5 (val) |" in page


def test_the_site_size_summary_divides_each_run_by_its_own_seed_s_centralized_model():
    def run(cps, mech, eps, seed, acc, auc, **extra):
        return {
            "classes_per_site": cps,
            "mechanism": mech,
            "epsilon": eps,
            "seed": seed,
            "site_sizes": [100, 300] if cps == 1 else [600],
            "accuracy": acc,
            "auroc": auc,
            "generator_s_max": 5.0 + seed,
            **extra,
        }

    points = [
        run(1, "none", None, 0, 0.5, 0.5, centralized_accuracy=1.0, centralized_auroc=1.0),
        run(1, "none", None, 1, 0.5, 0.5, centralized_accuracy=0.5, centralized_auroc=0.8),
        run(1, "dp-sgd", 8.0, 0, 0.9, 0.9),
        run(1, "dp-sgd", 8.0, 1, 0.4, 0.4),
        run(2, "none", None, 0, 0.5, 0.5, centralized_accuracy=0.8, centralized_auroc=1.0),
        run(2, "mean-embedding", 1.0, 0, 0.6, 0.7),
    ]
    rows = {(r["classes_per_site"], r["mechanism"]): r for r in dp_size.summarise(points)}
    assert set(rows) == {(1, "dp-sgd"), (2, "mean-embedding")}
    both = rows[1, "dp-sgd"]
    assert both["seeds"] == 2 and both["site_size_median"] == 200
    assert both["accuracy_ratio"] == round((0.9 / 1.0 + 0.4 / 0.5) / 2, 3)
    assert both["auroc_ratio"] == round((0.9 + 0.4 / 0.8) / 2, 3)
    assert both["accuracy_ratio_sd"] == round(float(np.std([0.9, 0.8], ddof=1)), 3)
    assert both["generator_s_max"] == 6.0
    one = rows[2, "mean-embedding"]
    assert one["accuracy_ratio"] == 0.75 and one["accuracy_ratio_sd"] is None
    page = dp_size.markdown({"meta": {}, "summary": dp_size.summarise(points)})
    assert "| 0.850 ± 0.071 |" in page and "| 0.750 |" in page


def test_the_ceiling_releases_the_exact_sums_whatever_noise_is_asked_for():
    import torch

    from benchmarks import dp_ceiling
    from ffsecure import dp_embedding

    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2] * 4)
    spec = dp_embedding.FeatureSpec(n_features=16)
    exact = dp_embedding.class_sums(x, y, spec, [0, 1, 2]).float()
    released = dp_ceiling.noiseless(dp_embedding.release)(x, y, spec, 5.0)
    assert released.classes == [0, 1, 2] and torch.equal(released.sums, exact)
    # the library's release with that sigma does add noise: the patch is what removes it
    noisy = dp_embedding.release(x, y, spec, 5.0)
    assert (noisy.sums - exact).abs().max() > 1.0


def _square(v: int) -> dict:
    import os

    return {"v": v * v, "pid": os.getpid()}


def test_run_pool_runs_every_job_in_worker_processes(capsys):
    import os

    from benchmarks import common

    points = common.run_pool(_square, [(2,), (3,), (4,)], workers=2)
    assert sorted(p["v"] for p in points) == [4, 9, 16]
    assert os.getpid() not in {p["pid"] for p in points}  # a patch in a run stays in its worker
    assert capsys.readouterr().out.count("'v': ") == 3


@pytest.mark.slow  # ten DP-SGD sites and their attacks under three samplers: about a minute
def test_the_sampler_benchmark_sets_each_sites_worst_sampler_beside_its_own(tmp_path):
    """Each site's figure under the manifest's sampler and at its worst, from one module."""
    import json

    from benchmarks import mia_samplers

    args = ["--quick", "--runs", "digits:dp-sgd:8", "--epochs", "1", "--threads", "1"]
    result = mia_samplers.main([*args, "--out", str(tmp_path)])
    (run,) = result["runs"]
    assert (run["dataset"], run["mechanism"], run["epsilon"]) == ("digits", "dp-sgd", 8.0)
    assert len(run["sites"]) == 10
    for site in run["sites"]:
        assert site["worst_auroc"] >= site["manifest_auroc"]
        assert site["worst_sampler"] in {"manifest", "cold", "hot"}
        if site["worst_sampler"] == "manifest":
            assert site["worst_auroc"] == site["manifest_auroc"]
    assert run["max_worst_auroc"] == max(s["worst_auroc"] for s in run["sites"])
    assert run["max_manifest_auroc"] == max(s["manifest_auroc"] for s in run["sites"])
    saved = json.loads((tmp_path / "results" / "mia_samplers.json").read_text())
    assert saved["runs"] == result["runs"]
    page = (tmp_path / "results" / "mia_samplers.md").read_text()
    assert "| digits | dp-sgd | 8 | 10 |" in page
