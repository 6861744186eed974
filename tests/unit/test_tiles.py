"""The ledger as C2SP tlog-tiles, checked by an independent reader (tests/tlog_reader.py).

Real SQLite stores (the aggregator's store, entries appended through it) and
the demo's exported log; the reader shares no code with the exporter.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from pathlib import Path

import pytest

from aggregator.export import write_log_tiles
from aggregator.home import LogSigner
from aggregator.store.sqlite import SQLiteStore
from ffsecure.audit.bundle import load_bundle
from ffsecure.ledger.checkpoint import open_checkpoint
from ffsecure.ledger.merkle import MemoryTree, consistency_proof_from, leaf_hash
from ffsecure.ledger.tiles import (
    TileReader,
    TilesConflictError,
    encode_index,
    tiles_of,
    write_tiles,
)
from ffsecure.records.entries import make_entry
from tests import tlog_reader
from tests.conftest import REPO

DEMO_BUNDLE = REPO / "tests" / "compat" / "demo-1de472d" / "audit-bundle"


def _store(root: Path, origin: str = "example.org/ffsecure/log") -> SQLiteStore:
    return SQLiteStore.open(
        db_path=root / "store.sqlite",
        blob_dir=root / "blobs",
        origin=origin,
        kek=os.urandom(32),
        log_signer=LogSigner.generate(origin),
    )


def _append(store: SQLiteStore, n: int) -> None:
    for _ in range(n):
        store.append(
            make_entry(
                "cert.revoked",
                "operator:ca",
                {"serial": secrets.token_hex(16), "reason": "superseded"},
            )
        )


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """A store of 600 entries: two full level-0 tiles, a partial one, a level-1 tile.

    Shared by the tests of this module, which only read it.
    """
    store = _store(tmp_path_factory.mktemp("log"))
    _append(store, 600)
    yield store
    store.close()


def test_tile_indices_are_written_as_the_spec_says():
    assert encode_index(0) == "000"
    assert encode_index(7) == "007"
    assert encode_index(1234) == "x001/234"
    assert encode_index(1234067) == "x001/x234/067"


def test_a_tree_of_70000_entries_has_the_tiles_the_spec_lists():
    refs = list(tiles_of(70000))
    full = Counter(r.level for r in refs if r.full)
    partial = {r.level: r.width for r in refs if not r.full}
    assert full == {0: 273, 1: 1}
    assert partial == {0: 112, 1: 17, 2: 1}
    assert [(r.level, r.width) for r in tiles_of(256)] == [(0, 256), (1, 1)]


def test_tiles_of_a_real_store_pass_the_independent_reader(big_store, tmp_path):
    tiles = tmp_path / "tiles"
    done = write_log_tiles(big_store.snapshot(), tiles)
    assert done.size == 600
    assert (tiles / "tile/0/001").stat().st_size == 8192
    assert (tiles / "tile/0/002.p/88").stat().st_size == 88 * 32
    assert (tiles / "tile/1/000.p/2").stat().st_size == 64
    assert (tiles / "tile/entries/002.p/88").is_file()

    log = tlog_reader.TiledLog(tiles, big_store.vkey)
    entries = log.verify()
    assert log.size == 600 and log.root_hash == big_store.root_hash()
    assert entries == big_store.entries(0, 600)
    for index in (0, 255, 256, 599):
        proof = log.inclusion_proof(index)
        assert proof == big_store.inclusion_proof(index, 600)
        leaf = tlog_reader.leaf_hash(entries[index])
        assert tlog_reader.verify_inclusion(leaf, index, 600, proof, log.root_hash)
        assert not tlog_reader.verify_inclusion(leaf, index ^ 1, 600, proof, log.root_hash)


@pytest.mark.parametrize(
    "rel", ["tile/0/000", "tile/0/002.p/88", "tile/1/000.p/2", "tile/entries/001", "checkpoint"]
)
def test_one_byte_changed_in_any_tile_fails_the_reader(big_store, tmp_path, rel):
    tiles = tmp_path / "tiles"
    write_log_tiles(big_store.snapshot(), tiles)
    path = tiles / rel
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises((tlog_reader.TlogError, UnicodeDecodeError)):
        tlog_reader.TiledLog(tiles, big_store.vkey).verify()


def test_re_export_after_appends_only_adds_tiles_and_moves_the_checkpoint(tmp_path):
    store = _store(tmp_path / "log")
    _append(store, 260)
    tiles = tmp_path / "tiles"
    write_log_tiles(store.snapshot(), tiles)
    full = tiles / "tile/0/000"
    before = full.stat()
    again = write_log_tiles(store.snapshot(), tiles)
    assert again.written == 0, "an unchanged log rewrites nothing"
    _append(store, 100)
    done = write_log_tiles(store.snapshot(), tiles)
    assert full.stat().st_ino == before.st_ino and full.stat().st_mtime_ns == before.st_mtime_ns
    assert (tiles / "tile/0/001.p/104").is_file() and (tiles / "tile/0/001.p/4").is_file()
    # New: the level-0 partial tile and entry bundle of width 104, the checkpoint. The
    # level-1 partial tile (width 1) is the same as at size 260.
    assert (done.written, done.unchanged) == (3, 3)
    log = tlog_reader.TiledLog(tiles, store.vkey)
    assert log.size == 360 and len(log.verify()) == 360
    store.close()


def test_export_refuses_a_directory_holding_another_logs_tiles(big_store, tmp_path):
    tiles = tmp_path / "tiles"
    write_log_tiles(big_store.snapshot(), tiles)
    other = _store(tmp_path / "other")
    _append(other, 300)
    with pytest.raises(TilesConflictError) as err:
        write_log_tiles(other.snapshot(), tiles)
    other.close()
    assert err.value.code == "E_TILES_CONFLICT"
    assert tlog_reader.TiledLog(tiles, big_store.vkey).size == 600, "checkpoint left alone"


def test_exported_tiles_are_public_whatever_the_umask(big_store, tmp_path):
    old = os.umask(0o077)
    try:
        write_log_tiles(big_store.snapshot(), tmp_path / "tiles")
    finally:
        os.umask(old)
    for path in [tmp_path / "tiles", *(tmp_path / "tiles").rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o755 if path.is_dir() else 0o644), path


def test_a_tile_reader_gives_the_consistency_proofs_of_the_log(big_store, tmp_path):
    write_log_tiles(big_store.snapshot(), tmp_path / "tiles")
    reader = TileReader(tmp_path / "tiles", 600)
    for old in (1, 5, 255, 256, 257, 512, 599):
        assert consistency_proof_from(reader, old, 600) == big_store.consistency_proof(old, 600)


def test_the_demo_log_exports_as_tiles_the_independent_reader_accepts(tmp_path):
    bundle = load_bundle(DEMO_BUNDLE)
    latest = max(bundle.checkpoint_notes, key=int)
    note = bundle.checkpoint_notes[latest].decode()
    cp = open_checkpoint(note, bundle.vkey)
    assert cp.size == len(bundle.entries)
    tree = MemoryTree([leaf_hash(e) for e in bundle.entries])
    write_tiles(tmp_path / "tiles", tree, bundle.entries, note)
    log = tlog_reader.TiledLog(tmp_path / "tiles", bundle.vkey)
    assert log.verify() == bundle.entries
    assert log.root_hash == cp.root_hash
