"""``aggregator status``: modules, classes covered, last checkpoint, current classifier.

Also the current classifier's lineage and the metrics sites reported for it
(ReportEvaluation)."""

from __future__ import annotations

import click

from aggregator.commands.context import dir_option, json_option, open_operations
from ffsecure.clitools import echo_json


@click.command("status")
@dir_option
@json_option
@click.pass_context
def status(ctx: click.Context, home_dir: str, as_json: bool) -> None:
    """Where the federation stands."""
    ctx.ensure_object(dict)["json"] = as_json
    with open_operations(home_dir, evaluation=False) as ops:
        s = ops.status()
    if as_json:
        echo_json(s)
        return
    m, led = s["modules"], s["ledger"]
    click.echo(f"federation {s['federation_id']}")
    click.echo(f"  modules: {m['live']} live, {m['deleted']} deleted")
    click.echo(f"  classes covered: {', '.join(s['classes_covered']) or '-'}")
    if s["classes_uncovered"]:
        click.echo(f"  classes without a module: {', '.join(s['classes_uncovered'])}")
    cp = (
        f"checkpoint at size {led['checkpoint_size']}"
        if led["checkpoint_size"] is not None
        else "no checkpoint"
    )
    click.echo(f"  ledger: {led['size']} entries, {cp}")
    click.echo(
        f"  datasets: {s['datasets']['active']} active, {s['datasets']['retired']} retired; "
        f"classifiers: {s['classifiers']['published']} published, "
        f"{s['classifiers']['active']} active, "
        f"{s['classifiers']['retired']} retired"
    )
    c = s["current_classifier"]
    if c is None:
        click.echo("  current classifier: none published")
    else:
        acc = f", accuracy {c['metrics']['accuracy']:.4f}" if c.get("metrics") else ""
        click.echo(f"  current classifier: {c['classifier_id']} ({c['architecture']}{acc})")
        click.echo(f"    trained on {c['dataset_id']} from modules {', '.join(c['modules'])}")
        evals = c["site_evaluations"]
        click.echo(f"    site evaluations: {len(evals) or 'none reported'}")
        for e in evals:
            auroc = "-" if e["auroc"] is None else f"{e['auroc']:.4f}"
            recall = ", ".join(
                f"{k} {'-' if r is None else format(r, '.3f')}"
                for k, r in e["per_class_recall"].items()
            )
            click.echo(
                f"      {e['site_id']}: accuracy {e['accuracy']:.4f}, AUROC {auroc} "
                f"on {e['n_test']} images "
                f"(entry {e['index']}, {e['reported_at']})"
            )
            click.echo(f"        recall: {recall}")
    if s["pending_retrains"]:
        click.echo(
            f"  waiting for retraining: {', '.join(s['pending_retrains'])} (`aggregator retrain`)"
        )
