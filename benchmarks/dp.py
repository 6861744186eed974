"""Privacy-utility benchmark: the FederatedFactory / centralized ratio against epsilon.

Every site trains its generator with DP-SGD (Opacus, PRV accountant, Poisson
sampling, clipping norm 1.0) at a target epsilon in {1, 2, 4, 8} with
delta 1e-5, and without DP (epsilon = infinity); the rest of the pipeline is
``ffsecure.simulate.run_simulation`` with its defaults. All points of a curve
use the same generator epoch count (``--epochs``, 10 by default: with DP the
noise per step grows with the number of steps, so the default image-epoch
budget of up to 300 epochs would drown small sites in noise), so the curve
isolates DP. The centralized reference is measured once, in the same run (the
epsilon = infinity point runs the baselines).

Families: ``cvae`` at its default size and ``ddpm`` at its ``tiny`` size
(``--ddpm-size``; its ``default`` size under DP-SGD needs a GPU to finish, and
is listed as not measured on a CPU run).

Writes ``<out>/results/dp.json``, ``dp.md`` and ``dp.png``. Curves run in separate
processes (one family each, side by side on the machine) are combined with
``--merge``: every curve keeps the date, commit and machine of its own run.

DP noise and Poisson sampling come from the OS CSPRNG, as at a site, so two
runs of one point differ. ``--dp-reproducible`` (research only) seeds them
from ``--seed`` instead; the run's settings record ``dp_reproducible: true``.

    python -m benchmarks.dp [--datasets digits] [--epsilons 1,2,4,8,inf] [--epochs 10] [--quick]
    python -m benchmarks.dp --merge DIR,DIR [--out benchmarks]
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common

DELTA = 1e-5
EPSILONS = (1.0, 2.0, 4.0, 8.0, math.inf)
#: Epsilons measured at every seed of ``--seeds`` (the others: the first seed only).
MULTI_SEED_EPSILONS = (1.0, 8.0)
QUICK = {
    "generator_size": "tiny",
    "samples_per_class": 8,
    "classifier_epochs": 1,
    "fedavg_rounds": 1,
}


#: Published figures beside ours, with the caveat that makes them context and not targets.
CONTEXT = (
    "Context (published, not measured here): on MNIST at epsilon 10, DPImageBench (Gong et "
    "al., CCS 2025) reports downstream accuracy 98.1% for DP-FETA, 97.8% for PrivImage and "
    "97.4% for PDP-Diffusion, and DP-MERF, the mechanism measured above, is among its "
    "baselines; DPDM (Dockhorn et al. 2023) reports 95.3% on MNIST at epsilon 1. Those are "
    "MNIST with about 6,000 images per class, trained on a GPU, and report absolute accuracy; "
    "our sites hold 66 to 3,500 images of one class each and the ratios above are against a "
    "classifier trained centrally on the same small data."
)


def _eps_label(eps: float) -> str:
    return "inf" if math.isinf(eps) else f"{eps:g}"


def run_point(
    dataset: str,
    family: str,
    eps: float,
    *,
    epochs: int,
    quick: bool,
    threads: int,
    device: str,
    seed: int,
    size: str = "default",
    dp_reproducible: bool = False,
    mechanism: str = "dp-sgd",
    data_root: str | None = None,
) -> dict[str, Any]:
    # heavy: torch, only when this part runs (results render without it)
    from ffsecure.simulate import SimulationConfig, run_simulation

    overrides = dict(QUICK) if quick else {"generator_size": size}
    baselines = math.isinf(eps)
    with tempfile.TemporaryDirectory(prefix="ffbench-dp-") as tmp:
        cfg = SimulationConfig(
            dataset=dataset,
            generator=family,
            epochs=epochs,
            seed=seed,
            threads=threads,
            device=device,
            out=tmp,
            plots=False,
            baselines=baselines,
            dp_epsilon=None if baselines else float(eps),
            dp_delta=None if baselines else DELTA,
            dp_reproducible=dp_reproducible and not baselines,
            dp_mechanism=mechanism,
            membership_attack=True,
            data_root=data_root,
            **overrides,
        )
        t0 = time.perf_counter()
        res = run_simulation(cfg)
        wall = time.perf_counter() - t0
    dps = [s["dp"] for s in res["sites"] if s["dp"]]
    point: dict[str, Any] = {
        "dataset": dataset,
        "generator": family,
        "generator_size": cfg.generator_size,
        "epsilon": _eps_label(eps),
        "delta": None if baselines else DELTA,
        "status": "measured",
        "sites": res["settings"]["sites"],
        "epochs": epochs,
        "accuracy": res["federatedfactory"]["accuracy"],
        "auroc": res["federatedfactory"]["auroc"],
        "achieved_epsilon": [round(d["epsilon"], 4) for d in dps] or None,
        "noise_multiplier": [round(d["noise_multiplier"], 4) for d in dps] or None,
        "generators_s": res["timings"].get("generators_s"),
        "site_generator_s": max(s["wall_s"] for s in res["sites"]),
        "membership_auroc": max(s["membership"]["auroc"] for s in res["sites"]),
        # the 95% interval of that largest site's AUROC (few held-out images: wide)
        "membership_auroc_ci95": max(
            (s["membership"] for s in res["sites"]), key=lambda m: m["auroc"]
        ).get("auroc_ci95"),
        "membership_attack": sorted({s["membership"]["attack"] for s in res["sites"]}),
        # the sampler that gave each site's AUROC (the worst of the reference samplers)
        "membership_sampler": sorted({s["membership"]["sampler"] for s in res["sites"]}),
        "membership_non_member_split": sorted(
            {s["membership"]["non_member_split"] for s in res["sites"]}
        ),
        "seed": seed,
        "wall_s": round(wall, 1),
        "settings": {k: v for k, v in res["settings"].items() if k != "out"},
    }
    if baselines:
        point["centralized"] = {
            "accuracy": res["centralized"]["accuracy"],
            "auroc": res["centralized"]["auroc"],
        }
        point["fedavg"] = {"accuracy": res["fedavg"]["accuracy"], "auroc": res["fedavg"]["auroc"]}
    return point


def run(
    *,
    datasets: list[str] | None = None,
    families: list[str] | None = None,
    epsilons: tuple[float, ...] = EPSILONS,
    epochs: int = 10,
    quick: bool = False,
    out: Path = common.DEFAULT_OUT,
    threads: int = 1,
    device: str = "cpu",
    seed: int = 0,
    ddpm_size: str = "tiny",
    dp_reproducible: bool = False,
    mechanisms: list[str] | None = None,
    seeds: list[int] | None = None,
    multi_seed_epsilons: tuple[float, ...] = MULTI_SEED_EPSILONS,
    data_root: str | None = None,
    progress=print,
) -> dict[str, Any]:
    """Measure every (data set, family, mechanism) curve; ``seeds`` at ``multi_seed_epsilons``.

    Other epsilons (and the no-DP point, which carries the centralized reference) run the
    first seed only. A point's numbers are the mean over its seeds, with the sample
    standard deviation (``*_sd``) and the seed count ``n_seeds``.
    """
    # heavy: torch, only when this part runs (results render without it)
    import torch

    torch.set_num_threads(threads)
    datasets = datasets or ["digits"]
    families = families or ["cvae", "ddpm"]
    mechanisms = mechanisms or ["dp-sgd"]
    seeds = seeds or [seed]
    sizes = {"cvae": "default", "ddpm": ddpm_size}
    if quick:
        epochs = 1
    # the no-DP point first: it carries the centralized reference of the curve
    order = sorted(epsilons, key=lambda e: (not math.isinf(e), e))
    settings = {
        "datasets": datasets,
        "families": families,
        "mechanisms": mechanisms,
        "epsilons": [_eps_label(e) for e in order],
        "delta": DELTA,
        "epochs": epochs,
        "threads": threads,
        "seed": seeds[0],
        "seeds": seeds,
        "multi_seed_epsilons": [_eps_label(e) for e in multi_seed_epsilons],
        "dp_reproducible": dp_reproducible,
        "sizes": {f: sizes.get(f, "default") for f in families},
        "overrides": QUICK if quick else "none (ffsecure.simulate defaults)",
    }
    result: dict[str, Any] = {
        "meta": common.meta("dp", settings, device=device, quick=quick),
        "curves": [],
    }
    for ds, fam, mech in itertools.product(datasets, families, mechanisms):
        size = "tiny" if quick else sizes.get(fam, "default")
        curve: dict[str, Any] = {
            "dataset": ds,
            "generator": fam,
            "generator_size": size,
            "mechanism": mech,
            "epochs": epochs,
            "points": [],
        }
        result["curves"].append(curve)
        for eps in order:
            runs = []
            for s in seeds if eps in multi_seed_epsilons else seeds[:1]:
                progress(f"[dp] {ds} {fam} ({size}, {mech}) epsilon={_eps_label(eps)} seed={s}")
                runs.append(
                    run_point(
                        ds,
                        fam,
                        eps,
                        epochs=epochs,
                        quick=quick,
                        threads=threads,
                        device=device,
                        seed=s,
                        size=size,
                        dp_reproducible=dp_reproducible,
                        mechanism=mech,
                        data_root=data_root,
                    )
                )
            p = _combine(runs, curve)
            curve["points"].append(p)
            progress(
                f"    accuracy {p['accuracy']:.3f}, ratio {p['ratio_vs_centralized']}, "
                f"membership AUROC {p['membership_auroc']:.3f} ({p['wall_s']} s)"
            )
            _write(result, out)  # a partial curve is kept if a later point is stopped
    if "ddpm" in families and sizes.get("ddpm") != "default" and not device.startswith("cuda"):
        result["not_measured"] = [
            {
                "generator": "ddpm (default size)",
                "datasets": datasets,
                "reason": "DP-SGD on the ddpm family at its default size needs a GPU to finish; "
                "no GPU in this run",
            }
        ]
    _write(result, out)
    return result


def _combine(runs: list[dict[str, Any]], curve: dict[str, Any]) -> dict[str, Any]:
    """One point from its seeds' runs: means, standard deviations, worst-case attack and time."""
    if "centralized" in runs[0]:
        curve["centralized"], curve["fedavg"] = runs[0].pop("centralized"), runs[0].pop("fedavg")
    cen = curve.get("centralized")
    p = dict(runs[0])
    p["n_seeds"] = len(runs)
    p["seeds"] = [r["seed"] for r in runs]
    for key in ("accuracy", "auroc"):
        p[key], p[f"{key}_sd"] = common.mean_sd([r[key] for r in runs])
        p[f"{key}_runs"] = [r[key] for r in runs]
    leakiest = max(runs, key=lambda r: r["membership_auroc"])
    p["membership_auroc"] = leakiest["membership_auroc"]
    p["membership_auroc_ci95"] = leakiest.get("membership_auroc_ci95")
    p["site_generator_s"] = max(r["site_generator_s"] for r in runs)
    p["achieved_epsilon"] = _flat([r["achieved_epsilon"] for r in runs])
    p["noise_multiplier"] = _flat([r["noise_multiplier"] for r in runs])
    p["wall_s"] = round(sum(r["wall_s"] for r in runs), 1)
    p["ratio_vs_centralized"] = (
        round(p["accuracy"] / cen["accuracy"], 4) if cen and cen["accuracy"] else None
    )
    p["auroc_ratio_vs_centralized"] = (
        round(p["auroc"] / cen["auroc"], 4) if cen and cen.get("auroc") else None
    )
    return p


