"""``aggregator install-kit KIT --dir HOME --expect-ca-fingerprint FP``: step 2 of ``aggregator
init`` from the CA's startup kit (see :func:`aggregator.initialize.install_kit`)."""

from __future__ import annotations

from pathlib import Path

import click

from aggregator.commands.context import json_option
from aggregator.initialize import install_kit as install_kit_files
from ffsecure.clitools import echo_json
from ffsecure.commands.pki import expect_ca_fingerprint_option
from ffsecure.pki.kit import read_kit_file


@click.command("install-kit")
@click.argument("kit_file", type=click.Path(dir_okay=False))
@click.option(
    "--dir",
    "home_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="The aggregator home made by `aggregator init` step 1.",
)
@expect_ca_fingerprint_option
@click.option("--listen", help="server.listen [default: the kit's aggregator.toml].")
@click.option(
    "--systemd-unit",
    "unit_path",
    type=click.Path(dir_okay=False),
    help="Also write the kit's aggregator.service here (refused if the file exists).",
)
@json_option
@click.pass_context
def install_kit(ctx, kit_file, home_dir, fingerprint, listen, unit_path, as_json):
    """Verify the aggregator's startup kit against the CA fingerprint, then install it."""
    ctx.ensure_object(dict)["json"] = as_json
    out = install_kit_files(
        home_dir,
        read_kit_file(kit_file),
        fingerprint,
        listen=listen,
        unit_path=Path(unit_path) if unit_path else None,
    )
    if as_json:
        echo_json(out)
        return
    click.echo(f"aggregator home {out['home']} ready for federation {out['federation_id']}")
    click.echo(f"  {out['identity']}; CA fingerprint {out['ca_fingerprint']}")
    click.echo(f"  listens on {out['listen']} (server.listen in {out['config']})")
    if out["systemd_unit"]:
        click.echo(f"  systemd unit: {out['systemd_unit']}")
    click.echo(f"start it with `aggregator serve --dir {out['home']}`")
