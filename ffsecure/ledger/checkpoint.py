"""Signed checkpoints: C2SP ``tlog-checkpoint`` bodies in C2SP signed notes (Ed25519).

A signed note (c2sp.org/signed-note, golang.org/x/mod/sumdb/note) is UTF-8
text ending in a newline, a blank line, then signature lines
``— <key name> <base64(key hash (4 bytes, big-endian) || signature)>``
(U+2014 EM DASH). The key hash is the first 4 bytes of
SHA-256(key name || "\\n" || 0x01 || Ed25519 public key); the signature is
Ed25519 over the note text (everything before the blank line, including
its final newline). A verifier key is written
``<name>+<8 hex digits of the key hash>+<base64(0x01 || public key)>``.

A checkpoint body (c2sp.org/tlog-checkpoint) is the log's origin line, the
tree size in decimal, the base64 root hash, then optional non-empty
extension lines.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ffsecure.canonical import b64decode_canonical
from ffsecure.errors import LedgerError
from ffsecure.records.ids import parse_tree_size

ALG_ED25519 = 0x01
EM_DASH = "\u2014"
MAX_SIGNATURES = 100


def _format_error(
    message: str, hint: str = "the note was altered or is not a C2SP signed note"
) -> LedgerError:
    return LedgerError(message, code="E_CHECKPOINT_FORMAT", hint=hint)


def _sig_error(message: str) -> LedgerError:
    return LedgerError(
        message,
        code="E_CHECKPOINT_SIGNATURE",
        hint="check that the note is unaltered and that the right log key (log.vkey) is used",
    )


@dataclass(frozen=True)
class Checkpoint:
    """A log's claim: the tree of ``size`` entries has root ``root_hash``."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = field(default=())

    def body(self) -> str:
        """The checkpoint body text (the signed note text)."""
        _check_origin(self.origin)
        if not isinstance(self.size, int) or not 0 <= self.size < 1 << 63:
            raise _format_error(f"tree size {self.size!r} is not an integer in [0, 2^63)")
        if len(self.root_hash) != 32:
            raise _format_error("root hash must be 32 bytes")
        for ext in self.extensions:
            if not ext or "\n" in ext or not _valid_text(ext):
                raise _format_error(f"extension line {ext!r} is empty or holds a control character")
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root_hash).decode(),
            *self.extensions,
        ]
        return "".join(line + "\n" for line in lines)


def _valid_text(text: str) -> bool:
    return all(ch == "\n" or (ord(ch) >= 0x20 and ch != "\x7f") for ch in text)


def _valid_name(name: str) -> bool:
    return (
        bool(name)
        and "+" not in name
        and not any(ch.isspace() for ch in name)
        and _valid_text(name)
    )


def _check_origin(origin: str) -> None:
    if not origin or "\n" in origin or not _valid_text(origin):
        raise _format_error(
            f"origin {origin!r} is empty or holds a control character",
            hint="use a schema-less URL such as example.org/ffsecure/log",
        )


def _raw_public(public_key: Ed25519PublicKey | bytes) -> bytes:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if isinstance(public_key, (bytes, bytearray)) and len(public_key) == 32:
        return bytes(public_key)
    raise _format_error("an Ed25519 public key is 32 bytes")


def key_hash(name: str, public_key: Ed25519PublicKey | bytes, alg: int = ALG_ED25519) -> int:
    """The 32-bit key hash of a note key: SHA-256(name || \\n || alg || key)[:4].

    ``alg`` is the signature type byte: 0x01 for a log's Ed25519 note key,
    0x04 for an Ed25519 ``cosignature/v1`` key (``ffsecure.ledger.cosign``).
    """
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + _raw_public(public_key)).digest()
    return int.from_bytes(digest[:4], "big")


def make_vkey(name: str, public_key: Ed25519PublicKey | bytes, alg: int = ALG_ED25519) -> str:
    """The note verifier key ``name+hash+base64(alg||key)`` of an Ed25519 key."""
    if not _valid_name(name):
        raise _format_error(
            f"key name {name!r} is empty or holds '+' or a space",
            hint="use a schema-less URL such as example.org/ffsecure/log",
        )
    raw = _raw_public(public_key)
    return f"{name}+{key_hash(name, raw, alg):08x}+{base64.b64encode(bytes([alg]) + raw).decode()}"


