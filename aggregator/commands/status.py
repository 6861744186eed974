"""``aggregator status``: modules, classes covered, last checkpoint, current classifier.

Also the current classifier's lineage and the metrics sites reported for it
(ReportEvaluation), a section per site (last contact, modules, last refusal:
:mod:`aggregator.site_status`) and the days left on the aggregator's
certificate, the CA and the CRL (WARN under 30 days)."""

from __future__ import annotations

import click

from aggregator.commands.context import dir_option, json_option, open_operations
from aggregator.home import AggregatorHome
from aggregator.site_status import home_expiries, site_overview
from ffsecure.clitools import echo_json
from ffsecure.pki.expiry import Expiry


@click.command("status")
@dir_option
@json_option
@click.pass_context
def status(ctx: click.Context, home_dir: str, as_json: bool) -> None:
    """Where the federation stands."""
    ctx.ensure_object(dict)["json"] = as_json
    with open_operations(home_dir, evaluation=False) as ops:
        s = ops.status()
        with ops.lock:
            s["sites"] = site_overview(ops.store)
    expiries = home_expiries(AggregatorHome.at(home_dir))
    s["expiry"] = [e.as_dict() for e in expiries]
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
    _echo_sites(s["sites"])
    _echo_expiry(expiries)


def _echo_sites(sites: list[dict]) -> None:
    click.echo(f"  sites: {len(sites) or 'none seen'}")
    for site in sites:
        m = site["modules"]
        click.echo(
            f"    {site['site_id']}: last contact {site['last_contact'] or '-'}, "
            f"modules {m['active']} active, {m['deleted']} deleted"
        )
        refusal = site["last_refusal"]
        if refusal is not None:
            click.echo(
                f"      last refusal: {refusal['code']} ({refusal['method']}) at {refusal['time']}"
            )


def _echo_expiry(expiries: list[Expiry]) -> None:
    click.echo("  expiry:")
    for e in expiries:
        mark = {"warn": "WARN ", "expired": "FAIL "}.get(e.state, "")
        click.echo(f"    {mark}{e.line()}")
