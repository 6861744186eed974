"""Combining privacy-utility curves measured in separate runs (pure: result files only, no
training)."""

from __future__ import annotations

import pytest

from benchmarks import common, dp


def _part(tmp_path, name, family, commit, *, epochs=10, seed=0):
    md = common.meta(
        "dp",
        {
            "datasets": ["digits"],
            "families": [family],
            "epsilons": ["inf", "8"],
            "delta": 1e-5,
            "epochs": epochs,
            "seed": seed,
            "overrides": "none (ffsecure.simulate defaults)",
        },
    )
    md["git"] = {"commit": commit * 40, "dirty": False}
    points = [
        {
            "epsilon": "inf",
            "accuracy": 0.9,
            "auroc": 0.99,
            "ratio_vs_centralized": 0.9,
            "achieved_epsilon": None,
            "noise_multiplier": None,
            "generators_s": 1.0,
            "wall_s": 2.0,
        },
        {
            "epsilon": "8",
            "accuracy": 0.7,
            "auroc": 0.9,
            "ratio_vs_centralized": 0.7,
            "achieved_epsilon": [7.99],
            "noise_multiplier": [1.3],
            "generators_s": 1.0,
            "wall_s": 2.0,
        },
    ]
    curve = {
        "dataset": "digits",
        "generator": family,
        "generator_size": "tiny" if family == "ddpm" else "default",
        "epochs": epochs,
        "points": points,
        "centralized": {"accuracy": 1.0, "auroc": 1.0},
        "fedavg": {"accuracy": 0.1, "auroc": 0.5},
    }
    common.write_result(tmp_path / name, "dp", {"meta": md, "curves": [curve]}, "")
    return tmp_path / name


def test_merged_curves_keep_their_own_run(tmp_path):
    a, b = _part(tmp_path, "a", "cvae", "a"), _part(tmp_path, "b", "ddpm", "b")
    merged = dp.merge([a, b], tmp_path / "m")
    assert [(c["generator"], c["meta"]["git"]["commit"]) for c in merged["curves"]] == [
        ("cvae", "a" * 40),
        ("ddpm", "b" * 40),
    ]
    assert merged["meta"]["settings"]["families"] == ["cvae", "ddpm"]
    page = (tmp_path / "m" / "results" / "dp.md").read_text()
    assert (
        page.count("This curve: Run") == 2 and f"`{'a' * 10}`" in page and f"`{'b' * 10}`" in page
    )
    assert (
        "Curves of 2 runs on this machine" in page and page.count("Run 20") == 2
    )  # no run line for the merge
    assert (tmp_path / "m" / "results" / "dp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_merge_refuses_curves_that_do_not_compare(tmp_path):
    a = _part(tmp_path, "a", "cvae", "a")
    with pytest.raises(
        ValueError, match=r"digits cvae \(default, 10 epochs\) curve is in more than one"
    ):
        dp.merge([a, a], tmp_path / "m1")
    with pytest.raises(ValueError, match="not comparable"):
        dp.merge([a, _part(tmp_path, "c", "ddpm", "c", seed=1)], tmp_path / "m2")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        dp.merge([a, tmp_path / "nowhere"], tmp_path / "m3")
    assert not any(
        (tmp_path / m).exists() for m in ("m1", "m2", "m3")
    )  # nothing written on refusal


def test_one_family_at_two_epoch_counts_makes_two_curves(tmp_path):
    short, long = (
        _part(tmp_path, "s", "ddpm", "a", epochs=10),
        _part(tmp_path, "l", "ddpm", "b", epochs=50),
    )
    merged = dp.merge([short, long], tmp_path / "m")
    assert [c["epochs"] for c in merged["curves"]] == [10, 50] and merged["meta"]["settings"][
        "epochs"
    ] == [10, 50]
    page = (tmp_path / "m" / "results" / "dp.md").read_text()
    assert (
        "## digits, ddpm (tiny), dp-sgd, 10 generator epochs" in page
        and "## digits, ddpm (tiny), dp-sgd, 50 generator epochs" in page
    )


def test_a_curve_written_before_curves_carried_epochs_takes_its_runs(tmp_path):
    old = _part(tmp_path, "o", "cvae", "a", epochs=10)
    r = common.read_result(old, "dp")
    del r["curves"][0]["epochs"], r["curves"][0]["generator_size"]
    common.write_result(old, "dp", r, "")
    merged = dp.merge([old, _part(tmp_path, "n", "ddpm", "b", epochs=10)], tmp_path / "m")
    assert [(c["generator_size"], c["epochs"]) for c in merged["curves"]] == [
        ("default", 10),
        ("tiny", 10),
    ]


def _later(tmp_path, name, commit, epsilon, accuracy):
    """A later run of the cvae curve that measured one epsilon (no reference of its own)."""
    md = common.meta(
        "dp",
        {
            "datasets": ["digits"],
            "families": ["cvae"],
            "epsilons": [epsilon],
            "delta": 1e-5,
            "epochs": 10,
            "seed": 0,
            "overrides": "none (ffsecure.simulate defaults)",
        },
    )
    md["git"] = {"commit": commit * 40, "dirty": False}
    point = {
        "epsilon": epsilon,
        "accuracy": accuracy,
        "auroc": 0.8,
        "ratio_vs_centralized": None,
        "achieved_epsilon": [float(epsilon)],
        "noise_multiplier": [2.0],
        "generators_s": 1.0,
        "wall_s": 2.0,
    }
    curve = {
        "dataset": "digits",
        "generator": "cvae",
        "generator_size": "default",
        "epochs": 10,
        "points": [point],
    }
    common.write_result(tmp_path / name, "dp", {"meta": md, "curves": [curve]}, "")
    return tmp_path / name


def test_fold_adds_a_later_run_s_points_to_the_curve_with_their_own_run(tmp_path):
    base = _part(tmp_path, "a", "cvae", "a")
    two, eight = _later(tmp_path, "b", "b", "2", 0.6), _later(tmp_path, "c", "c", "8", 0.8)
    folded = dp.fold(base, [two, eight], tmp_path / "f")
    (curve,) = folded["curves"]
    assert [p["epsilon"] for p in curve["points"]] == ["inf", "2", "8"]
    by_eps = {p["epsilon"]: p for p in curve["points"]}
    # the later epsilon-8 point replaces the base's (0.7), ratios against the base reference
    assert by_eps["8"]["accuracy"] == 0.8 and by_eps["8"]["ratio_vs_centralized"] == 0.8
    assert by_eps["2"]["auroc_ratio_vs_centralized"] == 0.8
    assert by_eps["2"]["meta"]["git"]["commit"] == "b" * 40
    assert "meta" not in by_eps["inf"]
    page = (tmp_path / "f" / "results" / "dp.md").read_text()
    assert "Epsilon 2 from a later run: Run" in page and f"`{'b' * 10}`" in page
    assert "Epsilon 8 from a later run: Run" in page and f"`{'c' * 10}`" in page


def test_fold_refuses_a_point_with_no_reference_to_divide_by(tmp_path):
    base = _part(tmp_path, "a", "ddpm", "a")
    with pytest.raises(ValueError, match="no curve"):
        dp.fold(base, [_later(tmp_path, "b", "b", "2", 0.6)], tmp_path / "f")