@dataclass(frozen=True)
class NoteVerifier:
    """A parsed verifier key."""

    name: str
    key_hash: int
    public_key: Ed25519PublicKey

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, text)
        except InvalidSignature:
            return False
        return True


def parse_vkey(vkey: str) -> NoteVerifier:
    """Parse and check a verifier key (its key hash must match its name and key)."""
    return parse_typed_vkey(vkey, ALG_ED25519)


def parse_typed_vkey(vkey: str, alg: int) -> NoteVerifier:
    """Parse a verifier key of signature type ``alg`` (an Ed25519 key); check its key hash."""
    vkey = vkey.strip()
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise _format_error(
            "verifier key must look like name+hash+key", hint="copy log.vkey unchanged"
        )
    name, hash_hex, key_b64 = parts
    if not _valid_name(name) or not re.fullmatch(r"[0-9a-f]{8}", hash_hex):
        raise _format_error(
            "verifier key has a bad name or key hash", hint="copy log.vkey unchanged"
        )
    raw = b64decode_canonical(key_b64)
    if raw is None:
        raise _format_error("verifier key is not canonical base64", hint="copy log.vkey unchanged")
    if len(raw) != 33 or raw[0] != alg:
        raise _format_error(
            f"verifier key is not an Ed25519 (type 0x{alg:02x}) key", hint="copy log.vkey unchanged"
        )
    if key_hash(name, raw[1:], alg) != int(hash_hex, 16):
        raise _format_error(
            "verifier key hash does not match its name and key", hint="copy log.vkey unchanged"
        )
    return NoteVerifier(name, int(hash_hex, 16), Ed25519PublicKey.from_public_bytes(raw[1:]))


def encode_signer_key(name: str, key: Ed25519PrivateKey, alg: int = ALG_ED25519) -> str:
    """A private key in the note signer format ``PRIVATE+KEY+name+hash+base64(alg||seed)``."""
    seed = key.private_bytes_raw()
    vk = make_vkey(name, key.public_key(), alg)
    hash_hex = vk.split("+")[1]
    return f"PRIVATE+KEY+{name}+{hash_hex}+{base64.b64encode(bytes([alg]) + seed).decode()}"


def parse_signer_key(text: str, alg: int = ALG_ED25519) -> tuple[str, Ed25519PrivateKey]:
    """Parse a note signer key of signature type ``alg``; returns (name, private key)."""
    parts = text.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise _format_error(
            "signer key must look like PRIVATE+KEY+name+hash+key",
            hint="the log key file is damaged; restore it from its backup",
        )
    name, hash_hex, key_b64 = parts[2:]
    raw = b64decode_canonical(key_b64) or b""
    if len(raw) != 33 or raw[0] != alg or not _valid_name(name):
        raise _format_error(
            "signer key is not an Ed25519 note key",
            hint="the log key file is damaged; restore it from its backup",
        )
    key = Ed25519PrivateKey.from_private_bytes(raw[1:])
    if f"{key_hash(name, key.public_key(), alg):08x}" != hash_hex:
        raise _format_error(
            "signer key hash does not match its name and key",
            hint="the log key file is damaged; restore it from its backup",
        )
    return name, key


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """Sign ``text`` as a C2SP signed note with one Ed25519 signature."""
    if not text.endswith("\n") or "\n\n" in text or not _valid_text(text):
        raise _format_error(
            "note text must end in a newline and hold no blank lines or control characters"
        )
    if not _valid_name(name):
        raise _format_error(f"key name {name!r} is empty or holds '+' or a space")
    sig = key.sign(text.encode("utf-8"))
    blob = key_hash(name, key.public_key()).to_bytes(4, "big") + sig
    return f"{text}\n{EM_DASH} {name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note: the key name, the 4-byte key hash and the rest."""

    name: str
    key_hash: int
    signature: bytes
    line: str