def _with_interval(value: float | None, interval: list[float] | None) -> str:
    """``0.612 [0.52, 0.70]``: a membership AUROC and its 95% interval (older points: none)."""
    if value is None or not interval:
        return common.f3(value)
    return f"{common.f3(value)} [{interval[0]:.2f}, {interval[1]:.2f}]"


def _flat(lists: list[list[float] | None]) -> list[float] | None:
    out = [v for values in lists if values for v in values]
    return out or None


def merge(part_dirs: list[Path], out: Path = common.DEFAULT_OUT) -> dict[str, Any]:
    """Combine the ``dp`` results of several runs into one, each curve stamped with its run's meta.

    The runs must share the settings that make their curves comparable (delta, seed,
    overrides); each curve keeps its own generator epoch count (the same at each of its
    points). A curve (data set, family, size, epochs) measured by two runs is refused.
    """
    parts = [common.read_result(Path(d), "dp") for d in part_dirs]
    missing = [str(d) for d, p in zip(part_dirs, parts, strict=True) if p is None]
    if missing:
        raise FileNotFoundError(
            f"no results/dp.json in {', '.join(missing)}; run benchmarks.dp --out DIR there first"
        )
    keys = ("delta", "seed", "overrides")
    first = parts[0]["meta"]["settings"]
    for d, p in zip(part_dirs[1:], parts[1:], strict=True):
        other = {k: p["meta"]["settings"].get(k) for k in keys}
        if other != {k: first.get(k) for k in keys}:
            raise ValueError(
                f"{d}: settings {other} differ from {part_dirs[0]}'s "
                f"{ {k: first.get(k) for k in keys} }; its curves are not comparable"
            )
    curves: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for p in parts:
        for c in p["curves"]:
            c = {
                **c,
                "generator_size": c.get("generator_size", "default"),
                "epochs": c.get("epochs", p["meta"]["settings"]["epochs"]),
                "meta": c.get("meta") or {k: p["meta"][k] for k in ("date", "git", "machine")},
            }
            key = (
                c["dataset"],
                c["generator"],
                c["generator_size"],
                c["epochs"],
                c.get("mechanism", "dp-sgd"),
            )
            if key in seen:
                raise ValueError(
                    f"the {key[0]} {key[1]} ({key[2]}, {key[3]} epochs) curve is in more than one "
                    "of the merged runs"
                )
            seen.add(key)
            curves.append(c)
    md = common.meta(
        "dp",
        {
            **first,
            "epochs": sorted({c["epochs"] for c in curves}),
            "datasets": sorted({c["dataset"] for c in curves}),
            "families": sorted({c["generator"] for c in curves}),
            "merged_from": [str(d) for d in part_dirs],
        },
        quick=parts[0]["meta"]["quick"],
    )
    result: dict[str, Any] = {"meta": md, "curves": curves}
    measured = {(c["generator"], c["generator_size"]) for c in curves if c["points"]}
    nm = [n for p in parts for n in p.get("not_measured", [])]
    if nm and ("ddpm", "default") not in measured:
        result["not_measured"] = nm[:1]
    _write(result, out)
    return result


