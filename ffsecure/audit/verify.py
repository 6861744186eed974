"""Run every audit check on a bundle and collect the result (no I/O beyond the bundle read)."""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass, field

from cryptography import x509

from ffsecure import pki
from ffsecure.audit.bundle import Bundle
from ffsecure.audit.findings import CHECKS, ERROR, WARNING, CheckSummary, Finding, Findings
from ffsecure.audit.lineage import LedgerReplay, replay
from ffsecure.audit.logcheck import LogState, check_log
from ffsecure.audit.modules import ModuleCheck, check_dp_claims, check_modules
from ffsecure.errors import FFSecureError
from ffsecure.federation import FederationManifest, load_signed_manifest


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
            "verdict": self.verdict, "ok": self.ok, "bundle": str(self.bundle.path),
            "origin": latest.origin if latest else None,
            "tree_size": latest.size if latest else None,
            "root_hash": latest.root_hash.hex() if latest else None,
            "entries": len(self.log.entry_bytes), "checkpoints": [c.size for c in self.log.checkpoints],
            "ca_fingerprint": self.ca_fingerprint,
            "checks": [c.to_dict() for c in self.checks],
            "findings": [f.to_dict() for f in self.findings],
            "errors": len(self.errors), "warnings": len(self.warnings),
        }


def _trust_anchor(bundle: Bundle, ca_pem: bytes | None, crl_pem: bytes | None, log_vkey: str | None,
                  findings: Findings, now: dt.datetime | None = None):
    check = "trust-anchor"
    ca_cert = None
    if ca_pem is None:
        if bundle.ca_pem is None:
            findings.add(check, "E_AUDIT_CA", "no CA certificate: none given and the bundle has no ca.pem")
        else:
            ca_pem = bundle.ca_pem
            findings.add(check, "E_AUDIT_CA_UNPINNED",
                         "checked against the bundle's own ca.pem; pass the federation CA you hold (--ca) "
                         "to make the result mean anything", severity=WARNING)
    if ca_pem is not None:
        try:
            ca_cert = pki.load_cert(ca_pem)
        except FFSecureError as exc:
            findings.add(check, "E_AUDIT_CA", f"the CA certificate does not parse: {exc.message}")
    if ca_cert is not None and bundle.ca_pem is not None:
        try:
            same = hmac.compare_digest(pki.cert_fingerprint(pki.load_cert(bundle.ca_pem)),
                                       pki.cert_fingerprint(ca_cert))
        except FFSecureError:
            same = False
        if not same:
            findings.add(check, "E_AUDIT_CA_MISMATCH",
                         "the bundle's ca.pem is not the CA you trust: this log belongs to another federation "
                         "or its CA was replaced")
    crl = None
    pem = crl_pem if crl_pem is not None else bundle.crl_pem
    if pem is None:
        findings.add(check, "E_AUDIT_NO_CRL", "no CRL (none given, none in the bundle): revocations are not checked",
                     severity=WARNING)
    elif ca_cert is not None:
        try:
            crl = pki.load_crl(pem, ca_cert)
        except FFSecureError as exc:
            findings.add(check, "E_AUDIT_CRL", f"the CRL is not one the CA signed: {exc.message}")
        else:
            if pki.crl_expired(crl, now):
                findings.add(check, "E_AUDIT_CRL_EXPIRED",
                             f"the CRL's nextUpdate ({crl.next_update_utc.strftime('%Y-%m-%dT%H:%M:%SZ')}) has "
                             "passed: certificates revoked since then are not in it; get the current CRL from "
                             "the CA (--crl)", severity=WARNING)
    federation = None
    if bundle.federation_json is not None and ca_cert is not None:
        try:
            federation = load_signed_manifest(bundle.federation_json, ca_cert)
        except FFSecureError as exc:
            findings.add(check, "E_AUDIT_FEDERATION",
                         f"federation.json does not verify against the CA: [{exc.code}] {exc.message}")
    vkey = bundle.vkey.strip()
    if federation is not None and federation.aggregator.get("log_public_key", "").strip() != vkey:
        findings.add(check, "E_AUDIT_LOG_KEY_UNBOUND",
                     "log.vkey is not the log key named in the CA-signed federation manifest: the checkpoints "
                     "were signed by a key the federation never approved")
    if log_vkey is not None and log_vkey.strip() != vkey:
        findings.add(check, "E_AUDIT_LOG_KEY_UNBOUND", "log.vkey is not the log key you pinned (--log-key)")
    if federation is None and log_vkey is None and bundle.federation_json is None:
        findings.add(check, "E_AUDIT_LOG_KEY_UNPINNED",
                     "the bundle has no federation.json and no --log-key was given: log.vkey is taken on trust; "
                     "compare it with the federation manifest's log_public_key", severity=WARNING)
    return ca_cert, crl, federation


