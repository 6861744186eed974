"""``site-node run``: the daemon (train when data changes or when asked, upload, survive
downtime)."""

from __future__ import annotations

import click

from ffsecure.clitools import log_format_option, setup_command_logging
from site_node.commands._common import config_option
from site_node.config import load_config
from site_node.daemon import Daemon


@click.command("run")
@config_option
@log_format_option
@click.option("--once", is_flag=True, help="Run one cycle (train if due, upload pending) and exit.")
@click.pass_context
def run(ctx, config_path, log_json, once):
    """Run until SIGTERM: train a module when the data changes, the trigger file appears or on
    SIGHUP; upload what is pending; retry when the aggregator is down.

    Exit status: 0 stopped cleanly; 1 configuration error (with --once: the cycle failed);
    3 ALARM: the aggregator's log forked (E_LOG_FORK), or it refused a module for a reason this
    site's own check contradicts (E_REFUSAL_CONTRADICTED); 4 (--once) the cycle ended in a
    refusal (by this site's privacy check or DP budget, or by the aggregator).
    """

    setup_command_logging(ctx, log_json)
    cfg = load_config(config_path)
    daemon = Daemon(cfg, max_cycles=1 if once else None)
    daemon.install_signals()
    ctx.exit(daemon.run())
