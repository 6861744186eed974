"""Module checks: each registered module's public record, manifest signature and policy.

A module is checked as docs/audit-bundle.md says: its record's package bytes are
what it claims, its canonical manifest hashes to the ``manifest_sha256`` of its
``module.registered`` entry, and the signature verifies under the site
certificate, which chains to the auditor's CA and was valid and not revoked,
per the CRL, at the manifest's creation time (docs/pki.md: a ``key_compromise``
revocation reaches back to every signature, a ``superseded`` one only from its
date), with the manifest made no later than its registration; the certificate must be
the one whose fingerprint the entry records (``cert_fingerprint``). A failure is an
error, deleted module or not: the aggregator keeps a deleted module's signed package,
so the only excused failure (a warning) is a deleted module whose recorded certificate
was revoked after its registration and that verifies in every other respect. "After its
registration" must rest on evidence the exporter cannot write: the entry's time is the
aggregator's clock, so the registration must also have been seen, by the revocation
date, by a quorum of the auditor's witnesses (:class:`~ffsecure.audit.witnesses.WitnessDating`:
their cosignatures on a checkpoint holding the entry); without witnesses, or when they saw
it later, the failure is an error (an aggregator that took a module of an already revoked
key could otherwise backdate its registration, delete it, and read VERIFIED).

The record's ``signature`` and ``cert_chain_pem`` are the exporter's bytes, the
manifest is bound by the log. So whenever the manifest hashes to the entry's
``manifest_sha256``, whatever its signature does, it is what the aggregator
registered, and every check that reads it runs (the DP re-accounting and site budgets
below too): with the federation manifest, the module's generator, image shape,
classes and DP claim against the federation's policy, and its signed privacy report
against the federation's privacy policy (:func:`ffsecure.privacy.policy.check_module`,
the check the aggregator runs at registration: under a DP claim a threshold on a
figure the report does not state is covered by the claim only when the federation's
``dp_policy`` bounds DP claims: ``max_epsilon`` and ``delta``). Both policies are read
from the CA-signed federation manifest the audit verified, never from anything else in
the bundle, so an exporter cannot make a DP claim cover figures by swapping a policy.

A module registered while another manifest was in force is checked against that one too
(``registered_under``, :func:`ffsecure.audit.anchor.check_federation_documents`): a newer,
looser manifest must not pass a module the aggregator should have refused when it came.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509

from ffsecure import canonical, pki
from ffsecure.audit.anchor import ManifestInForce
from ffsecure.audit.bundle import ModuleRecord
from ffsecure.audit.findings import WARNING, Findings
from ffsecure.audit.lineage import LedgerReplay, ModuleState
from ffsecure.audit.witnesses import LAST_RFC3339, WitnessDating
from ffsecure.dp import DPBudgetError, DPClaim, DPClaimError, check_site_budget, reaccount_claim
from ffsecure.errors import FFSecureError
from ffsecure.federation import FederationManifest
from ffsecure.package import ModuleManifest, check_policy, verify_package_meta
from ffsecure.privacy.policy import check_module as check_privacy_policy
from ffsecure.records.entries import EntryType


@dataclass
class ModuleCheck:
    """What the report shows per module."""

    module_id: str
    site_id: str
    manifest: dict | None
    signature_ok: bool
    problem: str | None
    cert_serial: str | None
    revoked: str | None
    dp_recomputed: float | None = None


def _cert_serial(package: dict) -> tuple[x509.Certificate | None, str | None]:
    try:
        cert = pki.load_certs(package["cert_chain_pem"].encode("ascii"), max_count=1)[0]
    except (FFSecureError, KeyError, AttributeError, UnicodeEncodeError, TypeError):
        return None, None
    return cert, pki.serial_hex(cert.serial_number)


def _is_recorded(manifest_sha: str, facts: dict) -> bool:
    """Whether the record's manifest is the one the ``module.registered`` entry hashes."""
    recorded = facts.get("manifest_sha256")
    return isinstance(recorded, str) and hmac.compare_digest(
        manifest_sha.encode(), recorded.encode()
    )