def _revocations_in_crl(st: LedgerReplay, crl, findings: Findings) -> None:
    if crl is None:
        return
    for i, e in st.revocations:
        serial = str(e["facts"]["serial"])
        try:
            number = int(serial, 16)
        except ValueError:
            findings.add("trust-anchor", "E_AUDIT_CRL_STALE", f"cert.revoked serial {serial!r} is not hex",
                         entry=i, entry_type="cert.revoked", severity=WARNING)
            continue
        if crl.get_revoked_certificate_by_serial_number(number) is None:
            findings.add("trust-anchor", "E_AUDIT_CRL_STALE",
                         f"the log records revoking certificate {serial} but the CRL does not list it: "
                         "the CRL is older than the log; get the current one from the CA",
                         entry=i, entry_type="cert.revoked", severity=WARNING)


def _summaries(findings: Findings, skipped: dict[str, str], details: dict[str, str]) -> list[CheckSummary]:
    out = []
    for name in CHECKS:
        items = findings.of(name)
        errors = [f for f in items if f.severity == ERROR]
        if name in skipped and not items:
            out.append(CheckSummary(name, "skipped", skipped[name]))
        elif errors:
            out.append(CheckSummary(name, "failed", f"{len(errors)} finding{'s' * (len(errors) != 1)}"))
        elif items:
            out.append(CheckSummary(name, "warning", f"{len(items)} warning{'s' * (len(items) != 1)}"))
        else:
            out.append(CheckSummary(name, "ok", details.get(name, "")))
    return out


def audit_bundle(bundle: Bundle, *, ca_pem: bytes | None, crl_pem: bytes | None = None,
                 trusted: list[tuple[str, bytes]] = (), log_vkey: str | None = None,
                 now: dt.datetime | None = None) -> AuditResult:
    """Run every check on ``bundle``; ``trusted`` holds (label, note bytes) of earlier checkpoints.

    ``now`` (default: the clock) is the time the CRL's freshness is judged at.
    """
    findings = Findings()
    ca_cert, crl, federation = _trust_anchor(bundle, ca_pem, crl_pem, log_vkey, findings, now)
    log = check_log(bundle.vkey, bundle.entries, bundle.checkpoint_notes, findings, trusted=list(trusted))
    st = replay(log.entries, findings)
    modules = check_modules(bundle.modules, log.entries, st, findings, ca_cert=ca_cert, crl=crl,
                            federation=federation)
    dp_done, dp_claims = check_dp_claims(modules, st, findings)
    _revocations_in_crl(st, crl, findings)
    for name in bundle.stray_module_files:
        findings.add("module-records", "E_AUDIT_MODULE_RECORD", f"modules/{name} is not named <module-id>.json",
                     severity=WARNING)
    n = len(bundle.entries)
    deleted = sum(1 for m in st.modules.values() if m.deleted_index is not None)
    live = sum(1 for c in st.classifiers.values() if c.live)
    details = {
        "trust-anchor": "CA pinned" + (", log key bound by the federation manifest" if federation else "")
                        + (", CRL signed by the CA" if crl is not None else ""),
        "entries": f"{n} entries",
        "checkpoint-signatures": f"{len(log.checkpoints)} checkpoints",
        "checkpoint-roots": f"latest checkpoint covers all {n} entries",
        "consistency": f"{max(len(log.checkpoints) - 1, 0)} consecutive pairs",
        "trusted-checkpoints": f"{len(trusted)} trusted checkpoint(s), all prefixes of this log",
        "module-records": f"{len(st.modules)} modules",
        "module-signatures": f"{sum(m.signature_ok for m in modules.values())} of {len(modules)} verify",
        "dp-claims": f"{dp_done} of {dp_claims} DP claims carry their parameters and were re-accounted",
        "deletions": f"{len(st.requests)} request(s), {deleted} deletion(s)",
        "lineage": f"{len(st.datasets)} datasets, {len(st.classifiers)} classifiers ({live} live)",
    }
    skipped = {"trusted-checkpoints": "no --trusted-checkpoint given"} if not trusted else {}
    if dp_done == 0:
        skipped["dp-claims"] = (f"none of {dp_claims} DP claims carries its parameters" if dp_claims
                                else "no module claims DP")
    return AuditResult(bundle=bundle, findings=findings.items, checks=_summaries(findings, skipped, details),
                       log=log, replay=st, modules=modules, federation=federation, crl=crl,
                       ca_fingerprint=pki.cert_fingerprint(ca_cert) if ca_cert is not None else None,
                       trusted_count=len(trusted))
