"""`ffsecure simulate` end to end on scikit-learn's digits (tiny generator, few epochs)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from PIL import Image

from ffsecure.simulate import closing_table, largest_membership
from tests.conftest import PYTHON, REPO, cli_env

TINY = [
    "--dataset",
    "digits",
    "--generator",
    "cvae",
    "--generator-size",
    "tiny",
    "--epochs",
    "10",
    "--samples-per-class",
    "100",
    "--classifier-epochs",
    "4",
    "--classifier-width",
    "8",
    "--fedavg-rounds",
    "2",
    "--seed",
    "0",
    "--device",
    "cpu",
    "--threads",
    "1",
]


def _run(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "ffsecure", "simulate", *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_tiny_simulation_on_digits(tmp_path: Path):
    out = tmp_path / "sim"
    proc = _run([*TINY, "--out", str(out), "--json", "--membership-attack"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    written = json.loads((out / "results.json").read_text())
    assert printed == written

    for method in ("centralized", "fedavg", "federatedfactory"):
        assert 0.0 <= written[method]["accuracy"] <= 1.0
        assert written[method]["auroc"] is not None and 0.0 <= written[method]["auroc"] <= 1.0
    # One class per site: FedAvg collapses, the synthetic-data classifier does not.
    ff, fa, cen = (written[m]["accuracy"] for m in ("federatedfactory", "fedavg", "centralized"))
    assert ff > fa + 0.2, (ff, fa)
    assert cen > 0.6  # width-8 CNN, 4 epochs: a sanity floor, not a benchmark
    assert written["ratio_vs_centralized"] == round(ff / cen, 4)

    settings = written["settings"]
    assert settings["partition"] == "pathological" and settings["sites"] == 10
    assert settings["generator"] == "cvae" and settings["dp_epsilon"] is None
    assert len(written["sites"]) == 10
    for i, site in enumerate(written["sites"]):
        assert site["classes"] == [i] and site["wall_s"] > 0 and len(site["module_id"]) == 32
    assert written["partition"]["counts"][3][3] == site_count(written, 3)
    for phase in (
        "data_s",
        "generators_s",
        "synthesis_s",
        "classifier_s",
        "centralized_s",
        "fedavg_s",
        "total_s",
    ):
        assert written["timings"][phase] >= 0
    assert written["synthesis"]["size"] == 1000 and written["synthesis"]["uncovered"] == []
    assert len(written["synthesis"]["dataset_sha256"]) == 64

    fid = written["fidelity"]
    assert [row["cls"] for row in fid["per_class"]] == list(range(10))
    for row in fid["per_class"]:
        assert row["real"] == site_count(written, row["cls"]) and row["synthetic"] == 100
        assert 0.0 <= row["precision"] <= 1.0 and 0.0 <= row["recall"] <= 1.0
        assert row["kid"] > -0.5
    assert fid["kid_mean"] == round(sum(r["kid"] for r in fid["per_class"]) / 10, 6)
    assert "centralized" in fid["features"] and written["timings"]["fidelity_s"] >= 0

    # privacy-check's attack on every site's module, at its worst over the cvae's samplers
    for site in written["sites"]:
        mia = site["membership"]
        assert mia["sampler"] in {"manifest", "cold", "hot"}
        assert mia["auroc"] == max(mia["samplers"].values())
        assert mia["non_member_split"] == "test" and mia["members"] == site["n_train"]
    # timed apart from the fits: generators_s holds the fits alone
    assert written["timings"]["membership_s"] > 0
    top = max(written["sites"], key=lambda site: site["membership"]["auroc"])
    assert largest_membership(written)["site"] == top["site"]
    caption = _rendered(closing_table(written))
    assert (
        f"largest membership AUROC: {top['membership']['auroc']:.3f} (site-{top['site']}" in caption
    )

    md = (out / "results.md").read_text()
    assert "membership AUROC [95% interval] | attack, sampler |" in md
    lo, hi = top["membership"]["auroc_ci95"]
    assert f"| {top['membership']['auroc']:.3f} [{lo:.2f}, {hi:.2f}] |" in md
    assert "| mean |" in md and "KID" in md
    assert "| federatedfactory |" in md and "| fedavg |" in md and "| centralized |" in md
    for png in ("samples.png", "methods.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def _rendered(table) -> str:
    from rich.console import Console

    console = Console(width=200)
    with console.capture() as captured:
        console.print(table)
    return captured.get()


def site_count(results: dict, cls: int) -> int:
    return results["dataset"]["train_per_class"][cls]


def test_simulate_reports_data_errors_as_json(tmp_path: Path):
    proc = _run(
        ["--dataset", f"npz:{tmp_path / 'absent.npz'}", "--out", str(tmp_path / "o"), "--json"],
        timeout=120,
    )
    assert proc.returncode == 1
    err = json.loads(proc.stderr.strip().splitlines()[-1])["error"]
    assert err["code"] == "E_DATA_MISSING" and "absent.npz" in err["message"]
    assert not (tmp_path / "o").exists()  # nothing written for a refused run


def test_simulate_refuses_bad_settings(tmp_path: Path):
    proc = _run(
        ["--dataset", "digits", "--dp-delta", "1e-6", "--out", str(tmp_path / "o")], timeout=120
    )
    assert proc.returncode == 1
    assert "error[E_CONFIG]" in proc.stderr and "--dp-delta needs --dp-epsilon" in proc.stderr


def test_generator_epoch_budget_and_device_choice():
    import pytest
    import torch

    from ffsecure.errors import ConfigError
    from ffsecure.simulate import generator_epochs, resolve_device, site_module_id

    # 96,000 image-epochs, within [5, 700] epochs
    assert generator_epochs(960) == 100 and generator_epochs(3494) == 28
    assert generator_epochs(134) == 700 and generator_epochs(10) == 700
    assert generator_epochs(10**6) == 5
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError):
            resolve_device("cuda")
    assert site_module_id(0, 1) == site_module_id(0, 1) != site_module_id(0, 2)
    assert len(site_module_id(0, 1)) == 32 and int(site_module_id(0, 1), 16) >= 0


def test_dp_reproducible_is_a_visible_research_switch(tmp_path: Path):
    """--dp-reproducible repeats a DP run from --seed, and says so in the result and on stderr."""
    small = [
        "--dataset",
        "digits",
        "--generator-size",
        "tiny",
        "--epochs",
        "1",
        "--sites",
        "2",
        "--classes-per-site",
        "5",
        "--samples-per-class",
        "10",
        "--classifier-epochs",
        "1",
        "--classifier-width",
        "4",
        "--classifier-min-steps",
        "0",
        "--no-baselines",
        "--no-fidelity",  # the switch is about DP noise; test_tiny_simulation_on_digits has KID
        "--seed",
        "3",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--dp-epsilon",
        "8",
        "--json",
    ]
    runs = []
    for name, extra in (("a", ["--dp-reproducible"]), ("b", ["--dp-reproducible"]), ("c", [])):
        proc = _run([*small, *extra, "--out", str(tmp_path / name)])
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append((json.loads(proc.stdout), proc.stderr))
    (a, a_err), (b, _), (c, c_err) = runs
    weights = [[s["weights_sha256"] for s in r["sites"]] for r in (a, b, c)]
    assert weights[0] == weights[1] and all(
        x != y for x, y in zip(weights[0], weights[2], strict=True)
    )
    assert a["settings"]["dp_reproducible"] is True and c["settings"]["dp_reproducible"] is False
    assert all(s["dp"]["reproducible"] is True for s in a["sites"])
    assert all("reproducible" not in s["dp"] for s in c["sites"])
    assert "--dp-reproducible" in a_err and "--dp-reproducible" not in c_err
