"""The one log verifier: every problem of an exported log, as a generator.

Checks, in order (docs/audit-bundle.md, "How to verify the log"): the log key
parses; every entry is a valid entry (and, as a warning, entries are dated in
order); the bundle holds checkpoints, each named by its tree size and signed
by the log key; each checkpoint's root is the root of the first ``size``
entries; consecutive checkpoints are consistent (RFC 9162); the latest
checkpoint covers every entry.

:func:`log_problems` yields a :class:`LogProblem` per failure and goes on; it
fills a :class:`LogState` as it goes, which the later audit checks build on.
Two thin consumers share it: ``ffsecure.ledger.verify.verify_log`` raises the
first problem that is not a warning (``LogProblem.error``, the strict error
with its stable ``E_...`` code), and ``ffsecure.audit.logcheck.check_log``
turns every problem into a finding.

A Merkle root only proves that *some* entry of a prefix differs. With
``diagnose=True`` a root mismatch names the candidate entries between the last
checkpoint that still matches and the first that does not, and narrows them
where the evidence allows: a malformed entry names itself, and an adjacent swap
is found by trying each swap against the signed root (bounded by
:data:`SWAP_SEARCH_BUDGET` leaf hashes).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ffsecure import canonical
from ffsecure.errors import FormatError, LedgerError
from ffsecure.ledger.checkpoint import Checkpoint, NoteVerifier, open_checkpoint, parse_vkey
from ffsecure.ledger.merkle import MemoryTree, leaf_hash, root_hash, verify_consistency
from ffsecure.records.entries import validate_entry
from ffsecure.records.ids import parse_tree_size

__all__ = [
    "SWAP_SEARCH_BUDGET",
    "LogProblem",
    "LogProblemKind",
    "LogState",
    "log_problems",
]

#: Budget (leaf hashes) for the adjacent-swap diagnosis of one mismatched range.
SWAP_SEARCH_BUDGET = 4_000_000


class LogProblemKind(StrEnum):
    """Every way an exported log can fail verification."""

    LOG_KEY = "log-key"
    ENTRY = "entry"
    TIME_ORDER = "time-order"  # a warning: entries dated out of order
    NO_CHECKPOINT = "no-checkpoint"
    CHECKPOINT_NAME = "checkpoint-name"
    CHECKPOINT_SIGNATURE = "checkpoint-signature"
    MISSING_ENTRIES = "missing-entries"
    ROOT_MISMATCH = "root-mismatch"
    REORDERED = "reordered"
    UNSIGNED_TAIL = "unsigned-tail"
    INCONSISTENT = "inconsistent"


@dataclass(frozen=True)
class LogProblem:
    """One failure: a diagnosis for a report, and the error the strict verifier raises."""

    kind: LogProblemKind
    message: str
    error: LedgerError
    where: dict[str, Any] = field(default_factory=dict)
    warning: bool = False


@dataclass
class LogState:
    """What the log checks learned; the later checks and the report build on it."""

    verifier: NoteVerifier | None
    entries: list[dict[str, Any] | None]
    entry_bytes: list[bytes] = field(repr=False)
    leaves: list[bytes] = field(repr=False)
    tree: MemoryTree = field(repr=False)
    checkpoints: list[Checkpoint]  # signature-valid, sorted by size
    good_sizes: list[int]  # sizes whose root the entries reproduce
    latest: Checkpoint | None

    def entry_type(self, index: int | None) -> str | None:
        if index is None:
            return None
        entry = self.entries[index] if 0 <= index < len(self.entries) else None
        if entry is not None:
            return str(entry["type"])
        if 0 <= index < len(self.entry_bytes):
            return _guess_type(self.entry_bytes[index])
        return None

    @property
    def verified(self) -> bool:
        """The latest checkpoint is signed and the entries reproduce it exactly."""
        return (
            self.latest is not None
            and self.latest.size == len(self.entry_bytes)
            and self.latest.size in self.good_sizes
        )


_GUESSED_TYPE = re.compile(r"[a-z._]{1,40}")


def _guess_type(data: bytes) -> str | None:
    """Best-effort ``type`` of an entry that failed validation (for naming it only).

    Read with the bounded parser (an entry may be nested 60,000 deep or hold a lone
    surrogate), else by a byte search; only a short lowercase name is returned, so
    that a finding never carries a string the report cannot print.
    """
    try:
        obj = canonical.loads(data)
    except FormatError:
        m = re.search(rb'"type":"(' + _GUESSED_TYPE.pattern.encode() + rb')"', data)
        return m.group(1).decode() if m else None
    t = obj.get("type") if isinstance(obj, dict) else None
    return t if isinstance(t, str) and _GUESSED_TYPE.fullmatch(t) else None


def _range(lo: int, hi: int) -> tuple[int, ...]:
    return tuple(range(lo, hi))


def _find_swap(leaves: list[bytes], lo: int, size: int, target: bytes) -> int | None:
    """Index ``j`` in [lo, size-1) such that swapping entries j and j+1 reproduces ``target``."""
    if (size - lo) * size > SWAP_SEARCH_BUDGET:
        return None
    for j in range(lo, size - 1):
        trial = list(leaves[:size])
        trial[j], trial[j + 1] = trial[j + 1], trial[j]
        if hmac.compare_digest(root_hash(trial), target):
            return j
    return None


def _inconsistent(
    message: str, hint: str = "the bundle was altered or is incomplete"
) -> LedgerError:
    return LedgerError(message, code="E_INCONSISTENT", hint=hint)


def _problem(
    kind: LogProblemKind, message: str, error: LedgerError | None = None, /, **where: Any
) -> LogProblem:
    return LogProblem(kind, message, error or _inconsistent(message), where)


# --------------------------------------------------------------------- entries


def _entry_problems(
    vkey: str, entries: list[bytes], state_out: list[LogState]
) -> Iterator[LogProblem]:
    verifier = None
    try:
        verifier = parse_vkey(vkey)
    except LedgerError as exc:
        yield _problem(LogProblemKind.LOG_KEY, f"log.vkey: {exc.message}", exc)
    parsed: list[dict[str, Any] | None] = []
    leaves: list[bytes] = []
    for i, data in enumerate(entries):
        try:
            parsed.append(validate_entry(data))
        except LedgerError as exc:
            parsed.append(None)
            message = f"entry {i} is invalid: {exc.message}"
            error = LedgerError(message, code="E_ENTRY", hint=exc.hint)
            yield _problem(
                LogProblemKind.ENTRY, message, error, entry=i, entry_type=_guess_type(data)
            )
        leaves.append(leaf_hash(data))
    state = LogState(verifier, parsed, list(entries), leaves, MemoryTree(leaves), [], [], None)
    state_out.append(state)
    yield from _time_order_problems(parsed)


def _time_order_problems(parsed: list[dict[str, Any] | None]) -> Iterator[LogProblem]:
    for j in range(1, len(parsed)):
        a, b = parsed[j - 1], parsed[j]
        if a is not None and b is not None and b["time"] < a["time"]:
            message = (
                f"entry {j} ({b['type']}, {b['time']}) is dated before entry {j - 1} "
                f"({a['time']}): entries are out of order"
            )
            where = dict(entry=j, entry_type=b["type"], entries=(j - 1, j))
            yield LogProblem(
                LogProblemKind.TIME_ORDER, message, _inconsistent(message), where, warning=True
            )


# ----------------------------------------------------------------- checkpoints


def _checkpoint_problems(state: LogState, notes: dict[str, bytes]) -> Iterator[LogProblem]:
    """Open every checkpoint note; the signature-valid ones go to ``state.checkpoints``."""
    if not notes:
        message = "the bundle holds no checkpoint"
        error = _inconsistent(message, hint="export the bundle again")
        yield _problem(LogProblemKind.NO_CHECKPOINT, message, error)
    cps: dict[int, Checkpoint] = {}
    for name, note in notes.items():
        if parse_tree_size(name) is None:
            message = f"checkpoint file name {name!r} is not a tree size"
            yield _problem(LogProblemKind.CHECKPOINT_NAME, message)
            continue
        size = int(name)
        last = size - 1 if 0 < size <= len(state.entry_bytes) else None
        where = dict(checkpoint=size, entry=last, entry_type=state.entry_type(last))
        if state.verifier is None:
            continue
        try:
            cp = open_checkpoint(note, state.verifier)
        except LedgerError as exc:
            message = f"checkpoint {size}: {exc.message}"
            error = LedgerError(message, code=exc.code, hint=exc.hint)
            yield _problem(LogProblemKind.CHECKPOINT_SIGNATURE, message, error, **where)
            continue
        if cp.size != size:
            message = f"checkpoint file {size} holds a checkpoint of tree size {cp.size}"
            yield _problem(LogProblemKind.CHECKPOINT_NAME, message, **where)
            continue
        cps[size] = cp
    state.checkpoints = [cps[s] for s in sorted(cps)]


# ----------------------------------------------------------------------- roots


def _root_problems(state: LogState, diagnose: bool) -> Iterator[LogProblem]:
    """Match each checkpoint's root; the sizes that match go to ``state.good_sizes``."""
    n = len(state.entry_bytes)
    good = state.good_sizes
    for cp in state.checkpoints:
        lo = good[-1] if good else 0
        if cp.size > n:
            removed = cp.size - n
            message = (
                f"checkpoint {cp.size} covers {cp.size} entries but entries.jsonl holds {n}: "
                f"{removed} entr{'y was' if removed == 1 else 'ies were'} removed "
                f"at or after entry {lo}"
            )
            error = _inconsistent(
                f"checkpoint {cp.size} covers more entries than entries.jsonl holds ({n}): "
                "entries were dropped"
            )
            yield _problem(
                LogProblemKind.MISSING_ENTRIES,
                message,
                error,
                checkpoint=cp.size,
                entries=_range(lo, n) or (n,),
            )
        elif hmac.compare_digest(state.tree.root(cp.size), cp.root_hash):
            good.append(cp.size)
        else:
            yield _mismatch(state, cp, lo, diagnose)


