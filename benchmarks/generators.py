"""Generator benchmark: fit and sampling time, and utility with fidelity per family.

For a dataset (``pneumoniamnist`` from the shared MedMNIST root when present,
otherwise scikit-learn's digits) it measures:

- the wall time of ``fit`` with the family's default config and schedule
  (``default_config`` + ``default_train_settings``), without DP and, with
  ``--dp-epsilon``, with DP-SGD (Opacus, Poisson sampling, PRV accountant);
- sampling throughput (images per second) of the fitted generator.

The machine's load average is recorded next to the figures: on a shared
machine they vary with what else runs.

Writes ``<out>/generators.json`` and ``<out>/generators.md``.

    python -m benchmarks.generators [--dataset pneumoniamnist] [--family cvae] [--threads 2]
                                    [--dp-epsilon 8] [--out benchmarks/results]

With ``--compare FAMILY ...`` it instead runs ``ffsecure simulate`` once per
(dataset, split, seed, family) cell and records FF / centralized accuracy, the
per-class fidelity means (KID, precision, recall; :mod:`ffsecure.fidelity`) and
the slowest site's generator time, with the CPU defaults unless ``--epochs`` or
``--samples-per-class`` override them (the table says so). Each cell keeps its
``results.json`` and ``samples.png`` under ``<out>/generators-utility/``; the
summary goes to ``<out>/generators-utility.json`` and ``.md``.

    python -m benchmarks.generators --compare cvae flow --datasets digits \
        --splits pathological dirichlet-0.1 --seeds 0 1 [--epochs 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from ffsecure import data
from ffsecure import generators as G
from ffsecure.dp import DPConfig
from ffsecure.simulate import SimulationConfig, run_simulation
from ffsecure.torchutil import torch_threads

SPLITS = {"pathological": ("pathological", 0.5), "dirichlet-0.1": ("dirichlet", 0.1)}
SPLITS["dirichlet-0.5"] = ("dirichlet", 0.5)


def _load(name: str):
    if name == "digits":
        return data.load_digits()
    try:
        return data.load_medmnist(name)
    except Exception:  # noqa: BLE001 - fall back to shipped data when the files are absent
        return data.load_digits()


def _fit(family: str, ds, size: str, dp: DPConfig | None) -> dict:
    k = len(ds.class_names)
    cfg = G.default_config(family, image_shape=ds.image_shape, num_classes=k, size=size)
    settings = G.default_train_settings(family, size, seed=0)
    gen = G.build(family, cfg)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    report = gen.fit(ds.train_x, ds.train_y, settings, dp=dp)
    fit_s = time.perf_counter() - start
    labels = torch.arange(k).repeat_interleave(max(1, 1000 // k))
    start = time.perf_counter()
    gen.sample(labels, seed=0)
    sample_s = time.perf_counter() - start
    return {
        "family": family,
        "size": size,
        "dataset": ds.name,
        "images": int(ds.train_x.shape[0]),
        "image_shape": list(ds.image_shape),
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "steps": report.steps,
        "dp_epsilon": None if report.dp is None else round(report.dp["epsilon"], 4),
        "fit_seconds": round(fit_s, 2),
        "sample_images_per_second": round(labels.numel() / sample_s, 1),
        "final_loss": round(report.final_loss, 5),
        "load_average_1m_at_start": round(load, 2),
    }


def to_markdown(result: dict) -> str:
    lines = [
        "# Generator fit and sampling",
        "",
        f"Machine: {result['machine']}; torch threads: {result['threads']}.",
        "",
        "| family | size | dataset | images | epochs | DP epsilon | fit (s) | sampling (img/s) | "
        "load avg |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['family']} | {r['size']} | {r['dataset']} | {r['images']} | {r['epochs']} | "
            f"{r['dp_epsilon'] if r['dp_epsilon'] is not None else '-'} | {r['fit_seconds']} | "
            f"{r['sample_images_per_second']} | {r['load_average_1m_at_start']} |"
        )
    return "\n".join(lines) + "\n"


def _utility_cell(args, dataset: str, split: str, seed: int, family: str) -> dict:
    scheme, alpha = SPLITS[split]
    out = Path(args.out) / "generators-utility" / f"{dataset}-{split}-s{seed}-{family}"
    cfg = SimulationConfig(
        dataset=dataset,
        partition=scheme,
        alpha=alpha,
        generator=family,
        epochs=args.epochs,
        samples_per_class=args.samples_per_class or 1000,
        seed=seed,
        device=args.device,
        threads=args.threads,
        out=str(out),
    )
    load = os.getloadavg()[0]
    res = run_simulation(cfg)
    fid = res["fidelity"]
    return {
        "dataset": dataset,
        "split": split,
        "seed": seed,
        "family": family,
        "epochs": "default" if args.epochs is None else args.epochs,
        "samples_per_class": cfg.samples_per_class,
        "ff_accuracy": res["federatedfactory"]["accuracy"],
        "centralized_accuracy": res["centralized"]["accuracy"],
        "ratio": res["ratio_vs_centralized"],
        "kid_mean": fid["kid_mean"],
        "precision_mean": fid["precision_mean"],
        "recall_mean": fid["recall_mean"],
        "max_site_generator_s": max(site["wall_s"] for site in res["sites"]),
        "synthesis_s": res["timings"]["synthesis_s"],
        "load_average_1m_at_start": round(load, 2),
        "out": str(out),
    }


def utility_markdown(result: dict) -> str:
    lines = [
        "# Generator families: utility and fidelity",
        "",
        f"Machine: {result['machine']}; torch threads: {result['threads']}. Epochs "
        "`default` = the simulate budget (about 96,000 image-epochs per site); a number "
        "is an override, not the CPU default.",
        "",
        "| dataset | split | seed | family | epochs | samples/class | FF acc | central acc | "
        "FF / central | KID | precision | recall | slowest site (s) | load avg |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for r in result["cells"]:
        lines.append(
            f"| {r['dataset']} | {r['split']} | {r['seed']} | {r['family']} | {r['epochs']} | "
            f"{r['samples_per_class']} | {r['ff_accuracy']:.4f} | "
            f"{r['centralized_accuracy']:.4f} | {r['ratio']:.3f} | {r['kid_mean']:.4f} | "
            f"{r['precision_mean']:.3f} | {r['recall_mean']:.3f} | "
            f"{r['max_site_generator_s']:.0f} | {r['load_average_1m_at_start']} |"
        )
    return "\n".join(lines) + "\n"


def compare(args) -> dict:
    """Run every (dataset, split, seed, family) cell; write the summary after each cell."""
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "threads": args.threads,
        "cells": [],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets:
        for split in args.splits:
            for seed in args.seeds:
                for family in args.compare:
                    result["cells"].append(_utility_cell(args, dataset, split, seed, family))
                    print(json.dumps(result["cells"][-1]), flush=True)
                    (out / "generators-utility.json").write_text(
                        json.dumps(result, indent=2) + "\n"
                    )
                    (out / "generators-utility.md").write_text(utility_markdown(result))
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--family", default="cvae", choices=sorted(G.FAMILIES))
    parser.add_argument("--size", default="default", choices=list(G.SIZES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dp-epsilon", type=float, default=None)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--compare", nargs="+", choices=sorted(G.FAMILIES), default=None)
    parser.add_argument("--datasets", nargs="+", default=["digits"])
    parser.add_argument("--splits", nargs="+", choices=list(SPLITS), default=["pathological"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--samples-per-class", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(args)
    with torch_threads(args.threads):
        return _fit_rows(args)


def _fit_rows(args) -> dict:
    ds = _load(args.dataset)
    rows = [_fit(args.family, ds, args.size, None)]
    print(json.dumps(rows[-1]), flush=True)
    if args.dp_epsilon is not None:
        rows.append(_fit(args.family, ds, args.size, DPConfig(target_epsilon=args.dp_epsilon)))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "threads": args.threads,
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "generators.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "generators.md").write_text(to_markdown(result))
    return result


if __name__ == "__main__":
    main()
