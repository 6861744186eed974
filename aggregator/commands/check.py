"""``aggregator check --dir DIR``: the pre-flight before ``serve`` (:mod:`aggregator.preflight`).

Prints one line per finding (``PASS``/``WARN``/``FAIL``, the check, what was
found, and for WARN/FAIL the fix) as each is made; ``--json`` prints
``{"checks": [...], "summary": {...}}`` at the end. Exit status 0 without a
FAIL (warnings allowed), 5 (``EXIT_CHECK_FAILED``) with one
(:func:`ffsecure.clitools.run_check_command`, shared with ``site-node check``).
Safe beside a running ``serve``: nothing is written and the store is opened
read-only.
"""

from __future__ import annotations

import click

from aggregator.commands.context import dir_option, json_option
from aggregator.home import AggregatorHome
from aggregator.preflight import AggregatorPreflight
from ffsecure.clitools import run_check_command


@click.command("check")
@dir_option
@json_option
@click.pass_context
def check(ctx: click.Context, home_dir: str, as_json: bool) -> None:
    """Pre-flight: config, permissions, manifest, TLS, listen port, store and ledger, disk."""
    ctx.ensure_object(dict)["json"] = as_json
    checks = AggregatorPreflight(AggregatorHome.at(home_dir)).checks()
    run_check_command(ctx, checks, as_json=as_json)
