"""Smoke tests of the privacy-utility and scaling benchmarks at --quick settings (slow: real DP-SGD
fits)."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import run_all

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("bench")
    assert run_all.main(["--quick", "--only", "dp,scaling", "--out", str(d)]) == 0
    return d


def test_dp_curve(out):
    r = json.loads((out / "results" / "dp.json").read_text())
    curve, ddpm = r["curves"]
    assert (curve["dataset"], curve["generator"]) == ("digits", "cvae")
    assert (ddpm["generator"], ddpm["generator_size"]) == ("ddpm", "tiny")
    assert [p["epsilon"] for p in ddpm["points"]] == ["inf", "8"]
    assert all(e <= 8.0 + 1e-6 for e in ddpm["points"][1]["achieved_epsilon"])
    assert [p["epsilon"] for p in curve["points"]] == ["inf", "8"]
    no_dp, dp8 = curve["points"]
    assert no_dp["achieved_epsilon"] is None and no_dp["delta"] is None
    assert dp8["delta"] == 1e-5 and len(dp8["achieved_epsilon"]) == 10
    assert all(e <= 8.0 + 1e-6 for e in dp8["achieved_epsilon"])
    assert dp8["membership_non_member_split"] == ["test"]  # digits has no validation split
    # each site judged at its worst sampler: the cvae's own temperature or a reference one
    assert dp8["membership_sampler"] and set(dp8["membership_sampler"]) <= {
        "manifest",
        "cold",
        "hot",
    }
    assert dp8["ratio_vs_centralized"] == pytest.approx(
        dp8["accuracy"] / curve["centralized"]["accuracy"], abs=1e-4
    )
    assert (out / "results" / "dp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["not_measured"][0]["generator"] == "ddpm (default size)"


def test_scaling_rows(out):
    r = json.loads((out / "results" / "scaling.json").read_text())
    rows = r["rows"]
    assert [row["sites"] for row in rows] == [10, 20]
    for row in rows:
        assert row["module_package_bytes"] > row["classifier_bytes"] / 100
        assert row["ff_total_bytes"] == row["module_package_bytes"] * row["sites"]
        assert (
            row["fedavg_total_bytes"]
            == 2 * row["classifier_bytes"] * row["sites"] * row["fedavg_rounds"]
        )
        assert row["aggregator_s"] == pytest.approx(
            row["synthesis_s"] + row["classifier_s"], abs=0.01
        )
        assert row["fedavg_reached_target"] == (
            row["accuracy"]["fedavg"] >= row["accuracy"]["federatedfactory"]
        )
    assert rows[1]["images_per_site"]["max"] < rows[0]["images_per_site"]["min"]


def test_results_md_has_dp_and_scaling(out):
    text = (out / "RESULTS.md").read_text()
    assert "## Privacy-utility" in text and "](results/dp.png)" in text
    assert "## Scaling in sites" in text
    scaling = json.loads((out / "results" / "scaling.json").read_text())
    assert any(line.startswith("| 20 | ") for line in text.splitlines())
    assert f"{scaling['rows'][0]['module_package_bytes'] / 1000:,.2f} kB" in text
    assert "Not measured yet: run `python -m benchmarks.run_all --only utility`" in text
