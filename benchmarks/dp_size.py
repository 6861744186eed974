"""Which DP mechanism at which site size: measured on scikit-learn digits only (public).

``ffsecure.dp.resolve_mechanism`` picks the mechanism ``auto`` runs. Its rule must come
from public data (DPImageBench: a DP hyperparameter chosen on the sensitive test set
breaks DP and inflates the result), so the size at which DP-SGD overtakes the
mean-embedding release is measured here on digits, where a site's size is varied by
giving it more classes (pathological split, ``classes_per_site`` 1, 2, 5, 10: sites of
about 130 to 1,300 training images). Every point is one ``ffsecure simulate`` run with
fresh OS noise: FederatedFactory accuracy and macro AUROC against the centralized
model of the same seed, and the slowest site's generator time. No MedMNIST file is read.

    python -m benchmarks.dp_size [--classes-per-site 1,2,5,10] [--epsilons 1,8] [--seeds 0]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path
from typing import Any

from benchmarks import common

MECHANISMS = ("mean-embedding", "dp-sgd")
DELTA = 1e-5


def run_point(cps: int, mechanism: str | None, eps: float | None, seed: int) -> dict[str, Any]:
    """One simulate run; ``mechanism None`` is the no-DP run that also trains the baselines."""
    res, wall = common.simulate_timed(
        "ffbench-dpsize-",
        dataset="digits",
        classes_per_site=cps,
        epochs=20 if mechanism == "dp-sgd" else 10,
        seed=seed,
        baselines=mechanism is None,
        dp_epsilon=None if mechanism is None else eps,
        dp_delta=None if mechanism is None else DELTA,
        dp_mechanism=mechanism or "auto",
    )
    point: dict[str, Any] = {
        "classes_per_site": cps,
        "mechanism": mechanism or "none",
        "epsilon": eps,
        "seed": seed,
        "site_sizes": [s["n_train"] for s in res["sites"]],
        "accuracy": round(res["federatedfactory"]["accuracy"], 4),
        "auroc": round(res["federatedfactory"]["auroc"], 4),
        "generator_s_max": round(max(s["wall_s"] for s in res["sites"]), 1),
        "wall_s": round(wall, 1),
    }
    if mechanism is None:
        point["centralized_accuracy"] = round(res["centralized"]["accuracy"], 4)
        point["centralized_auroc"] = round(res["centralized"]["auroc"], 4)
    return point


def _jobs(a: argparse.Namespace) -> list[tuple[int, str | None, float | None, int]]:
    cps = [int(v) for v in a.classes_per_site.split(",")]
    seeds = [int(v) for v in a.seeds.split(",")]
    eps = [float(v) for v in a.epsilons.split(",")]
    jobs: list[tuple[int, str | None, float | None, int]] = [
        (c, None, None, s) for c, s in itertools.product(cps, seeds)
    ]
    jobs += [(c, m, e, s) for c, m, e, s in itertools.product(cps, MECHANISMS, eps, seeds)]
    return jobs


def summarise(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (classes per site, mechanism, epsilon): mean ratios to centralized over seeds."""
    central = {(p["classes_per_site"], p["seed"]): p for p in points if p["mechanism"] == "none"}
    rows: dict[tuple[int, str, float], list[dict[str, Any]]] = {}
    for p in points:
        if p["mechanism"] == "none":
            continue
        rows.setdefault((p["classes_per_site"], p["mechanism"], p["epsilon"]), []).append(p)
    out = []
    for (cps, mech, eps), runs in sorted(rows.items()):
        acc = [r["accuracy"] / central[cps, r["seed"]]["centralized_accuracy"] for r in runs]
        auc = [r["auroc"] / central[cps, r["seed"]]["centralized_auroc"] for r in runs]
        acc_mean, acc_sd = common.mean_sd(acc)
        out.append(
            {
                "classes_per_site": cps,
                "site_size_median": int(statistics.median(runs[0]["site_sizes"])),
                "mechanism": mech,
                "epsilon": eps,
                "seeds": len(runs),
                "accuracy_ratio": round(acc_mean, 3),
                "accuracy_ratio_sd": None if acc_sd is None else round(acc_sd, 3),
                "auroc_ratio": round(common.mean_sd(auc)[0], 3),
                "generator_s_max": max(r["generator_s_max"] for r in runs),
            }
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    workers = result["meta"].get("settings", {}).get("workers", 1)
    md = "# Which DP mechanism at which site size (digits, public)\n\n"
    md += common.meta_line(result["meta"]) + "\n\n"
    md += (
        "Pathological split of scikit-learn digits with 1, 2, 5 or 10 classes per site; "
        "cvae; DP-SGD at a site's default schedule (20 epochs, Poisson sampling, clipping "
        "norm 1), the mean-embedding release at its defaults; delta 1e-5; fresh OS noise; "
        f"FF / centralized of the same seed; {workers} run(s) at a time, one torch thread "
        "each. 1, 2, 5, 10 classes per site make 10, 5, 2 and 1 site(s) of about 130 to "
        "1,347 images; a site's classes keep about 135 images each at every size, so the "
        "size moves DP-SGD's sampling rate, not the release's per-class sums. No MedMNIST "
        "file is read.\n\n"
    )
    rows = [
        [
            r["classes_per_site"],
            r["site_size_median"],
            r["epsilon"],
            r["mechanism"],
            r["seeds"],
            f"{r['accuracy_ratio']:.3f}"
            + (f" ± {r['accuracy_ratio_sd']:.3f}" if r["accuracy_ratio_sd"] is not None else ""),
            f"{r['auroc_ratio']:.3f}",
            r["generator_s_max"],
        ]
        for r in result["summary"]
    ]
    md += common.table(
        [
            "classes per site",
            "site size (median)",
            "epsilon",
            "mechanism",
            "seeds",
            "accuracy / centralized",
            "AUROC / centralized",
            "generator s per site (max)",
        ],
        rows,
        "rrrlrrrr",
    )
    return md


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes-per-site", default="1,2,5,10")
    p.add_argument("--epsilons", default="1,8")
    p.add_argument("--seeds", default="0")
    p.add_argument("--workers", type=int, default=2, help="runs at a time (one torch thread each)")
    p.add_argument("--out", default=str(common.DEFAULT_OUT))
    p.add_argument("--name", default="dp_size")
    a = p.parse_args(argv)
    settings = {k: getattr(a, k) for k in ("classes_per_site", "epsilons", "seeds", "workers")}
    result: dict[str, Any] = {"meta": common.pool_meta(a.name, settings), "points": []}
    result["points"] = common.run_pool(run_point, _jobs(a), a.workers)
    result["points"].sort(
        key=lambda q: (q["classes_per_site"], q["mechanism"], q["epsilon"] or 0, q["seed"])
    )
    result["summary"] = summarise(result["points"])
    common.write_result(Path(a.out), a.name, result, markdown(result) + "\n")
    return result


if __name__ == "__main__":
    main()
