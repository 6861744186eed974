"""Scaling in sites: aggregator work and bytes on the wire for 10, 50 and 100 sites.

Digits split pathologically (one class per site; with more sites than classes,
the sites holding a class share it evenly) across 10, 50 and 100 simulated
sites, run through ``ffsecure.simulate.run_simulation`` with its defaults.
For each site count it records

- the aggregator's wall time: synthesis of the balanced data set plus
  training of the classifier on it (what grows with the number of modules);
- the bytes one site uploads: the length of a real sealed module package for
  the federation's generator config (safetensors weights + signed manifest +
  certificate chain, HPKE-sealed; built with the same code as a site), and
  the total over all sites (one upload each, once);
- FedAvg's bytes over its rounds on the same split: classifier weights
  (safetensors) x 2 (download + upload) x sites x rounds, and whether FedAvg
  reached FederatedFactory's accuracy (the accuracy target) within those
  rounds. When it did not, its bytes are a lower bound for reaching it.

Writes ``<out>/results/scaling.json`` and ``scaling.md``.

    python -m benchmarks.scaling [--sites 10,50,100] [--dataset digits] [--generator-size default]
    [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from ffsecure.timefmt import now_rfc3339
from tests.federation_fixture import build_federation

QUICK = {
    "generator_size": "tiny",
    "epochs": 1,
    "samples_per_class": 8,
    "classifier_epochs": 1,
    "fedavg_rounds": 1,
}


def module_package_bytes(
    family: str,
    generator_config: dict[str, Any],
    num_classes: int,
    image_shape: list[int],
    size: str,
) -> int | None:
    """Length of a real signed + sealed module package for this generator config (None: no fixture
    for it)."""

    if family != "cvae":
        return None
    with tempfile.TemporaryDirectory(prefix="ffbench-pkg-") as tmp:
        fed = build_federation(
            Path(tmp),
            sites=("site-0",),
            labels=[f"class-{i}" for i in range(num_classes)],
            image_shape=tuple(image_shape),
            generator_size=size,
            max_module_bytes=64 << 20,
        )
        assert fed.manifest.generator["config"] == generator_config, (
            "package config differs from the simulated one"
        )
        sealed, pkg = fed.make_package("site-0", classes=[0])
        return len(sealed)


def classifier_bytes(clf_config: dict[str, Any]) -> int:
    """Size of the classifier's weights as FedAvg would send them (safetensors)."""
    # heavy: torch, only when this part runs (results render without it)
    from ffsecure import classifier as C

    return len(C.to_safetensors(C.build_model(clf_config, seed=0), clf_config))


