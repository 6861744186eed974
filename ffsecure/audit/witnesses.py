"""Witness check: a quorum of the auditor's witnesses cosigned the bundle's latest checkpoint,
recently.

A witness (``ffsecure.ledger.witness``) cosigns a checkpoint only after checking
that it extends every checkpoint of that log it cosigned before. So when K
independent witnesses the auditor chose cosigned the bundle's checkpoint, a
log that shows one history to some sites and another to the auditor (a split
view) must have fooled all K of them. The exporter controls which lines the
checkpoint carries: a missing, foreign or altered cosignature is never a
warning but a failed check (``E_AUDIT_WITNESS_QUORUM``, ``E_AUDIT_COSIGNATURE``).

A cosignature (C2SP ``cosignature/v1``) says "as of time T, this is the largest
tree I saw": it stays valid for ever. An exporter who hides what the log recorded
since (a deletion request never carried out) can hand over the log as it stood
months ago, with the cosignatures of then. So the quorum counts only cosignatures
made within ``max_age`` before the audit's time, and not more than
:data:`~ffsecure.timefmt.CLOCK_SKEW` after it (the C2SP spec lets verifiers reject
future times); a quorum met only by older (or future) ones is
``E_AUDIT_WITNESS_STALE``. The default bound, :data:`DEFAULT_MAX_AGE`, is a week:
witnesses cosign when asked (``ffsecure witness cosign`` and ``aggregator ledger
add-cosignature``, e.g. from a daily timer), not continuously as public C2SP
witnesses do, and a week leaves room for a missed run; an auditor who asked for
a fresh export sets it tighter (``--witness-max-age 1d``), one who audits an
archived bundle wider. Within the bound a rollback stays possible: the bound is
how far back it can go.

Witness keys are a set of public keys (``ffsecure.ledger.cosign.parse_witness_keys``:
a cosignature does not commit to the witness's name, so one key under two names
is refused and a quorum counts keys). The keys, the quorum and the bound come
from the auditor, never from the bundle; they are parsed once into a
:class:`WitnessPolicy`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from ffsecure.audit.bundle import Bundle
from ffsecure.audit.findings import Findings
from ffsecure.errors import ConfigError
from ffsecure.ledger.checkpoint import NoteVerifier
from ffsecure.ledger.cosign import WitnessVerdict, parse_witness_keys, witness_verdicts
from ffsecure.ledger.problems import LogState
from ffsecure.timefmt import CLOCK_SKEW, format_duration, rfc3339

__all__ = [
    "CHECK",
    "DEFAULT_MAX_AGE",
    "LAST_RFC3339",
    "WitnessDating",
    "WitnessPolicy",
    "WitnessReport",
    "WitnessRow",
    "WitnessStatus",
    "check_witnesses",
    "witness_policy",
]

CHECK = "witnesses"

#: How old the cosignatures that meet the quorum may be when the auditor names no bound.
DEFAULT_MAX_AGE = dt.timedelta(days=7)

#: The last POSIX time RFC 3339 (and a datetime) can state: 9999-12-31T23:59:59Z.
LAST_RFC3339 = 253402300799


class WitnessStatus(StrEnum):
    """What one of the auditor's witnesses says about the latest checkpoint."""

    FRESH = "fresh"  # a valid cosignature within the bound: counts toward the quorum
    STALE = "stale"  # valid, but older than the bound
    FUTURE = "future"  # valid, but dated past the auditor's clock (beyond CLOCK_SKEW)
    INVALID = "invalid"  # lines name this witness, none verifies over this checkpoint
    ABSENT = "absent"  # no line by this witness


@dataclass(frozen=True)
class WitnessPolicy:
    """The auditor's witness requirement: whose cosignatures, how many, how recent."""

    keys: tuple[NoteVerifier, ...]
    quorum: int
    max_age: dt.timedelta = DEFAULT_MAX_AGE


