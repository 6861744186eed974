"""``aggregator train`` and ``aggregator retrain``."""

from __future__ import annotations

import click

from aggregator.commands.context import (
    dir_option,
    json_option,
    open_operations,
    operator_actor,
    print_entries,
)
from ffsecure.clitools import echo_json


@click.command("train")
@dir_option
@click.option(
    "--dataset",
    "dataset_id",
    required=True,
    help="A live dataset id (from `aggregator synthesize`).",
)
@click.option(
    "--classifier", "arch", type=click.Choice(["cnn", "resnet18"]), default="cnn", show_default=True
)
@click.option("--epochs", type=click.IntRange(1, 1000), default=15, show_default=True)
@click.option(
    "--min-steps",
    type=click.IntRange(0, 10**7),
    default=500,
    show_default=True,
    help="Train for at least this many optimizer steps (more epochs on a small dataset).",
)
@click.option("--batch-size", type=click.IntRange(1, 65536), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--width", type=click.IntRange(4, 256), default=None, help="cnn width [default: 32].")
@click.option("--no-augment", is_flag=True, help="Train without random shifts.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    default=None,
    help="torch threads per process (recorded; retraining uses the same count) "
    "[default: torch's, shared among --nproc].",
)
@click.option(
    "--nproc",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Data-parallel processes (torch.distributed: gloo on the CPU, NCCL on GPUs); "
    "recorded, retraining uses the same count.",
)
@click.option("--actor", default=None, help="Operator name for the ledger [default: login name].")
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
)
@json_option
@click.pass_context
def train(
    ctx: click.Context,
    home_dir: str,
    dataset_id: str,
    arch: str,
    epochs: int,
    min_steps: int,
    batch_size: int,
    lr: float,
    width: int | None,
    no_augment: bool,
    seed: int,
    threads: int | None,
    nproc: int,
    actor: str | None,
    progress: bool,
    as_json: bool,
) -> None:
    """Train a classifier on a synthesized dataset (CPU, deterministic); log classifier.trained."""
    ctx.ensure_object(dict)["json"] = as_json
    from ffsecure.classifier import TrainConfig  # heavy: torch, only when training

    settings = TrainConfig(
        epochs=epochs,
        min_steps=min_steps,
        batch_size=batch_size,
        lr=lr,
        augment=not no_augment,
        seed=seed,
        world_size=nproc,
    )
    with open_operations(
        home_dir, progress=progress and not as_json, actor=operator_actor(actor) if actor else None
    ) as ops:
        clf = ops.train(dataset_id, arch=arch, settings=settings, width=width, threads=threads)
    info = {
        "classifier_id": clf.classifier_id,
        "dataset_id": clf.dataset_id,
        "sha256": clf.sha256,
        "index": clf.appended.index,
        "modules": [m["module_id"] for m in clf.modules],
        "metrics": clf.metrics,
        "seconds": round(clf.seconds, 3),
    }
    if as_json:
        echo_json(info)
        return
    click.echo(
        f"classifier {clf.classifier_id} trained on {clf.dataset_id}, "
        f"ledger entry {clf.appended.index}"
    )
    click.echo(f"  sha256 {clf.sha256}")
    if clf.metrics:
        click.echo(
            f"  accuracy {clf.metrics['accuracy']:.4f} on {clf.metrics['test_set']} "
            f"(n={clf.metrics['n']})"
        )
    click.echo(f"publish it with `aggregator publish --dir {home_dir} {clf.classifier_id}`")


@click.command("retrain")
@dir_option
@click.option("--actor", default=None, help="Operator name for the ledger [default: login name].")
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
)
@json_option
@click.pass_context
def retrain(
    ctx: click.Context, home_dir: str, actor: str | None, progress: bool, as_json: bool
) -> None:
    """Rebuild every classifier retired by a module deletion that has no replacement yet.

    Uses the retired classifier's recorded synthesis and training settings
    on the remaining modules; a replacement of a published classifier is
    published. Nothing to do prints so.
    """
    ctx.ensure_object(dict)["json"] = as_json
    with open_operations(
        home_dir, progress=progress and not as_json, actor=operator_actor(actor) if actor else None
    ) as ops:
        out = ops.retrain()
    if as_json:
        echo_json(
            {
                "entries": [a.to_dict() for a in out.appended],
                "seconds": round(out.seconds, 3),
                "classifiers": [
                    {"classifier_id": c.classifier_id, "sha256": c.sha256, "metrics": c.metrics}
                    for c in out.classifiers
                ],
                "skipped": [{"classifier_id": c, "why": w} for c, w in out.skipped],
            }
        )
        return
    if not out.appended and not out.skipped:
        click.echo("nothing to retrain")
        return
    click.echo(f"appended {len(out.appended)} ledger entries:")
    print_entries(out.appended)
    for c in out.classifiers:
        acc = f", accuracy {c.metrics['accuracy']:.4f}" if c.metrics else ""
        click.echo(f"retrained {c.classifier_id}{acc}")
    for cid, why in out.skipped:
        click.echo(f"could not retrain {cid}: {why}")
