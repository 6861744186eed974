"""``site-node train``: train this site's generator on its local data and write the signed module
package."""

from __future__ import annotations

import click

from ffsecure.clitools import echo_json
from ffsecure.dp import DPBudgetError, record_mechanism
from site_node import trust as trustlib
from site_node.commands._common import config_option, json_option, start, training_progress
from site_node.exitcodes import EXIT_REFUSED
from site_node.state import StateDir
from site_node.training import train_module


@click.command("train")
@config_option
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
@json_option
@click.pass_context
def train(ctx, config_path, no_progress, as_json):
    """Load the data, train the federation's generator (DP when due), sign and store the package.

    The result is a module with status `trained` in STATE/modules/<id>/; send it
    with `site-node upload`. When the federation requires a privacy report, the
    privacy check runs before signing; a module that fails the privacy policy, or
    that would take the site's data over the federation's DP budget together with
    the modules it sent before, is stored `refused` (never sent) and the command
    exits 4.
    """

    cfg = start(ctx, config_path, as_json)
    state = StateDir(cfg.state_dir)
    with state.locked():
        t = trustlib.load(cfg)
        with training_progress(not no_progress and not as_json) as progress:
            record = train_module(cfg, t, progress=progress)
    dp = record.train.get("dp")
    info = {
        "module_id": record.module_id,
        "classes": record.classes,
        "n_train": record.n_train,
        "epochs": record.train["epochs"],
        "final_loss": record.train["final_loss"],
        "epsilon": dp["epsilon"] if dp else None,
        "delta": dp["delta"] if dp else None,
        "dp_mechanism": record_mechanism(dp) if dp else None,
        "package": str(state.package_path(record.module_id)),
        "package_bytes": record.train["package_bytes"],
        "status": record.status,
        "error": record.error,
    }
    if as_json:
        echo_json(info)
    else:
        eps = (
            f", epsilon {dp['epsilon']:.3f} (delta {dp['delta']:.2e}, {info['dp_mechanism']})"
            if dp
            else ", no DP"
        )
        click.echo(
            f"trained module {record.module_id} on {record.n_train} images of classes "
            f"{record.classes}: final loss {record.train['final_loss']:.4f}{eps}"
        )
        if record.status == "refused":
            check = "DP budget" if record.error["code"] == DPBudgetError.code else "privacy check"
            click.echo(
                f"  REFUSED by this site's {check} ({record.error['code']}): "
                f"{record.error['message']}; it will never be sent"
            )
            if record.error.get("hint"):
                click.echo(f"  hint: {record.error['hint']}")
        else:
            click.echo(
                f"  signed package: {info['package']} ({info['package_bytes']} bytes); "
                "send it: site-node upload"
            )
    if record.status == "refused":
        ctx.exit(EXIT_REFUSED)
