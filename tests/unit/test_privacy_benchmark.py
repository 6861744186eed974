"""The privacy benchmark's result files: markdown table and merging per-dataset runs."""

from __future__ import annotations

import json

import pytest

from benchmarks.privacy import merge, to_markdown

ROW = {
    "dataset": "digits",
    "family": "cvae",
    "size": "default",
    "epsilon_target": "inf",
    "epsilon": None,
    "epsilon_recomputed": None,
    "membership_auroc": 0.9953,
    "membership_tpr_at_1pct_fpr": 0.8,
    "calibrated_auroc": 0.83,
    "calibrated_tpr_at_1pct_fpr": 0.2,
    "memorization_ratio": 0.7,
    "near_copy_fraction": 0.146,
    "utility_ratio": 0.95,
    "fit_s": 61.2,
}


def _result(dataset: str, **settings) -> dict:
    base = {
        "datasets": dataset,
        "families": "cvae",
        "epsilons": "inf",
        "members": 128,
        "epochs": 150,
        "batch_size": 32,
        "generated": 1000,
        "image_shape": [1, 16, 16],
        "threads": 1,
    }
    return {
        "settings": {**base, **settings},
        "machine": {"note": "2-core CPU"},
        "rows": [{**ROW, "dataset": dataset}],
        "total_s": 10.0,
    }


def test_markdown_lists_every_row():
    md = to_markdown(_result("digits"))
    assert (
        "| digits | cvae (default) | inf | - | 0.995 | 0.800 | 0.830 | 0.200 | 0.70 | 0.146 | "
        "0.95 | 61 |" in md
    )


def test_merge_combines_runs_and_refuses_different_settings(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_result("digits")))
    b.write_text(json.dumps(_result("breastmnist")))
    out = merge([a, b], tmp_path / "out")
    assert [r["dataset"] for r in out["rows"]] == ["digits", "breastmnist"]
    assert out["settings"]["datasets"] == "digits,breastmnist"
    assert json.loads((tmp_path / "out" / "privacy.json").read_text())["rows"] == out["rows"]
    assert "| breastmnist |" in (tmp_path / "out" / "privacy.md").read_text()
    b.write_text(json.dumps(_result("breastmnist", epochs=10)))
    with pytest.raises(SystemExit):
        merge([a, b], tmp_path / "out2")


def test_markdown_says_which_cells_the_default_policy_refuses():
    """The privacy table marks each cell against the default AUROC limit (0.55) and names those
    refused."""
    result = _result("digits")
    result["rows"] = [
        {**ROW, "epsilon_target": 8.0, "membership_auroc": 0.575, "calibrated_auroc": 0.529},
        {**ROW, "epsilon_target": 1.0, "membership_auroc": 0.524, "calibrated_auroc": 0.551},
        {**ROW, "epsilon_target": 1.0, "membership_auroc": 0.524, "calibrated_auroc": 0.501},
    ]
    md = to_markdown(result)
    assert "| default policy (AUROC <= 0.55) |" in md
    assert [
        line.rsplit("|", 2)[1].strip() for line in md.splitlines() if line.startswith("| digits")
    ] == ["refused", "refused", "accepted"]  # the stronger attack counts (calibrated 0.551)
    assert (
        "it would refuse 2 of 3: digits cvae at epsilon 8.0 (AUROC 0.575), digits cvae at epsilon "
        "1.0 "
        "(AUROC 0.551)." in md
    )
