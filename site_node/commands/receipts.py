"""``site-node receipts export --out DIR``: the receipts an auditor passes to ``audit verify``.

The work is :func:`site_node.receipts.export_receipts`; this command parses and
renders. It reads the state directory without taking its lock (every record is
replaced atomically), so it runs while ``site-node run`` holds the state.
"""

from __future__ import annotations

import click

from ffsecure.clitools import echo_json
from site_node.commands._common import config_option, json_option, start
from site_node.receipts import export_receipts
from site_node.state import StateDir


@click.group("receipts")
def receipts() -> None:
    """This site's receipts: signed proofs that the aggregator's log holds its entries."""


@receipts.command("export")
@config_option
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="Folder to write to (created; a file there with other content is refused).",
)
@json_option
@click.pass_context
def export(ctx, config_path, out, as_json):
    """Write one verified receipt per registered or deleted module, plus an index, to OUT.

    Give the files to the auditor: `ffsecure audit verify BUNDLE --ca ca.pem
    --trusted-checkpoint OUT/<module id>.receipt.json ...` (docs/auditor-guide.md).
    """
    cfg = start(ctx, config_path, as_json)
    result = export_receipts(StateDir(cfg.state_dir), out, site_id=cfg.site_id)
    summary = result.to_dict()
    if as_json:
        echo_json(summary)
        return
    for f in summary["files"]:
        click.echo(f"{'wrote' if f['written'] else 'same '}  {result.out / f['name']}")
    click.echo(
        f"{summary['receipts']} receipt(s), {summary['deletions']} deletion checkpoint(s) in "
        f"{result.out}; the auditor passes each file but index.json to "
        "`ffsecure audit verify --trusted-checkpoint`"
    )
