"""``site-node install-kit KIT --config site.toml --expect-ca-fingerprint FP``: install the
startup kit the CA operator made from this site's CSR (see :mod:`site_node.kit`).

Refused, with nothing written, unless the kit's CA has the fingerprint the
site was told out of band, the CA signed the kit, and its certificate is for
this site's own key. An existing ``site.toml`` is kept; without one, the
kit's prefilled file is written.
"""

from __future__ import annotations

from pathlib import Path

import click

from ffsecure.commands.pki import expect_ca_fingerprint_option
from ffsecure.pki.kit import read_kit_file
from site_node.commands._common import json_option
from site_node.commands.install_cert import show_installed
from site_node.kit import install_kit as install_kit_files


@click.command("install-kit")
@click.argument("kit_file", type=click.Path(dir_okay=False))
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The site's site.toml: kept if it exists, else written from the kit.",
)
@expect_ca_fingerprint_option
@click.option(
    "--systemd-unit",
    "unit_path",
    type=click.Path(dir_okay=False),
    help="Also write the kit's site-node systemd unit here (refused if the file exists).",
)
@json_option
@click.pass_context
def install_kit(ctx, kit_file, config_path, fingerprint, unit_path, as_json):
    """Verify a startup kit against the CA fingerprint you were given, then install it."""
    ctx.ensure_object(dict)["json"] = as_json
    done = install_kit_files(
        read_kit_file(kit_file),
        fingerprint,
        Path(config_path),
        unit_path=Path(unit_path) if unit_path else None,
    )
    written = "written from the kit" if done.config_written else "kept (it existed)"
    show_installed(
        done.config,
        done.trust,
        as_json,
        config=config_path,
        config_written=done.config_written,
        systemd_unit=unit_path,
    )
    if not as_json:
        click.echo(f"  site.toml {config_path}: {written}")
        if unit_path:
            click.echo(f"  systemd unit: {unit_path}")
        click.echo(f"next: site-node run --once --config {config_path}")
