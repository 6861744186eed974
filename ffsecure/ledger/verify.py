"""Offline verification of an exported ledger (the log part of an audit bundle).

Needs only the bundle: ``log.vkey``, ``entries.jsonl`` and ``checkpoints/``.
It rebuilds the Merkle tree from the entry bytes, checks every checkpoint's
signature and origin, that each checkpoint's root is the root of the first
``size`` entries, that consecutive checkpoints are consistent (RFC 9162
consistency proofs, recomputed and verified), and that the latest
checkpoint covers every entry. See docs/audit-bundle.md. The checks are
``ffsecure.ledger.problems.log_problems``, shared with the audit's log
checks; :func:`verify_log` raises the first problem (strict mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffsecure.errors import LedgerError
from ffsecure.ledger.checkpoint import Checkpoint
from ffsecure.ledger.merkle import MemoryTree
from ffsecure.ledger.problems import LogState, log_problems

MAX_BUNDLE_ENTRIES_BYTES = 4 << 30


@dataclass
class LogReport:
    """What a verified bundle log says."""

    origin: str
    vkey: str
    size: int
    root_hash: bytes
    checkpoints: list[Checkpoint]
    entries: list[dict[str, Any]] = field(repr=False)
    entry_bytes: list[bytes] = field(repr=False)
    tree: MemoryTree = field(repr=False)

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Inclusion proof of entry ``index`` in the latest checkpoint's tree."""
        return self.tree.inclusion_proof(index, self.size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "size": self.size,
            "root_hash": self.root_hash.hex(),
            "checkpoints": [cp.size for cp in self.checkpoints],
        }


def _inconsistent(message: str, hint: str) -> LedgerError:
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
    """Verify entries and checkpoints already read into memory; raise the first problem.

    ``checkpoint_notes`` maps a file name (the decimal tree size) to note bytes.
    The checks are :func:`ffsecure.ledger.problems.log_problems`; warnings
    (entries dated out of order) do not fail here.
    """
    states: list[LogState] = []
    for problem in log_problems(vkey, entries, checkpoint_notes, states, diagnose=False):
        if not problem.warning:
            raise problem.error
    state = states[-1]
    latest = state.latest
    if latest is None:  # unreachable: without a signed checkpoint a problem was raised
        raise _inconsistent("the bundle holds no checkpoint", hint="export the bundle again")
    return LogReport(
        origin=latest.origin,
        vkey=vkey.strip(),
        size=latest.size,
        root_hash=latest.root_hash,
        checkpoints=state.checkpoints,
        entries=[entry for entry in state.entries if entry is not None],
        entry_bytes=list(entries),
        tree=state.tree,
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
        raise _inconsistent(
            "entries.jsonl is larger than this verifier accepts",
            hint="the bundle was altered or is incomplete",
        )
    entries = read_entries(root / "entries.jsonl")
    notes = {
        p.name: p.read_bytes() for p in sorted((root / "checkpoints").iterdir()) if p.is_file()
    }
    return verify_log(vkey, entries, notes)
