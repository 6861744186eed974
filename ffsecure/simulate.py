"""End-to-end simulation of a FederatedFactory federation on one machine, with baselines.

Pipeline: load a dataset -> split its training set across simulated sites
(pathological, Dirichlet or IID) -> each site trains a class-conditional
generator on its own images only (optionally under DP-SGD) -> synthesize a
class-balanced dataset from all site modules -> train the classifier on the
synthetic data alone -> evaluate on the real test set. For reference, the
same classifier is trained centrally on all real data (upper bound) and by
FedAvg over the same split. Everything is seeded; results go to ``results.json``,
``results.md`` and two PNGs under ``out``.

This is the research view of the pipeline (no PKI, sealing or ledger); the
deployed path runs the same library calls through ``site-node`` and
``aggregator``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ffsecure import (
    __version__,
    classifier,
    data,
    fidelity,
    generators,
    partition,
    plots,
    synthesis,
)
from ffsecure.baselines import FedAvgConfig, centralized, fedavg
from ffsecure.classifier import ARCHS
from ffsecure.dp import DPConfig
from ffsecure.errors import ConfigError
from ffsecure.partition import SCHEMES
from ffsecure.privacy.check import held_out_pool, membership_attack, subsample
from ffsecure.torchutil import torch_threads

log = logging.getLogger(__name__)

METHODS = ("centralized", "fedavg", "federatedfactory")
DEFAULT_OUT = "sim-out"
# Without --epochs, a site trains its generator for about GENERATOR_IMAGE_EPOCHS
# image-epochs (passes x images), within [MIN, MAX]_GENERATOR_EPOCHS: a small
# site needs many passes to take enough optimizer steps, a large one converges
# in few, and the CPU default stays within minutes per site.
# 96,000 image-epochs is about 1,500 optimizer steps at batch 64: a quarter of
# that left the per-class generators of breastmnist unable to tell the two
# classes apart (synthetic-trained accuracy 0.28 against 0.79 at this budget).
GENERATOR_IMAGE_EPOCHS = 96_000
MIN_GENERATOR_EPOCHS = 5
MAX_GENERATOR_EPOCHS = 700
# Classifiers (on synthetic and on real data alike) take at least this many
# optimizer steps, so that a small training set is not under-trained.
CLASSIFIER_MIN_STEPS = 500


def generator_epochs(n_images: int) -> int:
    """Epochs for a site of ``n_images`` when none are given (see GENERATOR_IMAGE_EPOCHS)."""
    budget = math.ceil(GENERATOR_IMAGE_EPOCHS / max(1, n_images))
    return max(MIN_GENERATOR_EPOCHS, min(MAX_GENERATOR_EPOCHS, budget))


@dataclass
class SimulationConfig:
    """Every knob of a simulation run (defaults: the CPU setting reported in docs/simulate.md)."""

    dataset: str = "pneumoniamnist"
    partition: str = "pathological"
    alpha: float = 0.5
    classes_per_site: int = 1
    sites: int | None = None  # None: one per class (pathological: ceil(K / classes_per_site))
    generator: str = "cvae"
    generator_size: str = "default"
    epochs: int | None = None  # generator epochs; None: generator_epochs(site size)
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    # Research only: seed the DP noise and Poisson sampling from `seed` (not private against anyone
    # who knows the seed); recorded in results.json settings and in every site's dp record.
    dp_reproducible: bool = False
    dp_mechanism: str = "auto"  # auto | mean-embedding | dp-sgd (ffsecure.dp.resolve_mechanism)
    # run site-node privacy-check's membership attack on every site's module (benchmarks.dp)
    membership_attack: bool = False
    samples_per_class: int = 1000
    classifier: str = "cnn"
    classifier_width: int = 16
    classifier_norm: str = "group"
    classifier_input_blur: float = 1.0
    classifier_min_steps: int = CLASSIFIER_MIN_STEPS
    classifier_epochs: int = 10
    classifier_batch_size: int = 128
    fedavg_rounds: int = 10
    fedavg_local_epochs: int = 1
    image_shape: tuple[int, int, int] | None = None
    data_root: str | None = None
    download: bool = False
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # CPU threads for torch (None: leave torch's setting)
    out: str = DEFAULT_OUT
    baselines: bool = True
    plots: bool = True
    fidelity: bool = True  # per-class KID and precision/recall of the synthetic set

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["image_shape"] is not None:
            d["image_shape"] = list(d["image_shape"])
        return d


@dataclass
class SiteResult:
    site: int
    module_id: str
    classes: list[int]
    n_train: int
    wall_s: float
    final_loss: float
    weights_sha256: str
    dp: dict[str, Any] | None = None
    counts: list[int] = field(default_factory=list)
    membership: dict[str, Any] | None = None  # the strongest attack's AUROC, when asked for


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; anything else is checked."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} asked for but no CUDA GPU is available", hint="use --device cpu"
        )
    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}", hint="use auto, cpu or cuda") from None
    return device


def site_train_seed(seed: int, site: int) -> int:
    """The generator-training seed of a simulated site (distinct per site and run seed)."""
    return seed * 1000 + site


def site_module_id(seed: int, site: int) -> str:
    """A reproducible 128-bit module id for a simulated site (32 lowercase hex digits)."""
    return hashlib.sha256(f"ffsecure/simulate/v1/{seed}/{site}".encode()).hexdigest()[:32]


def train_site_generator(
    family: str,
    size: str,
    config: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    run_seed: int,
    site: int,
    epochs: int | None,
    device: str,
    dp=None,
    progress=None,
):
    """Train one simulated site's generator as ``ffsecure simulate`` does:
    (generator, fit report, seconds).

    The seed is :func:`site_train_seed`; ``epochs=None`` takes
    :func:`generator_epochs` of the site's image count.
    """
    gen = generators.build(family, config)
    settings = generators.default_train_settings(
        family, size, seed=site_train_seed(run_seed, site), device=device
    )
    settings.epochs = int(epochs) if epochs is not None else generator_epochs(len(x))
    t0 = time.perf_counter()
    report = gen.fit(x, y, settings, dp=dp, progress=progress)
    return gen, report, time.perf_counter() - t0


#: Members and held-out non-members per site for the simulated membership attack.
MEMBERSHIP_EXAMPLES = 500


def _membership(gen, x, y, ds, dp, cfg: SimulationConfig) -> dict[str, Any]:
    """``site-node privacy-check``'s attack on one site's module: its images vs unseen ones.

    Non-members are held-out images of the site's classes that nothing trained on, from the
    validation split when it has enough of them (:func:`ffsecure.privacy.check.held_out_pool`
    says why), else the test split; both sets are capped at :data:`MEMBERSHIP_EXAMPLES`
    (seeded).
    """
    val = None if ds.val_x is None or ds.val_y is None else (ds.val_x, ds.val_y)
    classes = sorted({int(v) for v in y})
    pool, split = held_out_pool(classes, (ds.test_x, ds.test_y), val)
    members = subsample(x, y, MEMBERSHIP_EXAMPLES, cfg.seed)
    held_out = subsample(*pool, MEMBERSHIP_EXAMPLES, cfg.seed)
    mia = membership_attack(gen, members, held_out, dp=dp, seed=cfg.seed)
    keys: tuple[str, ...] = ("attack", "sampler", "samplers", "auroc", "auroc_ci95")
    keys += ("tpr_at_1pct_fpr", "tpr_sampler", "members", "non_members")
    return {**{k: mia[k] for k in keys}, "non_member_split": split}


def _check_config(cfg: SimulationConfig) -> None:
    problems = []
    if cfg.partition not in SCHEMES:
        problems.append(f"partition must be one of {', '.join(SCHEMES)}")
    if cfg.classifier not in ARCHS:
        problems.append(f"classifier must be one of {', '.join(ARCHS)}")
    if not 1 <= cfg.samples_per_class <= 100_000:
        problems.append("samples per class must be in [1, 100000]")
    if cfg.epochs is not None and cfg.epochs < 1:
        problems.append("generator epochs must be >= 1")
    if cfg.classifier_epochs < 1 or cfg.fedavg_rounds < 1 or cfg.fedavg_local_epochs < 1:
        problems.append("classifier epochs, FedAvg rounds and local epochs must be >= 1")
    if cfg.threads is not None and not 1 <= cfg.threads <= 256:
        problems.append("threads must be in [1, 256]")
    if cfg.dp_epsilon is None and cfg.dp_delta is not None:
        problems.append("--dp-delta needs --dp-epsilon")
    if cfg.dp_epsilon is None and cfg.dp_reproducible:
        problems.append("--dp-reproducible needs --dp-epsilon")
    if problems:
        raise ConfigError("; ".join(problems), hint="see `ffsecure simulate --help`")


class _Reporter:
    """Rich progress bars on stderr (one per site, one per phase); silent when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.progress = None
        if enabled:
            # rich only when rendering: keeps `ffsecure --help` fast
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.console = Console(stderr=True)
            self.progress = Progress(
                TextColumn("{task.description:<22}"),
                BarColumn(),
                TextColumn("{task.completed:>4.0f}/{task.total:<4.0f}"),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )

    def __enter__(self):
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def task(self, description: str, total: int):
        if self.progress is None:
            return None
        return self.progress.add_task(description, total=total, info="")

    def update(self, task, completed: int, info: str = "", total: int | None = None) -> None:
        if self.progress is not None and task is not None:
            self.progress.update(task, completed=completed, info=info, total=total)

    def print(self, obj) -> None:
        if self.enabled:
            self.console.print(obj)


