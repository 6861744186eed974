"""Offline verification of an exported ledger (the log part of an audit bundle).

Needs only the bundle: ``log.vkey``, ``entries.jsonl`` and ``checkpoints/``.
It rebuilds the Merkle tree from the entry bytes, checks every checkpoint's
signature and origin, that each checkpoint's root is the root of the first
``size`` entries, that consecutive checkpoints are consistent (RFC 9162
consistency proofs, recomputed and verified), and that the latest
checkpoint covers every entry. See docs/audit-bundle.md.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

from ffsecure.errors import LedgerError
from ffsecure.ledger.checkpoint import Checkpoint, open_checkpoint, parse_vkey
from ffsecure.ledger.merkle import MemoryTree, leaf_hash, verify_consistency
from ffsecure.records.entries import validate_entry
from ffsecure.records.ids import parse_tree_size

MAX_BUNDLE_ENTRIES_BYTES = 4 << 30


@dataclass
class LogReport:
    """What a verified bundle log says."""

    origin: str
    vkey: str
    size: int
    root_hash: bytes
    checkpoints: list[Checkpoint]
    entries: list[dict] = field(repr=False)
    entry_bytes: list[bytes] = field(repr=False)
    tree: MemoryTree = field(repr=False)

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Inclusion proof of entry ``index`` in the latest checkpoint's tree."""
        return self.tree.inclusion_proof(index, self.size)

    def to_dict(self) -> dict:
        return {
            "origin": self.origin,
            "size": self.size,
            "root_hash": self.root_hash.hex(),
            "checkpoints": [cp.size for cp in self.checkpoints],
        }


def _inconsistent(
    message: str, hint: str = "the bundle was altered or is incomplete"
) -> LedgerError:
    return LedgerError(message, code="E_INCONSISTENT", hint=hint)


def read_entries(path: Path) -> list[bytes]:
    """Split ``entries.jsonl`` into entry byte strings (one per line, exactly as hashed)."""
    data = path.read_bytes()
    if not data:
        return []
    if not data.endswith(b"\n"):
        raise LedgerError(
            f"{path.name} does not end in a newline",
            code="E_ENTRY",
            hint="the file was truncated or altered",
        )
    return data[:-1].split(b"\n")


def verify_log(vkey: str, entries: list[bytes], checkpoint_notes: dict[str, bytes]) -> LogReport:
    """Verify entries and checkpoints already read into memory.

    ``checkpoint_notes`` maps a file name (the decimal tree size) to note bytes.
    """
    verifier = parse_vkey(vkey)
    parsed: list[dict] = []
    tree = MemoryTree()
    for i, data in enumerate(entries):
        try:
            parsed.append(validate_entry(data))
        except LedgerError as exc:
            raise LedgerError(
                f"entry {i} is invalid: {exc.message}", code="E_ENTRY", hint=exc.hint
            ) from None
        tree.append_hash(leaf_hash(data))
    if not checkpoint_notes:
        raise _inconsistent("the bundle holds no checkpoint", hint="export the bundle again")
    cps: list[Checkpoint] = []
    for name, note in checkpoint_notes.items():
        if parse_tree_size(name) is None:
            raise _inconsistent(f"checkpoint file name {name!r} is not a tree size")
        try:
            cp = open_checkpoint(note, verifier)
        except LedgerError as exc:
            raise LedgerError(
                f"checkpoint {name}: {exc.message}", code=exc.code, hint=exc.hint
            ) from None
        if cp.size != int(name):
            raise _inconsistent(f"checkpoint file {name} holds a checkpoint of tree size {cp.size}")
        cps.append(cp)
    cps.sort(key=lambda c: c.size)
    for cp in cps:
        if cp.size > tree.size:
            raise _inconsistent(
                f"checkpoint {cp.size} covers more entries than entries.jsonl holds ({tree.size}): "
                "entries were dropped"
            )
        if not hmac.compare_digest(tree.root(cp.size), cp.root_hash):
            raise _inconsistent(
                f"the first {cp.size} entries do not hash to the root signed in checkpoint {cp.size}: "
                "an entry was changed, dropped, inserted or reordered"
            )
    for old, new in zip(cps, cps[1:]):
        verify_consistency(
            old.size,
            new.size,
            old.root_hash,
            new.root_hash,
            tree.consistency_proof(old.size, new.size),
        )
    latest = cps[-1]
    if latest.size != tree.size:
        raise _inconsistent(
            f"entries.jsonl holds {tree.size} entries but the latest checkpoint covers {latest.size}: "
            "entries were added after the last signed checkpoint"
        )
    return LogReport(
        origin=latest.origin,
        vkey=vkey.strip(),
        size=latest.size,
        root_hash=latest.root_hash,
        checkpoints=cps,
        entries=parsed,
        entry_bytes=list(entries),
        tree=tree,
    )


def verify_bundle_log(bundle_dir: str | Path) -> LogReport:
    """Verify the log of an audit bundle directory; raises LedgerError on any failure."""
    root = Path(bundle_dir)
    missing = [p for p in ("log.vkey", "entries.jsonl", "checkpoints") if not (root / p).exists()]
    if missing:
        raise _inconsistent(
            f"bundle {root} lacks {', '.join(missing)}",
            hint="export it with `aggregator ledger export --out DIR`",
        )
    vkey = (root / "log.vkey").read_text(encoding="utf-8")
    if (root / "entries.jsonl").stat().st_size > MAX_BUNDLE_ENTRIES_BYTES:
        raise _inconsistent("entries.jsonl is larger than this verifier accepts")
    entries = read_entries(root / "entries.jsonl")
    notes = {
        p.name: p.read_bytes() for p in sorted((root / "checkpoints").iterdir()) if p.is_file()
    }
    return verify_log(vkey, entries, notes)
