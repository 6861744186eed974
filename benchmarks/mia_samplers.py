"""How much the membership attack gains by sampling each module as its holder may like.

``site-node privacy-check`` judges every sampled figure at its worst over the family's
reference samplers (the aggregator holds the weights and samples them as it likes); before
this, ``ffsecure simulate`` and ``benchmarks.dp`` measured a module under its own
(manifest) sampler only. This benchmark trains each site's module once, the way
``benchmarks.dp`` does (pathological split, ``ffsecure simulate`` with the membership attack
on), and reports per site the AUROC under the manifest's sampler beside the worst over the
samplers, and which sampler gave it: how far below the check's figure the earlier
``benchmarks.dp`` rows (those without ``membership_sampler``) may lie.

    python -m benchmarks.mia_samplers [--runs breastmnist:mean-embedding:8,digits:dp-sgd:8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common

#: dataset:mechanism:epsilon; the generator epochs are those of benchmarks.dp's curves.
RUNS = (
    "breastmnist:mean-embedding:8",
    "breastmnist:dp-sgd:8",
    "retinamnist:mean-embedding:8",
    "digits:dp-sgd:8",
)
EPOCHS = {"mean-embedding": 10, "dp-sgd": 20}


def parse_run(text: str) -> tuple[str, str, float]:
    dataset, mechanism, epsilon = text.split(":")
    if mechanism not in EPOCHS:
        raise SystemExit(f"mechanism must be one of {', '.join(EPOCHS)}: {text!r}")
    return dataset, mechanism, float(epsilon)


def measure(
    dataset: str,
    mechanism: str,
    epsilon: float,
    *,
    seed: int,
    threads: int,
    data_root: str | None,
    epochs: int | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """One federation's sites: the manifest sampler's AUROC and the worst one's, per site."""
    # heavy: torch, only when this part runs
    from benchmarks.dp import QUICK
    from ffsecure.simulate import SimulationConfig, run_simulation

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ffbench-mia-") as tmp:
        cfg = SimulationConfig(
            dataset=dataset,
            seed=seed,
            dp_epsilon=epsilon,
            dp_delta=1e-5,
            dp_mechanism=mechanism,
            epochs=EPOCHS[mechanism] if epochs is None else epochs,
            membership_attack=True,
            baselines=False,
            plots=False,
            threads=threads,
            data_root=data_root,
            out=tmp,
            **(QUICK if quick else {}),
        )
        res = run_simulation(cfg)
    sites = []
    for site in res["sites"]:
        mia = site["membership"]
        sites.append(
            {
                "classes": site["classes"],
                "members": mia["members"],
                "non_members": mia["non_members"],
                "non_member_split": mia["non_member_split"],
                "manifest_auroc": round(mia["samplers"]["manifest"], 4),
                "worst_auroc": round(mia["auroc"], 4),
                "worst_auroc_ci95": [round(v, 3) for v in mia["auroc_ci95"]],
                "worst_sampler": mia["sampler"],
                "attack": mia["attack"],
            }
        )
    return {
        "dataset": dataset,
        "mechanism": mechanism,
        "epsilon": epsilon,
        "epochs": cfg.epochs,
        "seed": seed,
        "quick": quick,
        "sites": sites,
        "max_manifest_auroc": max(s["manifest_auroc"] for s in sites),
        "max_worst_auroc": max(s["worst_auroc"] for s in sites),
        "mean_gain": round(
            sum(s["worst_auroc"] - s["manifest_auroc"] for s in sites) / len(sites), 4
        ),
        "ff_accuracy": res["federatedfactory"]["accuracy"],
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def markdown(result: dict[str, Any]) -> str:
    md = "# Membership attack: the manifest's sampler against the worst sampler\n\n"
    md += common.meta_line(result["meta"]) + "\n\n"
    md += (
        "Each site's module trained once (pathological split, `ffsecure simulate` with the "
        "membership attack; each row names its epochs and seed, and `quick` for tiny "
        "generators); the strongest attack (loss or nearest-sample) measured under the "
        "module's own sampler, and under every sampler `site-node privacy-check` measures, at "
        "its worst. Max: the largest over the federation's sites (what `benchmarks.dp` "
        "reports), the worst sampler's with the 95% interval of that site's AUROC. Mean gain: "
        "the worst minus the manifest's, averaged over sites; the worst of up to three noisy "
        "figures is above any one of them even for a module that leaks nothing, so a gain "
        "within the interval's width is noise.\n\n"
    )
    rows = []
    for r in result["runs"]:
        top = max(r["sites"], key=lambda s: s["worst_auroc"])
        lo, hi = top.get("worst_auroc_ci95", [float("nan")] * 2)
        rows.append(
            [
                r["dataset"],
                r["mechanism"],
                f"{r['epsilon']:g}",
                f"{r['epochs']}" + (" (quick)" if r.get("quick") else ""),
                r["seed"],
                len(r["sites"]),
                f"{r['max_manifest_auroc']:.3f}",
                f"{r['max_worst_auroc']:.3f} [{lo:.2f}, {hi:.2f}]",
                f"{r['mean_gain']:+.4f}",
                ", ".join(sorted({s["worst_sampler"] for s in r["sites"]})),
                f"{r['wall_s']:.0f}",
            ]
        )
    md += common.table(
        [
            "data set",
            "mechanism",
            "epsilon",
            "epochs",
            "seed",
            "sites",
            "max AUROC, manifest sampler",
            "max AUROC, worst sampler [95% interval]",
            "mean gain per site",
            "worst samplers",
            "run s",
        ],
        rows,
        "lllrrrrrrlr",
    )
    return md


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=",".join(RUNS), help="dataset:mechanism:epsilon,...")
    p.add_argument("--epochs", type=int, default=None, help="override the generator epochs")
    p.add_argument("--quick", action="store_true", help="tiny generators, a smoke run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=str(common.DEFAULT_OUT))
    p.add_argument("--name", default="mia_samplers")
    a = p.parse_args(argv)
    runs = [parse_run(r) for r in a.runs.split(",")]
    result: dict[str, Any] = {
        "meta": common.meta(
            a.name,
            {
                "runs": a.runs,
                "seed": a.seed,
                "threads": a.threads,
                "epochs": a.epochs,
                "quick": a.quick,
            },
        ),
        "runs": [],
    }
    for dataset, mechanism, epsilon in runs:
        result["runs"].append(
            measure(
                dataset,
                mechanism,
                epsilon,
                seed=a.seed,
                threads=a.threads,
                data_root=a.data_root,
                epochs=a.epochs,
                quick=a.quick,
            )
        )
    common.write_result(Path(a.out), a.name, result, markdown(result) + "\n")
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
