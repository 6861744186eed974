"""``aggregator synthesize``: a class-balanced synthetic dataset from the live modules."""

from __future__ import annotations

import click

from aggregator.commands.context import dir_option, json_option, open_operations, operator_actor
from ffsecure.clitools import echo_json


@click.command("synthesize")
@dir_option
@click.option(
    "--per-class", type=click.IntRange(1, 1_000_000), required=True, help="Images per class."
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**63 - 1),
    default=0,
    show_default=True,
    help="Synthesis seed.",
)
@click.option(
    "--nproc",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes (torch.distributed: gloo on the CPU, NCCL on GPUs).",
)
@click.option("--actor", default=None, help="Operator name for the ledger [default: login name].")
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
)
@json_option
@click.pass_context
def synthesize(
    ctx: click.Context,
    home_dir: str,
    per_class: int,
    seed: int,
    nproc: int,
    actor: str | None,
    progress: bool,
    as_json: bool,
) -> None:
    """Decrypt the live modules in memory, sample --per-class images of each class, log the lineage.

    Stores the dataset's recipe (the images are regenerated exactly when a
    classifier is trained), appends dataset.synthesized and writes a sample
    grid PNG to DIR/runs/<dataset-id>-samples.png. With --nproc N, N processes share
    the sampling; the dataset is the same for every N.
    """
    ctx.ensure_object(dict)["json"] = as_json
    with open_operations(
        home_dir, progress=progress and not as_json, actor=operator_actor(actor) if actor else None
    ) as ops:
        ds = ops.synthesize(per_class=per_class, seed=seed, nproc=nproc)
    uncovered = [c for c, n in ds.counts.items() if n == 0]
    info = {
        "dataset_id": ds.dataset_id,
        "sha256": ds.sha256,
        "index": ds.appended.index,
        "modules": [m["module_id"] for m in ds.modules],
        "counts": ds.counts,
        "uncovered": uncovered,
        "grid": str(ds.grid_path) if ds.grid_path else None,
        "seconds": round(ds.seconds, 3),
    }
    if as_json:
        echo_json(info)
        return
    click.echo(
        f"dataset {ds.dataset_id} "
        f"({sum(ds.counts.values())} images from {len(ds.modules)} modules), "
        f"ledger entry {ds.appended.index}"
    )
    click.echo(f"  sha256 {ds.sha256}")
    if uncovered:
        click.echo(f"  no module covers: {', '.join(uncovered)}")
    if ds.grid_path:
        click.echo(f"  sample grid: {ds.grid_path}")