def _recorded_cert_problem(cert: x509.Certificate | None, facts: dict) -> str | None:
    """Why the package's certificate is not the one its ``module.registered`` entry records.

    The aggregator writes ``cert_fingerprint`` (SHA-256 of the certificate's DER) into every
    module entry; ``signature`` and ``cert_chain_pem`` of the exported record are the
    exporter's bytes, so the log's fingerprint is what binds the certificate.
    """
    recorded = facts.get("cert_fingerprint")
    if not isinstance(recorded, str):
        return "its ledger entry records no cert_fingerprint, so nothing binds its certificate"
    if cert is None:
        return "its package certificate cannot be read to compare with the entry's cert_fingerprint"
    fingerprint = pki.cert_fingerprint(cert)
    if not hmac.compare_digest(fingerprint.encode(), recorded.encode()):
        return (
            f"its package certificate has fingerprint {fingerprint[:12]}…, the ledger entry "
            f"records cert_fingerprint {recorded[:12]}…: the certificate was swapped"
        )
    return None


def _policy_failure(manifest: dict, federation: FederationManifest) -> FFSecureError | None:
    """The federation and privacy policy checks the aggregator runs at registration."""
    try:
        parsed = ModuleManifest.from_dict(manifest)
        check_policy(parsed, federation)
        check_privacy_policy(
            parsed.privacy_report,
            parsed.dp,
            federation.privacy_policy,
            dp_policy=federation.dp_policy,
        )
    except FFSecureError as exc:
        return exc
    return None


def _undated(ms: ModuleState, seen: int | None, dating: WitnessDating | None) -> str:
    """Why a revocation "after registration" is not taken: the registration time is the
    aggregator's own word, and the witnesses do not date it before the revocation."""
    clock = (
        f"; its registration time {ms.time} is the aggregator's own clock, which the "
        "exporter writes"
    )
    if dating is None:
        return (
            f"{clock}, and no witness dates it: pass --witness-key with the federation's "
            "witnesses, whose cosignatures on a checkpoint holding the entry show when it "
            "was registered"
        )
    if seen is None:
        return f"{clock}, and no quorum of your witnesses cosigned a checkpoint holding its entry"
    # a witness signs a u64: past 9999 no datetime holds it (and it is after any revocation)
    when = (
        pki.rfc3339(dt.datetime.fromtimestamp(seen, dt.UTC))
        if seen <= LAST_RFC3339
        else f"POSIX time {seen}"
    )
    return (
        f"{clock}, and a quorum of your witnesses first cosigned a checkpoint holding its "
        f"entry at {when}, after the revocation"
    )


def _check_signature(
    ms: ModuleState,
    package_bytes: bytes,
    findings: Findings,
    *,
    ca_cert: x509.Certificate,
    crl: x509.CertificateRevocationList | None,
    revoked_at: dt.datetime | None,
    cert_recorded: bool,
    dating: WitnessDating | None,
) -> str | None:
    """Verify the package at its registration; the problem, or None when it verifies.

    A failure is an error, with one exception: a deleted module whose certificate, the one
    its entry records, was revoked at or after its registration and that verifies in every
    other respect (checked again without the CRL) is a warning, when ``dating`` (the
    auditor's witnesses) shows the registration seen by the revocation date. The aggregator
    keeps a deleted module's signed package, so any other failure means the exported bytes
    are not the ones it registered.
    """
    registered_at = pki.parse_rfc3339(ms.time)  # a validated entry time: the aggregator's
    try:
        verify_package_meta(package_bytes, ca_cert=ca_cert, crl=crl, now=registered_at)
        return None
    except FFSecureError as exc:
        failure = exc
    revoked_cert = isinstance(failure, pki.CertRevokedError)
    revoked_late = revoked_cert and revoked_at is not None and revoked_at >= registered_at
    seen = dating.seen_by(ms.registered_index) if dating is not None and revoked_late else None
    witnessed = seen is not None and revoked_at is not None and seen <= revoked_at.timestamp()
    deleted = ms.deleted_index is not None
    excused = deleted and revoked_late and witnessed and cert_recorded
    if excused:
        try:
            verify_package_meta(package_bytes, ca_cert=ca_cert, crl=None, now=registered_at)
        except FFSecureError as exc:
            failure, revoked_cert, excused = exc, False, False
    code = "E_AUDIT_MODULE_REVOKED" if revoked_cert else "E_AUDIT_MODULE_SIGNATURE"
    tail = (
        f"; it was deleted at entry {ms.deleted_index}"
        if deleted
        else "; it is still active and should be deleted"
    )
    if revoked_cert and revoked_at is not None:
        when = pki.rfc3339(revoked_at)
        tail = (
            f" (revoked {when}, at or after its registration at {ms.time}: "
            f"the revocation reaches back to every signature of that key){tail}"
            if revoked_late
            else f" (revoked {when}, before its registration at {ms.time}: "
            f"the aggregator should have refused it){tail}"
        )
    if deleted and not excused:
        tail += (
            ", but the aggregator keeps a deleted module's signed package, so only a "
            "revocation after registration of the certificate its entry records excuses it"
        )
        if revoked_late and cert_recorded:
            tail += _undated(ms, seen, dating)
    findings.add(
        "module-signatures",
        code,
        f"module {ms.module_id} of site {ms.site_id} does not verify: "
        f"[{failure.code}] {failure.message}{tail}",
        severity=WARNING if excused else "error",
        entry=ms.registered_index,
        entry_type=EntryType.MODULE_REGISTERED,
        module_id=ms.module_id,
    )
    return f"{failure.code}: {failure.message}"


