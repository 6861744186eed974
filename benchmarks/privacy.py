"""Privacy benchmark: membership inference, memorization and utility against DP epsilon.

For each dataset (scikit-learn's digits; MedMNIST ``breastmnist`` from the
shared files when present), each generator family (``cvae`` default size,
``ddpm`` tiny) and each epsilon in {1, 8, inf}:

1. a "site" trains the generator on a small member set (``--members`` real
   training images, default 128) for many passes (``--epochs``, default 150,
   batch 32: 600 optimizer steps), the regime where a generator can memorize;
   the DP runs use the same schedule under DP-SGD (Opacus, Poisson sampling,
   PRV accountant, the default delta, ffsecure.dp.default_delta);
2. the privacy check runs against it: the loss attack on the members vs as
   many non-members (other real training images, same distribution, never
   seen), plus the calibrated attack with a reference generator trained
   (without DP, same schedule) on a third disjoint set; memorization of
   ``--generated`` samples; the epsilon re-computed from the DP record;
3. utility ratio: a small CNN trained on class-balanced synthetic samples
   (``--synthetic``) over the same CNN trained on the whole real training
   split (as ``ffsecure simulate`` reports it), both scored on the real test
   split.

Images are resized to 1x16x16 so the run stays bounded on a CPU. One
process per dataset can run side by side (``--datasets digits`` and
``--datasets breastmnist --out DIR``) and ``--merge A.json B.json`` combines
their rows. Writes
``<out>/privacy.json`` (after every row, so a stopped run keeps its rows) and
``<out>/privacy.md``.

    python -m benchmarks.privacy [--datasets digits,breastmnist] [--families cvae,ddpm]
                                 [--epsilons 1,8,inf] [--members 128] [--epochs 150] [--out
                                 benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from ffsecure import classifier as C
from ffsecure import data
from ffsecure import generators as G
from ffsecure.dp import DPConfig
from ffsecure.privacy.check import run_check
from ffsecure.privacy.policy import DEFAULT_MAX_MEMBERSHIP_AUROC

IMAGE_SHAPE = (1, 16, 16)
SIZES = {"cvae": "default", "ddpm": "tiny"}


def _load(name: str):
    if name == "digits":
        return data.load_digits(image_shape=IMAGE_SHAPE)
    return data.load_medmnist(name, image_shape=IMAGE_SHAPE)


def _splits(ds, n: int, seed: int):
    """Disjoint member / non-member / reference sets of ``n`` training images each."""
    if ds.train_x.shape[0] < 3 * n:
        raise SystemExit(f"{ds.name} has {ds.train_x.shape[0]} training images, fewer than 3 x {n}")
    perm = torch.randperm(ds.train_x.shape[0], generator=torch.Generator().manual_seed(seed))
    parts = [perm[i * n : (i + 1) * n] for i in range(3)]
    return [(ds.train_x[p], ds.train_y[p]) for p in parts]


def _fit(family, cfg, x, y, *, epochs, batch, seed, eps):
    gen = G.build(family, cfg)
    settings = G.default_train_settings(family, SIZES[family], seed=seed)
    settings.epochs, settings.batch_size = epochs, batch
    dp = None if eps is None else DPConfig(target_epsilon=eps)
    start = time.perf_counter()
    report = gen.fit(x, y, settings, dp=dp)
    return gen, report, time.perf_counter() - start


def _accuracy(cfg, x, y, ds, epochs, seed):
    res = C.train_classifier(cfg, x, y, C.TrainConfig(epochs=epochs, batch_size=64, seed=seed))
    return C.evaluate(res.model, ds.test_x, ds.test_y, ds.num_classes).accuracy


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    epsilons = [None if e in ("inf", "none") else float(e) for e in args.epsilons.split(",")]
    result = {
        "settings": {
            "datasets": args.datasets,
            "families": args.families,
            "epsilons": args.epsilons,
            "members": args.members,
            "epochs": args.epochs,
            "batch_size": args.batch,
            "generated": args.generated,
            "synthetic": args.synthetic,
            "seed": args.seed,
            "image_shape": list(IMAGE_SHAPE),
            "sizes": SIZES,
            "threads": args.threads,
            "classifier_epochs": args.classifier_epochs,
        },
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "note": "2-core CPU shared with other jobs; wall times vary with load",
        },
        "rows": [],
    }
    t_all = time.perf_counter()
    for ds_name in args.datasets.split(","):
        ds = _load(ds_name)
        members, non_members, ref_set = _splits(ds, args.members, args.seed)
        clf_cfg = C.model_config(
            "cnn", image_shape=ds.image_shape, num_classes=ds.num_classes, width=16
        )
        real_acc = _accuracy(clf_cfg, ds.train_x, ds.train_y, ds, args.classifier_epochs, args.seed)
        per_class = max(1, args.synthetic // ds.num_classes)
        syn_labels = torch.arange(ds.num_classes).repeat_interleave(per_class)
        for family in args.families.split(","):
            cfg = G.default_config(
                family, image_shape=ds.image_shape, num_classes=ds.num_classes, size=SIZES[family]
            )
            reference, _r, ref_s = _fit(
                family,
                cfg,
                *ref_set,
                epochs=args.epochs,
                batch=args.batch,
                seed=args.seed + 7,
                eps=None,
            )
            for eps in epsilons:
                load = os.getloadavg()[0]
                gen, report, fit_s = _fit(
                    family,
                    cfg,
                    *members,
                    epochs=args.epochs,
                    batch=args.batch,
                    seed=args.seed + 1,
                    eps=eps,
                )
                png = (
                    out
                    / "privacy-pairs"
                    / f"{ds_name}-{family}-eps{'inf' if eps is None else int(eps)}.png"
                )
                check = run_check(
                    gen,
                    members=members,
                    non_members=non_members,
                    dp=report.dp,
                    reference=reference,
                    n_generated=args.generated,
                    seed=args.seed,
                    png=png,
                )
                syn = gen.sample(syn_labels, seed=args.seed + 11)
                syn_acc = _accuracy(clf_cfg, syn, syn_labels, ds, args.classifier_epochs, args.seed)
                mia, memo = check["membership"], check["memorization"]
                row = {
                    "dataset": ds_name,
                    "family": family,
                    "size": SIZES[family],
                    "epsilon_target": "inf" if eps is None else eps,
                    "epsilon": report.dp["epsilon"] if report.dp else None,
                    "epsilon_recomputed": check["accounting"].get("epsilon_recomputed"),
                    "noise_multiplier": report.dp["noise_multiplier"] if report.dp else 0.0,
                    "steps": report.steps,
                    "final_loss": report.final_loss,
                    "membership_auroc": mia["auroc"],
                    "membership_tpr_at_1pct_fpr": mia["tpr_at_1pct_fpr"],
                    "calibrated_auroc": mia["calibrated"]["auroc"],
                    "calibrated_tpr_at_1pct_fpr": mia["calibrated"]["tpr_at_1pct_fpr"],
                    "mean_loss_members": mia["mean_loss_members"],
                    "mean_loss_non_members": mia["mean_loss_non_members"],
                    "memorization_ratio": memo["ratio"],
                    "near_copy_fraction": memo["near_copy_fraction"],
                    "near_copy_threshold": memo["near_copy_threshold"],
                    "accuracy_synthetic": syn_acc,
                    "accuracy_real": real_acc,
                    "utility_ratio": syn_acc / real_acc if real_acc else None,
                    "fit_s": round(fit_s, 1),
                    "reference_fit_s": round(ref_s, 1),
                    "load_avg_1m": round(load, 1),
                    "pairs_png": str(png.relative_to(out)),
                }
                result["rows"].append(row)
                print(
                    json.dumps(
                        {
                            k: row[k]
                            for k in (
                                "dataset",
                                "family",
                                "epsilon_target",
                                "membership_auroc",
                                "calibrated_auroc",
                                "near_copy_fraction",
                                "utility_ratio",
                                "fit_s",
                            )
                        }
                    ),
                    flush=True,
                )
                result["total_s"] = round(time.perf_counter() - t_all, 1)
                _write(out, result)
    return result


def _f(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.{nd}f}"
    return str(v)


def _strongest_auroc(row: dict) -> float | None:
    """The AUROC the privacy policy compares: the larger of the plain and the calibrated
    attack's."""
    values = [row[k] for k in ("membership_auroc", "calibrated_auroc") if row.get(k) is not None]
    return max(values) if values else None