def run_simulation(cfg: SimulationConfig, *, show_progress: bool = False) -> dict[str, Any]:
    """Run the whole simulation; write results.json, results.md and PNGs to
    ``cfg.out``; return the results."""
    _check_config(cfg)
    device = resolve_device(cfg.device)
    with torch_threads(cfg.threads):
        return _run(cfg, device, show_progress)


def _run(cfg: SimulationConfig, device: str, show_progress: bool) -> dict[str, Any]:
    out = Path(cfg.out)
    phases: dict[str, float] = {}
    t_all = time.perf_counter()

    # ---- data and split
    t0 = time.perf_counter()
    ds = data.load_dataset(
        cfg.dataset,
        image_shape=cfg.image_shape,
        root=cfg.data_root,
        download=cfg.download,
        seed=cfg.seed,
    )
    k = ds.num_classes
    sites = cfg.sites
    if sites is None:
        sites = math.ceil(k / cfg.classes_per_site) if cfg.partition == "pathological" else k
    part = partition.make_partition(
        cfg.partition,
        ds.train_y,
        num_classes=k,
        num_sites=sites,
        alpha=cfg.alpha,
        classes_per_site=cfg.classes_per_site,
        seed=cfg.seed,
    )
    counts = partition.count_table(part, ds.train_y)
    phases["data_s"] = time.perf_counter() - t0
    gen_config = generators.default_config(
        cfg.generator, image_shape=ds.image_shape, num_classes=k, size=cfg.generator_size
    )
    dp_cfg = None
    if cfg.dp_epsilon is not None:
        dp_cfg = DPConfig(
            target_epsilon=float(cfg.dp_epsilon),
            delta=cfg.dp_delta,
            reproducible=cfg.dp_reproducible,
            mechanism=cfg.dp_mechanism,
        )
        if cfg.dp_reproducible:
            log.warning(
                "--dp-reproducible: DP noise and sampling are seeded from --seed (research "
                "only: no privacy against anyone who knows the seed)"
            )
    clf_config = classifier.model_config(
        cfg.classifier,
        image_shape=ds.image_shape,
        num_classes=k,
        width=cfg.classifier_width,
        norm=cfg.classifier_norm,
        input_blur=cfg.classifier_input_blur,
    )
    clf_settings = classifier.TrainConfig(
        epochs=cfg.classifier_epochs,
        batch_size=cfg.classifier_batch_size,
        min_steps=cfg.classifier_min_steps,
        seed=cfg.seed,
        device=device,
    )
    out.mkdir(parents=True, exist_ok=True)

    results: dict[str, Any] = {
        "version": __version__,
        "settings": {
            **cfg.to_dict(),
            "device": device,
            "sites": part.num_sites,
            "generator_config": gen_config,
            "classifier_config": clf_config,
            "classifier_train": clf_settings.to_dict(),
            "torch_threads": torch.get_num_threads(),
        },
        "dataset": ds.summary(),
        "partition": part.to_dict(ds.train_y.numpy()),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        },
    }

    with _Reporter(show_progress) as rep:
        rep.print(partition.render_table(part, ds.train_y, ds.class_names))

        # ---- per-site generators
        t0 = time.perf_counter()
        site_results: list[SiteResult] = []
        sources = []
        attack_s = 0.0  # the membership attack's share, timed apart from the fits
        for s, idx in enumerate(part.indices):
            ix = torch.as_tensor(idx, dtype=torch.int64)
            x, y = ds.train_x[ix], ds.train_y[ix]
            classes = sorted(int(c) for c in torch.unique(y))
            epochs = int(cfg.epochs) if cfg.epochs is not None else generator_epochs(len(ix))
            task = rep.task(f"site-{s} {cfg.generator} ({len(ix)} img)", epochs)

            def on_epoch(epoch, total, loss, eps, task=task):
                info = f"loss {loss:.4f}" + (f"  eps {eps:.2f}" if eps is not None else "")
                rep.update(task, epoch, info, total=total)

            gen, report, wall = train_site_generator(
                cfg.generator,
                cfg.generator_size,
                gen_config,
                x,
                y,
                run_seed=cfg.seed,
                site=s,
                epochs=epochs,
                device=device,
                dp=dp_cfg,
                progress=on_epoch,
            )
            log.info(
                "site-%d: %s on %d images, %d epochs, %.1f s, final loss %.4f%s",
                s,
                cfg.generator,
                len(ix),
                epochs,
                wall,
                report.final_loss,
                f", epsilon {report.dp['epsilon']:.3f}" if report.dp else "",
            )
            blob = generators.to_safetensors(gen)
            digest = hashlib.sha256(blob).hexdigest()
            mid = site_module_id(cfg.seed, s)
            sources.append(
                synthesis.ModuleSource(
                    module_id=mid, generator=gen, classes=classes, weights_sha256=digest
                )
            )
            mia = None
            if cfg.membership_attack:
                t_attack = time.perf_counter()
                mia = _membership(gen, x, y, ds, report.dp, cfg)
                attack_s += time.perf_counter() - t_attack
            site_results.append(
                SiteResult(
                    site=s,
                    module_id=mid,
                    classes=classes,
                    n_train=int(len(ix)),
                    wall_s=round(wall, 3),
                    final_loss=float(report.final_loss),
                    weights_sha256=digest,
                    dp=report.dp,
                    counts=counts[s].tolist(),
                    membership=mia,
                )
            )
        phases["generators_s"] = time.perf_counter() - t0 - attack_s
        if cfg.membership_attack:
            phases["membership_s"] = attack_s

        # ---- synthesis
        t0 = time.perf_counter()
        total = cfg.samples_per_class * k
        task = rep.task("synthesis", total)
        syn = synthesis.synthesize(
            sources,
            num_classes=k,
            per_class=cfg.samples_per_class,
            seed=cfg.seed,
            device=device,
            progress=lambda done, tot: rep.update(task, done),
        )
        phases["synthesis_s"] = time.perf_counter() - t0

        # ---- classifier on synthetic data
        def trainer(name: str, epochs: int):
            task = rep.task(name, epochs)
            return lambda e, n, loss: rep.update(task, e, f"loss {loss:.4f}", total=n)

        t0 = time.perf_counter()
        ff = classifier.train_classifier(
            clf_config,
            syn.images,
            syn.labels,
            clf_settings,
            progress=trainer("classifier (synthetic)", cfg.classifier_epochs),
        )
        phases["classifier_s"] = time.perf_counter() - t0
        ff_eval = classifier.evaluate(ff.model, ds.test_x, ds.test_y, k)
        log.info(
            "federatedfactory: accuracy %.4f, AUROC %s (%.1f s)",
            ff_eval.accuracy,
            ff_eval.auroc,
            ff.seconds,
        )
        results["federatedfactory"] = {
            **ff_eval.to_dict(),
            "train_s": round(ff.seconds, 3),
            "train_size": int(syn.labels.numel()),
            "classifier_sha256": classifier.weights_sha256(ff.model, clf_config),
        }

        # ---- baselines
        real_model: torch.nn.Module | None = None  # trained on the real training split
        if cfg.baselines:
            t0 = time.perf_counter()
            cen = centralized(
                clf_config,
                ds.train_x,
                ds.train_y,
                clf_settings,
                progress=trainer("centralized (real)", cfg.classifier_epochs),
            )
            phases["centralized_s"] = time.perf_counter() - t0
            log.info("centralized: trained in %.1f s", cen.seconds)
            real_model = cen.model
            results["centralized"] = {
                **classifier.evaluate(cen.model, ds.test_x, ds.test_y, k).to_dict(),
                "train_s": round(cen.seconds, 3),
                "train_size": int(ds.train_y.numel()),
            }
            t0 = time.perf_counter()
            fa_task = rep.task("fedavg rounds", cfg.fedavg_rounds)
            fa = fedavg(
                clf_config,
                ds.train_x,
                ds.train_y,
                part,
                FedAvgConfig(
                    rounds=cfg.fedavg_rounds,
                    local_epochs=cfg.fedavg_local_epochs,
                    seed=cfg.seed,
                    device=device,
                ),
                progress=lambda r, n: rep.update(fa_task, r),
            )
            phases["fedavg_s"] = time.perf_counter() - t0
            results["fedavg"] = {
                **classifier.evaluate(fa.model, ds.test_x, ds.test_y, k).to_dict(),
                "train_s": round(fa.seconds, 3),
                "rounds": cfg.fedavg_rounds,
                "local_epochs": cfg.fedavg_local_epochs,
            }

        if cfg.fidelity:
            t0 = time.perf_counter()
            results["fidelity"] = _fidelity(cfg, ds, syn, real_model)
            phases["fidelity_s"] = time.perf_counter() - t0

    cen_acc = results.get("centralized", {}).get("accuracy")
    results["ratio_vs_centralized"] = (
        round(results["federatedfactory"]["accuracy"] / cen_acc, 4) if cen_acc else None
    )
    results["sites"] = [asdict(s) for s in site_results]
    results["synthesis"] = {
        "dataset_sha256": syn.recipe["dataset_sha256"],
        "uncovered": syn.uncovered,
        "per_class": cfg.samples_per_class,
        "size": int(syn.labels.numel()),
    }
    phases["total_s"] = time.perf_counter() - t_all
    results["timings"] = {k_: round(v, 3) for k_, v in phases.items()}

    files = {"results_json": "results.json", "results_md": "results.md"}
    if cfg.plots:
        plots.sample_grid(
            out / "samples.png",
            ds.train_x,
            ds.train_y,
            syn.images,
            syn.labels,
            ds.class_names,
            title=f"{ds.name}: real (left) vs synthetic (right)",
        )
        files["samples_png"] = "samples.png"
        methods = [m for m in METHODS if m in results]
        plots.method_bars(
            out / "methods.png", results, methods, title=f"{ds.name}, {cfg.partition} split"
        )
        files["methods_png"] = "methods.png"
    results["files"] = files
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (out / "results.md").write_text(results_markdown(results))
    return results


