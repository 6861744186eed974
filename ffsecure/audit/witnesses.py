"""Witness check: the bundle's latest checkpoint carries a quorum of the auditor's witnesses.

A witness (``ffsecure.ledger.witness``) cosigns a checkpoint only after checking
that it extends every checkpoint of that log it cosigned before. So when K
independent witnesses the auditor chose cosigned the bundle's checkpoint, a
log that shows one history to some sites and another to the auditor (a split
view) must have fooled all K of them. The exporter controls which lines the
checkpoint carries: a missing, foreign or altered cosignature is never a
warning but a failed check (``E_AUDIT_WITNESS_QUORUM``, ``E_AUDIT_COSIGNATURE``).
The keys and the quorum come from the auditor, never from the bundle.
"""

from __future__ import annotations

from collections.abc import Sequence

from ffsecure.audit.bundle import Bundle
from ffsecure.audit.findings import Findings
from ffsecure.errors import ConfigError
from ffsecure.ledger.cosign import parse_witness_vkey, witness_verdicts
from ffsecure.ledger.problems import LogState

CHECK = "witnesses"


def distinct_witnesses(keys: Sequence[str]) -> int:
    """How many distinct witness keys ``keys`` holds (each parsed; a bad key raises)."""
    return len({(v.name, v.key_hash) for v in map(parse_witness_vkey, keys)})


def check_quorum(keys: Sequence[str], quorum: int | None) -> int:
    """The quorum to require: ``quorum``, or every distinct key when None; checked in range."""
    n = distinct_witnesses(keys)
    k = n if quorum is None else quorum
    if not 1 <= k <= n:
        raise ConfigError(
            f"a witness quorum of {k} cannot be met by {n} distinct witness key(s)",
            code="E_CONFIG",
            hint="give --witness-quorum between 1 and the number of --witness-key",
        )
    return k


def check_witnesses(
    bundle: Bundle, log: LogState, findings: Findings, keys: Sequence[str], quorum: int
) -> str:
    """Add findings when fewer than ``quorum`` of ``keys`` cosigned the latest checkpoint."""
    latest = log.latest
    note = bundle.checkpoint_notes.get(str(latest.size)) if latest else None
    if latest is None or note is None:
        findings.add(
            CHECK, "E_AUDIT_WITNESS_QUORUM", "no signed checkpoint to find cosignatures on"
        )
        return ""
    verdicts = witness_verdicts(note, keys)
    for v in verdicts:
        if v.claimed and not v.valid:
            findings.add(
                CHECK,
                "E_AUDIT_COSIGNATURE",
                f"the cosignature by witness {v.name} does not verify over this checkpoint: "
                "it cosigned another checkpoint, or the line was altered",
                checkpoint=latest.size,
            )
    good = [v for v in verdicts if v.valid]
    if len(good) < quorum:
        missing = ", ".join(v.name for v in verdicts if not v.valid)
        findings.add(
            CHECK,
            "E_AUDIT_WITNESS_QUORUM",
            f"{len(good)} of the {quorum} required witness cosignatures are on the latest "
            f"checkpoint (none valid by: {missing})",
            checkpoint=latest.size,
        )
    return (
        f"{len(good)} of {len(verdicts)} witnesses cosigned checkpoint {latest.size} "
        f"(quorum {quorum})"
    )
