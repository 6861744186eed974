"""``site-node check``: the pre-flight before the first run (:mod:`site_node.preflight`).

Prints one line per finding (``PASS``/``WARN``/``FAIL``, the check, what was
found, and for WARN/FAIL the fix) as each is made, with a note on stderr
before the slow steps when stderr is a terminal; ``--json`` prints
``{"checks": [...], "summary": {...}}`` at the end. Exit status 0 without a
FAIL (warnings allowed), 5 (``EXIT_CHECK_FAILED``) with one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ffsecure.clitools import echo_json
from ffsecure.preflight import Check, CheckLine, Status, run_checks
from site_node.commands._common import config_option, json_option
from site_node.exitcodes import EXIT_CHECK_FAILED
from site_node.preflight import SitePreflight


def _announce(check: Check) -> None:
    click.echo(f"... checking {check.name}", err=True)


def _print(line: CheckLine) -> None:
    color = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "red"}[line.status]
    click.secho(line.text(), fg=color)


@click.command("check")
@config_option
@json_option
@click.pass_context
def check(ctx: click.Context, config_path: str, as_json: bool) -> None:
    """Pre-flight: config, permissions, certificates, manifest policy, data, aggregator, GPU."""
    ctx.ensure_object(dict)["json"] = as_json
    report = run_checks(
        SitePreflight(Path(config_path)).checks(),
        on_line=None if as_json else _print,
        on_start=_announce if not as_json and sys.stderr.isatty() else None,
    )
    if as_json:
        echo_json(report.as_dict())
    else:
        click.echo(report.summary_text())
    if report.verdict is Status.FAIL:
        ctx.exit(EXIT_CHECK_FAILED)
