"""``site-node discard --module ID --reason TEXT``: take a module out of the upload queue for good.

Local only: the module's status becomes ``discarded`` with the reason, the
time and the status it had (``module.json``), and its sealed envelope is
removed; the package stays for inspection. A module already registered is
deleted with ``site-node forget`` instead (``E_MODULE_STATUS``). If an
interrupted upload of it was in fact registered, ``site-node status`` still
shows nothing for it: ask the aggregator's operator, or ``forget`` it by id.
"""

from __future__ import annotations

import click

from ffsecure.clitools import echo_json
from site_node.commands._common import config_option, json_option, start
from site_node.state import StateDir


@click.command("discard")
@config_option
@click.option(
    "--module", "module_id", required=True, help="The module to take out of the upload queue."
)
@click.option("--reason", required=True, help="Why (kept in the module's record).")
@json_option
@click.pass_context
def discard(ctx, config_path, module_id, reason, as_json):
    """Never send this module: mark it `discarded` with the reason (trained, sealed or refused)."""

    cfg = start(ctx, config_path, as_json)
    state = StateDir(cfg.state_dir)
    with state.locked():
        record = state.discard_module(module_id, reason)
    info = {"module_id": record.module_id, "status": record.status, **(record.discarded or {})}
    if as_json:
        echo_json(info)
    else:
        click.echo(
            f"module {record.module_id}: discarded (was {info['previous_status']}); "
            f"reason: {info['reason']}; it will never be sent"
        )