def split_note(note: str | bytes) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and its signature lines, checking the syntax only.

    The text is everything before the blank line, including its final newline;
    no signature is verified here.
    """
    if isinstance(note, str):
        note = note.encode("utf-8")
    try:
        msg = bytes(note).decode("utf-8")
    except UnicodeDecodeError:
        raise _format_error("note is not valid UTF-8") from None
    if not _valid_text(msg):
        raise _format_error("note holds a control character other than newline")
    split = msg.rfind("\n\n")
    if split < 0:
        raise _format_error("note has no blank line before its signatures")
    text, sigs = msg[: split + 1], msg[split + 2 :]
    if not sigs or not sigs.endswith("\n"):
        raise _format_error("note signature block is empty or does not end in a newline")
    if "\n\n" in text:
        raise _format_error("note text holds a blank line")
    lines = sigs[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise _format_error(f"note has more than {MAX_SIGNATURES} signatures")
    out = []
    for line in lines:
        if not line.startswith(EM_DASH + " "):
            raise _format_error("note signature line does not start with an em dash and a space")
        name, _, b64 = line[2:].partition(" ")
        blob = b64decode_canonical(b64)
        if blob is None:
            raise _format_error(f"signature by {name!r} is not canonical base64")
        if not _valid_name(name) or len(blob) < 5 or " " in b64:
            raise _format_error("note signature line is malformed")
        out.append(NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:], line))
    return text, out


def unverified_checkpoint(note: str | bytes) -> Checkpoint:
    """The checkpoint a signed note states, its form checked but no signature verified.

    For telling a checkpoint note from a file of another kind before the key is
    known (``ffsecure audit verify --trusted-checkpoint``); trust only
    :func:`open_checkpoint`. Raises ``E_CHECKPOINT_FORMAT``.
    """
    return parse_checkpoint_body(split_note(note)[0])


def open_note(note: str | bytes, vkey: str | NoteVerifier) -> str:
    """Verify a signed note against one verifier key; returns the note text.

    Signatures by other keys are ignored (as the signed-note spec says); a
    signature line that claims this key but does not verify is an error, and
    so is a note without a verified signature from it.
    """
    verifier = parse_vkey(vkey) if isinstance(vkey, str) else vkey
    text, signatures = split_note(note)
    verified = False
    for sig in signatures:
        if sig.name != verifier.name or sig.key_hash != verifier.key_hash:
            continue
        if not verifier.verify(text.encode("utf-8"), sig.signature):
            raise _sig_error(
                f"signature by {sig.name} does not verify: the note text was changed after signing"
            )
        verified = True
    if not verified:
        raise _sig_error(
            f"note carries no signature by the key {verifier.name}+{verifier.key_hash:08x}"
        )
    return text


def parse_checkpoint_body(text: str) -> Checkpoint:
    """Parse a checkpoint body (the text of a signed note)."""
    if not text.endswith("\n"):
        raise _format_error("checkpoint body does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise _format_error("checkpoint body needs an origin, a tree size and a root hash line")
    origin, size_text, root_b64, *extensions = lines
    _check_origin(origin)
    size = parse_tree_size(size_text)
    if size is None:
        raise _format_error(
            f"checkpoint tree size {size_text!r} is not a decimal number without leading zeros"
        )
    root = b64decode_canonical(root_b64)
    if root is None:
        raise _format_error("checkpoint root hash is not canonical base64")
    if len(root) != 32:
        raise _format_error("checkpoint root hash is not the base64 of 32 bytes")
    if any(not ext for ext in extensions):
        raise _format_error("checkpoint has an empty extension line")
    return Checkpoint(origin, size, root, tuple(extensions))


def sign_checkpoint(cp: Checkpoint, name: str, key: Ed25519PrivateKey) -> str:
    """The signed note text of a checkpoint."""
    return sign_note(cp.body(), name, key)


def open_checkpoint(
    note_text: str | bytes, vkey: str | NoteVerifier, *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint and parse it.

    ``origin`` (default: the verifier key's name) must equal the checkpoint's
    origin line, so that a checkpoint of another log signed by the same key is
    refused.
    """
    verifier = parse_vkey(vkey) if isinstance(vkey, str) else vkey
    cp = parse_checkpoint_body(open_note(note_text, verifier))
    expected = verifier.name if origin is None else origin
    if cp.origin != expected:
        raise _sig_error(f"checkpoint origin {cp.origin!r} is not the expected log {expected!r}")
    return cp