def _fidelity(cfg: SimulationConfig, ds, syn, real_model: torch.nn.Module | None) -> dict:
    """Per-class fidelity of the synthetic set against the real training split, on the features
    of the centralized classifier (trained on that split) or, without baselines, of a small CNN
    trained on it."""
    if real_model is not None:
        net = fidelity.feature_extractor(real_model)
        name = "centralized classifier (real training split)"
    else:
        net = fidelity.train_feature_net(ds.train_x, ds.train_y, ds.num_classes, seed=cfg.seed)
        name = "small CNN trained on the real training split"
    report = fidelity.evaluate(
        ds.train_x,
        ds.train_y,
        syn.images,
        syn.labels,
        ds.num_classes,
        feature_net=net,
        features_name=name,
        seed=cfg.seed,
    )
    out = report.to_dict()
    log.info(
        "fidelity: KID %s, precision %s, recall %s (means over classes)",
        out["kid_mean"],
        out["precision_mean"],
        out["recall_mean"],
    )
    return out


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def results_markdown(results: dict[str, Any]) -> str:
    """The results as a markdown page: the method table, the sites, the timings."""
    s = results["settings"]
    lines = [
        f"# Simulation: {results['dataset']['name']}, {s['partition']} split, {s['sites']} sites",
        "",
        f"Generator `{s['generator']}` ({s['generator_size']}), classifier `{s['classifier']}`, "
        f"{s['samples_per_class']} synthetic samples per class, seed {s['seed']}, "
        f"device `{s['device']}`"
        + (f", DP epsilon {s['dp_epsilon']}" if s["dp_epsilon"] is not None else ", no DP")
        + ".",
        "",
        "| method | accuracy | macro AUROC | train time (s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for m in METHODS:
        if m in results:
            r = results[m]
            lines.append(
                f"| {m} | {_fmt(r['accuracy'])} | {_fmt(r['auroc'])} | {r['train_s']:.1f} |"
            )
    if results.get("ratio_vs_centralized") is not None:
        lines += [
            "",
            f"FederatedFactory / centralized accuracy: **{results['ratio_vs_centralized']:.3f}**",
        ]
    lines += _fidelity_markdown(results.get("fidelity"))
    attacked = any(site.get("membership") for site in results["sites"])
    lines += [
        "",
        "| site | classes | images | generator wall time (s) | final loss | epsilon |"
        + (" membership AUROC [95% interval] | attack, sampler |" if attacked else ""),
        "| --- | --- | ---: | ---: | ---: | ---: |" + (" ---: | --- |" if attacked else ""),
    ]
    for site in results["sites"]:
        eps = site["dp"]["epsilon"] if site["dp"] else None
        lines.append(
            f"| site-{site['site']} | {','.join(map(str, site['classes']))} | {site['n_train']} | "
            f"{site['wall_s']:.1f} | {site['final_loss']:.4f} | {_fmt(eps)} |"
            + (_membership_cells(site.get("membership")) if attacked else "")
        )
    if attacked:
        lines += [
            "",
            "Membership AUROC: `site-node privacy-check`'s strongest attack on each site's "
            "module, at its worst over the check's samplers; non-members are held-out images "
            "of the site's classes (the split named in results.json). 0.5 is chance.",
        ]
    lines += ["", "| phase | seconds |", "| --- | ---: |"]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in results["timings"].items()]
    return "\n".join(lines) + "\n"


