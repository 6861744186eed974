"""``site-node check``: the pre-flight before the first run (:mod:`site_node.preflight`).

Prints one line per finding (``PASS``/``WARN``/``FAIL``, the check, what was
found, and for WARN/FAIL the fix) as each is made, with a note on stderr
before the slow steps when stderr is a terminal; ``--json`` prints
``{"checks": [...], "summary": {...}}`` at the end. Exit status 0 without a
FAIL (warnings allowed), 5 (``EXIT_CHECK_FAILED``) with one
(:func:`ffsecure.clitools.run_check_command`, shared with ``aggregator check``).
"""

from __future__ import annotations

from pathlib import Path

import click

from ffsecure.clitools import run_check_command
from site_node.commands._common import config_option, json_option
from site_node.preflight import SitePreflight


@click.command("check")
@config_option
@json_option
@click.pass_context
def check(ctx: click.Context, config_path: str, as_json: bool) -> None:
    """Pre-flight: config, permissions, certificates, manifest policy, data, aggregator, GPU."""
    ctx.ensure_object(dict)["json"] = as_json
    run_check_command(ctx, SitePreflight(Path(config_path)).checks(), as_json=as_json)