def check_modules(
    records: dict[str, ModuleRecord],
    entries: list[dict | None],
    st: LedgerReplay,
    findings: Findings,
    *,
    ca_cert: x509.Certificate | None,
    crl: x509.CertificateRevocationList | None,
    federation: FederationManifest | None,
    registered_under: Mapping[str, Sequence[ManifestInForce]] | None = None,
    dating: WitnessDating | None = None,
) -> dict[str, ModuleCheck]:
    """Check every registered module's record, signature and policy (``federation``: the
    manifest in force; ``registered_under``: the one in force at a module's registration,
    where that is another; ``dating``: when the auditor's witnesses saw each entry)."""
    out: dict[str, ModuleCheck] = {}
    earlier = registered_under or {}
    for mid, ms in st.modules.items():
        where = dict(
            entry=ms.registered_index, entry_type=EntryType.MODULE_REGISTERED, module_id=mid
        )
        rec = records.get(mid)
        if rec is None:
            findings.add(
                "module-records",
                "E_AUDIT_MODULE_RECORD",
                f"module {mid} is registered but the bundle has no modules/{mid}.json",
                **where,
            )
            out[mid] = ModuleCheck(mid, ms.site_id, None, False, "no public record", None, None)
            continue
        if rec.record is None:
            findings.add(
                "module-records",
                "E_AUDIT_MODULE_RECORD",
                f"modules/{mid}.json is not canonical JSON: {rec.error}",
                **where,
            )
            out[mid] = ModuleCheck(mid, ms.site_id, None, False, "unreadable record", None, None)
            continue
        r = rec.record
        package, manifest = r.get("package"), None
        problems = []
        if not isinstance(package, dict) or not isinstance(package.get("manifest"), dict):
            findings.add(
                "module-records",
                "E_AUDIT_MODULE_RECORD",
                f"modules/{mid}.json has no package with a manifest",
                **where,
            )
            out[mid] = ModuleCheck(mid, ms.site_id, None, False, "no signed package", None, None)
            continue
        manifest = package["manifest"]
        try:
            package_bytes = canonical.dumps(package)
            manifest_sha = hashlib.sha256(canonical.dumps(manifest)).hexdigest()
        except FFSecureError as exc:
            findings.add(
                "module-records",
                "E_AUDIT_MODULE_RECORD",
                f"modules/{mid}.json package cannot be encoded canonically: {exc.message}",
                **where,
            )
            out[mid] = ModuleCheck(mid, ms.site_id, manifest, False, "bad package", None, None)
            continue
        package_b64 = r.get("package_b64")
        raw_package = (
            canonical.b64decode_canonical(package_b64) if isinstance(package_b64, str) else None
        )
        if raw_package is None:
            problems.append("package_b64 is not canonical base64")
        elif raw_package != package_bytes:
            problems.append("package_b64 is not the canonical bytes of package")
        f = ms.facts
        if manifest_sha != f.get("manifest_sha256"):
            problems.append(
                f"its manifest hashes to {manifest_sha[:12]}…, the ledger entry says "
                f"{str(f.get('manifest_sha256'))[:12]}…"
            )
        if r.get("manifest_sha256") != f.get("manifest_sha256"):
            problems.append("the record's manifest_sha256 differs from the ledger entry's")
        for key in ("module_id", "site_id", "weights_sha256"):
            if manifest.get(key) != f.get(key):
                problems.append(
                    f"manifest {key} {manifest.get(key)!r} differs from the ledger entry's "
                    f"{f.get(key)!r}"
                )
        if r.get("registered_index") != ms.registered_index:
            problems.append(
                f"registered_index {r.get('registered_index')!r} is not entry {ms.registered_index}"
            )
        status = "deleted" if ms.deleted_index is not None else "active"
        if r.get("status") != status or r.get("deleted_index") != ms.deleted_index:
            problems.append(
                f"record says {r.get('status')!r} (deleted_index {r.get('deleted_index')!r}), "
                f"the ledger says {status} (deleted_index {ms.deleted_index!r})"
            )
        for p in problems:
            findings.add("module-records", "E_AUDIT_MODULE_RECORD", f"module {mid}: {p}", **where)

        cert, serial = _cert_serial(package)
        cert_problem = _recorded_cert_problem(cert, f)
        if cert_problem is not None:
            findings.add(
                "module-records", "E_AUDIT_MODULE_RECORD", f"module {mid}: {cert_problem}", **where
            )
        revoked = revoked_at = None
        if cert is not None and crl is not None:
            rc = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if rc is not None:
                revoked_at = rc.revocation_date_utc
                try:
                    revoked = rc.extensions.get_extension_for_class(
                        x509.CRLReason
                    ).value.reason.value
                except x509.ExtensionNotFound:
                    revoked = "unspecified"
        problem = None
        ok = False
        if ca_cert is None:
            problem = "no CA to check against"
        else:
            problem = _check_signature(
                ms,
                package_bytes,
                findings,
                ca_cert=ca_cert,
                crl=crl,
                revoked_at=revoked_at,
                cert_recorded=cert_problem is None,
                dating=dating,
            )
            ok = problem is None
        # the manifest in force now, then each that bound the registration
        bound = [] if federation is None else [(federation, "the federation policy")]
        bound += [
            (
                under.signed.manifest,
                f"a federation manifest that bound its registration ({under.describe()})",
            )
            for under in earlier.get(mid, ())
        ]
        for in_force, which in bound if _is_recorded(manifest_sha, f) else ():
            failure = _policy_failure(manifest, in_force)
            if failure is not None:
                problem = f"{failure.code}: {failure.message}"
                findings.add(
                    "module-signatures",
                    "E_AUDIT_MODULE_POLICY",
                    f"module {mid} breaks {which}: [{failure.code}] {failure.message}",
                    **where,
                )
        out[mid] = ModuleCheck(mid, ms.site_id, manifest, ok, problem, serial, revoked)

    for mid, rec in records.items():
        if mid not in st.modules:
            idx = rec.record.get("registered_index") if rec.record else None
            findings.add(
                "module-records",
                "E_AUDIT_MODULE_RECORD",
                f"modules/{mid}.json has no module.registered entry in the log",
                module_id=mid,
                entry=idx if isinstance(idx, int) and 0 <= idx < len(entries) else None,
            )
    return out