def fold(base_dir: Path, part_dirs: list[Path], out: Path = common.DEFAULT_OUT) -> dict[str, Any]:
    """Fold the points of later runs into the matching curves of ``base_dir``'s results.

    A later run that measured other epsilons of a curve, or the same epsilon again with
    newer code, adds to that curve rather than making a curve of its own: each folded point
    replaces the base's point at its epsilon (or is inserted in epsilon order), keeps its
    own run (``meta``: date, commit, machine, command) and takes its ratios against the base
    curve's centralized reference. A part curve with no base curve, or a base curve without
    a centralized reference, is refused: its ratios would have nothing to divide by.
    """
    base = common.read_result(Path(base_dir), "dp")
    if base is None:
        raise FileNotFoundError(f"no results/dp.json in {base_dir}")
    folded_from: list[str] = []
    for d in part_dirs:
        part = common.read_result(Path(d), "dp")
        if part is None:
            raise FileNotFoundError(f"no results/dp.json in {d}; run benchmarks.dp --out {d}")
        if part["meta"]["settings"].get("delta") != base["meta"]["settings"].get("delta"):
            raise ValueError(f"{d}: another delta than {base_dir}'s; its points do not compare")
        run_meta = {
            k: part["meta"][k] for k in ("date", "git", "machine", "command") if k in part["meta"]
        }
        for pc in part["curves"]:
            key = _curve_key(pc, part)
            target = next((c for c in base["curves"] if _curve_key(c, base) == key), None)
            cen = (target or {}).get("centralized")
            if target is None or not cen:
                raise ValueError(
                    f"{d}: no curve {key} with a centralized reference in {base_dir} to fold into"
                )
            for point in pc["points"]:
                q = {**point, "meta": run_meta}
                q["ratio_vs_centralized"] = round(q["accuracy"] / cen["accuracy"], 4)
                q["auroc_ratio_vs_centralized"] = round(q["auroc"] / cen["auroc"], 4)
                kept = [p for p in target["points"] if p["epsilon"] != q["epsilon"]]
                target["points"] = sorted(kept + [q], key=_epsilon_order)
        folded_from.append(str(d))
    base["meta"]["settings"]["folded_from"] = [
        *base["meta"]["settings"].get("folded_from", []),
        *folded_from,
    ]
    _write(base, out)
    return base