def _default_policy(row: dict) -> str:
    """Whether a federation with the default privacy policy would accept this row's module."""
    auroc = _strongest_auroc(row)
    if auroc is None:
        return "-"
    return "refused" if round(auroc, 6) > DEFAULT_MAX_MEMBERSHIP_AUROC else "accepted"


def _default_policy_note(rows: list[dict]) -> str:
    """Which measured cells the default policy (membership AUROC at most 0.55) refuses."""
    refused = [r for r in rows if _default_policy(r) == "refused"]
    dp_refused = [r for r in refused if not _is_inf(r["epsilon_target"])]
    note = (
        "Default privacy policy: a federation whose manifest carries a `privacy_policy` limits "
        f"the stronger attack's AUROC to {DEFAULT_MAX_MEMBERSHIP_AUROC:g} unless it sets its own "
        "limit (docs/privacy.md); the site refuses such a module before sealing it and the "
        f"aggregator at registration. Of these cells it would refuse {len(refused)} of "
        f"{len(rows)}: " + (", ".join(_cell(r) for r in refused) or "none") + "."
    )
    if dp_refused:
        note += (
            " Under DP only " + ", ".join(_cell(r) for r in dp_refused) + " is above the limit; "
            "every other DP cell passes it."
        )
    return note


def _is_inf(epsilon) -> bool:
    return str(epsilon) == "inf" or (isinstance(epsilon, float) and math.isinf(epsilon))