def witness_policy(
    keys: Sequence[str], quorum: int | None = None, max_age: dt.timedelta | None = None
) -> WitnessPolicy:
    """Parse the auditor's ``--witness-key`` values, quorum (default: every key) and bound.

    A bad key is ``E_COSIGNATURE``, one public key under two names ``E_WITNESS_KEY_REUSED``,
    a quorum out of range or a bound that is not positive ``E_CONFIG``.
    """
    verifiers = parse_witness_keys(keys)
    n = len(verifiers)
    k = n if quorum is None else quorum
    if not 1 <= k <= n:
        raise ConfigError(
            f"a witness quorum of {k} cannot be met by {n} distinct witness key(s)",
            code="E_CONFIG",
            hint="give --witness-quorum between 1 and the number of --witness-key",
        )
    bound = DEFAULT_MAX_AGE if max_age is None else max_age
    if bound <= dt.timedelta(0):
        raise ConfigError(
            f"a witness max age of {format_duration(bound)} is not positive",
            code="E_CONFIG",
            hint="give --witness-max-age as a positive duration, e.g. 7d or 36h",
        )
    return WitnessPolicy(verifiers, k, bound)


@dataclass(frozen=True)
class WitnessRow:
    """One witness's cosignature on the latest checkpoint, judged at the audit's time."""

    name: str
    status: WitnessStatus
    time: int | None = None  # POSIX seconds of the cosignature judged
    age: int | None = None  # seconds from it to the audit's time (negative: in the future)

    def when(self) -> str:
        """The cosignature time for people: RFC 3339 and its age, or why there is none."""
        if self.time is None or self.age is None:
            return "no valid cosignature" if self.status == WitnessStatus.INVALID else "none"
        if self.time > LAST_RFC3339:  # a u64 the witness signed: no datetime holds it
            return f"POSIX time {self.time} (in the future)"
        stamp = rfc3339(dt.datetime.fromtimestamp(self.time, dt.UTC))
        span = format_duration(dt.timedelta(seconds=abs(self.age)))
        return f"{stamp} ({span} ago)" if self.age >= 0 else f"{stamp} ({span} ahead)"

    def to_dict(self) -> dict:
        return {"name": self.name, "status": str(self.status), "time": self.time, "age": self.age}


@dataclass(frozen=True)
class WitnessReport:
    """What the witness check saw: each witness's cosignature time and whether it counts."""

    checkpoint: int | None
    quorum: int
    max_age: dt.timedelta
    checked_at: dt.datetime
    rows: tuple[WitnessRow, ...]

    @property
    def fresh(self) -> int:
        return sum(row.status == WitnessStatus.FRESH for row in self.rows)

    def detail(self) -> str:
        if self.checkpoint is None:
            return "no signed checkpoint"
        times = "; ".join(f"{row.name}: {row.when()}" for row in self.rows)
        return (
            f"{self.fresh} of {len(self.rows)} witnesses cosigned checkpoint {self.checkpoint} "
            f"within {format_duration(self.max_age)} (quorum {self.quorum}); {times}"
        )

    def to_dict(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "quorum": self.quorum,
            "max_age": format_duration(self.max_age),
            "checked_at": rfc3339(self.checked_at),
            "fresh": self.fresh,
            "witnesses": [row.to_dict() for row in self.rows],
        }


def _judge(verdict: WitnessVerdict, now: int, max_age: int) -> WitnessRow:
    if not verdict.valid:
        status = WitnessStatus.INVALID if verdict.claimed else WitnessStatus.ABSENT
        return WitnessRow(verdict.name, status)
    skew = int(CLOCK_SKEW.total_seconds())
    past = [t for t in verdict.times if t <= now + skew]
    if not past:
        newest = verdict.times[-1]
        return WitnessRow(verdict.name, WitnessStatus.FUTURE, newest, now - newest)
    newest = past[-1]
    status = WitnessStatus.FRESH if now - newest <= max_age else WitnessStatus.STALE
    return WitnessRow(verdict.name, status, newest, now - newest)


