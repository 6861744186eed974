"""``aggregator ledger``: sign a checkpoint, export an audit bundle or tiles, verify the log,
keep witness cosignatures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from aggregator.commands.context import dir_option
from aggregator.cosignatures import add_cosignatures, cosignature_lines, with_cosignatures
from aggregator.export import write_bundle, write_log_tiles
from aggregator.federation_ledger import export_federations
from aggregator.home import AggregatorHome
from aggregator.store import home_has_store, open_home_store
from ffsecure.clitools import echo_json, read_key_arg
from ffsecure.errors import ConfigError
from ffsecure.ledger import open_checkpoint, verify_bundle_log


def _json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


def _open(home_dir: str):
    home = AggregatorHome.at(home_dir)
    if not home_has_store(home):
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
    type=click.Path(file_okay=False),
    help="New directory to write the audit bundle to.",
)
@click.option(
    "--tiles",
    "tiles_dir",
    type=click.Path(file_okay=False),
    help="Directory to write (or bring up to date) the log as C2SP tlog-tiles: "
    "checkpoint, tile/..., tile/entries/...; serve it with any static web server.",
)
@_json_option
@click.pass_context
def export(
    ctx: click.Context, home_dir: str, out_dir: str | None, tiles_dir: str | None, as_json: bool
) -> None:
    """Export an audit bundle (docs/audit-bundle.md) and/or the log's tiles (docs/formats.md).

    Checkpoints carry the witness cosignatures kept by `aggregator ledger add-cosignature`.
    """
    ctx.ensure_object(dict)["json"] = as_json
    if out_dir is None and tiles_dir is None:
        raise click.UsageError("give --out DIR (audit bundle), --tiles DIR (tiles) or both")
    home = AggregatorHome.at(home_dir)
    if out_dir is not None and not home.ca_cert.is_file():
        raise ConfigError(
            f"{home.ca_cert} does not exist",
            code="E_CONFIG",
            hint="copy the federation CA certificate to ca.pem in the aggregator home",
        )
    crl = home.crl.read_bytes() if home.crl.is_file() else None
    result: dict = {}
    federation = home.federation.read_bytes() if home.federation.is_file() else None
    with _open(home_dir) as store:
        snap = store.snapshot()
    documents: dict[str, bytes] = {}
    warnings: list[dict[str, str]] = []
    ca_pem = b""
    if out_dir is not None:
        ca_pem = home.ca_cert.read_bytes()
        documents, warnings = export_federations(home, snap.entries, federation, ca_pem)
    notes = with_cosignatures(snap.checkpoints, cosignature_lines(home))
    snap = dataclasses.replace(snap, checkpoints=notes)
    result["tree_size"] = snap.size
    if out_dir is not None:
        path = write_bundle(
            snap,
            Path(out_dir),
            ca_cert_pem=ca_pem,
            crl_pem=crl,
            federation_json=federation,
            federation_documents=documents,
        )
        result.update(bundle=str(path), crl=crl is not None)
        result["warnings"] = warnings
    if tiles_dir is not None:
        done = write_log_tiles(snap, Path(tiles_dir))
        result["tiles"] = {"dir": tiles_dir, **dataclasses.asdict(done)}
    if as_json:
        echo_json(result)
        return
    if out_dir is not None:
        click.echo(f"wrote audit bundle {result['bundle']} ({snap.size} entries)")
        for warning in warnings:
            click.echo(
                f"warning: the audit of this bundle will report {warning['code']}: "
                f"{warning['message']}",
                err=True,
            )
    if tiles_dir is not None:
        tiles = result["tiles"]
        click.echo(
            f"tiles in {tiles_dir} at size {snap.size}: {tiles['written']} file(s) written, "
            f"{tiles['unchanged']} unchanged"
        )


@ledger.command("add-cosignature")
@dir_option
@click.argument("note_file", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--witness-key",
    "witness_keys",
    multiple=True,
    help="Keep only cosignatures by this witness verifier key (or a file holding it), "
    "and check each. Repeatable.",
)
@_json_option
@click.pass_context
def add_cosignature(
    ctx: click.Context, home_dir: str, note_file: str, witness_keys: tuple[str, ...], as_json: bool
) -> None:
    """Keep the witness cosignatures of NOTE_FILE, a checkpoint a witness cosigned.

    Later exports (bundle and tiles) carry them on that checkpoint.
    """
    ctx.ensure_object(dict)["json"] = as_json
    note = Path(note_file).read_bytes()[: 64 * 1024]
    keys = [read_key_arg(k, "witness key") for k in witness_keys]
    with _open(home_dir) as store:
        done = add_cosignatures(AggregatorHome.at(home_dir), store, note, keys)
    if as_json:
        echo_json(dataclasses.asdict(done))
    else:
        click.echo(
            f"checkpoint {done.size}: {len(done.added)} cosignature(s) added, {done.total} kept"
        )


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