def _mismatch(state: LogState, cp: Checkpoint, lo: int, diagnose: bool) -> LogProblem:
    error = _inconsistent(
        f"the first {cp.size} entries do not hash to the root signed in checkpoint {cp.size}: "
        "an entry was changed, dropped, inserted or reordered"
    )
    bad = [i for i in range(lo, cp.size) if state.entries[i] is None]
    swap = None
    if diagnose and not bad:
        swap = _find_swap(state.leaves, lo, cp.size, cp.root_hash)
    if bad:
        message = (
            f"the first {cp.size} entries do not hash to the root signed in checkpoint "
            f"{cp.size}; entry {bad[0]} in that range is malformed (altered)"
        )
        where = dict(entry=bad[0], entry_type=state.entry_type(bad[0]), entries=tuple(bad))
        return _problem(LogProblemKind.ROOT_MISMATCH, message, error, checkpoint=cp.size, **where)
    if swap is not None:
        message = (
            f"entries {swap} and {swap + 1} are swapped: exchanging them reproduces the root "
            f"signed in checkpoint {cp.size}"
        )
        where = dict(entry=swap, entry_type=state.entry_type(swap), entries=(swap, swap + 1))
        return _problem(LogProblemKind.REORDERED, message, error, checkpoint=cp.size, **where)
    rng = _range(lo, cp.size)
    one = dict(entry=lo, entry_type=state.entry_type(lo)) if len(rng) == 1 else {}
    message = (
        f"the first {cp.size} entries do not hash to the root signed in checkpoint {cp.size} "
        f"(checkpoint {lo} still matches): an entry among {lo}..{cp.size - 1} was changed, "
        "removed, inserted or reordered"
    )
    return _problem(
        LogProblemKind.ROOT_MISMATCH, message, error, checkpoint=cp.size, entries=rng, **one
    )