def _add_findings(findings: Findings, report: WitnessReport) -> None:
    size = report.checkpoint
    for row in report.rows:
        if row.status == WitnessStatus.INVALID:
            findings.add(
                CHECK,
                "E_AUDIT_COSIGNATURE",
                f"the cosignature by witness {row.name} does not verify over this checkpoint: "
                "it cosigned another checkpoint, or the line was altered",
                checkpoint=size,
            )
    valid = [row for row in report.rows if row.time is not None]
    if len(valid) < report.quorum:
        missing = ", ".join(row.name for row in report.rows if row.time is None)
        findings.add(
            CHECK,
            "E_AUDIT_WITNESS_QUORUM",
            f"{len(valid)} of the {report.quorum} required witness cosignatures are on the "
            f"latest checkpoint (none valid by: {missing})",
            checkpoint=size,
        )
    elif report.fresh < report.quorum:
        late = "; ".join(
            f"{row.name} cosigned {row.when()}"
            for row in valid
            if row.status != WitnessStatus.FRESH
        )
        findings.add(
            CHECK,
            "E_AUDIT_WITNESS_STALE",
            f"only {report.fresh} of the {report.quorum} required witness cosignatures on the "
            f"latest checkpoint were made within {format_duration(report.max_age)} before "
            f"{rfc3339(report.checked_at)} ({late}): the log may have grown since, and this "
            "bundle be an old state of it (a rollback)",
            checkpoint=size,
        )


def check_witnesses(
    bundle: Bundle,
    log: LogState,
    findings: Findings,
    policy: WitnessPolicy,
    now: dt.datetime,
) -> WitnessReport:
    """Add findings unless ``policy.quorum`` witnesses cosigned the latest checkpoint within
    ``policy.max_age`` before ``now``; the report lists each witness's cosignature time."""
    latest = log.latest
    note = bundle.checkpoint_notes.get(str(latest.size)) if latest else None
    if latest is None or note is None:
        findings.add(
            CHECK, "E_AUDIT_WITNESS_QUORUM", "no signed checkpoint to find cosignatures on"
        )
        return WitnessReport(None, policy.quorum, policy.max_age, now, ())
    at = int(now.timestamp())
    bound = int(policy.max_age.total_seconds())
    rows = tuple(_judge(v, at, bound) for v in witness_verdicts(note, policy.keys))
    report = WitnessReport(latest.size, policy.quorum, policy.max_age, now, rows)
    _add_findings(findings, report)
    return report


@dataclass(frozen=True)
class WitnessDating:
    """When the auditor's witnesses had seen each entry: time evidence the exporter cannot write.

    An entry's ``time`` is the aggregator's clock, so the exporter can write any. A witness's
    cosignature on a checkpoint says "I saw this tree by time T"; a tree of size S holds
    entries 0 to S - 1. So the entry at index i existed by the quorum-th earliest of the
    witnesses' first cosignatures on a checkpoint larger than i (each witness counted once,
    at its earliest such cosignature): nobody can date it later than that without a quorum
    of the auditor's witnesses signing a false time. The cosignatures are read, and verified,
    only when an entry is first dated (:attr:`seen`), which only a revoked module asks for.
    """

    bundle: Bundle = field(repr=False)
    log: LogState = field(repr=False)
    policy: WitnessPolicy

    @cached_property
    def seen(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """Per witness, its earliest valid cosignature time on each checkpoint whose root the
        entries reproduce: (tree size, POSIX time)."""
        rows: dict[int, list[tuple[int, int]]] = {}  # by the witness's place in the policy
        good = set(self.log.good_sizes)
        for checkpoint in self.log.checkpoints:
            note = self.bundle.checkpoint_notes.get(str(checkpoint.size))
            if note is None or checkpoint.size not in good:
                continue
            for i, verdict in enumerate(witness_verdicts(note, self.policy.keys)):
                if verdict.times:
                    rows.setdefault(i, []).append((checkpoint.size, verdict.times[0]))
        return tuple(tuple(r) for r in rows.values())

    def seen_by(self, index: int) -> int | None:
        """The POSIX time by which a quorum of the witnesses had cosigned a checkpoint holding
        entry ``index``, or None when fewer did."""
        firsts = sorted(
            t
            for t in (
                min((t for size, t in rows if size > index), default=None) for rows in self.seen
            )
            if t is not None
        )
        quorum = self.policy.quorum
        return firsts[quorum - 1] if len(firsts) >= quorum else None
