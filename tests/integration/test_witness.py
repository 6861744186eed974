"""Witnesses: `ffsecure witness` cosigns only an append-only log; `audit verify` needs a quorum.

A real federation's log (tests/audit_fixture.py: real CA, signed packages, a
real SQLite store), exported by `aggregator ledger export --tiles/--out`; the
witness checks consistency from those tiles; its cosignatures come back
through `aggregator ledger add-cosignature` and travel in the bundle. The
click commands run in-process (CliRunner) to keep the suite quick.
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from aggregator.cli import cli as aggregator_cli
from aggregator.home import load_log_key
from ffsecure.cli import cli as ffsecure_cli
from ffsecure.ledger.checkpoint import Checkpoint, open_checkpoint
from ffsecure.ledger.merkle import MemoryTree
from ffsecure.ledger.tiles import write_tiles
from tests import tlog_reader
from tests.audit_fixture import AuditLab, standard_history

torch.set_num_threads(1)


def ffsecure(*args: object) -> tuple[int, str, str]:
    r = CliRunner().invoke(ffsecure_cli, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def aggregator(*args: object) -> tuple[int, str, str]:
    r = CliRunner().invoke(aggregator_cli, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


class World:
    def __init__(self, root: Path):
        self.root = root
        self.lab = AuditLab(root)
        self.idx = standard_history(self.lab)
        self.home = self.lab.fed.home.root
        self.vkey = self.lab.store.vkey
        self.ca = root / "ca.pem"
        self.ca.write_bytes(self.lab.fed.ca_pem)
        self.witnesses: dict[str, str] = {}

    def tiles(self, name: str = "tiles") -> Path:
        code, out, err = aggregator(
            "ledger", "export", "--dir", self.home, "--tiles", self.root / name
        )
        assert code == 0, out + err
        return self.root / name

    def witness(self, name: str) -> Path:
        state = self.root / f"witness-{name}"
        if name not in self.witnesses:
            code, out, err = ffsecure(
                "witness", "init", "--name", f"w.example/{name}", "--dir", state
            )
            assert code == 0, err
            self.witnesses[name] = out.strip()
        return state

    def cosign(
        self, name: str, note: Path, tiles: Path | None = None, **kw
    ) -> tuple[int, str, str]:
        out = self.root / f"cosigned-{name}-{note.name}"
        args = ["witness", "cosign", "--checkpoint", note, "--log-key", self.vkey]
        args += ["--state", self.witness(name), "--out", out, "--json"]
        args += ["--tiles", tiles] if tiles is not None else []
        return ffsecure(*args)

    def forged(self, size: int, root_hash: bytes) -> Path:
        """A checkpoint the log's own key signs for another tree: what a forking log shows."""
        signer = load_log_key(self.lab.fed.home)
        note = signer.sign(Checkpoint(signer.name, size, root_hash))
        path = self.root / f"forged-{size}-{root_hash.hex()[:8]}"
        path.write_text(note)
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("witness"))
    yield w
    w.lab.close()


def test_witness_init_keeps_its_key_private_and_prints_a_type_4_vkey(world):
    state = world.witness("alpha")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "witness.key").stat().st_mode) == 0o600
    vkey = world.witnesses["alpha"]
    assert vkey.startswith("w.example/alpha+") and tlog_reader.parse_vkey(vkey, 0x04)
    code, _out, err = ffsecure("witness", "init", "--name", "w.example/alpha", "--dir", state)
    assert code == 1 and "E_WITNESS_STATE" in err


def test_witness_cosigns_a_log_that_grows_and_refuses_every_fork(world):
    tiles = world.tiles()
    first = tiles / "checkpoint"
    n = open_checkpoint(first.read_bytes(), world.vkey)
    kept_first = world.root / "checkpoint-n"
    shutil.copy(first, kept_first)
    code, out, err = world.cosign("alpha", kept_first)
    assert code == 0, err
    done = json.loads(out)
    assert done["size"] == n.size and done["previous_size"] is None
    cosigned = (world.root / f"cosigned-alpha-{kept_first.name}").read_bytes()
    assert tlog_reader.cosigned_by(cosigned, world.witnesses["alpha"]) is not None

    world.lab.register("st-john", (0, 3), seed=9)
    world.lab.register("st-mary", (1, 2), seed=10)
    tiles = world.tiles()
    grown = world.root / "checkpoint-n-plus-k"
    shutil.copy(tiles / "checkpoint", grown)
    code, out, err = world.cosign("alpha", grown, tiles)
    assert code == 0, err
    done = json.loads(out)
    assert done["previous_size"] == n.size and done["size"] > n.size
    state = sorted((world.witness("alpha") / "logs").iterdir())[0]
    before = state.read_bytes()

    grown_cp = open_checkpoint(grown.read_bytes(), world.vkey)
    other_tree = MemoryTree()
    for i in range(grown_cp.size + 3):
        other_tree.append(b"another history %d" % i)
    fork_tiles = world.root / "fork-tiles"
    forged_larger = world.forged(other_tree.size, other_tree.root())
    write_tiles(fork_tiles, other_tree, [b"x"] * other_tree.size, forged_larger.read_text())
    refusals = {
        "same size, another root": (world.forged(grown_cp.size, bytes(32)), None),
        "a smaller tree": (kept_first, None),
        "a larger tree that does not extend it": (forged_larger, fork_tiles),
    }
    for what, (note, proof_tiles) in refusals.items():
        code, _out, err = world.cosign("alpha", note, proof_tiles)
        assert code == 1 and "E_WITNESS_FORK" in err, what
        assert state.read_bytes() == before, f"{what}: the witness state changed"
    code, _out, err = world.cosign("alpha", world.forged(grown_cp.size + 1, bytes(32)))
    assert code == 1 and "E_WITNESS_PROOF" in err


