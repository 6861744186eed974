"""``site-node enroll``: make this site's key and a CSR for the federation CA.

The private key is created here, written 0600, and never leaves the host; the
CSR goes to the CA operator, who signs it with ``ffsecure pki sign-csr``.
"""

from __future__ import annotations

from pathlib import Path

import click

from ffsecure import pki as pkilib
from ffsecure.clitools import echo_json
from ffsecure.errors import ConfigError


@click.command("enroll")
@click.option("--federation-id", required=True)
@click.option("--site-id", required=True)
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False),
              help="Where to write the new private key (mode 0600).")
@click.option("--csr", "csr_file", required=True, type=click.Path(dir_okay=False),
              help="Where to write the CSR for the CA operator.")
@click.option("--passphrase-file", type=click.Path(dir_okay=False),
              help="Encrypt the key with the first line of this file.")
@click.option("--force", is_flag=True, help="Replace an existing key file.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def enroll(ctx, federation_id, site_id, key_file, csr_file, passphrase_file, force, as_json):
    """Make a P-256 key and a certificate signing request for this site."""
    from ffsecure.commands.pki import read_passphrase

    ctx.ensure_object(dict)["json"] = as_json
    if Path(key_file).exists() and not force:
        raise ConfigError(f"{key_file} already exists",
                          hint="keep the existing key, or pass --force to replace it")
    csr = pkilib.make_key_and_csr(key_file, federation_id=federation_id, site_id=site_id,
                                  passphrase=read_passphrase(passphrase_file))
    pkilib.write_public_file(Path(csr_file), csr)
    identity = pkilib.Identity(federation_id, "site", site_id)
    if as_json:
        echo_json({"identity": identity.uri, "key": key_file, "csr": csr_file})
    else:
        click.echo(f"wrote key {key_file} (0600) and CSR {csr_file} for {identity.uri}")
        click.echo("  send the CSR to the CA operator: ffsecure pki sign-csr CSR --site-id "
                   f"{site_id} ...")
