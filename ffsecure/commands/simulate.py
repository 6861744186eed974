"""``ffsecure simulate``: a whole FederatedFactory federation on one machine, with baselines."""

from __future__ import annotations

import json

import click

from ffsecure.dp import DEFAULT_DELTA_RULE
from ffsecure.simulate import DEFAULT_OUT, SimulationConfig, closing_table, run_simulation


def _shape(_ctx, _param, value):
    if value is None:
        return None
    try:
        parts = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter("give C,H,W, e.g. 1,28,28") from None
    if len(parts) != 3:
        raise click.BadParameter("give C,H,W, e.g. 1,28,28")
    return parts


@click.command()
@click.option(
    "--dataset",
    default="pneumoniamnist",
    show_default=True,
    help="MedMNIST 2D flag, 'digits', 'npz:PATH', 'folder:PATH' or 'dicom:PATH' "
    "(a folder per class, or a file,class CSV).",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding MedMNIST .npz files "
    "[default: $FFSECURE_DATA, ../shared/data/medmnist, ~/.medmnist].",
)
@click.option(
    "--download", is_flag=True, help="Download the MedMNIST file if it is missing (needs network)."
)
@click.option(
    "--image-shape",
    callback=_shape,
    default=None,
    help="Federation image shape C,H,W [default: the data's own; digits 1,16,16].",
)
@click.option(
    "--partition",
    type=click.Choice(["pathological", "dirichlet", "iid"]),
    default="pathological",
    show_default=True,
    help="How the training set is split across sites.",
)
@click.option(
    "--alpha", type=float, default=0.5, show_default=True, help="Dirichlet concentration."
)
@click.option(
    "--classes-per-site",
    type=int,
    default=1,
    show_default=True,
    help="Pathological: classes per site.",
)
@click.option("--sites", type=int, default=None, help="Number of sites [default: one per class].")
@click.option(
    "--generator", type=click.Choice(["cvae", "ddpm", "flow"]), default="cvae", show_default=True
)
@click.option(
    "--generator-size",
    type=click.Choice(["tiny", "default", "full"]),
    default="default",
    show_default=True,
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help="Generator epochs per site [default: about 96,000 image-epochs per site, 5..700].",
)
@click.option(
    "--dp-epsilon",
    type=float,
    default=None,
    help="Train generators under DP to this epsilon (--dp-mechanism picks how).",
)
@click.option(
    "--dp-mechanism",
    type=click.Choice(["auto", "mean-embedding", "dp-sgd"]),
    default="auto",
    show_default=True,
    help="auto: the best mechanism measured on public data for the family "
    "(cvae: mean-embedding; ddpm, flow: DP-SGD).",
)
@click.option(
    "--dp-delta",
    type=float,
    default=None,
    help=f"DP delta [default: {DEFAULT_DELTA_RULE} per site].",
)
@click.option(
    "--dp-reproducible",
    is_flag=True,
    help="Research only: seed the DP noise and Poisson sampling from --seed so that a DP "
    "run repeats (no privacy against anyone who knows the seed; recorded in "
    "results.json). Default: the OS CSPRNG.",
)
@click.option(
    "--samples-per-class",
    type=int,
    default=1000,
    show_default=True,
    help="Synthetic images per class.",
)
@click.option(
    "--classifier", type=click.Choice(["cnn", "resnet18"]), default="cnn", show_default=True
)
@click.option("--classifier-epochs", type=int, default=10, show_default=True)
@click.option(
    "--classifier-width", type=int, default=16, show_default=True, help="Channels of the small CNN."
)
@click.option(
    "--classifier-norm",
    type=click.Choice(["group", "batch"]),
    default="group",
    show_default=True,
    help="Normalisation layers of the classifier (group: robust to the synthetic-to-real shift).",
)
@click.option(
    "--classifier-input-blur",
    type=float,
    default=1.0,
    show_default=True,
    help="Sigma of the classifier's fixed Gaussian low-pass front end (0: none).",
)
@click.option(
    "--classifier-min-steps",
    type=int,
    default=500,
    show_default=True,
    help="Train each classifier for at least this many optimizer steps.",
)
@click.option("--fedavg-rounds", type=int, default=10, show_default=True)
@click.option("--fedavg-local-epochs", type=int, default=1, show_default=True)
@click.option("--no-baselines", is_flag=True, help="Skip the centralized and FedAvg baselines.")
@click.option(
    "--no-fidelity",
    is_flag=True,
    help="Skip the per-class fidelity of the synthetic set (KID, precision, recall).",
)
@click.option(
    "--membership-attack",
    is_flag=True,
    help="Run site-node privacy-check's membership attack on each site's module (at its worst "
    "over the check's samplers); adds each site's AUROC to the results.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=DEFAULT_OUT,
    show_default=True,
    help="Output folder for results.json, results.md and PNGs.",
)
@click.option(
    "--device", default="auto", show_default=True, help="auto (cuda if available), cpu or cuda."
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="CPU threads for torch [default: torch's own]; 1 avoids stalls on a busy machine.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print results.json to stdout (no progress bars)."
)
@click.pass_context
def simulate(
    ctx: click.Context, as_json: bool, no_baselines: bool, no_fidelity: bool, **opts
) -> None:
    """Simulate a federation: per-site generators, synthesis, classifier, and the two baselines.

    Writes OUT/results.json, OUT/results.md, OUT/samples.png and OUT/methods.png.
    """
    ctx.ensure_object(dict)
    if as_json:
        ctx.obj["json"] = True
    cfg = SimulationConfig(
        dataset=opts["dataset"],
        partition=opts["partition"],
        alpha=opts["alpha"],
        classes_per_site=opts["classes_per_site"],
        sites=opts["sites"],
        generator=opts["generator"],
        generator_size=opts["generator_size"],
        epochs=opts["epochs"],
        dp_epsilon=opts["dp_epsilon"],
        dp_delta=opts["dp_delta"],
        dp_reproducible=opts["dp_reproducible"],
        dp_mechanism=opts["dp_mechanism"],
        samples_per_class=opts["samples_per_class"],
        classifier=opts["classifier"],
        classifier_epochs=opts["classifier_epochs"],
        classifier_width=opts["classifier_width"],
        classifier_norm=opts["classifier_norm"],
        classifier_input_blur=opts["classifier_input_blur"],
        classifier_min_steps=opts["classifier_min_steps"],
        fedavg_rounds=opts["fedavg_rounds"],
        fedavg_local_epochs=opts["fedavg_local_epochs"],
        image_shape=opts["image_shape"],
        data_root=opts["data_root"],
        download=opts["download"],
        seed=opts["seed"],
        device=opts["device"],
        threads=opts["threads"],
        out=opts["out"],
        baselines=not no_baselines,
        fidelity=not no_fidelity,
        membership_attack=opts["membership_attack"],
    )
    if cfg.dp_reproducible:
        click.echo(
            "warning: --dp-reproducible: DP noise and sampling are seeded from --seed "
            "(research only, not private)",
            err=True,
        )
    results = run_simulation(cfg, show_progress=not as_json)
    if as_json:
        click.echo(json.dumps(results, indent=2, sort_keys=True))
        return
    # rich only when rendering: keeps `ffsecure --help` fast
    from rich.console import Console

    console = Console()
    console.print(closing_table(results))
    console.print(
        f"results written to {cfg.out}/ (results.json, results.md, samples.png, methods.png)"
    )
