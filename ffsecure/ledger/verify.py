"""Offline verification of an exported ledger (the log part of an audit bundle).

Needs only the bundle: ``log.vkey``, ``entries.jsonl`` and ``checkpoints/``.
It rebuilds the Merkle tree from the entry bytes, checks every checkpoint's
signature and origin, that each checkpoint's root is the root of the first
``size`` entries, that consecutive checkpoints are consistent (RFC 9162
consistency proofs, recomputed and verified), and that the latest
checkpoint covers every entry. See docs/audit-bundle.md. The checks are
``ffsecure.ledger.problems.log_problems``, shared with the audit's log
checks; :func:`verify_log` raises the first problem (strict mode).

:func:`verify_bundle_log` reads the bundle's files as the audit's loader does
(``ffsecure.files.read_regular_file``: no symbolic link followed inside the
bundle, nothing but regular files opened, nothing read past its cap); strict, it
refuses a member of the wrong kind with ``E_INCONSISTENT`` where the audit
reports it and reads on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffsecure.errors import LedgerError
from ffsecure.files import FileRefused, read_regular_file
from ffsecure.ledger.checkpoint import Checkpoint
from ffsecure.ledger.merkle import MemoryTree
from ffsecure.ledger.problems import LogState, log_problems

MAX_BUNDLE_ENTRIES_BYTES = 4 << 30
MAX_VKEY_BYTES = 4096
MAX_CHECKPOINT_BYTES = 64 * 1024
#: all of a bundle's ``checkpoints/`` together: each note is kept in memory
MAX_CHECKPOINTS_TOTAL = 256 << 20
#: what a bundle folder's total charges each member beyond its bytes (its name and record in
#: memory), so that many empty members are bounded too
MEMBER_OVERHEAD = 512


def charge_member(total: int, member: bytes) -> int:
    """A bundle folder's running total after one more member: its bytes plus
    :data:`MEMBER_OVERHEAD` (each member is kept in memory, so empty ones count too)."""
    return total + len(member) + MEMBER_OVERHEAD


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


def split_entries(data: bytes) -> list[bytes]:
    """Split the bytes of ``entries.jsonl`` into entry byte strings (one per line, as hashed)."""
    if not data:
        return []
    if not data.endswith(b"\n"):
        raise LedgerError(
            "entries.jsonl does not end in a newline",
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


def _read_member(root: Path, name: str, cap: int) -> bytes:
    try:
        return read_regular_file(root / name, cap)
    except FileRefused as exc:
        raise _inconsistent(
            f"{name} in bundle {root} is {exc.reason}",
            hint="the bundle was altered or is incomplete",
        ) from None
    except OSError as exc:
        raise _inconsistent(
            f"{name} in bundle {root} cannot be read: {exc.strerror or exc}",
            hint="the bundle was altered or is incomplete",
        ) from None


def verify_bundle_log(bundle_dir: str | Path) -> LogReport:
    """Verify the log of an audit bundle directory; raises LedgerError on any failure."""
    root = Path(bundle_dir)
    missing = [p for p in ("log.vkey", "entries.jsonl", "checkpoints") if not (root / p).exists()]
    if missing:
        raise _inconsistent(
            f"bundle {root} lacks {', '.join(missing)}",
            hint="export it with `aggregator ledger export --out DIR`",
        )
    try:
        vkey = _read_member(root, "log.vkey", MAX_VKEY_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise _inconsistent("log.vkey is not UTF-8 text", hint="copy log.vkey unchanged") from None
    entries = split_entries(_read_member(root, "entries.jsonl", MAX_BUNDLE_ENTRIES_BYTES))
    folder = root / "checkpoints"
    if folder.is_symlink() or not folder.is_dir():
        raise _inconsistent(
            f"checkpoints in bundle {root} is not a folder",
            hint="the bundle was altered or is incomplete",
        )
    notes, total = {}, 0
    for p in sorted(folder.iterdir()):
        notes[p.name] = _read_member(root, f"checkpoints/{p.name}", MAX_CHECKPOINT_BYTES)
        total = charge_member(total, notes[p.name])
        if total > MAX_CHECKPOINTS_TOTAL:
            raise _inconsistent(
                f"checkpoints in bundle {root} hold more than the {MAX_CHECKPOINTS_TOTAL} bytes "
                "read",
                hint="the bundle was altered or is incomplete",
            )
    return verify_log(vkey, entries, notes)