def _curve_key(curve: dict[str, Any], result: dict[str, Any]) -> tuple:
    return (
        curve["dataset"],
        curve["generator"],
        curve.get("generator_size", "default"),
        epochs_of(curve, result),
        curve.get("mechanism", "dp-sgd"),
    )


def _epsilon_order(point: dict[str, Any]) -> tuple[bool, float]:
    """The no-DP point first (it carries the reference), then epsilon ascending."""
    eps = point["epsilon"]
    return (eps != "inf", math.inf if eps == "inf" else float(eps))


def _write(result: dict[str, Any], out: Path) -> None:
    png = plot(result, Path(out) / "results" / "dp.png")
    result["plot"] = png.name if png else None
    common.write_result(out, "dp", result, to_markdown(result))


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Ratio against epsilon, one line per (data set, family); infinity drawn at the right edge."""
    curves = [c for c in result["curves"] if c["points"]]
    if not curves:
        return None
    # heavy: matplotlib, only when plotting
    import matplotlib

    matplotlib.use("Agg", force=True)
    # heavy: matplotlib, only when plotting
    import matplotlib.pyplot as plt

    finite = sorted(
        {float(p["epsilon"]) for c in curves for p in c["points"] if p["epsilon"] != "inf"}
    ) or [1.0]
    x_inf = max(finite) * 2
    several_epochs = len({epochs_of(c, result) for c in curves}) > 1
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for c in curves:
        pts = sorted(
            ((x_inf if p["epsilon"] == "inf" else float(p["epsilon"])), p["ratio_vs_centralized"])
            for p in c["points"]
            if p["ratio_vs_centralized"] is not None
        )
        if pts:
            size = c.get("generator_size", "default")
            label = f"{c['dataset']} {c['generator']}" + ("" if size == "default" else f" ({size})")
            label += f" {c.get('mechanism', 'dp-sgd')}"
            if several_epochs:
                label += f", {epochs_of(c, result)} epochs"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ticks = [*finite, x_inf]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in finite] + ["∞"])
    ax.set_xlabel(f"target epsilon per site (delta {DELTA:g})")
    ax.set_ylabel("FF accuracy / centralized")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Privacy-utility (DP on every site's generator)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _before_worst_sampler_note(result: dict[str, Any]) -> str:
    """Which measured points took their membership AUROC under the module's own sampler
    alone (measured before the attack took the worst sampler: a lower bound)."""
    points = [
        p for c in result["curves"] for p in c["points"] if p.get("membership_auroc") is not None
    ]
    before = [p for p in points if "membership_sampler" not in p]
    if not before:
        return ""
    which = (
        "Every point on this page was"
        if len(before) == len(points)
        else ("Points whose JSON has no `membership_sampler` were")
    )
    return (
        f" {which} measured before the attack took the worst sampler, under the module's own "
        "sampler alone: a lower bound (`python -m benchmarks.mia_samplers` measures the gap)."
    )


def to_markdown(result: dict[str, Any]) -> str:
    md = result["meta"]
    s = md["settings"]
    merged = s.get("merged_from")
    head = (
        f"Curves of {len(merged)} runs on this machine (each names its own date, commit and "
        f"machine), merged {md.get('date')}."
        if merged
        else common.meta_line(md)
    )
    lines = [
        "# Privacy-utility: FederatedFactory / centralized against epsilon",
        "",
        head,
        f"Delta {DELTA:g} per site, Opacus PRV accountant. dp-sgd: the same generator epoch "
        "count at every point of a curve (its heading names it), Poisson sampling, clipping "
        "norm 1.0. mean-embedding: one Gaussian release of sensitivity 1 per site, the cvae "
        "decoder fitted to it (ffsecure.dp_embedding defaults); its no-DP point is the cvae "
        f"trained without DP for the heading's epochs. Other settings: {s['overrides']}; seeds "
        f"{s.get('seeds', [s['seed']])} at epsilon {s.get('multi_seed_epsilons', [])}, the "
        "first seed elsewhere; mean ± sample standard deviation over the seeds. Membership "
        "AUROC: the strongest attack of `site-node privacy-check` (loss or nearest-sample) on "
        "each site's module, at its worst over the check's samplers, the largest over sites and "
        "seeds; non-members from the validation split where the data set has one (MedMNIST), "
        "else the test split (digits), see docs/privacy.md." + _before_worst_sampler_note(result),
        "",
    ]
    for c in result["curves"]:
        cen = c.get("centralized")
        size = c.get("generator_size", "default")
        lines.append(
            f"## {c['dataset']}, {c['generator']}"
            + ("" if size == "default" else f" ({size})")
            + f", {c.get('mechanism', 'dp-sgd')}"
            + f", {epochs_of(c, result)} generator epochs"
            + (
                f" (centralized {common.f3(cen['accuracy'])} / {common.f3(cen['auroc'])}, "
                f"FedAvg {common.f3(c['fedavg']['accuracy'])})"
                if cen
                else ""
            )
        )
        if c.get("meta"):
            lines += ["", "This curve: " + common.meta_line(c["meta"])]
        folded: dict[str, list[str]] = {}  # points folded in from later runs (fold), by run
        for p in c["points"]:
            if p.get("meta"):
                folded.setdefault(common.meta_line(p["meta"]), []).append(p["epsilon"])
        for run_line, eps in folded.items():
            lines += ["", f"Epsilon {', '.join(eps)} from a later run: {run_line}"]
        lines += [
            "",
            common.table(
                [
                    "epsilon",
                    "seeds",
                    "FF accuracy",
                    "FF AUROC",
                    "accuracy / centralized",
                    "AUROC / centralized",
                    "membership AUROC (max) [95% interval]",
                    "noise multiplier (min-max)",
                    "generator s per site (max)",
                    "run s",
                ],
                [
                    [
                        p["epsilon"],
                        p.get("n_seeds", 1),
                        _pm(p["accuracy"], p.get("accuracy_sd")),
                        _pm(p["auroc"], p.get("auroc_sd")),
                        common.f3(p["ratio_vs_centralized"]),
                        common.f3(p.get("auroc_ratio_vs_centralized")),
                        _with_interval(p.get("membership_auroc"), p.get("membership_auroc_ci95")),
                        _span(p["noise_multiplier"]),
                        common.f1(p.get("site_generator_s")),
                        common.f1(p["wall_s"]),
                    ]
                    for p in c["points"]
                ],
                "lrrrrrrlrr",
            ),
            "",
        ]
    if result.get("plot"):
        lines += [f"![privacy-utility]({result['plot']})", ""]
    lines += [CONTEXT, ""]
    lines += [f"{note}\n" for note in result.get("notes", [])]
    for nm in result.get("not_measured", []):
        lines.append(
            f"Not measured: {nm['generator']} on {', '.join(nm['datasets'])}: {nm['reason']}."
        )
    return "\n".join(lines) + "\n"


def epochs_of(curve: dict[str, Any], result: dict[str, Any]) -> int:
    """A curve's generator epoch count (results written before curves carried it: the run's)."""
    return curve.get("epochs") or result["meta"]["settings"]["epochs"]


def _pm(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "—"
    return common.f3(mean) if sd is None else f"{mean:.3f} ± {sd:.3f}"


def _span(values: list[float] | None) -> str:
    if not values:
        return "—"
    lo, hi = min(values), max(values)
    return f"{lo:.3f}" if lo == hi else f"{lo:.3f}-{hi:.3f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="digits")
    p.add_argument("--families", default="cvae")
    p.add_argument(
        "--ddpm-size",
        default="tiny",
        choices=("tiny", "default", "full"),
        help="ddpm size (default needs a GPU under DP-SGD)",
    )
    p.add_argument("--epsilons", default="1,2,4,8,inf")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None, help="seeds at --multi-seed-epsilons, e.g. 0,1,2")
    p.add_argument("--multi-seed-epsilons", default="1,8")
    p.add_argument(
        "--mechanisms",
        default="mean-embedding",
        help="mean-embedding and/or dp-sgd (comma-separated)",
    )
    p.add_argument("--data-root", default=None, help="folder of the MedMNIST .npz files")
    p.add_argument(
        "--dp-reproducible",
        action="store_true",
        help="research only: seed DP noise and sampling from --seed (recorded in the results)",
    )
    p.add_argument(
        "--merge",
        default=None,
        metavar="DIR,DIR,...",
        help="combine the --out directories of earlier runs into --out (runs nothing)",
    )
    p.add_argument(
        "--fold",
        default=None,
        metavar="BASE,DIR,...",
        help="fold the points of the later runs DIR,... into BASE's curves, into --out "
        "(runs nothing)",
    )
    p.add_argument("--out", default=str(common.DEFAULT_OUT))
    a = p.parse_args(argv)
    if a.fold:
        base, *parts = (Path(d) for d in a.fold.split(","))
        return fold(base, parts, Path(a.out))
    if a.merge:
        return merge([Path(d) for d in a.merge.split(",")], Path(a.out))
    return run(
        datasets=a.datasets.split(","),
        families=a.families.split(","),
        epsilons=_epsilons(a.epsilons),
        epochs=a.epochs,
        quick=a.quick,
        out=Path(a.out),
        threads=a.threads,
        device=a.device,
        seed=a.seed,
        ddpm_size=a.ddpm_size,
        dp_reproducible=a.dp_reproducible,
        mechanisms=a.mechanisms.split(","),
        seeds=[int(v) for v in a.seeds.split(",")] if a.seeds else [a.seed],
        multi_seed_epsilons=_epsilons(a.multi_seed_epsilons),
        data_root=a.data_root,
    )


def _epsilons(text: str) -> tuple[float, ...]:
    return tuple(
        math.inf if e.strip() in ("inf", "infinity") else float(e) for e in text.split(",")
    )


if __name__ == "__main__":
    main()