def _cell(row: dict) -> str:
    return (
        f"{row['dataset']} {row['family']} at epsilon {row['epsilon_target']} "
        f"(AUROC {_f(_strongest_auroc(row))})"
    )


def to_markdown(result: dict) -> str:

    s = result["settings"]
    lines = [
        "# Privacy benchmark",
        "",
        f"Command: `python -m benchmarks.privacy --datasets {s['datasets']} --families "
        f"{s['families']} --epsilons {s['epsilons']} --members {s['members']} --epochs "
        f"{s['epochs']}`; {s['members']} members, {s['members']} non-members, {s['members']} "
        f"reference images per dataset, images {s['image_shape']}, batch {s['batch_size']}, "
        f"{s['generated']} generated samples, {s['threads']} torch thread(s). Machine: "
        f"{result['machine']['note']}. Total {result.get('total_s')} s.",
        "",
        "| dataset | family | target eps | eps (re-computed) | MIA AUROC | TPR@1%FPR | calibrated "
        "AUROC | cal. TPR@1%FPR | memorization ratio | near-copy fraction | utility ratio | fit s "
        f"| default policy (AUROC <= {DEFAULT_MAX_MEMBERSHIP_AUROC:g}) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['dataset']} | {r['family']} ({r['size']}) | {r['epsilon_target']} | "
            f"{_f(r['epsilon_recomputed'], 2)} | {_f(r['membership_auroc'])} | "
            f"{_f(r['membership_tpr_at_1pct_fpr'])} | {_f(r['calibrated_auroc'])} | "
            f"{_f(r['calibrated_tpr_at_1pct_fpr'])} | {_f(r['memorization_ratio'], 2)} | "
            f"{_f(r['near_copy_fraction'])} | {_f(r['utility_ratio'], 2)} | {_f(r['fit_s'], 0)} | "
            f"{_default_policy(r)} |"
        )
    lines += [
        "",
        "MIA = loss-based membership inference (members vs held-out non-members); calibrated = "
        "difficulty-calibrated with a reference generator trained on disjoint data; utility ratio "
        "= accuracy of a CNN trained on synthetic samples / of the same CNN trained on the whole "
        "real training split (both on the real test split). See docs/privacy.md.",
        "",
    ]
    lines += [_default_policy_note(result["rows"]), ""]
    return "\n".join(lines)


def _write(out: Path, result: dict) -> None:
    (out / "privacy.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    (out / "privacy.md").write_text(to_markdown(result))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="digits,breastmnist")
    p.add_argument("--families", default="cvae,ddpm")
    p.add_argument("--epsilons", default="inf,8,1")
    p.add_argument("--members", type=int, default=128)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--generated", type=int, default=1000)
    p.add_argument("--synthetic", type=int, default=1000)
    p.add_argument("--classifier-epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="Combine the rows of privacy.json files from runs over different datasets into --out.",
    )
    args = p.parse_args(argv)
    if args.merge:
        return merge([Path(f) for f in args.merge], Path(args.out))
    return run(args)


def merge(files: list[Path], out: Path) -> dict:
    """One result from several runs (e.g. one process per dataset); settings must agree except
    datasets."""
    parts = [json.loads(f.read_text()) for f in files]
    result = parts[0]
    for other in parts[1:]:
        a = {k: v for k, v in result["settings"].items() if k != "datasets"}
        b = {k: v for k, v in other["settings"].items() if k != "datasets"}
        if a != b:
            raise SystemExit(f"settings differ between runs: {a} vs {b}")
        result["rows"] += other["rows"]
        result["settings"]["datasets"] += "," + other["settings"]["datasets"]
        result["total_s"] = max(result.get("total_s", 0), other.get("total_s", 0))
    result["runs"] = len(parts)
    out.mkdir(parents=True, exist_ok=True)
    _write(out, result)
    return result


if __name__ == "__main__":
    main()