def run_sites(
    n: int,
    *,
    dataset: str,
    quick: bool,
    generator_size: str,
    threads: int,
    device: str,
    seed: int,
    epochs: int | None = None,
) -> dict[str, Any]:
    # heavy: torch, only when this part runs (results render without it)
    from ffsecure.simulate import SimulationConfig, run_simulation

    overrides = dict(QUICK) if quick else {}
    overrides.setdefault("generator_size", generator_size)
    if epochs is not None:
        overrides["epochs"] = epochs
    with tempfile.TemporaryDirectory(prefix="ffbench-scaling-") as tmp:
        cfg = SimulationConfig(
            dataset=dataset,
            partition="pathological",
            sites=n,
            classes_per_site=1,
            seed=seed,
            threads=threads,
            device=device,
            out=tmp,
            plots=False,
            baselines=True,
            **overrides,
        )
        t0 = time.perf_counter()
        res = run_simulation(cfg)
        wall = time.perf_counter() - t0
    s = res["settings"]
    k = s["generator_config"]["num_classes"]
    pkg = module_package_bytes(
        s["generator"],
        s["generator_config"],
        k,
        s["generator_config"]["image_shape"],
        s["generator_size"],
    )
    clf = classifier_bytes(s["classifier_config"])
    rounds = s["fedavg_rounds"]
    ff_acc, fa_acc = res["federatedfactory"]["accuracy"], res["fedavg"]["accuracy"]
    images = [site["n_train"] for site in res["sites"]]
    t = res["timings"]
    return {
        "sites": n,
        "images_per_site": {"min": min(images), "max": max(images)},
        "generator": s["generator"],
        "generator_size": s["generator_size"],
        "aggregator_s": round(t["synthesis_s"] + t["classifier_s"], 2),
        "synthesis_s": t["synthesis_s"],
        "classifier_s": t["classifier_s"],
        "synthetic_images": res["synthesis"]["size"],
        "site_generator_s": {
            "median": sorted(x["wall_s"] for x in res["sites"])[len(res["sites"]) // 2],
            "sum": round(sum(x["wall_s"] for x in res["sites"]), 1),
        },
        "module_package_bytes": pkg,
        "ff_total_bytes": pkg * n if pkg is not None else None,
        "classifier_bytes": clf,
        "fedavg_rounds": rounds,
        "fedavg_bytes_per_round": 2 * clf * n,
        "fedavg_total_bytes": 2 * clf * n * rounds,
        "accuracy": {
            "centralized": res["centralized"]["accuracy"],
            "federatedfactory": ff_acc,
            "fedavg": fa_acc,
        },
        "auroc": {
            "centralized": res["centralized"]["auroc"],
            "federatedfactory": res["federatedfactory"]["auroc"],
            "fedavg": res["fedavg"]["auroc"],
        },
        "fedavg_reached_target": fa_acc >= ff_acc,
        "wall_s": round(wall, 1),
        "settings": {k_: v for k_, v in s.items() if k_ != "out"},
    }


def run(
    *,
    sites: list[int] | None = None,
    dataset: str = "digits",
    generator_size: str = "default",
    quick: bool = False,
    out: Path = common.DEFAULT_OUT,
    threads: int = 1,
    device: str = "cpu",
    seed: int = 0,
    epochs: int | None = None,
    progress=print,
) -> dict[str, Any]:
    """``epochs`` fixes every site's generator epochs (None: the simulate image-epoch budget)."""
    # heavy: torch, only when this part runs (results render without it)
    import torch

    torch.set_num_threads(threads)
    sites = sites or [10, 50, 100]
    settings = {
        "sites": sites,
        "dataset": dataset,
        "generator_size": generator_size,
        "threads": threads,
        "seed": seed,
        "epochs": epochs,
        "overrides": QUICK
        if quick
        else (
            "none (ffsecure.simulate defaults)"
            if epochs is None
            else f"generator epochs {epochs} at every site; else the ffsecure.simulate defaults"
        ),
    }
    result: dict[str, Any] = {
        "meta": common.meta("scaling", settings, device=device, quick=quick),
        "rows": [],
    }
    for n in sites:
        progress(f"[scaling] {dataset}, {n} sites")
        row = run_sites(
            n,
            dataset=dataset,
            quick=quick,
            generator_size=generator_size,
            threads=threads,
            device=device,
            seed=seed,
            epochs=epochs,
        )
        row["date"], row["git"] = now_rfc3339(), common.git_commit()
        result["rows"].append(row)
        progress(
            f"    aggregator {row['aggregator_s']} s, package {row['module_package_bytes']} B, FF "
            f"{row['accuracy']['federatedfactory']:.3f} vs FedAvg {row['accuracy']['fedavg']:.3f} "
            f"({row['wall_s']} s)"
        )
        common.write_result(out, "scaling", result, to_markdown(result))
    return result


def merge(dirs: list[Path], out: Path = common.DEFAULT_OUT) -> dict[str, Any]:
    """Combine scaling runs made side by side (one site count each) into one result, by site
    count."""
    parts = [common.read_result(Path(d), "scaling") for d in dirs]
    missing = [str(d) for d, p in zip(dirs, parts, strict=True) if p is None]
    if missing:
        raise FileNotFoundError(f"no results/scaling.json in {', '.join(missing)}")
    md = dict(parts[0]["meta"])
    md["settings"] = {
        **md["settings"],
        "sites": sorted(n for p in parts for n in p["meta"]["settings"]["sites"]),
    }
    md["shards"] = [
        {
            "date": p["meta"]["date"],
            "git": p["meta"]["git"],
            "machine": p["meta"]["machine"],
            "sites": p["meta"]["settings"]["sites"],
        }
        for p in parts
    ]
    result = {
        "meta": md,
        "rows": sorted((r for p in parts for r in p["rows"]), key=lambda r: r["sites"]),
    }
    common.write_result(out, "scaling", result, to_markdown(result))
    return result


def to_markdown(result: dict[str, Any]) -> str:
    md = result["meta"]
    s = md["settings"]
    rows = result["rows"]
    done = {r["sites"] for r in rows}
    lines = [
        "# Scaling in sites",
        "",
        common.meta_line(md),
        *(
            [
                f"Measured in {len(md['shards'])} processes side by side on this machine (one site "
                "count each); wall times include the contention."
            ]
            if md.get("shards")
            else []
        ),
        *(
            [
                "Not finished in this run: "
                f"{', '.join(str(n) for n in s['sites'] if n not in done)} sites."
            ]
            if any(n not in done for n in s["sites"])
            else []
        ),
        f"{s['dataset']}, pathological split (one class per site; sites holding the same class "
        f"share it evenly), generator `{rows[0]['generator']}` size `{rows[0]['generator_size']}`."
        if rows
        else "",
        f"Other settings: {s['overrides']}; seed {s['seed']}.",
        "",
        "Aggregator work and accuracy:",
        "",
        common.table(
            [
                "sites",
                "images per site",
                "synthesis s",
                "classifier s",
                "aggregator s (synthesis + training)",
                "site generator s (median)",
                "FF acc",
                "FedAvg acc",
                "centralized acc",
            ],
            [
                [
                    r["sites"],
                    f"{r['images_per_site']['min']}-{r['images_per_site']['max']}",
                    common.f1(r["synthesis_s"]),
                    common.f1(r["classifier_s"]),
                    common.f1(r["aggregator_s"]),
                    common.f1(r["site_generator_s"]["median"]),
                    common.f3(r["accuracy"]["federatedfactory"]),
                    common.f3(r["accuracy"]["fedavg"]),
                    common.f3(r["accuracy"]["centralized"]),
                ]
                for r in rows
            ],
            "rlrrrrrrr",
        ),
        "",
        "Bytes on the wire (FederatedFactory: one sealed module per site, once; FedAvg: classifier "
        "weights down and up, every site, every round):",
        "",
        common.table(
            [
                "sites",
                "module package (per site)",
                "FF total",
                "classifier weights",
                "FedAvg rounds",
                "FedAvg total",
                "FedAvg / FF bytes",
                "FedAvg reached FF accuracy?",
            ],
            [
                [
                    r["sites"],
                    common.human_bytes(r["module_package_bytes"]),
                    common.human_bytes(r["ff_total_bytes"]),
                    common.human_bytes(r["classifier_bytes"]),
                    r["fedavg_rounds"],
                    common.human_bytes(r["fedavg_total_bytes"]),
                    f"{r['fedavg_total_bytes'] / r['ff_total_bytes']:.2f}"
                    if r["ff_total_bytes"]
                    else "—",
                    "yes"
                    if r["fedavg_reached_target"]
                    else "no (its bytes are a lower bound for the target)",
                ]
                for r in rows
            ],
            "rrrrrrrl",
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sites", default="10,50,100")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--generator-size", default="default")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="generator epochs at every site (default: simulate's)",
    )
    p.add_argument(
        "--merge",
        default=None,
        metavar="DIR,DIR,...",
        help="combine runs' --out directories (runs nothing)",
    )
    p.add_argument("--out", default=str(common.DEFAULT_OUT))
    a = p.parse_args(argv)
    if a.merge:
        return merge([Path(d) for d in a.merge.split(",")], Path(a.out))
    return run(
        sites=[int(x) for x in a.sites.split(",")],
        dataset=a.dataset,
        generator_size=a.generator_size,
        quick=a.quick,
        out=Path(a.out),
        threads=a.threads,
        device=a.device,
        seed=a.seed,
        epochs=a.epochs,
    )


if __name__ == "__main__":
    main()
