"""benchmarks.generators --compare: its summary table says which cells ran at which budget."""

from __future__ import annotations

from benchmarks import generators as bench


def _cell(family: str, epochs: object) -> dict:
    return {
        "dataset": "digits",
        "split": "pathological",
        "seed": 0,
        "family": family,
        "epochs": epochs,
        "samples_per_class": 300,
        "ff_accuracy": 0.9,
        "centralized_accuracy": 0.95,
        "ratio": 0.947,
        "kid_mean": 0.0123,
        "precision_mean": 0.8,
        "recall_mean": 0.4,
        "max_site_generator_s": 61.2,
        "load_average_1m_at_start": 3.5,
    }


def test_the_utility_table_names_every_cell_and_its_epoch_budget():
    md = bench.utility_markdown(
        {"machine": "x86_64", "threads": 2, "cells": [_cell("cvae", "default"), _cell("flow", 50)]}
    )
    rows = [line for line in md.splitlines() if line.startswith("| digits")]
    assert len(rows) == 2
    assert "| cvae | default |" in rows[0] and "| flow | 50 |" in rows[1]
    assert "| 0.947 | 0.0123 | 0.800 | 0.400 | 61 |" in rows[1]
    assert "override" in md


def test_every_split_name_maps_to_a_partition_scheme():
    assert bench.SPLITS["pathological"][0] == "pathological"
    assert bench.SPLITS["dirichlet-0.1"] == ("dirichlet", 0.1)
    assert bench.SPLITS["dirichlet-0.5"] == ("dirichlet", 0.5)