def _bundle_with(world, name: str, witnesses: list[str]) -> Path:
    """Tiles, cosignatures by ``witnesses`` handed to the aggregator, then a bundle."""
    tiles = world.tiles()
    for w in witnesses:
        code, out, err = world.cosign(w, tiles / "checkpoint", tiles)
        assert code == 0, err
        note = world.root / f"cosigned-{w}-checkpoint"
        code, out, err = aggregator("ledger", "add-cosignature", "--dir", world.home, note)
        assert code == 0, out + err
    bundle = world.root / name
    code, out, err = aggregator("ledger", "export", "--dir", world.home, "--out", bundle)
    assert code == 0, out + err
    return bundle


def _verify(world, bundle: Path, *keys: str, quorum: int | None = None) -> dict:
    args: list[object] = ["audit", "verify", bundle, "--ca", world.ca, "--json"]
    for key in keys:
        args += ["--witness-key", key]
    if quorum is not None:
        args += ["--witness-quorum", quorum]
    code, out, err = ffsecure(*args)
    result = json.loads(out)
    assert code == (0 if result["verdict"] == "VERIFIED" else 3), err
    return result


def _codes(result: dict) -> set[str]:
    return {f["code"] for f in result["findings"]}


def test_audit_verify_requires_a_quorum_of_the_auditors_witnesses(world):
    bundle = _bundle_with(world, "bundle-cosigned", ["alpha", "beta"])
    alpha, beta = world.witnesses["alpha"], world.witnesses["beta"]
    world.witness("gamma")
    gamma = world.witnesses["gamma"]

    assert _verify(world, bundle)["verdict"] == "VERIFIED", "no witness options: as before"
    result = _verify(world, bundle, alpha, beta)
    assert result["verdict"] == "VERIFIED"
    assert [c for c in result["checks"] if c["name"] == "witnesses"][0]["status"] == "ok"
    assert _verify(world, bundle, alpha, beta, gamma, quorum=2)["verdict"] == "VERIFIED"

    result = _verify(world, bundle, alpha, beta, gamma)
    assert result["verdict"] == "FAILED" and _codes(result) == {"E_AUDIT_WITNESS_QUORUM"}
    result = _verify(world, bundle, gamma)
    assert result["verdict"] == "FAILED" and _codes(result) == {"E_AUDIT_WITNESS_QUORUM"}

    tiles = world.tiles()  # re-exported: the served checkpoint now carries the cosignatures
    assert tlog_reader.cosigned_by((tiles / "checkpoint").read_bytes(), alpha) is not None
    assert tlog_reader.TiledLog(tiles, world.vkey).verify()


def test_a_dropped_or_moved_cosignature_fails_the_audit(world):
    bundle = _bundle_with(world, "bundle-moved", ["alpha"])
    alpha = world.witnesses["alpha"]
    notes = sorted((bundle / "checkpoints").iterdir(), key=lambda p: int(p.name))
    latest = notes[-1]
    text = latest.read_text()
    body, sep, sigs = text.rpartition("\n\n")
    log_line, *cosig_lines = sigs.strip("\n").split("\n")
    assert cosig_lines, "the bundle carries alpha's cosignature"

    latest.write_text(body + sep + log_line + "\n")
    result = _verify(world, bundle, alpha)
    assert result["verdict"] == "FAILED" and _codes(result) == {"E_AUDIT_WITNESS_QUORUM"}

    older = notes[-2].read_text()
    older_cp = open_checkpoint(older, world.vkey)
    assert older_cp.size < open_checkpoint(text, world.vkey).size
    stale = world.root / "older-checkpoint"
    stale.write_text(older)
    # a valid cosignature, but over the older checkpoint, pasted onto the latest one
    code, out, err = world.cosign("delta", stale)
    assert code == 0, err
    delta = world.witnesses["delta"]
    line = json.loads(out)["cosignature"]
    latest.write_text(body + sep + log_line + "\n" + line + "\n")
    result = _verify(world, bundle, delta)
    assert result["verdict"] == "FAILED"
    assert _codes(result) == {"E_AUDIT_COSIGNATURE", "E_AUDIT_WITNESS_QUORUM"}


def test_the_aggregator_refuses_notes_it_did_not_issue_or_without_cosignatures(world):
    code, _out, err = aggregator(
        "ledger", "add-cosignature", "--dir", world.home, world.forged(10**6, bytes(32))
    )
    assert code == 1 and "E_COSIGNATURE" in err
    plain = world.root / "plain-checkpoint"
    plain.write_text(world.lab.store.checkpoint())
    code, _out, err = aggregator("ledger", "add-cosignature", "--dir", world.home, plain)
    assert code == 1 and "E_COSIGNATURE" in err
    code, _out, err = ffsecure(
        "audit",
        "verify",
        world.root / "bundle-cosigned",
        "--ca",
        world.ca,
        "--witness-key",
        world.vkey,
    )
    assert code == 1 and "E_COSIGNATURE" in err, "a log key is not a witness key"