def _tail_problems(state: LogState) -> Iterator[LogProblem]:
    if not state.checkpoints:
        return
    latest = state.latest = state.checkpoints[-1]
    n = len(state.entry_bytes)
    if latest.size < n:
        message = (
            f"entries.jsonl holds {n} entries but the latest checkpoint covers {latest.size}: "
            f"entries {latest.size}..{n - 1} are not covered by any signature"
        )
        error = _inconsistent(
            f"entries.jsonl holds {n} entries but the latest checkpoint covers {latest.size}: "
            "entries were added after the last signed checkpoint"
        )
        where = dict(
            entry=latest.size,
            entry_type=state.entry_type(latest.size),
            entries=_range(latest.size, n),
        )
        yield _problem(LogProblemKind.UNSIGNED_TAIL, message, error, **where)


def _consistency_problems(state: LogState) -> Iterator[LogProblem]:
    good = state.good_sizes
    for old, new in zip(state.checkpoints, state.checkpoints[1:], strict=False):
        if old.size not in good or new.size not in good:
            continue
        proof = state.tree.consistency_proof(old.size, new.size)
        try:
            verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
        except LedgerError as exc:
            message = (
                f"checkpoint {new.size} is not consistent with checkpoint {old.size}: {exc.message}"
            )
            yield _problem(
                LogProblemKind.INCONSISTENT,
                message,
                exc,
                checkpoint=new.size,
                entries=_range(old.size, new.size),
            )


def log_problems(
    vkey: str,
    entries: list[bytes],
    notes: dict[str, bytes],
    state_out: list[LogState],
    *,
    diagnose: bool = True,
) -> Iterator[LogProblem]:
    """Yield every problem of the log (``notes`` maps a file name, the decimal tree size, to
    note bytes). Once the entries are read, the :class:`LogState` is appended to
    ``state_out``; it is complete when the generator is exhausted."""
    yield from _entry_problems(vkey, entries, state_out)
    state = state_out[-1]
    yield from _checkpoint_problems(state, notes)
    yield from _root_problems(state, diagnose)
    yield from _tail_problems(state)
    yield from _consistency_problems(state)
