"""``aggregator ledger``: sign a checkpoint, export an audit bundle, verify the log."""

from __future__ import annotations

from pathlib import Path

import click

from aggregator.commands.context import dir_option
from aggregator.export import write_bundle
from aggregator.home import AggregatorHome
from aggregator.store import open_home_store
from ffsecure.clitools import echo_json
from ffsecure.errors import ConfigError
from ffsecure.ledger import open_checkpoint, verify_bundle_log


def _json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


def _open(home_dir: str):
    home = AggregatorHome.at(home_dir)
    if not home.store_db.is_file():
        raise ConfigError(
            f"{home.root} holds no store ({home.store_db.name} is missing)",
            code="E_CONFIG",
            hint="point --dir at an aggregator home created by `aggregator init`",
        )
    return open_home_store(home)


@click.group("ledger")
def ledger() -> None:
    """The transparency ledger: checkpoints, audit bundles, verification."""


@ledger.command("checkpoint")
@dir_option
@_json_option
@click.pass_context
def checkpoint(ctx: click.Context, home_dir: str, as_json: bool) -> None:
    """Sign a checkpoint for the current log size and print it (a C2SP signed note)."""
    ctx.ensure_object(dict)["json"] = as_json

    with _open(home_dir) as store:
        note = store.checkpoint()
        cp = open_checkpoint(note, store.vkey)
        if as_json:
            echo_json(
                {
                    "origin": cp.origin,
                    "size": cp.size,
                    "root_hash": cp.root_hash.hex(),
                    "note": note,
                    "vkey": store.vkey,
                }
            )
        else:
            click.echo(note, nl=False)


@ledger.command("export")
@dir_option
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="New directory to write the audit bundle to.",
)
@_json_option
@click.pass_context
def export(ctx: click.Context, home_dir: str, out_dir: str, as_json: bool) -> None:
    """Export an audit bundle (docs/audit-bundle.md) that verifies without the aggregator."""
    ctx.ensure_object(dict)["json"] = as_json

    home = AggregatorHome.at(home_dir)
    if not home.ca_cert.is_file():
        raise ConfigError(
            f"{home.ca_cert} does not exist",
            code="E_CONFIG",
            hint="copy the federation CA certificate to ca.pem in the aggregator home",
        )
    crl = home.crl.read_bytes() if home.crl.is_file() else None
    with _open(home_dir) as store:
        federation = home.federation.read_bytes() if home.federation.is_file() else None
        path = write_bundle(
            store.snapshot(),
            Path(out_dir),
            ca_cert_pem=home.ca_cert.read_bytes(),
            crl_pem=crl,
            federation_json=federation,
        )
        size = store.size()
    if as_json:
        echo_json({"bundle": str(path), "tree_size": size, "crl": crl is not None})
    else:
        click.echo(f"wrote audit bundle {path} ({size} entries)")


@ledger.command("verify")
@click.option(
    "--dir",
    "home_dir",
    type=click.Path(file_okay=False, exists=True),
    help="Verify the live store of this aggregator home.",
)
@click.option(
    "--bundle",
    "bundle_dir",
    type=click.Path(file_okay=False, exists=True),
    help="Verify an exported audit bundle instead (no aggregator needed).",
)
@click.option(
    "--no-decrypt", is_flag=True, help="Store check only: do not decrypt every active module."
)
@_json_option
@click.pass_context
def verify(
    ctx: click.Context,
    home_dir: str | None,
    bundle_dir: str | None,
    no_decrypt: bool,
    as_json: bool,
) -> None:
    """Check that the log, its checkpoints and the module store agree."""
    ctx.ensure_object(dict)["json"] = as_json
    if (home_dir is None) == (bundle_dir is None):
        raise click.UsageError("give exactly one of --dir and --bundle")
    if bundle_dir is not None:
        summary = verify_bundle_log(bundle_dir).to_dict()
    else:
        assert home_dir is not None  # exactly one of the two, checked above
        with _open(home_dir) as store:
            summary = store.verify_integrity(decrypt=not no_decrypt)
    if as_json:
        echo_json({"ok": True, **summary})
    else:
        click.echo("ok: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
