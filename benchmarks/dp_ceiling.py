"""The mean-embedding release's ceiling: the same fit to the exact, noise-free statistic.

A diagnosis, not a product path. When the release falls short on a data set, either its
noise or its feature map (and fit) is the limit. This benchmark runs ``ffsecure
simulate`` with the mean-embedding mechanism at the settings of ``benchmarks.dp``'s
curves (cvae, 10 epochs for the baselines, the fit's defaults), except that the
per-class sums are released with **no noise** (what the release would give at epsilon
infinity), the baselines run in the same process (the centralized model of the same
seed), no membership attack runs, and ``dp_reproducible`` seeds the rest. If that is
short of the target too, no epsilon can reach it and the features are the limit. The
modules of these runs carry a DP record their weights do not honour; they live in a
temporary folder deleted at the end and are never sealed. Scored on the test split: it
chooses nothing (docs/privacy.md, "Which data chose each default").

    python -m benchmarks.dp_ceiling [--datasets breastmnist,pneumoniamnist] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import common

DATASETS = ("digits", "breastmnist", "pneumoniamnist", "retinamnist")


def noiseless(release: Callable[..., Any]) -> Callable[..., Any]:
    """``release`` (:func:`ffsecure.dp_embedding.release`) of the exact sums: sigma 0."""

    def exact_sums(images, labels, spec, sigma, *, noise_seed=None):  # noqa: ARG001
        return release(images, labels, spec, 0.0, noise_seed=0)

    return exact_sums


def run_point(dataset: str, seed: int, data_root: str | None) -> dict[str, Any]:
    # heavy: torch, only when this part runs
    from ffsecure import dp_embedding

    exact = dp_embedding.release
    dp_embedding.release = noiseless(exact)  # this worker process only (common.run_pool)
    try:
        res, wall = common.simulate_timed(
            "ffbench-dpceil-",
            dataset=dataset,
            epochs=10,
            seed=seed,
            baselines=True,
            dp_epsilon=8.0,  # any: the noise it sets is not added
            dp_delta=1e-5,
            dp_reproducible=True,
            dp_mechanism="mean-embedding",
            data_root=data_root,
        )
    finally:
        dp_embedding.release = exact
    ff, central = res["federatedfactory"], res["centralized"]
    return {
        "dataset": dataset,
        "seed": seed,
        "accuracy": round(ff["accuracy"], 4),
        "auroc": round(ff["auroc"], 4),
        "centralized_accuracy": round(central["accuracy"], 4),
        "centralized_auroc": round(central["auroc"], 4),
        "accuracy_ratio": round(ff["accuracy"] / central["accuracy"], 3),
        "auroc_ratio": round(ff["auroc"] / central["auroc"], 3),
        "wall_s": round(wall, 1),
    }


def summarise(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for dataset in sorted({p["dataset"] for p in points}):
        runs = [p for p in points if p["dataset"] == dataset]
        row: dict[str, Any] = {"dataset": dataset, "seeds": len(runs)}
        for key in ("accuracy_ratio", "auroc_ratio"):
            mean, sd = common.mean_sd([r[key] for r in runs])
            row[key], row[key + "_sd"] = round(mean, 3), None if sd is None else round(sd, 3)
        out.append(row)
    return out


def markdown(result: dict[str, Any]) -> str:
    workers = result["meta"].get("settings", {}).get("workers", 1)
    md = "# Mean-embedding release without noise (its ceiling)\n\n"
    md += common.meta_line(result["meta"]) + "\n\n"
    md += (
        "`ffsecure simulate`, pathological split, cvae decoder fitted by the mean-embedding "
        "mechanism at its defaults (1,000 random frequencies, bandwidth 0.5, 300 fit steps) "
        "to the **exact** per-class sums (no noise: epsilon infinity), against the "
        f"centralized model of the same seed; {workers} run(s) at a time, one torch thread "
        "each. A diagnosis only: it chooses nothing.\n\n"
    )

    def cell(r: dict[str, Any], key: str) -> str:
        sd = r[key + "_sd"]
        return f"{r[key]:.3f}" + ("" if sd is None else f" ± {sd:.3f}")

    rows = [
        [r["dataset"], r["seeds"], cell(r, "accuracy_ratio"), cell(r, "auroc_ratio")]
        for r in result["summary"]
    ]
    md += common.table(
        ["data set", "seeds", "accuracy / centralized", "AUROC / centralized"], rows, "lrrr"
    )
    return md


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=str(common.DEFAULT_OUT))
    p.add_argument("--name", default="dp_ceiling")
    a = p.parse_args(argv)
    settings = {"datasets": a.datasets, "seeds": a.seeds, "workers": a.workers}
    result: dict[str, Any] = {"meta": common.pool_meta(a.name, settings), "points": []}
    seeds = [int(s) for s in a.seeds.split(",")]
    jobs = [(d, s, a.data_root) for d, s in itertools.product(a.datasets.split(","), seeds)]
    result["points"] = common.run_pool(run_point, jobs, a.workers)
    result["points"].sort(key=lambda q: (q["dataset"], q["seed"]))
    result["summary"] = summarise(result["points"])
    common.write_result(Path(a.out), a.name, result, markdown(result) + "\n")
    return result


if __name__ == "__main__":
    main()
