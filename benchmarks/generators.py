"""Generator benchmark: wall time of a site's generator fit and of sampling.

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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--family", default="cvae", choices=sorted(G.FAMILIES))
    parser.add_argument("--size", default="default", choices=list(G.SIZES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dp-epsilon", type=float, default=None)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
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
