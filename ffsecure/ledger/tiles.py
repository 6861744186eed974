"""The ledger as a C2SP ``tlog-tiles`` directory: static tiles, entry bundles and a checkpoint.

Our log already hashes as RFC 6962 / RFC 9162 (leaf = SHA-256(0x00 || entry),
node = SHA-256(0x01 || left || right)) over the entry bytes (the canonical
JSON of each entry, exactly the lines of a bundle's ``entries.jsonl``), and its
checkpoint is a C2SP ``tlog-checkpoint`` signed note, so the tiles are a pure
export: any tlog-tiles client reads them with the log's verifier key.

Layout (c2sp.org/tlog-tiles), under one directory served as ``<prefix>/``::

    checkpoint                 the latest signed checkpoint (plus witness cosignatures)
    tile/<L>/<N>               full tile: 256 hashes of tree level 8*L, 8,192 bytes
    tile/<L>/<N>.p/<W>         partial tile of W hashes (1..255), the right edge
    tile/entries/<N>           entry bundle: 256 entries, each a big-endian uint16
                               length and the entry bytes
    tile/entries/<N>.p/<W>     partial entry bundle of W entries

``<N>`` is written in zero-padded 3-digit path elements, all but the last
prefixed ``x`` (1234067 -> ``x001/x234/067``). Hash ``i`` of tile ``N`` at
level ``L`` is the node (level ``8*L``, index ``N*256 + i``) of the tree,
i.e. MTH(D[(N*256+i) * 256**L : (N*256+i+1) * 256**L]).

Invariants of :func:`write_tiles`: full tiles and full entry bundles are
immutable, so a re-export writes only what is new (partial tiles of the new
size, new full tiles, the checkpoint) and *refuses* (``E_TILES_CONFLICT``)
when a full tile already on disk differs from the log's: the directory was
written from another log, or this log forked. Every file is written
atomically with mode 0644 in 0755 directories (the directory is public).

:class:`TileReader` reads node hashes back from such a directory for one tree
size (the witness builds consistency proofs with it). Tiles are untrusted
input: their sizes are checked here, their hashes only mean something once a
proof built from them verifies against a signed root.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ffsecure.errors import LedgerError
from ffsecure.files import write_public_file
from ffsecure.ledger.merkle import HASH_SIZE, NodeReader, node_hash
from ffsecure.records.entries import MAX_ENTRY_BYTES

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
PUBLIC_DIR_MODE = 0o755
CHECKPOINT_FILE = "checkpoint"


class TilesConflictError(LedgerError):
    """A full tile already on disk differs from the log's: another log, or a fork."""

    code = "E_TILES_CONFLICT"


class TileReadError(LedgerError):
    """A tile needed for a tree size is missing or has the wrong length."""

    code = "E_TILES_READ"


def encode_index(index: int) -> str:
    """``<N>`` of a tile path: 3-digit groups, all but the last prefixed ``x``."""
    if index < 0:
        raise ValueError("a tile index is not negative")
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def _suffix(width: int) -> str:
    return "" if width == TILE_WIDTH else f".p/{width}"


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]``."""
    return f"tile/{level}/{encode_index(index)}{_suffix(width)}"


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    """``tile/entries/<N>[.p/<W>]``."""
    return f"tile/entries/{encode_index(index)}{_suffix(width)}"


@dataclass(frozen=True)
class TileRef:
    """One tile of a tree: its level, index and width (256 when full)."""

    level: int
    index: int
    width: int

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def path(self) -> str:
        return tile_path(self.level, self.index, self.width)


def tile_width(level: int, index: int, size: int) -> int:
    """The width of tile (``level``, ``index``) in a tree of ``size`` leaves (0: none)."""
    count = size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, count - index * TILE_WIDTH))


def tiles_of(size: int) -> Iterator[TileRef]:
    """Every tile (full and partial) of a tree of ``size`` leaves, level by level."""
    level = 0
    while count := size >> (TILE_HEIGHT * level):
        for index in range(-(-count // TILE_WIDTH)):
            yield TileRef(level, index, tile_width(level, index, size))
        level += 1


def tile_bytes(reader: NodeReader, ref: TileRef) -> bytes:
    """The hashes of one tile, concatenated."""
    first = ref.index * TILE_WIDTH
    level = TILE_HEIGHT * ref.level
    return b"".join(reader.node(level, first + i) for i in range(ref.width))


def entry_bundle(entries: Sequence[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length and its bytes."""
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_BYTES:
            raise LedgerError(
                f"an entry of {len(entry)} bytes does not fit a tlog-tiles entry bundle",
                code="E_ENTRY",
                hint=f"entries must be at most {MAX_ENTRY_BYTES} bytes to be served as tiles",
            )
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


