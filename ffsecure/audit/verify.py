"""Run every audit check on a bundle and collect the result (no I/O beyond the bundle read)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from ffsecure import pki
from ffsecure.audit.anchor import (
    HISTORY_CODE,
    TrustAnchor,
    check_crl_history,
    check_federation_documents,
    check_federation_history,
    check_policy_known,
    check_revocations_listed,
    check_trust_anchor,
)
from ffsecure.audit.bundle import FEDERATIONS_DIR, Bundle
from ffsecure.audit.findings import CHECKS, ERROR, WARNING, CheckSummary, Finding, Findings
from ffsecure.audit.lineage import LedgerReplay, replay
from ffsecure.audit.logcheck import LogState, check_log
from ffsecure.audit.modules import (
    ModuleCheck,
    check_dp_claims,
    check_modules,
    check_site_budgets,
)
from ffsecure.audit.trusted import TrustedCheckpoint
from ffsecure.audit.witnesses import (
    WitnessDating,
    WitnessPolicy,
    WitnessReport,
    check_witnesses,
)
from ffsecure.federation import FederationManifest
from ffsecure.timefmt import utcnow


@dataclass
class AuditResult:
    """Everything the verifier found, and the state the report draws."""

    bundle: Bundle
    findings: list[Finding]
    checks: list[CheckSummary]
    log: LogState
    replay: LedgerReplay
    modules: dict[str, ModuleCheck]
    federation: FederationManifest | None
    crl: x509.CertificateRevocationList | None
    ca_fingerprint: str | None
    trusted_count: int = 0
    notes: list[str] = field(default_factory=list)
    anchor: TrustAnchor | None = None
    witnesses: WitnessReport | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def verdict(self) -> str:
        return "VERIFIED" if self.ok else "FAILED"

    def to_dict(self) -> dict:
        latest = self.log.latest
        return {
            "verdict": self.verdict,
            "ok": self.ok,
            "bundle": str(self.bundle.path),
            "origin": latest.origin if latest else None,
            "tree_size": latest.size if latest else None,
            "root_hash": latest.root_hash.hex() if latest else None,
            "entries": len(self.log.entry_bytes),
            "checkpoints": [c.size for c in self.log.checkpoints],
            "ca_fingerprint": self.ca_fingerprint,
            "checks": [c.to_dict() for c in self.checks],
            "findings": [f.to_dict() for f in self.findings],
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "witnesses": self.witnesses.to_dict() if self.witnesses is not None else None,
        }


def _summaries(
    findings: Findings, skipped: dict[str, str], details: dict[str, str]
) -> list[CheckSummary]:
    out = []
    for name in CHECKS:
        items = findings.of(name)
        errors = [f for f in items if f.severity == ERROR]
        if name in skipped and not items:
            out.append(CheckSummary(name, "skipped", skipped[name]))
        elif errors:
            out.append(
                CheckSummary(name, "failed", f"{len(errors)} finding{'s' * (len(errors) != 1)}")
            )
        elif items:
            out.append(
                CheckSummary(name, "warning", f"{len(items)} warning{'s' * (len(items) != 1)}")
            )
        else:
            out.append(CheckSummary(name, "ok", details.get(name, "")))
    return out


#: The check a member of the wrong kind is reported under, by the folder it lies in.
_MEMBER_CHECK = {
    "checkpoints": "checkpoint-signatures",
    "modules": "module-records",
    "lineage": "lineage",
}


def _member_findings(bundle: Bundle, findings: Findings) -> None:
    """Warnings for the files the loader left unread: misnamed, or of the wrong kind."""
    for name in bundle.stray_module_files:
        findings.add(
            "module-records",
            "E_AUDIT_MODULE_RECORD",
            f"modules/{name} is not named <module-id>.json",
            severity=WARNING,
        )
    for name in bundle.stray_lineage_files:
        findings.add(
            "lineage",
            "E_AUDIT_LINEAGE_DOCUMENT",
            f"lineage/{name} is not named <sha256>.json",
            severity=WARNING,
        )
    for name in bundle.stray_federation_files:
        findings.add(
            "trust-anchor",
            HISTORY_CODE,
            f"{FEDERATIONS_DIR}/{name} is not named <sha256>.json",
            severity=WARNING,
        )
    for name, kind in bundle.irregular.items():
        findings.add(
            _MEMBER_CHECK.get(name.partition("/")[0], "trust-anchor"),
            "E_AUDIT_BUNDLE_MEMBER",
            f"{name} is {kind}, which an audit bundle never holds there: left unread, as if absent",
            severity=WARNING,
        )


def audit_bundle(
    bundle: Bundle,
    *,
    ca_pem: bytes | None,
    crl_pem: bytes | None = None,
    trusted: Sequence[TrustedCheckpoint] = (),
    log_vkey: str | None = None,
    now: dt.datetime | None = None,
    witnesses: WitnessPolicy | None = None,
    federation_json: bytes | None = None,
) -> AuditResult:
    """Run every check on ``bundle``; ``trusted`` holds the auditor's earlier checkpoints.

    ``crl_pem`` and ``log_vkey`` are the auditor's own CRL and log key, if any
    (``ffsecure.audit.anchor``). ``now`` (default: the clock) is the time the CRL's
    and the witness cosignatures' freshness is judged at. With ``witnesses``
    (:func:`~ffsecure.audit.witnesses.witness_policy`), a quorum of its keys must have
    cosigned the latest checkpoint within its ``max_age`` before ``now``, and their
    cosignatures on earlier checkpoints date the entries they hold (a deleted module's
    revocation after its registration is excused only when they saw it registered by
    then). ``federation_json``
    is the auditor's own signed federation manifest (``--federation``), used instead of
    the bundle's.
    """
    checked_at = now if now is not None else utcnow()
    findings = Findings()
    anchor = check_trust_anchor(
        bundle,
        ca_pem=ca_pem,
        crl_pem=crl_pem,
        log_vkey=log_vkey,
        findings=findings,
        now=checked_at,
        federation_json=federation_json,
    )
    ca_cert, crl, federation = anchor.ca_cert, anchor.crl, anchor.federation
    log = check_log(
        bundle.vkey, bundle.entries, bundle.checkpoint_notes, findings, trusted=list(trusted)
    )
    witness_report = (
        check_witnesses(bundle, log, findings, witnesses, checked_at)
        if witnesses is not None
        else None
    )
    st = replay(log.entries, findings, bundle.lineage)
    check_crl_history(anchor, st, findings)
    check_federation_history(anchor, st, findings)
    check_federation_documents(anchor, bundle, st, findings)
    check_policy_known(anchor, st, findings)
    modules = check_modules(
        bundle.modules,
        log.entries,
        st,
        findings,
        ca_cert=ca_cert,
        crl=crl,
        federation=federation,
        registered_under=anchor.registered_under,
        dating=WitnessDating(bundle, log, witnesses) if witnesses is not None else None,
    )
    dp_done, dp_claims = check_dp_claims(modules, st, findings)
    check_site_budgets(modules, st, federation, findings, anchor.registered_under)
    check_revocations_listed(anchor, st, findings)
    _member_findings(bundle, findings)
    n = len(bundle.entries)
    deleted = sum(1 for m in st.modules.values() if m.deleted_index is not None)
    live = sum(1 for c in st.classifiers.values() if c.live)
    details = {
        "trust-anchor": anchor.detail(),
        "entries": f"{n} entries",
        "checkpoint-signatures": f"{len(log.checkpoints)} checkpoints",
        "checkpoint-roots": f"latest checkpoint covers all {n} entries",
        "consistency": f"{max(len(log.checkpoints) - 1, 0)} consecutive pairs",
        "trusted-checkpoints": f"{len(trusted)} trusted checkpoint(s), all prefixes of this log",
        "witnesses": witness_report.detail() if witness_report else "",
        "module-records": f"{len(st.modules)} modules",
        "module-signatures": (
            f"{sum(m.signature_ok for m in modules.values())} of {len(modules)} verify"
        ),
        "dp-claims": (f"{dp_done} of {dp_claims} DP claims re-accounted"),
        "deletions": f"{len(st.requests)} request(s), {deleted} deletion(s)",
        "lineage": f"{len(st.datasets)} datasets, {len(st.classifiers)} classifiers ({live} live)",
    }
    skipped = {"trusted-checkpoints": "no --trusted-checkpoint given"} if not trusted else {}
    if witnesses is None:
        skipped["witnesses"] = "no --witness-key given"
    if dp_done == 0:
        skipped["dp-claims"] = "no module claims DP"
    return AuditResult(
        bundle=bundle,
        findings=findings.items,
        checks=_summaries(findings, skipped, details),
        log=log,
        replay=st,
        modules=modules,
        federation=federation,
        crl=crl,
        ca_fingerprint=pki.cert_fingerprint(ca_cert) if ca_cert is not None else None,
        trusted_count=len(trusted),
        anchor=anchor,
        witnesses=witness_report,
    )
