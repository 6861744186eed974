"""Log checks: entries, checkpoint signatures and roots, consistency, trusted checkpoints.

The same steps as ``ffsecure.ledger.verify.verify_log`` (docs/audit-bundle.md,
"How to verify the log"), but every failure becomes a finding and the checks go
on, and each finding says where the problem is. A Merkle root only proves that
*some* entry of a prefix differs; the finding then names the candidate entries
between the last checkpoint that still matches and the first that does not, and
narrows them further where the evidence allows: a malformed entry names itself,
an adjacent swap is found by trying each swap against the signed root, and two
trusted or signed checkpoints bracket a fork.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass, field

from ffsecure.audit.findings import WARNING, Findings
from ffsecure.errors import FFSecureError, LedgerError
from ffsecure.ledger.checkpoint import Checkpoint, NoteVerifier, open_checkpoint, parse_vkey
from ffsecure.ledger.merkle import MemoryTree, leaf_hash, root_hash, verify_consistency
from ffsecure.records.entries import validate_entry
from ffsecure.records.ids import parse_tree_size

#: Budget (leaf hashes) for the adjacent-swap diagnosis of one mismatched range.
SWAP_SEARCH_BUDGET = 4_000_000


@dataclass
class LogState:
    """What the log checks learned; the later checks and the report build on it."""

    verifier: NoteVerifier | None
    entries: list[dict | None]
    entry_bytes: list[bytes] = field(repr=False)
    leaves: list[bytes] = field(repr=False)
    tree: MemoryTree = field(repr=False)
    checkpoints: list[Checkpoint]  # signature-valid, sorted by size
    good_sizes: list[int]  # sizes whose root the entries reproduce
    latest: Checkpoint | None

    def entry_type(self, index: int) -> str | None:
        if 0 <= index < len(self.entries) and self.entries[index] is not None:
            return self.entries[index]["type"]
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


def _guess_type(data: bytes) -> str | None:
    """Best-effort ``type`` of an entry that failed validation (for naming it only)."""
    try:
        obj = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        m = re.search(rb'"type":"([a-z._]{1,40})"', data)
        return m.group(1).decode() if m else None
    t = obj.get("type") if isinstance(obj, dict) else None
    return t if isinstance(t, str) and len(t) <= 40 else None


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


def check_log(
    vkey: str,
    entries: list[bytes],
    notes: dict[str, bytes],
    findings: Findings,
    *,
    trusted: list[tuple[str, bytes]] = (),
) -> LogState:
    """Run the log checks, appending findings; returns the state for the later checks."""
    verifier = None
    try:
        verifier = parse_vkey(vkey)
    except LedgerError as exc:
        findings.add("checkpoint-signatures", "E_AUDIT_LOG_KEY", f"log.vkey: {exc.message}")

    parsed: list[dict | None] = []
    leaves: list[bytes] = []
    for i, data in enumerate(entries):
        try:
            parsed.append(validate_entry(data))
        except LedgerError as exc:
            parsed.append(None)
            findings.add(
                "entries",
                "E_AUDIT_ENTRY",
                f"entry {i} is invalid: {exc.message}",
                entry=i,
                entry_type=_guess_type(data),
            )
        leaves.append(leaf_hash(data))
    tree = MemoryTree(leaves)
    state = LogState(verifier, parsed, list(entries), leaves, tree, [], [], None)
    for j in range(1, len(parsed)):
        a, b = parsed[j - 1], parsed[j]
        if a is not None and b is not None and b["time"] < a["time"]:
            findings.add(
                "entries",
                "E_AUDIT_TIME_ORDER",
                f"entry {j} ({b['type']}, {b['time']}) is dated before entry {j - 1} ({a['time']}): "
                "entries are out of order",
                entry=j,
                entry_type=b["type"],
                entries=(j - 1, j),
                severity=WARNING,
            )

    # -- checkpoint signatures ---------------------------------------------
    cps: dict[int, Checkpoint] = {}
    if not notes:
        findings.add(
            "checkpoint-signatures", "E_AUDIT_NO_CHECKPOINT", "the bundle holds no checkpoint"
        )
    for name, note in notes.items():
        if parse_tree_size(name) is None:
            findings.add(
                "checkpoint-signatures",
                "E_AUDIT_CHECKPOINT_NAME",
                f"checkpoint file name {name!r} is not a tree size",
            )
            continue
        size = int(name)
        last = size - 1 if 0 < size <= len(entries) else None
        where = dict(
            checkpoint=size,
            entry=last,
            entry_type=state.entry_type(last) if last is not None else None,
        )
        if verifier is None:
            continue
        try:
            cp = open_checkpoint(note, verifier)
        except LedgerError as exc:
            findings.add(
                "checkpoint-signatures",
                "E_AUDIT_CHECKPOINT_SIGNATURE",
                f"checkpoint {size}: {exc.message}",
                **where,
            )
            continue
        if cp.size != size:
            findings.add(
                "checkpoint-signatures",
                "E_AUDIT_CHECKPOINT_NAME",
                f"checkpoint file {size} holds a checkpoint of tree size {cp.size}",
                **where,
            )
            continue
        cps[size] = cp
    state.checkpoints = [cps[s] for s in sorted(cps)]

    # -- roots -------------------------------------------------------------
    n = len(entries)
    good: list[int] = []
    for cp in state.checkpoints:
        if cp.size > n:
            lo = good[-1] if good else 0
            findings.add(
                "checkpoint-roots",
                "E_AUDIT_MISSING_ENTRIES",
                f"checkpoint {cp.size} covers {cp.size} entries but entries.jsonl holds {n}: "
                f"{cp.size - n} entr{'y was' if cp.size - n == 1 else 'ies were'} removed "
                f"at or after entry {lo}",
                checkpoint=cp.size,
                entries=_range(lo, n) or (n,),
            )
            continue
        if hmac.compare_digest(tree.root(cp.size), cp.root_hash):
            good.append(cp.size)
            continue
        lo = good[-1] if good else 0
        bad = [i for i in range(lo, cp.size) if parsed[i] is None]
        swap = None if bad else _find_swap(leaves, lo, cp.size, cp.root_hash)
        if bad:
            findings.add(
                "checkpoint-roots",
                "E_AUDIT_ROOT_MISMATCH",
                f"the first {cp.size} entries do not hash to the root signed in checkpoint {cp.size}; "
                f"entry {bad[0]} in that range is malformed (altered)",
                checkpoint=cp.size,
                entry=bad[0],
                entry_type=state.entry_type(bad[0]),
                entries=tuple(bad),
            )
        elif swap is not None:
            findings.add(
                "checkpoint-roots",
                "E_AUDIT_REORDERED",
                f"entries {swap} and {swap + 1} are swapped: exchanging them reproduces the root "
                f"signed in checkpoint {cp.size}",
                checkpoint=cp.size,
                entry=swap,
                entry_type=state.entry_type(swap),
                entries=(swap, swap + 1),
            )
        else:
            rng = _range(lo, cp.size)
            one = dict(entry=lo, entry_type=state.entry_type(lo)) if len(rng) == 1 else {}
            findings.add(
                "checkpoint-roots",
                "E_AUDIT_ROOT_MISMATCH",
                f"the first {cp.size} entries do not hash to the root signed in checkpoint {cp.size} "
                f"(checkpoint {lo} still matches): an entry among {lo}..{cp.size - 1} was changed, "
                "removed, inserted or reordered",
                checkpoint=cp.size,
                entries=rng,
                **one,
            )
    state.good_sizes = good
    if state.checkpoints:
        latest = state.checkpoints[-1]
        state.latest = latest
        if latest.size < n:
            findings.add(
                "checkpoint-roots",
                "E_AUDIT_UNSIGNED_TAIL",
                f"entries.jsonl holds {n} entries but the latest checkpoint covers {latest.size}: "
                f"entries {latest.size}..{n - 1} are not covered by any signature",
                entry=latest.size,
                entry_type=state.entry_type(latest.size),
                entries=_range(latest.size, n),
            )

    # -- consistency between consecutive checkpoints ------------------------
    for old, new in zip(state.checkpoints, state.checkpoints[1:]):
        if old.size in good and new.size in good:
            try:
                verify_consistency(
                    old.size,
                    new.size,
                    old.root_hash,
                    new.root_hash,
                    tree.consistency_proof(old.size, new.size),
                )
            except LedgerError as exc:
                findings.add(
                    "consistency",
                    "E_AUDIT_INCONSISTENT",
                    f"checkpoint {new.size} is not consistent with checkpoint {old.size}: {exc.message}",
                    checkpoint=new.size,
                    entries=_range(old.size, new.size),
                )

    # -- trusted checkpoints (kept by the auditor from earlier) -------------
    if trusted:
        _check_trusted(state, trusted, findings)
    return state


def _check_trusted(state: LogState, trusted: list[tuple[str, bytes]], findings: Findings) -> None:
    opened: list[tuple[str, Checkpoint]] = []
    for label, note in trusted:
        if state.verifier is None:
            findings.add(
                "trusted-checkpoints",
                "E_AUDIT_TRUSTED_CHECKPOINT",
                f"{label}: cannot be checked without a valid log key",
            )
            continue
        try:
            opened.append((label, open_checkpoint(note, state.verifier)))
        except FFSecureError as exc:
            findings.add(
                "trusted-checkpoints",
                "E_AUDIT_TRUSTED_CHECKPOINT",
                f"{label} is not a checkpoint signed by this log's key: {exc.message}",
            )
    n = len(state.entry_bytes)
    opened.sort(key=lambda t: t[1].size)
    matched = 0
    signed = {cp.size: cp for cp in state.checkpoints}
    for label, t in opened:
        if t.size > n:
            findings.add(
                "trusted-checkpoints",
                "E_AUDIT_FORK",
                f"{label} covers {t.size} entries but this log holds only {n}: the log was rolled back "
                "(entries the auditor saw are gone)",
                checkpoint=t.size,
                entries=_range(matched, n),
            )
            continue
        if hmac.compare_digest(state.tree.root(t.size), t.root_hash):
            matched = max(matched, t.size)
            continue
        rng = _range(matched, t.size)
        one = dict(entry=matched, entry_type=state.entry_type(matched)) if len(rng) == 1 else {}
        twin = signed.get(t.size)
        split = (
            f"; the bundle's own checkpoint {t.size} is signed by the same key with a different root, "
            "so the log key signed two histories (a split view)"
            if twin is not None and not hmac.compare_digest(twin.root_hash, t.root_hash)
            else ""
        )
        findings.add(
            "trusted-checkpoints",
            "E_AUDIT_FORK",
            f"{label} (tree size {t.size}) is not a prefix of this log: history was rewritten among "
            f"entries {matched}..{t.size - 1}{split}",
            checkpoint=t.size,
            entries=rng,
            **one,
        )
