"""Witness cosignatures the aggregator keeps, to hand out with its checkpoints.

``DIR/cosignatures/<size>`` holds the cosignature lines (C2SP
``tlog-cosignature``, ``ffsecure.ledger.cosign``) collected for the log's
checkpoint of that tree size, one line each, at most one per witness key (the
line added last replaces an older one by the same key). They are public:
exports append them to the checkpoint note (``checkpoints/<size>`` of an audit
bundle, ``checkpoint`` of the tiles).

:func:`add_cosignatures` accepts a cosigned note only when its log signature
verifies, it is the very checkpoint the log issued at that size (same body),
and every extra line is shaped as an Ed25519 cosignature; with witness keys
given (one public key under one name each: ``E_WITNESS_KEY_REUSED``
otherwise), only their lines are kept and each must verify. The aggregator cannot
judge a witness it does not know: the auditor's ``--witness-key`` decides what
counts, so a stored line proves nothing by itself.

The files live in the home directory, not in the store: with several serve
processes on one database, collect cosignatures on the host that exports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aggregator.home import AggregatorHome
from aggregator.store.base import Store
from ffsecure.files import write_public_file
from ffsecure.ledger.checkpoint import NoteSignature, open_checkpoint, parse_vkey, split_note
from ffsecure.ledger.cosign import (
    CosignatureError,
    add_signature_lines,
    as_cosignature,
    parse_witness_keys,
    verify_cosignature,
)
from ffsecure.records.ids import parse_tree_size

PUBLIC_DIR_MODE = 0o755


@dataclass(frozen=True)
class CosignaturesAdded:
    """What :func:`add_cosignatures` kept."""

    size: int
    added: list[str]
    total: int


def _issued_note(store: Store, size: int) -> str:
    for note in store.checkpoints():
        if open_checkpoint(note, store.vkey).size == size:
            return note
    raise CosignatureError(
        f"this log never issued a checkpoint of size {size}",
        hint="cosign a checkpoint printed by `aggregator ledger checkpoint` or exported by it",
    )


def _witness_lines(
    body: str, signatures: list[NoteSignature], log_id: tuple[str, int], witnesses: Sequence[str]
) -> list[str]:
    verifiers = parse_witness_keys(witnesses)
    kept = []
    for sig in signatures:
        if (sig.name, sig.key_hash) == log_id:
            continue
        cosig = as_cosignature(sig)
        if cosig is None:
            raise CosignatureError(
                f"the signature line by {sig.name} is not an Ed25519 cosignature/v1",
                hint="add only notes that `ffsecure witness cosign` (or a C2SP witness) wrote",
            )
        mine = [v for v in verifiers if (v.name, v.key_hash) == (sig.name, sig.key_hash)]
        if verifiers and not mine:
            continue
        if mine and not verify_cosignature(body, cosig, mine[0]):
            raise CosignatureError(
                f"the cosignature by {sig.name} does not verify over this checkpoint",
                hint="the note was altered, or the witness cosigned another checkpoint",
            )
        kept.append(sig.line)
    return kept


def _key_of(line: str) -> tuple[str, int]:
    _body, (sig,) = split_note("x\n\n" + line + "\n")
    return sig.name, sig.key_hash


def add_cosignatures(
    home: AggregatorHome, store: Store, note: str | bytes, witnesses: Sequence[str] = ()
) -> CosignaturesAdded:
    """Keep the witness cosignatures of a cosigned checkpoint note (see the module docstring)."""
    if isinstance(note, bytes):
        note = note.decode("utf-8", "replace")
    cp = open_checkpoint(note, store.vkey)
    body, signatures = split_note(note)
    if split_note(_issued_note(store, cp.size))[0] != body:
        raise CosignatureError(
            f"the note is not the checkpoint this log issued at size {cp.size}",
            hint="the log signed two different checkpoints of one size: investigate a fork",
        )
    log = parse_vkey(store.vkey)
    lines = _witness_lines(body, signatures, (log.name, log.key_hash), witnesses)
    if not lines:
        raise CosignatureError(
            "the note carries no witness cosignature to add",
            hint="pass the note `ffsecure witness cosign` wrote (and the right --witness-key)",
        )
    current = {_key_of(line): line for line in cosignature_lines(home).get(cp.size, [])}
    added = [line for line in lines if current.get(_key_of(line)) != line]
    current.update({_key_of(line): line for line in lines})
    home.cosignatures.mkdir(mode=PUBLIC_DIR_MODE, exist_ok=True)
    data = "".join(line + "\n" for line in current.values()).encode("utf-8")
    write_public_file(home.cosignatures / str(cp.size), data)
    return CosignaturesAdded(cp.size, added, len(current))


def cosignature_lines(home: AggregatorHome) -> dict[int, list[str]]:
    """The kept cosignature lines, by checkpoint size."""
    out: dict[int, list[str]] = {}
    if not home.cosignatures.is_dir():
        return out
    for path in sorted(home.cosignatures.iterdir()):
        size = parse_tree_size(path.name)
        if size is None or not path.is_file():
            continue
        out[size] = [line for line in path.read_text("utf-8").split("\n") if line]
    return out


def with_cosignatures(
    notes: Mapping[int, str], lines: Mapping[int, Sequence[str]]
) -> dict[int, str]:
    """Checkpoint notes by size, each with its kept cosignature lines appended."""
    return {size: add_signature_lines(note, lines.get(size, ())) for size, note in notes.items()}
