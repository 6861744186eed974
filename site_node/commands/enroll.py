"""``site-node enroll --config site.toml``: make this site's key and a CSR for the federation CA.

The private key is created here, written 0600 (``pki.key``, default
``STATE/keys/site.key``), and never leaves the host; the CSR (``pki.csr``,
default ``STATE/site.csr``) goes to the CA operator, who answers with a
startup kit (``ffsecure pki kit``; ``pki sign-csr`` for loose files).
Without --config, the ids and paths are given as options.

The key is encrypted with the first line of ``--passphrase-file`` (else
``pki.passphrase_file`` of site.toml, else the file named by
``$FFSECURE_SITE_PASSPHRASE_FILE``); the daemon reads the same file to use it.
Without any, the key is written unencrypted with a warning on stderr, unless
``--no-passphrase`` says so on purpose (docs/pki.md, "Key passphrases").
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ffsecure import pki as pkilib
from ffsecure.clitools import echo_json
from ffsecure.commands.pki import SITE_PASSPHRASE_ENV, new_key_passphrase, read_passphrase
from ffsecure.errors import ConfigError
from site_node.config import load_config
from site_node.state import StateDir


@click.command("enroll")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="The site's site.toml: ids, key and CSR paths come from it.",
)
@click.option("--federation-id", help="Without --config: the federation id.")
@click.option("--site-id", help="Without --config: this site's id.")
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False),
    help="Without --config: where to write the new private key (mode 0600).",
)
@click.option(
    "--csr",
    "csr_file",
    type=click.Path(dir_okay=False),
    help="Without --config: where to write the CSR for the CA operator.",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="Encrypt the key with the first line of this file (default: "
    "pki.passphrase_file, then $FFSECURE_SITE_PASSPHRASE_FILE).",
)
@click.option(
    "--no-passphrase", is_flag=True, help="Write the key unencrypted, on purpose (no warning)."
)
@click.option("--force", is_flag=True, help="Replace an existing key file.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def enroll(
    ctx,
    config_path,
    federation_id,
    site_id,
    key_file,
    csr_file,
    passphrase_file,
    no_passphrase,
    force,
    as_json,
):
    """Make a P-256 key and a certificate signing request for this site."""

    ctx.ensure_object(dict)["json"] = as_json
    if config_path:
        cfg = load_config(config_path)
        StateDir(cfg.state_dir).ensure()
        federation_id, site_id = cfg.federation_id, cfg.site_id
        key_file, csr_file = str(cfg.key_path), str(cfg.csr_path)
        passphrase = read_passphrase(passphrase_file) if passphrase_file else cfg.passphrase()
    else:
        missing = [
            n
            for n, v in (
                ("--federation-id", federation_id),
                ("--site-id", site_id),
                ("--key", key_file),
                ("--csr", csr_file),
            )
            if not v
        ]
        if missing:
            raise ConfigError(
                f"without --config, {', '.join(missing)} must be given",
                hint="pass --config site.toml (recommended) or every option",
            )
        passphrase = read_passphrase(passphrase_file)
    if Path(key_file).exists() and not force:
        raise ConfigError(
            f"{key_file} already exists",
            hint="keep the existing key, or pass --force to replace it",
        )
    if passphrase is None and not no_passphrase:
        passphrase = read_passphrase(os.environ.get(SITE_PASSPHRASE_ENV))
    passphrase = new_key_passphrase(passphrase, no_passphrase, key_file, SITE_PASSPHRASE_ENV)
    Path(key_file).parent.mkdir(parents=True, exist_ok=True)
    Path(csr_file).parent.mkdir(parents=True, exist_ok=True)
    csr = pkilib.make_key_and_csr(
        key_file, federation_id=federation_id, site_id=site_id, passphrase=passphrase
    )
    pkilib.write_public_file(Path(csr_file), csr)
    identity = pkilib.Identity(federation_id, "site", site_id)
    if as_json:
        echo_json({"identity": identity.uri, "key": key_file, "csr": csr_file})
    else:
        click.echo(f"wrote key {key_file} (0600) and CSR {csr_file} for {identity.uri}")
        click.echo(
            f"  send the CSR to the CA operator: ffsecure pki kit --site-id {site_id} "
            f"--csr {Path(csr_file).name} ..."
        )
        click.echo(
            f"  then: site-node install-kit site-{site_id}.kit --config site.toml "
            "--expect-ca-fingerprint FP (FP: as the CA operator reads it to you)"
        )
