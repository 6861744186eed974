"""Typed audit results: findings (what is wrong, where) and the per-check summary.

A finding names where the problem is: the ledger entry (``entry`` index and
``entry_type``) when one entry is to blame, the candidate ``entries`` when the
evidence only narrows it to a range (a Merkle root says *that* a prefix changed,
not which entry), the ``checkpoint`` (tree size) and the ``module_id`` when they
apply. ``code`` is stable (``E_AUDIT_...``) so that scripts can match it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ERROR = "error"
WARNING = "warning"

#: The checks, in the order they run and are shown, with what each establishes.
CHECKS: dict[str, str] = {
    "trust-anchor": (
        "the bundle's CA and federation manifest match the auditor's CA; "
        "the log key is the federation's"
    ),
    "entries": "every entry is canonical JSON of a well-formed ledger entry",
    "checkpoint-signatures": "every checkpoint is signed by the log key and names this log",
    "checkpoint-roots": (
        "the entries hash to every checkpoint's root; the latest checkpoint covers every entry"
    ),
    "consistency": (
        "each checkpoint is consistent with the one before it (RFC 9162 consistency proofs)"
    ),
    "trusted-checkpoints": (
        "checkpoints the auditor kept from earlier are prefixes of this log (no fork, no rollback)"
    ),
    "witnesses": (
        "enough of the auditor's witnesses cosigned the latest checkpoint, recently "
        "(no split view; no rollback older than the bound)"
    ),
    "module-records": "each registered module's public record matches its ledger entry",
    "module-signatures": (
        "each module manifest is signed by a site certificate valid and unrevoked when it was made"
    ),
    "dp-claims": (
        "each DP epsilon claimed with its parameters is what those parameters spend (re-accounted)"
    ),
    "deletions": (
        "every deletion request has a matching deletion; deletions name registered modules"
    ),
    "lineage": (
        "datasets and classifiers name registered, undeleted modules; "
        "nothing live holds a deleted module"
    ),
}


@dataclass(frozen=True)
class Finding:
    """One thing that failed, with where it is."""

    check: str
    code: str
    message: str
    entry: int | None = None
    entry_type: str | None = None
    entries: tuple[int, ...] = ()
    checkpoint: int | None = None
    module_id: str | None = None
    severity: str = ERROR

    def where(self) -> str:
        """Location for people: ``entry 7 (module.deleted)``, ``entries 3-7``, ``checkpoint 8``."""
        parts = []
        if self.entry is not None:
            parts.append(
                f"entry {self.entry}" + (f" ({self.entry_type})" if self.entry_type else "")
            )
        elif self.entries:
            lo, hi = min(self.entries), max(self.entries)
            parts.append(f"entries {lo}-{hi}" if hi > lo else f"entry {lo}")
        if self.checkpoint is not None:
            parts.append(f"checkpoint {self.checkpoint}")
        if self.module_id:
            parts.append(f"module {self.module_id[:12]}")
        return ", ".join(parts) or "bundle"

    def to_dict(self) -> dict:
        return {
            "check": self.check,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "entry": self.entry,
            "entry_type": self.entry_type,
            "entries": list(self.entries),
            "checkpoint": self.checkpoint,
            "module_id": self.module_id,
            "where": self.where(),
        }


@dataclass
class CheckSummary:
    """How one check went: ``ok``, ``failed``, ``warning`` or ``skipped`` (with why)."""

    name: str
    status: str
    detail: str

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "proves": CHECKS.get(self.name, ""),
        }


@dataclass
class Findings:
    """A collector the checks append to."""

    items: list[Finding] = field(default_factory=list)

    def add(self, check: str, code: str, message: str, **where) -> Finding:
        f = Finding(check, code, message, **where)
        self.items.append(f)
        return f

    def of(self, check: str) -> list[Finding]:
        return [f for f in self.items if f.check == check]
