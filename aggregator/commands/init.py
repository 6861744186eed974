"""``aggregator init``: create an aggregator home (keys, then the CA's federation manifest)."""

from __future__ import annotations

from pathlib import Path

import click

from aggregator.commands.context import json_option
from aggregator.config import write_default_config
from aggregator.initialize import create_keys, install
from ffsecure.clitools import echo_json


@click.command("init")
@click.option(
    "--dir",
    "home_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="The aggregator home directory (created).",
)
@click.option(
    "--federation-id",
    help="Step 1: make the keys, public-keys.json and aggregator.csr for this federation.",
)
@click.option("--origin", help="Step 1: log origin [default: ffsecure.local/<federation-id>/log].")
@click.option(
    "--federation",
    "federation_file",
    type=click.Path(dir_okay=False, exists=True),
    help="Step 2: the CA-signed federation.json made from this home's public-keys.json.",
)
@click.option(
    "--ca-cert",
    type=click.Path(dir_okay=False, exists=True),
    help="Step 2: the federation CA certificate.",
)
@click.option(
    "--crl",
    "crl_file",
    type=click.Path(dir_okay=False, exists=True),
    help="Step 2: the CA's current CRL.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True),
    help="Step 2: the aggregator certificate the CA signed from aggregator.csr.",
)
@click.option(
    "--listen",
    default=None,
    help="Step 2: server.listen for aggregator.toml [default: 127.0.0.1:8443].",
)
@json_option
@click.pass_context
def init(
    ctx: click.Context,
    home_dir: str,
    federation_id: str | None,
    origin: str | None,
    federation_file: str | None,
    ca_cert: str | None,
    crl_file: str | None,
    tls_cert: str | None,
    listen: str | None,
    as_json: bool,
) -> None:
    """Create an aggregator home in two steps; never overwrites anything.

    \b
    Step 1  aggregator init --dir DIR --federation-id ID
            -> keys/{kek,log,hpke,tls}.key (0600), public-keys.json, aggregator.csr
            Send public-keys.json and aggregator.csr to the CA operator.
    Step 2  aggregator init --dir DIR --federation federation.json --ca-cert ca.pem \\
                            --crl crl.pem --tls-cert aggregator.pem
            -> checked and installed; aggregator.toml and the store are created.
    """
    ctx.ensure_object(dict)["json"] = as_json
    step2 = [federation_file, ca_cert, crl_file, tls_cert]
    if federation_id and any(step2):
        raise click.UsageError(
            "give either --federation-id (step 1) "
            "or --federation/--ca-cert/--crl/--tls-cert (step 2)"
        )
    if federation_id:
        out = create_keys(home_dir, federation_id, origin=origin)
        if as_json:
            echo_json(out)
        else:
            click.echo(f"created the keys of {out['home']} (log {out['log_origin']})")
            click.echo(
                f"send {out['public_keys']} and {out['csr']} to the federation CA operator, "
                "then run step 2"
            )
        return
    given = [path for path in step2 if path]
    if len(given) != len(step2):
        raise click.UsageError(
            "step 2 needs --federation, --ca-cert, --crl and --tls-cert "
            "(or run step 1 with --federation-id)"
        )

    federation_json, ca_cert_pem, crl_pem, tls_cert_pem = (Path(p).read_bytes() for p in given)
    out = install(
        home_dir,
        federation_json=federation_json,
        ca_cert_pem=ca_cert_pem,
        crl_pem=crl_pem,
        tls_cert_pem=tls_cert_pem,
        listen=listen,
    )
    if as_json:
        echo_json(out)
    else:
        click.echo(f"aggregator home {out['home']} ready for federation {out['federation_id']}")
        click.echo(f"start it with `aggregator serve --dir {out['home']}`")


@click.command("init-config")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write aggregator.toml (refused if the file exists).",
)
@click.option("--listen", default=None, help="server.listen [default: 127.0.0.1:8443].")
@click.option(
    "--store",
    "store_backend",
    type=click.Choice(["sqlite", "postgres"]),
    default="sqlite",
    show_default=True,
    help="store.backend; postgres reads its DSN from store.dsn next to the file.",
)
@json_option
@click.pass_context
def init_config(
    ctx: click.Context, config_path: str, listen: str | None, store_backend: str, as_json: bool
) -> None:
    """Write the commented default aggregator.toml; never overwrites.

    `aggregator init` step 2 writes the same file into the home it creates;
    this command is for reading or preparing it beforehand, or for a home
    whose aggregator.toml was removed.
    """
    ctx.ensure_object(dict)["json"] = as_json
    path = write_default_config(config_path, listen=listen, store_backend=store_backend)
    if as_json:
        echo_json({"written": str(path)})
    else:
        click.echo(f"wrote {path}")
