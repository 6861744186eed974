"""``site-node status``: what this site contributed and whether the aggregator's log still holds it.

Days left of the site certificate, the CA and ``STATE/crl.pem`` are shown (``expiry`` in
``--json``), with a WARN line under 30 days (:mod:`ffsecure.pki.expiry`). So is the site's own
DP budget (``dp_budget`` in ``--json``, :func:`site_node.budget.site_budget`): what every DP module
it trained spent composed (released or not), against site.toml's ``dp.max_total_epsilon``, and
what is left.

A module the aggregator refused for a reason this site's own check of the package contradicts
(``E_REFUSAL_CONTRADICTED``, :mod:`site_node.refusals`) is an ALARM line after the table, with
the aggregator's words labelled as such (``alarms`` in ``--json``), for as long as it stays
``refused`` (``site-node discard`` records that the operator dealt with it), ``--offline`` too.

Exit status: 0 all verified; 1 an error (aggregator unreachable, bad config);
3 ALARM: ``E_LOG_FORK``, the aggregator's current log is not an extension of
the checkpoint this site stored, or no longer holds one of this site's entries;
or a module refused with ``E_REFUSAL_CONTRADICTED``.
"""

from __future__ import annotations

import click

from ffsecure.clitools import echo_json, report_error
from site_node import sync
from site_node import trust as trustlib
from site_node.budget import SiteBudget, site_budget
from site_node.commands._common import config_option, json_option, refusal_lines, start
from site_node.exitcodes import EXIT_ALARM
from site_node.preflight import expiries
from site_node.refusals import is_contradicted
from site_node.state import StateDir


def _local(state) -> dict:
    return {
        "modules": [
            {
                "module_id": r.module_id,
                "status": r.status,
                "created_at": r.created_at,
                "classes": r.classes,
                "index": (r.receipt or {}).get("index"),
                "epsilon": (r.train.get("dp") or {}).get("epsilon"),
            }
            for r in state.modules()
        ],
        "stored_checkpoint": state.read_checkpoint(),
    }


def _alarms(state: StateDir) -> list[dict]:
    """The modules still ``refused`` with a refusal this site's own check contradicts."""
    return [
        {"module_id": r.module_id, **(r.error or {})}
        for r in state.modules()
        if r.status == "refused" and is_contradicted(r.error)
    ]


def _budget_line(budget: SiteBudget) -> str:
    """The site's own DP budget (site_node.budget): composed total, cap, what is left."""
    if budget.with_dp:
        line = (
            f"DP budget: {len(budget.with_dp)} DP module(s) trained on this site's data "
            f"({len(budget.released_with_dp)} released; discarded and refused ones count too) "
            f"spent epsilon {budget.epsilon:.3f} (composed, delta {budget.delta:.2g}) of "
            f"dp.max_total_epsilon {budget.cap:g}; {budget.left:.3f} left"
        )
    else:
        line = f"DP budget: no DP module trained yet; dp.max_total_epsilon {budget.cap:g}"
    if budget.without_dp:
        line += f"; {len(budget.without_dp)} release(s) without DP, which no epsilon bounds"
    return line


@click.command("status")
@config_option
@click.option(
    "--offline", is_flag=True, help="Show the local state only; do not contact the aggregator."
)
@json_option
@click.pass_context
def status(ctx, config_path, offline, as_json):
    """List this site's modules and their ledger entries; prove the log only grew since last
    time."""

    cfg = start(ctx, config_path, as_json)
    state = StateDir(cfg.state_dir)
    if offline:
        report = {"site_id": cfg.site_id, "offline": True, **_local(state)}
    else:
        with state.locked():
            t = trustlib.load(cfg)
            with trustlib.make_client(cfg, t) as client:
                try:
                    report = sync.status_report(state, client)
                except sync.LogForkError as exc:
                    report_error(exc, as_json=as_json)
                    ctx.exit(EXIT_ALARM)
    budget = site_budget(state, cfg.dp_limits)
    report["dp_budget"] = budget.to_dict()
    found = expiries(state)
    report["expiry"] = [e.as_dict() for e in found]
    report["alarms"] = alarms = _alarms(state)
    if as_json:
        echo_json(report)
        if alarms:
            ctx.exit(EXIT_ALARM)
        return
    # heavy: rich, only for the table (keeps --help fast)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"site {report.get('site_id') or cfg.site_id}: modules")
    table.add_column("module id", no_wrap=True, min_width=32)  # whole: `forget --module` takes it
    for col in (
        "status",
        "created",
        "classes",
        "ledger index",
        "epsilon",
        "in today's log",
    ):
        table.add_column(col)
    for m in report["modules"]:
        eps = m.get("epsilon")
        table.add_row(
            m["module_id"],
            m["status"],
            m["created_at"],
            ",".join(map(str, m["classes"])),
            "-" if m.get("index") is None else str(m["index"]),
            "-" if eps is None else f"{eps:.3f}",
            "verified" if m.get("included") else "-",
        )
    console.print(table)
    if offline:
        console.print("offline: the aggregator was not contacted")
    else:
        cp = report["checkpoint"]
        before = (
            "none stored before"
            if cp["stored_size"] is None
            else f"stored size {cp['stored_size']}"
        )
        console.print(f"log checkpoint: size {cp['size']} ({before}); consistency verified")
    console.print(_budget_line(budget))
    for e in found:
        warning = "WARN  " if e.state in ("warn", "expired") else ""
        console.print(f"{warning}{e.line()}")
    for alarm in alarms:
        for line in refusal_lines(alarm["module_id"], alarm):
            click.echo(line)
    if alarms:
        ctx.exit(EXIT_ALARM)