def _membership_cells(mia: dict[str, Any] | None) -> str:
    if not mia:
        return " n/a | |"
    lo, hi = mia["auroc_ci95"]
    return f" {mia['auroc']:.3f} [{lo:.2f}, {hi:.2f}] | {mia['attack']}, {mia['sampler']} |"


def largest_membership(results: dict[str, Any]) -> dict[str, Any] | None:
    """The site whose module the membership attack read highest, with its figure; None when
    the attack did not run."""
    attacked = [site for site in results["sites"] if site.get("membership")]
    if not attacked:
        return None
    site = max(attacked, key=lambda s: s["membership"]["auroc"])
    return {"site": site["site"], **site["membership"]}


def _fidelity_markdown(fid: dict[str, Any] | None) -> list[str]:
    if not fid:
        return []
    lines = [
        "",
        f"Fidelity of the synthetic images per class (features: {fid['features']}; "
        f"KID lower is better, precision = sharpness, recall = diversity, k = {fid['k']}):",
        "",
        "| class | real | synthetic | KID | precision | recall |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in fid["per_class"]:
        lines.append(
            f"| {row['cls']} | {row['real']} | {row['synthetic']} | {_fmt(row['kid'])} | "
            f"{_fmt(row['precision'])} | {_fmt(row['recall'])} |"
        )
    lines.append(
        f"| mean | | | {_fmt(fid['kid_mean'])} | {_fmt(fid['precision_mean'])} | "
        f"{_fmt(fid['recall_mean'])} |"
    )
    return lines


def closing_table(results: dict[str, Any]):
    """A rich table of the three methods, printed at the end of ``ffsecure simulate``."""
    # rich only when rendering: keeps `ffsecure --help` fast
    from rich.table import Table

    t = Table(
        title=f"{results['dataset']['name']}: {results['settings']['partition']} split, "
        f"{results['settings']['sites']} sites"
    )
    for col in ("method", "accuracy", "macro AUROC", "train s"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for m in METHODS:
        if m in results:
            r = results[m]
            t.add_row(m, _fmt(r["accuracy"]), _fmt(r["auroc"]), f"{r['train_s']:.1f}")
    if results.get("ratio_vs_centralized") is not None:
        t.caption = (
            f"FederatedFactory / centralized accuracy = {results['ratio_vs_centralized']:.3f}"
        )
    fid = results.get("fidelity")
    if fid:
        t.caption = (t.caption or "") + (
            f"\nsynthetic fidelity (mean over classes): KID {_fmt(fid['kid_mean'])}, "
            f"precision {_fmt(fid['precision_mean'])}, recall {_fmt(fid['recall_mean'])}"
        )
    top = largest_membership(results)
    if top is not None:
        t.caption = (t.caption or "") + (
            f"\nlargest membership AUROC: {top['auroc']:.3f} (site-{top['site']}, "
            f"{top['attack']} attack, {top['sampler']} sampler; 0.5 is chance)"
        )
    return t
