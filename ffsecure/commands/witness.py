"""``ffsecure witness``: a third party cosigns a log's checkpoints (C2SP tlog-cosignature).

``init`` makes the witness key; ``cosign`` checks a checkpoint against the
last one this witness cosigned for that log (consistency proof from the log's
tiles or an audit bundle) and prints it with the witness's cosignature line
added. The rules are ``ffsecure.ledger.witness``; docs/auditor-guide.md says
what a witness guarantees.
"""

from __future__ import annotations

from pathlib import Path

import click

from ffsecure.audit.bundle import load_bundle
from ffsecure.clitools import echo_json, read_key_arg
from ffsecure.errors import ConfigError
from ffsecure.files import write_public_file
from ffsecure.ledger.checkpoint import open_checkpoint
from ffsecure.ledger.merkle import MemoryTree, NodeReader, leaf_hash
from ffsecure.ledger.tiles import TileReader
from ffsecure.ledger.witness import MAX_NOTE_BYTES, cosign_checkpoint, init_witness


@click.group("witness")
def witness() -> None:
    """Witness a log: cosign its checkpoints only while it stays append-only."""


@witness.command("init")
@click.option(
    "--name",
    required=True,
    help="The witness name, a schema-less URL such as witness.example.org/w1 (no spaces, no '+').",
)
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False),
    help="The witness directory to create (0700; the key is 0600).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def init_cmd(ctx: click.Context, name: str, directory: str, as_json: bool) -> None:
    """Create a witness key; prints the verifier key to give auditors (--witness-key)."""
    ctx.ensure_object(dict)["json"] = as_json
    vkey = init_witness(directory, name)
    if as_json:
        echo_json({"vkey": vkey, "dir": directory})
    else:
        click.echo(vkey)


def _proofs(size: int, tiles: str | None, bundle: str | None) -> NodeReader | None:
    if tiles is not None:
        return TileReader(tiles, size)
    if bundle is not None:
        entries = load_bundle(bundle).entries[:size]
        return MemoryTree([leaf_hash(e) for e in entries])
    return None


@witness.command("cosign")
@click.option(
    "--checkpoint",
    "checkpoint_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The log's signed checkpoint (e.g. the tiles' `checkpoint` file).",
)
@click.option(
    "--log-key",
    required=True,
    help="The log's verifier key (or a file holding it): the federation's log_public_key.",
)
@click.option(
    "--state",
    "state_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="The witness directory made by `ffsecure witness init`.",
)
@click.option(
    "--tiles",
    type=click.Path(file_okay=False, exists=True),
    help="The log's tiles directory, for the consistency proof.",
)
@click.option(
    "--bundle",
    type=click.Path(file_okay=False, exists=True),
    help="An audit bundle of the log, for the consistency proof (instead of --tiles).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Write the cosigned note here (default: print it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def cosign_cmd(ctx, checkpoint_file, log_key, state_dir, tiles, bundle, out, as_json) -> None:
    """Cosign a checkpoint that extends the last one this witness cosigned for the log.

    Refuses (E_WITNESS_FORK) a smaller tree, another root at the same size, or
    a tree the consistency proof does not link to the last one.
    """
    ctx.ensure_object(dict)["json"] = as_json
    if tiles is not None and bundle is not None:
        raise click.UsageError("give at most one of --tiles and --bundle")
    path = Path(checkpoint_file)
    if path.stat().st_size > MAX_NOTE_BYTES:
        raise ConfigError(f"{path} is larger than a checkpoint note may be ({MAX_NOTE_BYTES})")
    note = path.read_bytes()
    vkey = read_key_arg(log_key, "log key")
    size = open_checkpoint(note, vkey).size
    done = cosign_checkpoint(state_dir, note, vkey, _proofs(size, tiles, bundle))
    if out is not None:
        write_public_file(out, done.note.encode("utf-8"))
    if as_json:
        echo_json(
            {
                "origin": done.checkpoint.origin,
                "size": done.checkpoint.size,
                "previous_size": done.previous_size,
                "cosignature": done.line,
                "note": done.note,
            }
        )
    elif out is None:
        click.echo(done.note, nl=False)
    else:
        prev = (
            "first checkpoint seen"
            if done.previous_size is None
            else (f"extends size {done.previous_size}")
        )
        click.echo(f"cosigned {done.checkpoint.origin} size {done.checkpoint.size} ({prev}): {out}")