def check_dp_claims(
    checked: dict[str, ModuleCheck], st: LedgerReplay, findings: Findings
) -> tuple[int, int]:
    """Re-account every DP claim; returns (re-accounted, claims).

    The epsilon in a manifest is the site's claim. The manifest must also carry the
    noise multiplier, sample rate and step count (the training report does; the
    aggregator refuses a claim without them), and the epsilon those parameters spend is
    recomputed with the same Opacus accountant, under the bounds and time budget the
    aggregator applies at registration (``ffsecure.dp.reaccount_claim``); a claim below it
    understates the privacy loss. A claim that lacks its parameters, is malformed, out of
    bounds or cannot be re-accounted is a finding on its module, never a crash: a
    registered claim nobody can check is no claim.
    """
    claims = done = 0
    for mid, mc in checked.items():
        dp = (mc.manifest or {}).get("dp")
        if dp is None:
            continue
        claims += 1
        ms = st.modules[mid]
        where = {
            "entry": ms.registered_index,
            "entry_type": EntryType.MODULE_REGISTERED,
            "module_id": mid,
        }
        try:
            result = reaccount_claim(dp, require_parameters=True)
        except DPClaimError as exc:
            findings.add(
                "dp-claims",
                "E_AUDIT_DP_CLAIM",
                f"module {mid} of site {ms.site_id}: [{exc.code}] {exc.message}",
                **where,
            )
            continue
        assert result is not None  # require_parameters
        done += 1
        mc.dp_recomputed = eps = result.epsilon_recomputed
        if result.understated:
            c = result.claim
            findings.add(
                "dp-claims",
                "E_AUDIT_DP_CLAIM",
                f"module {mid} of site {ms.site_id} claims epsilon {c.epsilon:g} but its own "
                f"parameters (noise {c.noise_multiplier:g}, sample rate {c.sample_rate:g}, "
                f"{c.steps} steps, delta {c.delta:g}) spend epsilon {eps:.6g}",
                **where,
            )
    return done, claims


