"""``site-node forget --module ID --reason TEXT``: have the aggregator delete one of this site's
modules."""

from __future__ import annotations

import click

from ffsecure.clitools import echo_json
from ffsecure.records.ids import resolve_module_id
from site_node import sync
from site_node import trust as trustlib
from site_node.commands._common import config_option, json_option, start
from site_node.state import StateDir


@click.command("forget")
@config_option
@click.option(
    "--module",
    "module_id",
    required=True,
    help="Module id from `site-node status`: all 32 hex digits, or a unique prefix of 8 or more.",
)
@click.option("--reason", required=True, help="Why, for the ledger (e.g. 'consent withdrawn').")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def forget(ctx, config_path, module_id, reason, yes, as_json):
    """Delete a module at the aggregator and verify the deletion entries and their proofs in the
    log."""

    cfg = start(ctx, config_path, as_json)
    state = StateDir(cfg.state_dir)
    module_id = resolve_module_id(module_id, state.module_ids())
    if not yes:  # asked on stderr, so --json output stays clean; no answer (no terminal) aborts
        click.confirm(
            f"delete module {module_id} at the aggregator (cannot be undone)?", abort=True, err=True
        )
    with state.locked():
        t = trustlib.load(cfg)
        with trustlib.make_client(cfg, t) as client:
            result = sync.forget_module(state, client, t, module_id, reason)
    if as_json:
        echo_json(result)
    else:
        kinds = ", ".join(f"{e['type']} at {e['index']}" for e in result["entries"])
        click.echo(
            f"module {module_id} deleted; verified in the log (tree size {result['tree_size']}): "
            f"{kinds}"
        )
