"""``ffsecure demo``: a whole real federation on one machine (CA, aggregator, sites, auditor)."""

from __future__ import annotations

import json

import click

from ffsecure.commands.simulate import _shape
from ffsecure.demo.runner import Demo, DemoConfig
from ffsecure.demo.summary import closing_lines, closing_tables
from ffsecure.dp import MECHANISM_CHOICES


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default="demo-out",
    show_default=True,
    help="New (or empty) folder for every role's files, the summary and the pictures.",
)
@click.option(
    "--dataset",
    default=None,
    help="MedMNIST 2D flag, 'digits', 'npz:PATH', 'folder:PATH' or 'dicom:PATH' "
    "[default: pneumoniamnist when its .npz is in the data root, else digits].",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding MedMNIST .npz files "
    "[default: $FFSECURE_DATA, ../shared/data/medmnist, ~/.medmnist].",
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
    help="How the training set is split across the sites.",
)
@click.option(
    "--alpha", type=float, default=0.5, show_default=True, help="Dirichlet concentration."
)
@click.option(
    "--classes-per-site",
    type=int,
    default=None,
    help="Pathological: classes per site [default: 1; digits 2].",
)
@click.option(
    "--sites",
    type=int,
    default=None,
    help="Number of sites "
    "[default: every class at two sites: 4 for pneumoniamnist, 10 for digits].",
)
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
    "--epochs", type=int, default=None, help="Generator epochs per site [default: 6; digits 30]."
)
@click.option(
    "--dp-epsilon",
    type=float,
    default=None,
    help="Federation DP policy: sites train under DP to this epsilon (delta 1e-5), with the "
    "mechanism --dp-mechanism names (docs/privacy.md).",
)
@click.option(
    "--dp-mechanism",
    type=click.Choice(list(MECHANISM_CHOICES)),
    default="auto",
    show_default=True,
    help="With --dp-epsilon: pin the DP mechanism in the manifest's dp_policy (every site "
    "must run it); auto lets each site pick by the rule of docs/privacy.md. DP-SGD trains "
    "for the family's own schedule unless --epochs is given.",
)
@click.option(
    "--samples-per-class",
    type=int,
    default=None,
    help="Synthetic images per class [default: 500; digits 300].",
)
@click.option("--classifier-epochs", type=int, default=5, show_default=True)
@click.option(
    "--classifier-width", type=int, default=16, show_default=True, help="Channels of the small CNN."
)
@click.option(
    "--classifier-min-steps",
    type=int,
    default=150,
    show_default=True,
    help="Train each classifier for at least this many optimizer steps.",
)
@click.option("--fedavg-rounds", type=int, default=5, show_default=True)
@click.option("--fedavg-local-epochs", type=int, default=1, show_default=True)
@click.option("--no-baselines", is_flag=True, help="Skip the centralized and FedAvg baselines.")
@click.option(
    "--forget-site",
    default=None,
    help="The site that asks to be forgotten [default: the last one].",
)
@click.option(
    "--parallel",
    type=int,
    default=2,
    show_default=True,
    help="Site processes running at once (one torch thread each).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--json", "as_json", is_flag=True, help="Print summary.json to stdout (no progress display)."
)
@click.pass_context
def demo(ctx: click.Context, as_json: bool, no_baselines: bool, **opts) -> None:
    """Run a whole federation on this machine, every role as its own process.

    A CA and a CA-signed federation manifest; `aggregator serve` on a loopback
    port with mutual TLS; one `site-node` process per site that trains,
    signs, seals, uploads and verifies its receipt; the operator's
    synthesize, train and publish; each site's local evaluation; centralized
    and FedAvg baselines; one site asks to be forgotten and the classifier is
    retrained without it; the audit bundle is exported, verified and
    rendered. Writes WORKDIR/summary.json, report.html, audit-bundle/, the
    pictures and each role's folder (ca/, aggregator/, sites/<id>/) so that
    `aggregator` and `site-node` commands can go on from there.

    Exits 0 when every step ran and the audit verified, 3 when the audit
    found a problem (summary.json lists the findings), 1 on an error.
    """
    # the progress display imports rich: keeps `ffsecure --help` fast
    from ffsecure.demo.ui import PhaseUI

    ctx.ensure_object(dict)
    if as_json:
        ctx.obj["json"] = True
    cfg = DemoConfig(
        workdir=opts["workdir"],
        dataset=opts["dataset"],
        data_root=opts["data_root"],
        partition=opts["partition"],
        alpha=opts["alpha"],
        classes_per_site=opts["classes_per_site"],
        sites=opts["sites"],
        generator=opts["generator"],
        generator_size=opts["generator_size"],
        epochs=opts["epochs"],
        dp_epsilon=opts["dp_epsilon"],
        dp_mechanism=opts["dp_mechanism"],
        samples_per_class=opts["samples_per_class"],
        classifier_epochs=opts["classifier_epochs"],
        classifier_width=opts["classifier_width"],
        classifier_min_steps=opts["classifier_min_steps"],
        fedavg_rounds=opts["fedavg_rounds"],
        fedavg_local_epochs=opts["fedavg_local_epochs"],
        parallel=opts["parallel"],
        forget_site=opts["forget_site"],
        seed=opts["seed"],
        baselines=not no_baselines,
        image_shape=opts["image_shape"],
    )
    with PhaseUI(enabled=not as_json) as ui:
        summary = Demo(cfg, ui).run()
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        # rich only when rendering: keeps `ffsecure --help` fast
        from rich.console import Console

        console = Console()
        if not console.is_terminal or console.width < 100:
            console = Console(width=100)
        for table in closing_tables(summary):
            console.print(table)
        for line in closing_lines(summary):
            console.print(line, highlight=False)
    if not summary["audit"]["ok"]:
        ctx.exit(3)