def _parsed_record(mc: ModuleCheck) -> dict | None:
    """The module's DP record when it parses as a full claim (else its finding is elsewhere)."""
    record = (mc.manifest or {}).get("dp")
    try:
        DPClaim.from_record(record, require_parameters=True)
    except DPClaimError:
        return None
    return record


def check_site_budgets(
    checked: dict[str, ModuleCheck],
    st: LedgerReplay,
    federation: FederationManifest | None,
    findings: Findings,
    registered_under: Mapping[str, Sequence[ManifestInForce]] | None = None,
) -> None:
    """Wherever a DP policy bounds DP claims (required or not), every site's DP claims
    together stay within ``max_epsilon``.

    Each module is a release of its site's data; deleted ones count (their release
    happened). The site's claims are composed in registration order by the aggregator's
    rule (``ffsecure.dp.check_site_budget``, which also says which policies it applies
    under), under the manifest in force (``federation``) and, for a module registered under
    another one (``registered_under``), under that one too; the module whose registration
    took the site over a policy is the finding. Modules with no or an unparsable claim are
    left out here: without DP, one has its own finding under a required policy
    (``module-signatures`` on a recorded manifest, ``module-records`` on any other) and is
    judged by its privacy figures under one that is not; an unparsable claim is a
    ``dp-claims`` finding.
    """
    earlier = registered_under or {}
    by_site: dict[str, list[tuple[int, str, dict]]] = {}
    for mid, mc in checked.items():
        record = _parsed_record(mc)
        if record is not None:
            ms = st.modules[mid]
            by_site.setdefault(ms.site_id, []).append((ms.registered_index, mid, record))
    for site_id, modules in sorted(by_site.items()):
        modules.sort(key=lambda item: item[0])
        for k, (index, mid, _record) in enumerate(modules):
            records = [r for _i, _m, r in modules[: k + 1]]
            failure = _budget_failure(records, site_id, federation, earlier.get(mid, ()))
            if failure is not None:
                findings.add(
                    "dp-claims",
                    "E_AUDIT_DP_BUDGET",
                    f"module {mid}: {failure}",
                    entry=index,
                    entry_type=EntryType.MODULE_REGISTERED,
                    module_id=mid,
                )
                break


def _budget_failure(
    records: list[dict],
    site_id: str,
    federation: FederationManifest | None,
    bound: Sequence[ManifestInForce],
) -> str | None:
    """Why ``records`` break the budget of the manifest in force or of one that bound the
    last one's registration (``bound``), or None."""
    policies = [] if federation is None else [(federation.dp_policy, "")]
    for under in bound:
        policies.append(
            (
                under.signed.manifest.dp_policy,
                f" (a federation manifest that bound its registration, {under.describe()})",
            )
        )
    for policy, which in policies:
        try:
            check_site_budget(records, policy, site_id=site_id)
        except (DPBudgetError, DPClaimError) as exc:
            return f"[{exc.code}] {exc.message}{which}"
    return None
