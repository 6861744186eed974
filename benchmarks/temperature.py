"""How the cvae sampling temperature moves FederatedFactory accuracy, over paired seeds.

The study behind the cvae ``temperature`` default (result files
``temperature-<dataset>.json/md``). One pathological split
(one class per site, seed 0); each site's cvae is trained once exactly as
``ffsecure simulate`` trains it (same config, seed ``site``, the image-epoch
budget), then for every seed and every temperature the aggregator's steps
are repeated: synthesize the class-balanced set (synthesis seed = the seed),
train the simulate-default classifier on it (classifier seed = the seed),
evaluate on the real test split. The centralized reference is the same
classifier trained on the real training split over the same seeds, so the
ratio is a mean over classifier seeds on both sides. Temperatures are
compared on the same seed (paired): the table says on how many seeds each
temperature beats the current default.

``--generators DIR`` keeps the trained generators (``site-<i>.safetensors``
and ``meta.json``) and reuses them when their config and split match, so
other temperatures or seeds can be added without retraining.

    python -m benchmarks.temperature --dataset breastmnist --generators /tmp/gens
    python -m benchmarks.temperature --quick      # digits, tiny settings (seconds)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from ffsecure import partition

TEMPERATURES = (0.6, 0.8, 1.0, 1.2)
SEEDS = (0, 1, 2, 3, 4)
QUICK = {
    "dataset": "digits",
    "generator_size": "tiny",
    "epochs": 1,
    "samples_per_class": 8,
    "classifier_epochs": 1,
    "classifier_min_steps": 0,
    "temperatures": (0.8, 1.0),
    "seeds": (0, 1),
}


def _meta_key(
    dataset: str, config: dict[str, Any], epochs: list[int], sizes: list[int]
) -> dict[str, Any]:
    cfg = {k: v for k, v in config.items() if k != "temperature"}
    return {"dataset": dataset, "config": cfg, "epochs": epochs, "site_images": sizes}


def train_or_load_generators(
    ds, *, dataset: str, size: str, epochs: int | None, cache: Path | None, progress=print
) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """(site records with the trained generator, generator config, training seconds)."""

    # heavy: torch, only when this part runs (results render without it)
    import torch

    from ffsecure import generators
    from ffsecure.simulate import generator_epochs, site_module_id, train_site_generator

    k = ds.num_classes
    part = partition.make_partition(
        "pathological",
        ds.train_y,
        num_classes=k,
        num_sites=k,
        alpha=0.5,
        classes_per_site=1,
        seed=0,
    )
    config = generators.default_config("cvae", image_shape=ds.image_shape, num_classes=k, size=size)
    site_epochs = [
        int(epochs) if epochs is not None else generator_epochs(len(ix)) for ix in part.indices
    ]
    key = _meta_key(dataset, config, site_epochs, [len(ix) for ix in part.indices])
    cached = None
    if cache is not None and (cache / "meta.json").is_file():
        cached = json.loads((cache / "meta.json").read_text())
        if cached.get("key") != key:
            progress(f"  {cache}: generators of other settings; training anew")
            cached = None
    sites, train_s = [], 0.0
    for s, idx in enumerate(part.indices):
        ix = torch.as_tensor(idx, dtype=torch.int64)
        x, y = ds.train_x[ix], ds.train_y[ix]
        classes = sorted(int(c) for c in torch.unique(y))
        path = cache / f"site-{s}.safetensors" if cache is not None else None
        blob = path.read_bytes() if cached is not None and path.is_file() else None
        digest = hashlib.sha256(blob).hexdigest() if blob is not None else None
        if digest is not None and digest == cached["sites"][s]["weights_sha256"]:
            wall, reused = cached["sites"][s]["train_s"], True
        else:
            progress(f"  site-{s}: cvae on {len(ix)} images, {site_epochs[s]} epochs")
            gen, _, wall = train_site_generator(
                "cvae", size, config, x, y, run_seed=0, site=s, epochs=site_epochs[s], device="cpu"
            )
            wall, reused = round(wall, 1), False
            blob = generators.to_safetensors(gen)
            digest = hashlib.sha256(blob).hexdigest()
        sites.append(
            {
                "site": s,
                "classes": classes,
                "images": int(len(ix)),
                "epochs": site_epochs[s],
                "train_s": wall,
                "weights_sha256": digest,
                "module_id": site_module_id(0, s),
                "reused": reused,
                "blob": blob,
            }
        )
        train_s += wall
    if cache is not None and not all(site["reused"] for site in sites):
        cache.mkdir(parents=True, exist_ok=True)
        for site in sites:
            if not site["reused"]:
                (cache / f"site-{site['site']}.safetensors").write_bytes(site["blob"])
        (cache / "meta.json").write_text(
            json.dumps(
                {
                    "key": key,
                    "sites": [
                        {k: v for k, v in site.items() if k not in ("blob", "reused")}
                        for site in sites
                    ],
                },
                indent=1,
            )
        )
    return sites, config, train_s


def run(
    *,
    dataset: str = "breastmnist",
    temperatures=TEMPERATURES,
    seeds=SEEDS,
    quick: bool = False,
    generators_dir: Path | None = None,
    out: Path = common.DEFAULT_OUT,
    threads: int = 1,
    progress=print,
) -> dict[str, Any]:
    # heavy: torch, only when this part runs (results render without it)
    import torch

    from ffsecure import classifier as C
    from ffsecure import data, generators, synthesis
    from ffsecure.simulate import SimulationConfig

    torch.set_num_threads(threads)
    sim = SimulationConfig()
    size, epochs, per_class = "default", None, sim.samples_per_class
    clf_epochs, min_steps = sim.classifier_epochs, sim.classifier_min_steps
    if quick:
        dataset, size, epochs = QUICK["dataset"], QUICK["generator_size"], QUICK["epochs"]
        per_class, clf_epochs, min_steps = (
            QUICK["samples_per_class"],
            QUICK["classifier_epochs"],
            QUICK["classifier_min_steps"],
        )
        temperatures, seeds = QUICK["temperatures"], QUICK["seeds"]
    # date, commit and load as the run starts (generator training takes a while); settings below
    md = common.meta("temperature", {}, quick=quick)
    ds = data.load_dataset(dataset, seed=0)
    k = ds.num_classes
    progress(f"[temperature] {dataset}: training or loading {k} site generators")
    sites, gen_config, gen_s = train_or_load_generators(
        ds, dataset=dataset, size=size, epochs=epochs, cache=generators_dir, progress=progress
    )
    clf_config = C.model_config(
        sim.classifier,
        image_shape=ds.image_shape,
        num_classes=k,
        width=sim.classifier_width,
        norm=sim.classifier_norm,
        input_blur=sim.classifier_input_blur,
    )

    def settings(seed: int):
        return C.TrainConfig(
            epochs=clf_epochs,
            batch_size=sim.classifier_batch_size,
            min_steps=min_steps,
            seed=seed,
            device="cpu",
        )

    md["settings"] = {
        "dataset": dataset,
        "partition": "pathological",
        "temperatures": list(temperatures),
        "seeds": list(seeds),
        "generator_size": size,
        "generator_config": gen_config,
        "generator_epochs": [s["epochs"] for s in sites],
        "samples_per_class": per_class,
        "classifier_config": clf_config,
        "classifier_train": settings(0).to_dict(),
        "threads": threads,
        "default_temperature": gen_config["temperature"],  # the default config, as trained
        "generators_reused": all(s["reused"] for s in sites),
    }
    rows: list[dict[str, Any]] = []
    central: list[dict[str, Any]] = []
    result = {
        "meta": md,
        "sites": [{k: v for k, v in s.items() if k != "blob"} for s in sites],
        "generators_s": round(gen_s, 1),
        "centralized": central,
        "rows": rows,
    }
    for seed in seeds:
        t0 = time.perf_counter()
        model = C.train_classifier(clf_config, ds.train_x, ds.train_y, settings(seed)).model
        ev = C.evaluate(model, ds.test_x, ds.test_y, k)
        central.append(
            {
                "seed": seed,
                "accuracy": ev.accuracy,
                "auroc": ev.auroc,
                "s": round(time.perf_counter() - t0, 1),
            }
        )
        progress(f"  centralized seed {seed}: {ev.accuracy:.3f}")
        for temp in temperatures:
            cfg = {**gen_config, "temperature": float(temp)}
            sources = [
                synthesis.ModuleSource(
                    module_id=s["module_id"],
                    classes=s["classes"],
                    weights_sha256=s["weights_sha256"],
                    generator=generators.from_state("cvae", cfg, s["blob"]),
                )
                for s in sites
            ]
            t0 = time.perf_counter()
            syn = synthesis.synthesize(
                sources, num_classes=k, per_class=per_class, seed=seed, device="cpu"
            )
            model = C.train_classifier(clf_config, syn.images, syn.labels, settings(seed)).model
            ev = C.evaluate(model, ds.test_x, ds.test_y, k)
            rows.append(
                {
                    "temperature": float(temp),
                    "seed": seed,
                    "accuracy": ev.accuracy,
                    "auroc": ev.auroc,
                    "s": round(time.perf_counter() - t0, 1),
                }
            )
            progress(f"  temperature {temp:g} seed {seed}: FF {ev.accuracy:.3f}")
            common.write_result(out, f"temperature-{dataset}", result, to_markdown(result))
    result["summary"] = summarize(result)
    common.write_result(out, f"temperature-{dataset}", result, to_markdown(result))
    return result


def summarize(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per temperature: mean and spread of accuracy, ratio to the centralized mean, paired wins."""
    md = result["meta"]["settings"]
    central = {c["seed"]: c["accuracy"] for c in result["centralized"]}
    by = {}
    for r in result["rows"]:
        by.setdefault(r["temperature"], {})[r["seed"]] = r
    default = by.get(float(md["default_temperature"]), {})
    out = []
    for temp in sorted(by):
        runs = by[temp]
        seeds = sorted(s for s in runs if s in central)
        if not seeds:
            continue
        acc = [runs[s]["accuracy"] for s in seeds]
        cen = statistics.fmean(central[s] for s in seeds)
        paired = [s for s in seeds if s in default]
        out.append(
            {
                "temperature": temp,
                "seeds": len(seeds),
                "accuracy_mean": statistics.fmean(acc),
                "accuracy_sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "auroc_mean": statistics.fmean(runs[s]["auroc"] for s in seeds),
                "centralized_mean": cen,
                "ratio": statistics.fmean(acc) / cen if cen else None,
                "beats_default": sum(runs[s]["accuracy"] > default[s]["accuracy"] for s in paired),
                "ties_default": sum(runs[s]["accuracy"] == default[s]["accuracy"] for s in paired),
                "paired": len(paired),
            }
        )
    return out


