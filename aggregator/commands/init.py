"""``aggregator init``: create an aggregator home (keys, then the CA's federation manifest)."""

from __future__ import annotations

from pathlib import Path

import click

from aggregator.commands.context import json_option
from aggregator.config import write_default_config
from aggregator.initialize import create_keys, install
from ffsecure import templates
from ffsecure.clitools import echo_json, renamed_option


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
    "--host",
    "hosts",
    multiple=True,
    help="Step 1: DNS name or IP the sites connect to, written into aggregator.csr "
    "(repeatable); the CA signs it without being told.",
)
@click.option(
    "--federation",
    "federation_file",
    type=click.Path(dir_okay=False, exists=True),
    help="Step 2: the CA-signed federation.json made from this home's public-keys.json.",
)
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(dir_okay=False, exists=True),
    help="Step 2: the federation CA certificate.",
)
@click.option("--ca-cert", "old_ca_file", type=click.Path(dir_okay=False, exists=True), hidden=True)
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
    hosts: tuple[str, ...],
    federation_file: str | None,
    ca_file: str | None,
    old_ca_file: str | None,
    crl_file: str | None,
    tls_cert: str | None,
    listen: str | None,
    as_json: bool,
) -> None:
    """Create an aggregator home in two steps; never overwrites anything.

    \b
    Step 1  aggregator init --dir DIR --federation-id ID --host HOST
            -> keys/{kek,log,hpke,tls}.key (0600), public-keys.json, aggregator.csr
            Send public-keys.json and aggregator.csr to the CA operator, who
            answers with a startup kit (`ffsecure pki kit --aggregator`).
    Step 2  aggregator install-kit aggregator.kit --dir DIR --expect-ca-fingerprint FP
            (or, from loose files: aggregator init --dir DIR --federation federation.json
                                   --ca ca.pem --crl crl.pem --tls-cert aggregator.pem)
            -> checked and installed; aggregator.toml and the store are created.
    """
    ctx.ensure_object(dict)["json"] = as_json
    if ca_file or old_ca_file:
        ca_file = renamed_option(ca_file, old_ca_file, "--ca", "--ca-cert")
    step2 = [federation_file, ca_file, crl_file, tls_cert]
    if federation_id and any(step2):
        raise click.UsageError(
            "give either --federation-id (step 1) or --federation/--ca/--crl/--tls-cert (step 2)"
        )
    if hosts and not federation_id:
        raise click.UsageError("--host belongs to step 1 (with --federation-id)")
    if federation_id:
        _step1(home_dir, federation_id, origin, hosts, as_json)
        return
    given = [path for path in step2 if path]
    if len(given) != len(step2):
        raise click.UsageError(
            "step 2 needs --federation, --ca, --crl and --tls-cert "
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


def _step1(
    home_dir: str, federation_id: str, origin: str | None, hosts: tuple[str, ...], as_json: bool
) -> None:
    out = create_keys(home_dir, federation_id, origin=origin, hosts=hosts)
    if as_json:
        echo_json(out)
        return
    click.echo(f"created the keys of {out['home']} (log {out['log_origin']})")
    names = ", ".join(out["hosts"]) or "none: the CA must pass --host"
    click.echo(f"  host names in {out['csr']}: {names}")
    click.echo(
        f"send {out['public_keys']} and {out['csr']} to the federation CA operator, who runs"
    )
    click.echo("  ffsecure federation init/create (with public-keys.json), then")
    click.echo(
        "  ffsecure pki kit --aggregator --csr aggregator.csr --ca-dir CA "
        "--federation federation.json --out aggregator.kit"
    )
    click.echo(
        "then, with the kit and the CA fingerprint read to you out of band: "
        f"aggregator install-kit aggregator.kit --dir {out['home']} --expect-ca-fingerprint FP"
    )


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
@click.option(
    "--systemd-unit",
    "unit_path",
    type=click.Path(dir_okay=False),
    help="Also write the aggregator systemd unit here (refused if the file exists).",
)
@json_option
@click.pass_context
def init_config(
    ctx: click.Context,
    config_path: str,
    listen: str | None,
    store_backend: str,
    unit_path: str | None,
    as_json: bool,
) -> None:
    """Write the commented default aggregator.toml; never overwrites.

    `aggregator init` step 2 writes the same file into the home it creates;
    this command is for reading or preparing it beforehand, or for a home
    whose aggregator.toml was removed. With --systemd-unit, also the service
    unit (docs/operator-guide.md, "Running as a service").
    """
    ctx.ensure_object(dict)["json"] = as_json
    if unit_path is not None and Path(unit_path).exists():
        raise templates.FileExistsRefused(
            f"{unit_path} already exists; nothing was written",
            hint="edit the existing unit, or move it away first",
        )
    path = write_default_config(config_path, listen=listen, store_backend=store_backend)
    written = [str(path)]
    if unit_path is not None:
        written.append(str(templates.write_new(unit_path, templates.read("aggregator.service"))))
    if as_json:
        echo_json({"written": str(path), "files": written})
    else:
        for name in written:
            click.echo(f"wrote {name}")