@dataclass(frozen=True)
class TilesExport:
    """What :func:`write_tiles` did."""

    size: int
    written: int
    unchanged: int
    bytes_total: int


def _public_dirs(root: Path, rel: str) -> Path:
    """``root/rel``, creating its missing parent directories 0755 (whatever the umask)."""
    folder = root
    for part in Path(rel).parent.parts:
        folder = folder / part
        if not folder.is_dir():
            folder.mkdir()
            os.chmod(folder, PUBLIC_DIR_MODE)
    return root / rel


def _put(root: Path, rel: str, data: bytes, *, immutable: bool) -> bool:
    """Write ``root/rel``; False when it already held ``data``. An immutable file never changes."""
    path = _public_dirs(root, rel)
    if path.is_file():
        if path.read_bytes() == data:
            return False
        if immutable:
            raise TilesConflictError(
                f"{rel} in {root} already holds other hashes than this log's",
                hint="the directory holds tiles of another log, or this log forked: "
                "export to a new directory and compare the checkpoints",
            )
    write_public_file(path, data)
    return True


def write_tiles(
    out_dir: str | Path,
    reader: NodeReader,
    entries: Sequence[bytes],
    checkpoint_note: str,
) -> TilesExport:
    """Write the tiles and entry bundles of the first ``len(entries)`` leaves and the checkpoint.

    ``reader`` holds the node hashes of the log (a :class:`MemoryTree` or the
    store); ``checkpoint_note`` is the signed checkpoint of size
    ``len(entries)``. Idempotent; see the module docstring for what a
    re-export changes and when it refuses.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, PUBLIC_DIR_MODE)
    size = len(entries)
    written = unchanged = total = 0
    jobs: list[tuple[str, bytes, bool]] = []
    for ref in tiles_of(size):
        jobs.append((ref.path, tile_bytes(reader, ref), ref.full))
        if ref.level == 0:
            start = ref.index * TILE_WIDTH
            bundle = entry_bundle(entries[start : start + ref.width])
            jobs.append((entries_path(ref.index, ref.width), bundle, ref.full))
    jobs.append((CHECKPOINT_FILE, checkpoint_note.encode("utf-8"), False))
    for rel, data, immutable in jobs:
        if _put(root, rel, data, immutable=immutable):
            written += 1
        else:
            unchanged += 1
        total += len(data)
    return TilesExport(size=size, written=written, unchanged=unchanged, bytes_total=total)


class TileReader:
    """Node hashes of the tree of ``size`` leaves, read from a tiles directory.

    ``node(level, index)`` answers any perfect subtree of that tree: the tile
    holding its hashes at level ``8 * (level // 8)`` is read (once, cached) and
    the remaining ``level % 8`` levels are hashed up.
    """

    def __init__(self, root: str | Path, size: int):
        self.root = Path(root)
        self.size = size
        self._cache: dict[tuple[int, int], bytes] = {}

    def _tile(self, level: int, index: int) -> bytes:
        key = (level, index)
        if key not in self._cache:
            width = tile_width(level, index, self.size)
            rel = tile_path(level, index, width)
            path = self.root / rel
            if width == 0 or not path.is_file():
                raise TileReadError(
                    f"{rel} is missing from {self.root} (tree size {self.size})",
                    hint="export the tiles again (`aggregator ledger export --tiles DIR`)",
                )
            data = path.read_bytes()
            if len(data) != width * HASH_SIZE:
                raise TileReadError(
                    f"{rel} is {len(data)} bytes, not {width * HASH_SIZE}",
                    hint="the tiles were altered or truncated; export them again",
                )
            self._cache[key] = data
        return self._cache[key]

    def node(self, level: int, index: int) -> bytes:
        tile_level, sub = divmod(level, TILE_HEIGHT)
        first = index << sub
        if (first + (1 << sub)) << (TILE_HEIGHT * tile_level) > self.size:
            raise TileReadError(
                f"node ({level}, {index}) is not a complete subtree of tree size {self.size}",
                hint="ask only for nodes of the tree the checkpoint covers",
            )
        data = self._tile(tile_level, first // TILE_WIDTH)
        offset = first % TILE_WIDTH
        hashes = [
            data[(offset + i) * HASH_SIZE : (offset + i + 1) * HASH_SIZE] for i in range(1 << sub)
        ]
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]