def to_markdown(result: dict[str, Any]) -> str:
    md, s = result["meta"], result["meta"]["settings"]
    summary = result.get("summary") or summarize(result)
    lines = [
        "# cvae sampling temperature: FederatedFactory accuracy over paired seeds",
        "",
        common.meta_line(md),
        "",
        f"{s['dataset']}, pathological split (one class per site), {len(result['sites'])} site "
        f"cvae generators ({s['generator_size']}, epochs {s['generator_epochs']}, trained once: "
        f"{result['generators_s']:.0f} "
        f"s{', in an earlier run (reused from its folder)' if s['generators_reused'] else ''}); "
        f"per seed: synthesis ({s['samples_per_class']} per class) and classifier "
        f"(`{s['classifier_config']['arch']}`, simulate defaults) with that seed. Centralized: the "
        "same classifier on the real training split, same seeds. Current default temperature: "
        f"{s['default_temperature']:g}.",
        "",
    ]
    rows = [
        [
            f"{r['temperature']:g}",
            r["seeds"],
            f"{r['accuracy_mean']:.3f} ± {r['accuracy_sd']:.3f}",
            f"{r['auroc_mean']:.3f}",
            f"{r['centralized_mean']:.3f}",
            common.f3(r["ratio"]),
            "—"
            if r["temperature"] == s["default_temperature"]
            else f"{r['beats_default']} of {r['paired']} ({r['ties_default']} tied)",
        ]
        for r in summary
    ]
    lines += [
        common.table(
            [
                "temperature",
                "seeds",
                "FF accuracy (mean ± sd)",
                "FF AUROC (mean)",
                "centralized accuracy (mean)",
                "FF / centralized",
                "better than the default on",
            ],
            rows,
            "rrrrrrl",
        ),
        "",
    ]
    per = {}
    for r in result["rows"]:
        per.setdefault(r["seed"], {})[r["temperature"]] = r["accuracy"]
    temps = sorted({r["temperature"] for r in result["rows"]})
    central = {c["seed"]: c["accuracy"] for c in result["centralized"]}
    lines += [
        "Per seed (accuracy):",
        "",
        common.table(
            ["seed", "centralized", *[f"FF at {t:g}" for t in temps]],
            [
                [seed, common.f3(central.get(seed)), *[common.f3(per[seed].get(t)) for t in temps]]
                for seed in sorted(per)
            ],
            "r" * (2 + len(temps)),
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="breastmnist")
    p.add_argument("--temperatures", default=",".join(f"{t:g}" for t in TEMPERATURES))
    p.add_argument("--seeds", default=",".join(str(s) for s in SEEDS))
    p.add_argument(
        "--generators",
        type=Path,
        default=None,
        help="folder that keeps the trained site generators (reused when settings match)",
    )
    p.add_argument(
        "--quick", action="store_true", help="digits, tiny settings: checks the machinery only"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    a = p.parse_args(argv)
    return run(
        dataset=a.dataset,
        temperatures=tuple(float(t) for t in a.temperatures.split(",")),
        seeds=tuple(int(s) for s in a.seeds.split(",")),
        quick=a.quick,
        generators_dir=a.generators,
        out=a.out,
        threads=a.threads,
    )


if __name__ == "__main__":
    main()
