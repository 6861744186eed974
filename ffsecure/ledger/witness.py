"""A witness: cosigns a log's checkpoints only while they extend what it cosigned before.

Run by a third party (another hospital, a regulator). Its directory holds::

    witness.key                  Ed25519 cosigner key, note signer format (type 0x04), 0600
    witness.vkey                 its verifier key, for auditors (--witness-key)
    logs/<sha256(origin)[:32]>   the last checkpoint it cosigned for each log, 0600

Rules of :func:`cosign_checkpoint`, in order, each refusal a typed error that
changes nothing:

1. the checkpoint verifies with the log's verifier key and names that log;
2. a checkpoint smaller than the last one cosigned is a rollback
   (``E_WITNESS_FORK``), one of the same size with another root a fork
   (``E_WITNESS_FORK``);
3. a larger one must come with a consistency proof from the last size (built
   here from the log's tiles or an audit bundle's entries, both untrusted:
   only the proof's verification against the two signed roots counts); a
   proof that does not verify is a fork (``E_WITNESS_FORK``);
4. the new checkpoint is recorded durably *before* the cosignature is
   returned, so a crash can never let the witness sign a fork of it later.

The first checkpoint of a log is cosigned on trust (trust on first use): the
witness operator should compare it out of band, e.g. with a site's receipt.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ffsecure.errors import ConfigError, LedgerError
from ffsecure.files import private_dir, restrict, write_public_file, write_secret_file
from ffsecure.ledger.checkpoint import (
    Checkpoint,
    encode_signer_key,
    open_checkpoint,
    parse_signer_key,
    parse_vkey,
    split_note,
)
from ffsecure.ledger.cosign import (
    ALG_COSIGNATURE_V1,
    add_signature_lines,
    cosign,
    witness_vkey,
)
from ffsecure.ledger.merkle import NodeReader, consistency_proof_from, verify_consistency

KEY_FILE = "witness.key"
VKEY_FILE = "witness.vkey"
LOGS_DIR = "logs"
MAX_NOTE_BYTES = 64 * 1024


class WitnessForkError(LedgerError):
    """The checkpoint does not extend the last one this witness cosigned for the log."""

    code = "E_WITNESS_FORK"


class WitnessProofError(LedgerError):
    """No consistency proof could be built from the tiles or bundle given."""

    code = "E_WITNESS_PROOF"


class WitnessStateError(ConfigError):
    """The witness directory is missing, damaged, or its state is for another log key."""

    code = "E_WITNESS_STATE"


@dataclass(frozen=True)
class Cosigned:
    """A cosigned checkpoint note and what the witness checked."""

    note: str
    checkpoint: Checkpoint
    previous_size: int | None
    line: str


def init_witness(directory: str | Path, name: str) -> str:
    """Create a witness key in ``directory`` (0700, key 0600); returns its verifier key."""
    root = private_dir(directory)
    if (root / KEY_FILE).exists():
        raise WitnessStateError(
            f"{root / KEY_FILE} already exists; a witness key is never overwritten",
            hint="use the existing witness, or choose a new directory",
        )
    key = Ed25519PrivateKey.generate()
    vkey = witness_vkey(name, key)  # refuses a name the note format cannot carry
    try:
        write_secret_file(
            root / KEY_FILE,
            (encode_signer_key(name, key, ALG_COSIGNATURE_V1) + "\n").encode(),
            overwrite=False,
        )
    except FileExistsError:
        raise WitnessStateError(f"{root / KEY_FILE} already exists") from None
    write_public_file(root / VKEY_FILE, (vkey + "\n").encode())
    return vkey


def _load_key(root: Path) -> tuple[str, Ed25519PrivateKey]:
    path = root / KEY_FILE
    if not path.is_file():
        raise WitnessStateError(
            f"{root} holds no witness key ({KEY_FILE})",
            hint="run `ffsecure witness init --name NAME --dir DIR` first",
        )
    restrict(root, 0o700)
    restrict(path)
    try:
        return parse_signer_key(path.read_text("utf-8", "replace"), ALG_COSIGNATURE_V1)
    except LedgerError as exc:
        raise WitnessStateError(f"{path}: {exc.message}", hint=exc.hint) from None


def _state_path(root: Path, origin: str) -> Path:
    return root / LOGS_DIR / hashlib.sha256(origin.encode()).hexdigest()[:32]


def _previous(root: Path, log_vkey: str, origin: str) -> Checkpoint | None:
    path = _state_path(root, origin)
    if not path.is_file():
        return None
    try:
        return open_checkpoint(path.read_bytes(), log_vkey)
    except LedgerError as exc:
        raise WitnessStateError(
            f"the last checkpoint cosigned for {origin} does not verify with this log key "
            f"({exc.message})",
            hint="the log key changed or the witness state was altered; a log keeps its key "
            "for life, so investigate before cosigning",
        ) from None


def _check_extends(prev: Checkpoint, cp: Checkpoint, proofs: NodeReader | None) -> None:
    if cp.size < prev.size:
        raise WitnessForkError(
            f"checkpoint of size {cp.size} is smaller than the size {prev.size} "
            "this witness already cosigned: the log was rolled back",
            hint="do not trust this log; keep both checkpoints as evidence",
        )
    if cp.size == prev.size:
        if cp.root_hash != prev.root_hash:
            raise WitnessForkError(
                f"checkpoint of size {cp.size} has another root than the one this witness "
                "cosigned: the log forked",
                hint="do not trust this log; keep both checkpoints as evidence",
            )
        return
    if proofs is None:
        raise WitnessProofError(
            f"a consistency proof from size {prev.size} to {cp.size} is needed",
            hint="pass the log's tiles (--tiles DIR) or an audit bundle (--bundle DIR)",
        )
    proof = consistency_proof_from(proofs, prev.size, cp.size)
    try:
        verify_consistency(prev.size, cp.size, prev.root_hash, cp.root_hash, proof)
    except LedgerError as exc:
        raise WitnessForkError(
            f"checkpoint of size {cp.size} is not an extension of the size-{prev.size} "
            f"checkpoint this witness cosigned ({exc.message})",
            hint="the log forked or the tiles given are not this log's; "
            "keep both checkpoints as evidence",
        ) from None


def cosign_checkpoint(
    directory: str | Path,
    note: str | bytes,
    log_vkey: str,
    proofs: NodeReader | None = None,
    *,
    now: int | None = None,
) -> Cosigned:
    """Check ``note`` against the witness's state and return it with a cosignature line added.

    ``proofs`` answers node hashes of the new checkpoint's tree (a
    :class:`~ffsecure.ledger.tiles.TileReader` or a
    :class:`~ffsecure.ledger.merkle.MemoryTree`); it is needed only when the
    tree grew since the last cosignature.
    """
    root = Path(directory)
    name, key = _load_key(root)
    parse_vkey(log_vkey)
    if isinstance(note, bytes):
        note = note.decode("utf-8", "replace")
    cp = open_checkpoint(note, log_vkey)
    prev = _previous(root, log_vkey, cp.origin)
    if prev is not None:
        _check_extends(prev, cp, proofs)
    state = _state_path(root, cp.origin)
    private_dir(state.parent)
    write_secret_file(state, note.encode("utf-8"))
    body, _signatures = split_note(note)
    line = cosign(body, name, key, int(time.time()) if now is None else now)
    return Cosigned(add_signature_lines(note, [line]), cp, prev.size if prev else None, line)
