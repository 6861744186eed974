"""An independent reader of C2SP tiled transparency logs, written from the specs alone.

Specs: c2sp.org/tlog-tiles, c2sp.org/tlog-checkpoint, c2sp.org/signed-note,
c2sp.org/tlog-cosignature and RFC 6962 section 2.1 (Merkle tree hashes).
It imports nothing from ffsecure or aggregator, on purpose: our tiles pass
only if a reader that never saw our code accepts them.

What it checks (``TiledLog.verify``):

* the checkpoint note: its Ed25519 signature by the given verifier key
  (type 0x01), origin line, tree size, base64 root hash;
* level-0 tiles (full, then the partial one) give the leaf hashes, and
  MTH(leaves) equals the checkpoint's root;
* every hash of every higher-level tile is the MTH of the full tile below it;
* every entry bundle (uint16 big-endian length-prefixed entries) has the
  tile's width in entries, and SHA-256(0x00 || entry) of each is its leaf hash.

It also computes an inclusion proof from the tiles (RFC 6962 PATH) and
verifies it (RFC 9162 section 2.1.3.2), and checks witness cosignatures
(Ed25519 ``cosignature/v1``, key type 0x04).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TILE = 256
HASH = 32


class TlogError(Exception):
    """The tiled log does not verify."""


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise TlogError(f"bad base64 {text!r}") from None


def parse_vkey(vkey: str, sig_type: int) -> tuple[str, bytes, Ed25519PublicKey]:
    """``name+hash+base64(type||key)`` -> (name, 4-byte key id, key); checks the key id."""
    name, hash_hex, key_b64 = vkey.strip().split("+", 2)
    raw = _b64(key_b64)
    if len(raw) != 33 or raw[0] != sig_type:
        raise TlogError(f"vkey is not an Ed25519 key of type {sig_type:#04x}")
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if key_id.hex() != hash_hex:
        raise TlogError("vkey key id does not match")
    return name, key_id, Ed25519PublicKey.from_public_bytes(raw[1:])


def split_note(note: bytes) -> tuple[str, list[tuple[str, bytes]]]:
    """(text, [(key name, signature blob)]) of a signed note."""
    msg = note.decode("utf-8")
    text, sep, sigs = msg.rpartition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise TlogError("not a signed note")
    out = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise TlogError("bad signature line")
        name, _, b64 = line[2:].partition(" ")
        out.append((name, _b64(b64)))
    return text + "\n", out


def open_checkpoint(note: bytes, vkey: str) -> tuple[str, int, bytes]:
    """Verify the log's signature; returns (origin, size, root hash)."""
    name, key_id, key = parse_vkey(vkey, 0x01)
    text, sigs = split_note(note)
    ok = False
    for sig_name, blob in sigs:
        if sig_name == name and blob[:4] == key_id:
            try:
                key.verify(blob[4:], text.encode())
            except InvalidSignature:
                raise TlogError("log signature does not verify") from None
            ok = True
    if not ok:
        raise TlogError("no signature by the log key")
    lines = text[:-1].split("\n")
    origin, size_text, root_b64 = lines[0], lines[1], lines[2]
    if origin != name:
        raise TlogError("origin is not the key name")
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise TlogError("bad tree size")
    root = _b64(root_b64)
    if len(root) != HASH:
        raise TlogError("bad root hash")
    return origin, int(size_text), root


def cosigned_by(note: bytes, witness_vkey: str) -> int | None:
    """The timestamp of a valid ``cosignature/v1`` by the witness on the note, or None."""
    name, key_id, key = parse_vkey(witness_vkey, 0x04)
    text, sigs = split_note(note)
    for sig_name, blob in sigs:
        if sig_name != name or blob[:4] != key_id or len(blob) != 4 + 8 + 64:
            continue
        timestamp = int.from_bytes(blob[4:12], "big")
        message = f"cosignature/v1\ntime {timestamp}\n{text}".encode()
        try:
            key.verify(blob[12:], message)
        except InvalidSignature:
            continue
        return timestamp
    return None


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes (split at the largest power of two below n)."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node(mth(hashes[:k]), mth(hashes[k:]))


def index_path(n: int) -> str:
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        parts.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(parts))


class TiledLog:
    """A tiled log directory (``<prefix>/`` on disk) and its log's verifier key."""

    def __init__(self, root: Path, vkey: str):
        self.root = Path(root)
        self.checkpoint_note = (self.root / "checkpoint").read_bytes()
        self.origin, self.size, self.root_hash = open_checkpoint(self.checkpoint_note, vkey)

    def _read(self, rel: str, width: int) -> bytes:
        if width < TILE:
            rel += f".p/{width}"
        path = self.root / rel
        if not path.is_file():
            raise TlogError(f"{rel} is missing")
        return path.read_bytes()

    def tile(self, level: int, n: int) -> list[bytes]:
        width = min(TILE, (self.size // TILE**level) - n * TILE)
        data = self._read(f"tile/{level}/{index_path(n)}", width)
        if len(data) != width * HASH:
            raise TlogError(f"tile {level}/{n} has {len(data)} bytes, not {width * HASH}")
        return [data[i : i + HASH] for i in range(0, len(data), HASH)]

    def bundle(self, n: int) -> list[bytes]:
        width = min(TILE, self.size - n * TILE)
        data = self._read(f"tile/entries/{index_path(n)}", width)
        entries, pos = [], 0
        while pos < len(data):
            if pos + 2 > len(data):
                raise TlogError("truncated entry length")
            length = int.from_bytes(data[pos : pos + 2], "big")
            entry = data[pos + 2 : pos + 2 + length]
            if len(entry) != length:
                raise TlogError("truncated entry")
            entries.append(entry)
            pos += 2 + length
        if len(entries) != width:
            raise TlogError(f"entry bundle {n} has {len(entries)} entries, not {width}")
        return entries

    def leaf_hashes(self) -> list[bytes]:
        out: list[bytes] = []
        for n in range(-(-self.size // TILE)):
            out += self.tile(0, n)
        return out

    def entries(self) -> list[bytes]:
        out: list[bytes] = []
        for n in range(-(-self.size // TILE)):
            out += self.bundle(n)
        return out

    def verify(self) -> list[bytes]:
        """Run every check of the module docstring; returns the entries."""
        leaves = self.leaf_hashes()
        if mth(leaves) != self.root_hash:
            raise TlogError("the level-0 tiles do not hash to the checkpoint's root")
        level = 1
        while self.size // TILE**level:
            below_full = self.size // TILE**level
            for n in range(-(-below_full // TILE)):
                for i, h in enumerate(self.tile(level, n)):
                    if mth(self.tile(level - 1, n * TILE + i)) != h:
                        raise TlogError(f"tile {level}/{n} hash {i} is not its lower tile's MTH")
            level += 1
        entries = self.entries()
        for i, entry in enumerate(entries):
            if leaf_hash(entry) != leaves[i]:
                raise TlogError(f"entry {i} does not hash to its leaf in the level-0 tile")
        return entries

    def inclusion_proof(self, index: int) -> list[bytes]:
        """RFC 6962 PATH(index, D[0:size]) from the level-0 tiles, leaf side first."""
        return _path(index, self.leaf_hashes())


def _path(m: int, hashes: list[bytes]) -> list[bytes]:
    n = len(hashes)
    if n <= 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return _path(m, hashes[:k]) + [mth(hashes[k:])]
    return _path(m - k, hashes[k:]) + [mth(hashes[:k])]


def verify_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root
