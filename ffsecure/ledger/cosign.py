"""Witness cosignatures on checkpoints: C2SP ``tlog-cosignature`` (Ed25519, ``cosignature/v1``).

A cosignature is one more signature line on the log's signed checkpoint note::

    — <witness name> base64(key hash (4 bytes) || timestamp (8 bytes, big-endian) || sig (64))

The key hash is SHA-256(name || "\\n" || 0x04 || Ed25519 public key)[:4], and
the verifier key is written ``<name>+<8 hex digits>+<base64(0x04 || public key)>``
(the signed-note vkey format with signature type 0x04). The Ed25519 signature
covers::

    cosignature/v1
    time <timestamp, decimal, no leading zeros>
    <the checkpoint body, including its final newline>

It says: as of that time, this is the largest tree the witness saw for the
log, and it is consistent with every tree the witness saw before. It does not
commit to the witness's name (hence one key per witness): whoever holds a
line can re-label it with another name and that name's key hash. So a set of
trusted witness keys is a set of Ed25519 public keys (:func:`parse_witness_keys`
refuses one public key under two names, ``E_WITNESS_KEY_REUSED``), and a quorum
counts public keys, never names.

Verifiers ignore lines whose name and key hash match none of their keys (the
signed-note rule), so adding cosignature lines keeps a checkpoint readable by
every earlier ffsecure release.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ffsecure.errors import ConfigError, LedgerError
from ffsecure.ledger.checkpoint import (
    EM_DASH,
    NoteSignature,
    NoteVerifier,
    key_hash,
    make_vkey,
    parse_typed_vkey,
    split_note,
)

ALG_COSIGNATURE_V1 = 0x04
COSIGNATURE_HEADER = "cosignature/v1\n"
TIMESTAMP_BYTES = 8
ED25519_SIGNATURE_BYTES = 64
MAX_TIMESTAMP = (1 << 63) - 1


class CosignatureError(LedgerError):
    """A cosignature line or a witness key is malformed, or a cosignature does not verify."""

    code = "E_COSIGNATURE"


class WitnessKeyReusedError(ConfigError):
    """Two of the witness keys given hold one Ed25519 public key under two names."""

    code = "E_WITNESS_KEY_REUSED"


def cosigned_message(body: str, timestamp: int) -> bytes:
    """The bytes a ``cosignature/v1`` Ed25519 signature covers."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CosignatureError(f"cosignature time {timestamp} is outside [0, 2^63)")
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{body}".encode()


def witness_vkey(name: str, key: Ed25519PrivateKey) -> str:
    """The verifier key ``name+hash+base64(0x04||key)`` of a witness."""
    return make_vkey(name, key.public_key(), ALG_COSIGNATURE_V1)


def parse_witness_vkey(vkey: str) -> NoteVerifier:
    """Parse and check a witness verifier key (type 0x04, key hash matching)."""
    try:
        return parse_typed_vkey(vkey, ALG_COSIGNATURE_V1)
    except LedgerError as exc:
        raise CosignatureError(
            f"witness key {vkey.strip()[:60]!r}: {exc.message}",
            hint="pass the witness's key exactly as `ffsecure witness init` printed it "
            "(name+hash+base64, type 0x04)",
        ) from None


def parse_witness_keys(vkeys: Sequence[str]) -> tuple[NoteVerifier, ...]:
    """Parse the witness keys one trusts into one verifier per Ed25519 public key.

    A key given twice (same name, same key) counts once. One public key under two
    names is refused (:class:`WitnessKeyReusedError`): a cosignature does not commit to
    the name, so either name's line is the other's re-labelled, and the two would
    count as two witnesses where there is one.
    """
    by_key: dict[bytes, NoteVerifier] = {}
    for vkey in vkeys:
        witness = parse_witness_vkey(vkey)
        raw = witness.public_key.public_bytes_raw()
        seen = by_key.setdefault(raw, witness)
        if seen.name != witness.name:
            raise WitnessKeyReusedError(
                f"witness keys {seen.name!r} and {witness.name!r} hold the same Ed25519 "
                "public key: a cosignature does not name its witness, so one key is one "
                "witness whatever it is called",
                hint="give each witness's key once, under the name it cosigns with "
                "(its witness.vkey); a witness operator must use one key per witness",
            )
    return tuple(by_key.values())


def cosign(body: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> str:
    """A cosignature line (without newline) over the checkpoint ``body``."""
    sig = key.sign(cosigned_message(body, timestamp))
    kh = key_hash(name, key.public_key(), ALG_COSIGNATURE_V1)
    blob = kh.to_bytes(4, "big") + timestamp.to_bytes(TIMESTAMP_BYTES, "big") + sig
    return f"{EM_DASH} {name} {base64.b64encode(blob).decode()}"


@dataclass(frozen=True)
class Cosignature:
    """A cosignature line split into its parts (not yet verified)."""

    name: str
    key_hash: int
    timestamp: int
    signature: bytes
    line: str


def as_cosignature(sig: NoteSignature) -> Cosignature | None:
    """The cosignature a note signature line holds, or None when it is not one by its size."""
    if len(sig.signature) != TIMESTAMP_BYTES + ED25519_SIGNATURE_BYTES:
        return None
    timestamp = int.from_bytes(sig.signature[:TIMESTAMP_BYTES], "big")
    if timestamp > MAX_TIMESTAMP:
        return None
    return Cosignature(sig.name, sig.key_hash, timestamp, sig.signature[TIMESTAMP_BYTES:], sig.line)


def verify_cosignature(body: str, cosig: Cosignature, witness: NoteVerifier) -> bool:
    """True when ``cosig`` is by ``witness`` and signs ``body`` at its timestamp."""
    if cosig.name != witness.name or cosig.key_hash != witness.key_hash:
        return False
    try:
        witness.public_key.verify(cosig.signature, cosigned_message(body, cosig.timestamp))
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class WitnessVerdict:
    """What one witness key says about a checkpoint note.

    ``times`` holds the timestamps of the lines by this key that verify (sorted; an
    exporter may leave several), ``claimed`` counts the lines that name the key (name
    and key hash), valid or not.
    """

    name: str
    claimed: int
    times: tuple[int, ...] = ()

    @property
    def valid(self) -> bool:
        return bool(self.times)


def witness_verdicts(note: str | bytes, witnesses: Sequence[NoteVerifier]) -> list[WitnessVerdict]:
    """For each witness (from :func:`parse_witness_keys`): its valid cosignatures on the note.

    A key with claimed lines none of which verifies signed another checkpoint (or the
    line was altered). Witnesses sharing a public key are one verdict, the first's.
    """
    body, signatures = split_note(note)
    out: list[WitnessVerdict] = []
    seen: set[bytes] = set()
    for witness in witnesses:
        raw = witness.public_key.public_bytes_raw()
        if raw in seen:
            continue
        seen.add(raw)
        claimed, times = 0, []
        for sig in signatures:
            if sig.name != witness.name or sig.key_hash != witness.key_hash:
                continue
            claimed += 1
            cosig = as_cosignature(sig)
            if cosig is not None and verify_cosignature(body, cosig, witness):
                times.append(cosig.timestamp)
        out.append(WitnessVerdict(witness.name, claimed, tuple(sorted(times))))
    return out


def add_signature_lines(note: str, lines: Sequence[str]) -> str:
    """``note`` with signature ``lines`` appended; a line already there is not repeated."""
    _body, existing = split_note(note)
    have = {sig.line for sig in existing}
    extra = "".join(line + "\n" for line in lines if line not in have)
    return note + extra
