"""Log checks: entries, checkpoint signatures and roots, consistency, trusted checkpoints.

The checks are ``ffsecure.ledger.problems.log_problems``, the same generator
``ffsecure.ledger.verify.verify_log`` raises the first problem of
(docs/audit-bundle.md, "How to verify the log"); here every problem becomes a
finding (:data:`FINDING_OF` gives its check and code) and the checks go on,
each finding saying where the problem is (the generator's diagnosis names the
candidate entries of a root mismatch). Trusted checkpoints, kept by the auditor
from earlier, are checked here: two trusted or signed checkpoints bracket a
fork. A trusted checkpoint that came in a site's receipt
(:class:`ffsecure.audit.trusted.TrustedCheckpoint`) also names an entry: the
log's entry at the receipt's index must be those bytes.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from ffsecure.audit.findings import WARNING, Findings
from ffsecure.audit.trusted import TrustedCheckpoint
from ffsecure.errors import FFSecureError
from ffsecure.ledger.checkpoint import Checkpoint, open_checkpoint
from ffsecure.ledger.problems import LogProblemKind, LogState, log_problems

__all__ = ["FINDING_OF", "LogState", "check_log"]

#: The finding (check, code) of each kind of log problem.
FINDING_OF: dict[LogProblemKind, tuple[str, str]] = {
    LogProblemKind.LOG_KEY: ("checkpoint-signatures", "E_AUDIT_LOG_KEY"),
    LogProblemKind.ENTRY: ("entries", "E_AUDIT_ENTRY"),
    LogProblemKind.TIME_ORDER: ("entries", "E_AUDIT_TIME_ORDER"),
    LogProblemKind.NO_CHECKPOINT: ("checkpoint-signatures", "E_AUDIT_NO_CHECKPOINT"),
    LogProblemKind.CHECKPOINT_NAME: ("checkpoint-signatures", "E_AUDIT_CHECKPOINT_NAME"),
    LogProblemKind.CHECKPOINT_SIGNATURE: ("checkpoint-signatures", "E_AUDIT_CHECKPOINT_SIGNATURE"),
    LogProblemKind.MISSING_ENTRIES: ("checkpoint-roots", "E_AUDIT_MISSING_ENTRIES"),
    LogProblemKind.ROOT_MISMATCH: ("checkpoint-roots", "E_AUDIT_ROOT_MISMATCH"),
    LogProblemKind.REORDERED: ("checkpoint-roots", "E_AUDIT_REORDERED"),
    LogProblemKind.UNSIGNED_TAIL: ("checkpoint-roots", "E_AUDIT_UNSIGNED_TAIL"),
    LogProblemKind.INCONSISTENT: ("consistency", "E_AUDIT_INCONSISTENT"),
}


def check_log(
    vkey: str,
    entries: list[bytes],
    notes: dict[str, bytes],
    findings: Findings,
    *,
    trusted: Sequence[TrustedCheckpoint] = (),
) -> LogState:
    """Run the log checks, appending findings; returns the state for the later checks."""
    states: list[LogState] = []
    for problem in log_problems(vkey, entries, notes, states):
        check, code = FINDING_OF[problem.kind]
        severity = dict(severity=WARNING) if problem.warning else {}
        findings.add(check, code, problem.message, **problem.where, **severity)
    state = states[-1]
    if trusted:
        _check_trusted(state, trusted, findings)
    return state


def _check_trusted(
    state: LogState, trusted: Sequence[TrustedCheckpoint], findings: Findings
) -> None:
    opened: list[tuple[str, Checkpoint]] = []
    for item in trusted:
        label, note = item.label, item.note
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
    _check_receipt_entries(state, trusted, findings)
    n = len(state.entry_bytes)
    opened.sort(key=lambda t: t[1].size)
    matched = 0
    signed = {cp.size: cp for cp in state.checkpoints}
    for label, t in opened:
        if t.size > n:
            findings.add(
                "trusted-checkpoints",
                "E_AUDIT_FORK",
                f"{label} covers {t.size} entries but this log holds only {n}: "
                "the log was rolled back (entries the auditor saw are gone)",
                checkpoint=t.size,
                entries=tuple(range(matched, n)),
            )
            continue
        if hmac.compare_digest(state.tree.root(t.size), t.root_hash):
            matched = max(matched, t.size)
            continue
        rng = tuple(range(matched, t.size))
        one = dict(entry=matched, entry_type=state.entry_type(matched)) if len(rng) == 1 else {}
        twin = signed.get(t.size)
        split = (
            f"; the bundle's own checkpoint {t.size} is signed by the same key with a different "
            "root, so the log key signed two histories (a split view)"
            if twin is not None and not hmac.compare_digest(twin.root_hash, t.root_hash)
            else ""
        )
        findings.add(
            "trusted-checkpoints",
            "E_AUDIT_FORK",
            f"{label} (tree size {t.size}) is not a prefix of this log: history was rewritten "
            f"among entries {matched}..{t.size - 1}{split}",
            checkpoint=t.size,
            entries=rng,
            **one,
        )


def _check_receipt_entries(
    state: LogState, trusted: Sequence[TrustedCheckpoint], findings: Findings
) -> None:
    """A receipt's entry is the log's entry at its index (a dropped index is a rollback)."""
    for t in trusted:
        receipt = t.receipt
        if receipt is None or receipt.index >= len(state.entry_bytes):
            continue
        if not hmac.compare_digest(state.entry_bytes[receipt.index], receipt.entry):
            findings.add(
                "trusted-checkpoints",
                "E_AUDIT_FORK",
                f"{t.label}: the receipt's entry {receipt.index} is not this log's entry "
                f"{receipt.index}: the entry the site was given a receipt for was replaced",
                entry=receipt.index,
                entry_type=state.entry_type(receipt.index),
            )
