"""The temperature study: paired-seed summary and a quick run that reuses its generators."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import temperature


def _result(rows, central, default=0.8):
    return {
        "meta": {"settings": {"default_temperature": default}},
        "rows": rows,
        "centralized": central,
    }


def test_summary_pairs_seeds_against_the_default():
    central = [{"seed": 0, "accuracy": 0.8}, {"seed": 1, "accuracy": 0.9}]
    rows = [
        {"temperature": 0.8, "seed": 0, "accuracy": 0.70, "auroc": 0.7},
        {"temperature": 0.8, "seed": 1, "accuracy": 0.75, "auroc": 0.8},
        {"temperature": 1.0, "seed": 0, "accuracy": 0.76, "auroc": 0.7},
        {"temperature": 1.0, "seed": 1, "accuracy": 0.75, "auroc": 0.8},
    ]
    s = {r["temperature"]: r for r in temperature.summarize(_result(rows, central))}
    assert s[0.8]["accuracy_mean"] == pytest.approx(0.725)
    assert s[1.0]["accuracy_mean"] == pytest.approx(0.755)
    assert s[1.0]["centralized_mean"] == pytest.approx(0.85)
    assert s[1.0]["ratio"] == pytest.approx(0.755 / 0.85)
    assert (s[1.0]["beats_default"], s[1.0]["ties_default"], s[1.0]["paired"]) == (1, 1, 2)
    assert s[0.8]["accuracy_sd"] == pytest.approx(0.0353553, rel=1e-4)


def test_quick_run_writes_tables_and_reuses_its_generators(tmp_path):
    torch.set_num_threads(1)
    gens = tmp_path / "gens"
    first = temperature.run(
        quick=True, generators_dir=gens, out=tmp_path / "a", progress=lambda *_: None
    )
    assert not first["meta"]["settings"]["generators_reused"]
    assert {(r["temperature"], r["seed"]) for r in first["rows"]} == {
        (0.8, 0),
        (1.0, 0),
        (0.8, 1),
        (1.0, 1),
    }
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in first["rows"])
    page = (tmp_path / "a" / "results" / "temperature-digits.md").read_text()
    assert "| temperature |" in page and "Per seed" in page
    saved = json.loads((tmp_path / "a" / "results" / "temperature-digits.json").read_text())
    assert [s["temperature"] for s in saved["summary"]] == [0.8, 1.0]

    # same settings: the site generators are loaded, not trained, and give the same numbers
    second = temperature.run(
        quick=True, generators_dir=gens, out=tmp_path / "b", progress=lambda *_: None
    )
    assert second["meta"]["settings"]["generators_reused"]
    assert [s["weights_sha256"] for s in second["sites"]] == [
        s["weights_sha256"] for s in first["sites"]
    ]
    assert [r["accuracy"] for r in second["rows"]] == [r["accuracy"] for r in first["rows"]]

    # a changed file is not reused
    (gens / "site-0.safetensors").write_bytes(b"not the generator")
    third = temperature.run(
        quick=True, generators_dir=gens, out=tmp_path / "c", progress=lambda *_: None
    )
    assert not third["meta"]["settings"]["generators_reused"]
    assert third["sites"][0]["weights_sha256"] == first["sites"][0]["weights_sha256"]


def test_its_site_generators_are_the_ones_simulate_trains(tmp_path):
    # the study is only about sampling if its generators are simulate's, bit for bit
    from ffsecure import data
    from ffsecure.simulate import SimulationConfig, run_simulation

    torch.set_num_threads(1)
    q = temperature.QUICK
    sim = run_simulation(
        SimulationConfig(
            dataset="digits",
            generator="cvae",
            generator_size=q["generator_size"],
            epochs=q["epochs"],
            samples_per_class=8,
            classifier_epochs=1,
            seed=0,
            threads=1,
            device="cpu",
            out=str(tmp_path / "sim"),
            plots=False,
            baselines=False,
        )
    )
    sites, _, _ = temperature.train_or_load_generators(
        data.load_dataset("digits", seed=0),
        dataset="digits",
        size=q["generator_size"],
        epochs=q["epochs"],
        cache=None,
        progress=lambda *_: None,
    )
    assert [s["weights_sha256"] for s in sites] == [s["weights_sha256"] for s in sim["sites"]]
    assert [s["module_id"] for s in sites] == [s["module_id"] for s in sim["sites"]]


def test_the_run_is_dated_and_labelled_as_it_starts(tmp_path, monkeypatch):
    from benchmarks import common

    calls = []
    real_meta, real_train = common.meta, temperature.train_or_load_generators
    monkeypatch.setattr(
        common, "meta", lambda *a, **kw: calls.append("meta") or real_meta(*a, **kw)
    )
    monkeypatch.setattr(
        temperature,
        "train_or_load_generators",
        lambda *a, **kw: calls.append("generators") or real_train(*a, **kw),
    )
    result = temperature.run(
        quick=True, generators_dir=tmp_path / "g", out=tmp_path / "o", progress=lambda *_: None
    )
    assert calls == [
        "meta",
        "generators",
    ]  # edits made while generators train do not relabel the run
    assert result["meta"]["settings"]["dataset"] == "digits" and result["meta"]["quick"] is True
