"""The trust-anchor check: everything the audit trusts comes from the CA the auditor holds.

The auditor brings the CA certificate (``--ca``), and may bring the log key
(``--log-key``) and the CA's own CRL (``--crl``). Whatever else the bundle
holds was chosen by its exporter, so each piece must be bound to the CA, and
a piece the exporter can drop or swap is a finding (an error), never a
warning on a VERIFIED bundle:

- ``ca.pem`` must be the auditor's CA (``E_AUDIT_CA_MISMATCH``).
- The log key (``log.vkey``) must be named by a ``federation.json`` that the CA
  signed, or equal the key the auditor passed with ``--log-key``
  (``E_AUDIT_LOG_KEY_UNBOUND`` when it differs; ``E_AUDIT_LOG_KEY_UNPINNED``
  when nothing binds it: a rewritten history re-signed with a fresh key
  would otherwise verify).
- The federation manifest (the policy every module is checked against, DP
  included) is the auditor's ``--federation`` if given, else the bundle's
  ``federation.json``; either must be signed by the CA. A bundle manifest whose
  signed body differs from the auditor's is ``E_AUDIT_FEDERATION`` (a looser
  policy swapped in). No manifest at all while modules are registered is
  ``E_AUDIT_NO_FEDERATION`` (:func:`check_policy_known`): dropping it would
  otherwise skip every policy check, DP included, on a VERIFIED bundle.
- After the log is replayed (:func:`check_federation_history`): the aggregator
  records the manifest it puts in force (``federation.loaded``: SHA-256 of the
  canonical signed body). The CA may have signed several manifests over time,
  so the manifest in force must be the newest one recorded
  (``E_AUDIT_FEDERATION_STALE``): an exporter putting back an older, looser,
  still CA-signed manifest would otherwise have the modules judged by it. A
  log that registers modules but records no manifest (written before the
  entry existed, or by an aggregator that skipped it) is
  ``E_AUDIT_FEDERATION_UNRECORDED`` when the manifest in force is the
  bundle's, since its exporter could then pair any signed manifest with the
  log; the auditor who passes the manifest they hold (``--federation``) vouches
  for it. Every module, one registered while an earlier manifest was in force
  included, is checked against the manifest in force, hence the newest: a
  module the policy has since outlawed is a finding, whatever was allowed when
  it was registered.
- And against the manifest in force at its registration
  (:func:`check_federation_documents`: the last ``federation.loaded`` before its
  ``module.registered``), or a newer, looser manifest the CA signed since would hide
  a module the aggregator should have refused. The log holds only that manifest's
  digest; its document comes from the bundle's ``federations/<sha256>.json``, its
  ``federation.json`` or the auditor's ``--federation``, and must verify under the
  CA and hash to the recorded digest. A manifest in force at some registration
  whose document is missing or does not verify is ``E_AUDIT_FEDERATION_HISTORY``
  (an error: its exporter could drop it to hide a breach); a federation that only
  ever recorded the manifest in force needs no ``federations/`` (an older
  aggregator's bundle). A ``federations/`` document nothing needs that does not
  verify is a warning.
- A CRL must be in force: the auditor's ``--crl`` if given, else the bundle's
  ``crl.pem``; both must be signed by the CA. No CRL at all is
  ``E_AUDIT_NO_CRL``. A CRL past its nextUpdate (``E_AUDIT_CRL_EXPIRED``) is
  a failure when it is the bundle's (the exporter may have left out a newer
  CRL the CA issued since; the ledger check below only catches a CRL older
  than one the aggregator applied) and a warning when it is the auditor's own
  ``--crl``. Within its validity the bundle's CRL is still the exporter's pick among the
  CA's CRLs: one issued since, which the aggregator never loaded, cannot be seen from the
  bundle, so the check's detail names the CRL's issue time and points to ``--crl`` (the
  bound is the CA's CRL lifetime).
- After the log is replayed (:func:`check_crl_history`): the aggregator records
  each CRL it loads (``crl.loaded``: number and SHA-256 of the DER bytes). The
  bundle's CRL, and the auditor's, must not be older than the newest one
  recorded (``E_AUDIT_CRL_OLDER``), nor differ from it under the same number
  (``E_AUDIT_CRL_MISMATCH``); every recorded CRL names the auditor's CA
  (``E_AUDIT_CRL_RECORD``); an aggregator that went back to an older CRL is a
  warning (``E_AUDIT_CRL_ROLLBACK``); and every ``cert.revoked`` the log records
  is listed by the CRL in force (``E_AUDIT_CRL_STALE``). A log with no
  ``crl.loaded`` (written before the entry existed) is checked without it.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass, field

from cryptography import x509

from ffsecure import pki
from ffsecure.audit.bundle import FEDERATIONS_DIR, Bundle
from ffsecure.audit.findings import ERROR, WARNING, Findings
from ffsecure.audit.lineage import LedgerReplay
from ffsecure.errors import FFSecureError
from ffsecure.federation import (
    HISTORY_CODE,
    MISDATED,
    UNRECORDED,
    FederationManifest,
    SignedManifest,
    in_force_at,
    newest_recorded,
    recorded_problem,
    verify_federation_json,
)
from ffsecure.records.entries import EntryType

CHECK = "trust-anchor"
CRL_OPTION = "--crl"
FEDERATION_OPTION = "--federation"
BUNDLE_CRL = "crl.pem"
BUNDLE_FEDERATION = "federation.json"


@dataclass(frozen=True)
class ManifestInForce:
    """The CA-signed manifest in force at a module's registration, and the entry recording it."""

    index: int  # the ``federation.loaded`` entry
    signed: SignedManifest

    def describe(self) -> str:
        return (
            f"ledger entry {self.index}: created {self.signed.manifest.created_at}, "
            f"sha256 {self.signed.sha256[:12]}…"
        )


@dataclass
class TrustAnchor:
    """What the trust-anchor check established, for the later checks and the report."""

    ca_cert: x509.Certificate | None
    #: the CA-signed manifest in force and its source ("--federation", "federation.json")
    signed_federation: SignedManifest | None
    federation_source: str | None
    log_key_bound_by: str | None  # "federation.json", "--log-key" or None
    crls: dict[str, x509.CertificateRevocationList]  # source ("--crl", "crl.pem") -> CA-signed CRL
    crl_source: str | None  # the source of the CRL in force
    #: (entry index, facts) of the newest ``crl.loaded``, set by :func:`check_crl_history`
    newest_recorded: tuple[int, dict] | None = None
    #: (entry index, facts) of the newest ``federation.loaded``, set by
    #: :func:`check_federation_history`
    newest_federation: tuple[int, dict] | None = None
    #: module id -> the manifest in force at its registration, where that is another manifest
    #: than the one in force now; set by :func:`check_federation_documents`
    registered_under: dict[str, list[ManifestInForce]] = field(default_factory=dict)

    @property
    def federation(self) -> FederationManifest | None:
        """The manifest every module is checked against."""
        return self.signed_federation.manifest if self.signed_federation else None

    @property
    def crl(self) -> x509.CertificateRevocationList | None:
        """The CRL in force: the auditor's ``--crl`` when given, else the bundle's."""
        return self.crls.get(self.crl_source) if self.crl_source else None

    def detail(self) -> str:
        parts = ["CA pinned"]
        if self.log_key_bound_by:
            parts.append(f"log key bound by {self.log_key_bound_by}")
        if self.crl is not None:
            number = _number(self.crl)
            shown = "?" if number is None else number
            parts.append(f"CRL {shown} ({self.crl_source}) signed by the CA")
            if self.crl_source == BUNDLE_CRL:
                # the exporter chose it among the CA's CRLs still in their validity period
                parts.append(
                    f"issued {pki.rfc3339(self.crl.last_update_utc)}, chosen by the exporter: "
                    "a revocation the CA made since may be missing (pass the CA's current "
                    "CRL with --crl)"
                )
        if self.newest_recorded is not None:
            index, facts = self.newest_recorded
            parts.append(f"newest CRL recorded in the log: {facts['crl_number']} (entry {index})")
        elif self.crl is not None:
            parts.append("the log records no CRL")
        if self.newest_federation is not None:
            parts.append(
                f"federation manifest recorded in the log (entry {self.newest_federation[0]})"
            )
        return ", ".join(parts)


def _number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return pki.crl_info(crl).number
    except FFSecureError:
        return None


def _check_ca(bundle: Bundle, ca_pem: bytes | None, findings: Findings) -> x509.Certificate | None:
    if ca_pem is None:
        if bundle.ca_pem is None:
            findings.add(
                CHECK, "E_AUDIT_CA", "no CA certificate: none given and the bundle has no ca.pem"
            )
            return None
        ca_pem = bundle.ca_pem
        findings.add(
            CHECK,
            "E_AUDIT_CA_UNPINNED",
            "checked against the bundle's own ca.pem, which the exporter chose: nothing here "
            "is verified until you pass the federation CA you hold (--ca)",
        )
    try:
        ca_cert = pki.load_cert(ca_pem)
    except FFSecureError as exc:
        findings.add(CHECK, "E_AUDIT_CA", f"the CA certificate does not parse: {exc.message}")
        return None
    if bundle.ca_pem is not None:
        try:
            same = hmac.compare_digest(
                pki.cert_fingerprint(pki.load_cert(bundle.ca_pem)), pki.cert_fingerprint(ca_cert)
            )
        except FFSecureError:
            same = False
        if not same:
            findings.add(
                CHECK,
                "E_AUDIT_CA_MISMATCH",
                "the bundle's ca.pem is not the CA you trust: this log belongs to another "
                "federation or its CA was replaced",
            )
    return ca_cert


def _load_crls(
    bundle: Bundle, crl_pem: bytes | None, ca_cert: x509.Certificate | None, findings: Findings
) -> dict[str, x509.CertificateRevocationList]:
    """Every CRL at hand that the CA signed, by source; a CRL that does not verify is a finding."""
    out: dict[str, x509.CertificateRevocationList] = {}
    for source, pem in ((CRL_OPTION, crl_pem), (BUNDLE_CRL, bundle.crl_pem)):
        if pem is None or ca_cert is None:
            continue
        try:
            crl = pki.load_crl(pem, ca_cert)
            pki.crl_info(crl)
        except FFSecureError as exc:
            findings.add(
                CHECK, "E_AUDIT_CRL", f"the CRL ({source}) is not one the CA signed: {exc.message}"
            )
            continue
        out[source] = crl
    return out


def _crl_in_force(
    crls: dict, crl_pem: bytes | None, bundle: Bundle, findings: Findings, now: dt.datetime | None
) -> str | None:
    source = CRL_OPTION if crl_pem is not None else BUNDLE_CRL
    if crl_pem is None and bundle.crl_pem is None:
        findings.add(
            CHECK,
            "E_AUDIT_NO_CRL",
            "no CRL: the bundle has no crl.pem and no --crl was given, so revoked "
            "certificates cannot be told apart; get the CA's current CRL and pass it "
            "with --crl",
        )
        return None
    crl = crls.get(source)
    if crl is not None and pki.crl_expired(crl, now):
        # The bundle's crl.pem is the exporter's choice: a lapsed one may stand in for a
        # newer CRL the CA issued since, so the verdict must not rest on it. The auditor's
        # own --crl is what the auditor chose to pin: a lapsed one is a warning.
        own = source == CRL_OPTION
        findings.add(
            CHECK,
            "E_AUDIT_CRL_EXPIRED",
            f"the CRL ({source}) is past its nextUpdate ({pki.rfc3339(crl.next_update_utc)}): "
            "certificates revoked since then are not in it"
            + (
                "; get the current CRL from the CA and pass it with --crl"
                if own
                else ", and the exporter may have left a newer one out; get the CA's "
                "current CRL and pass it with --crl"
            ),
            severity=WARNING if own else ERROR,
        )
    return source if crl is not None else None


def _load_federation(
    data: bytes | None, what: str, ca_cert: x509.Certificate, findings: Findings
) -> SignedManifest | None:
    if data is None:
        return None
    try:
        return verify_federation_json(data, ca_cert)
    except FFSecureError as exc:
        findings.add(
            CHECK,
            "E_AUDIT_FEDERATION",
            f"{what} does not verify against the CA: [{exc.code}] {exc.message}",
        )
        return None


def _federation(
    bundle: Bundle,
    ca_cert: x509.Certificate | None,
    federation_json: bytes | None,
    findings: Findings,
) -> SignedManifest | None:
    """The manifest in force: the auditor's (``--federation``) if given, else the bundle's."""
    if ca_cert is None:
        return None
    bundled = _load_federation(bundle.federation_json, BUNDLE_FEDERATION, ca_cert, findings)
    if federation_json is None:
        return bundled
    own = _load_federation(federation_json, FEDERATION_OPTION, ca_cert, findings)
    if own is not None and bundled is not None and not _same_manifest(own, bundled):
        findings.add(
            CHECK,
            "E_AUDIT_FEDERATION",
            "the bundle's federation.json is not the federation manifest you hold "
            f"({FEDERATION_OPTION}): its exporter swapped in another policy; the audit "
            "checks the modules against yours",
        )
    return own


def _same_manifest(a: SignedManifest, b: SignedManifest) -> bool:
    """The two signed bodies are the same (constant time over their SHA-256)."""
    return hmac.compare_digest(a.sha256, b.sha256)


def check_policy_known(anchor: TrustAnchor, st: LedgerReplay, findings: Findings) -> None:
    """A finding when modules are registered but no CA-signed federation manifest is in force.

    Every module's policy (DP required, max epsilon, delta, mechanism, privacy unit; generator,
    shape, classes) is checked against that manifest, so an exporter who drops ``federation.json``
    would otherwise turn every policy check off without a trace.
    """
    if anchor.federation is not None or anchor.ca_cert is None or not st.modules:
        return
    findings.add(
        "dp-claims",
        "E_AUDIT_NO_FEDERATION",
        f"{len(st.modules)} module(s) are registered but no federation manifest signed by "
        "the CA is in force, so their DP claims and policy cannot be checked against the "
        "federation's dp_policy; pass the federation.json you hold with "
        f"{FEDERATION_OPTION}",
    )


def _check_log_key(
    bundle: Bundle,
    ca_cert: x509.Certificate | None,
    log_vkey: str | None,
    findings: Findings,
    federation_json: bytes | None = None,
) -> tuple[SignedManifest | None, str | None]:
    signed = _federation(bundle, ca_cert, federation_json, findings)
    federation = signed.manifest if signed is not None else None
    vkey = bundle.vkey.strip()
    bound_by = None
    if federation is not None:
        if federation.aggregator.get("log_public_key", "").strip() != vkey:
            findings.add(
                CHECK,
                "E_AUDIT_LOG_KEY_UNBOUND",
                "log.vkey is not the log key named in the CA-signed federation manifest: "
                "the checkpoints were signed by a key the federation never approved",
            )
        else:
            bound_by = BUNDLE_FEDERATION if federation_json is None else FEDERATION_OPTION
    if log_vkey is not None:
        if log_vkey.strip() != vkey:
            findings.add(
                CHECK,
                "E_AUDIT_LOG_KEY_UNBOUND",
                "log.vkey is not the log key you pinned (--log-key)",
            )
            bound_by = None
        elif bound_by is None:
            bound_by = "--log-key"
    if federation is None and log_vkey is None:
        findings.add(
            CHECK,
            "E_AUDIT_LOG_KEY_UNPINNED",
            "nothing binds log.vkey to the CA: the bundle has no federation.json that the "
            "CA signed and no --log-key was given, so a log re-signed with any key would "
            "pass; pass the federation manifest's log_public_key with --log-key",
        )
    return signed, bound_by


def check_trust_anchor(
    bundle: Bundle,
    *,
    ca_pem: bytes | None,
    crl_pem: bytes | None,
    log_vkey: str | None,
    findings: Findings,
    now: dt.datetime | None = None,
    federation_json: bytes | None = None,
) -> TrustAnchor:
    """The checks that need no log replay; ``crl_pem``, ``log_vkey`` and ``federation_json``
    are the auditor's own."""
    ca_cert = _check_ca(bundle, ca_pem, findings)
    crls = _load_crls(bundle, crl_pem, ca_cert, findings)
    source = _crl_in_force(crls, crl_pem, bundle, findings, now)
    signed, bound_by = _check_log_key(bundle, ca_cert, log_vkey, findings, federation_json)
    return TrustAnchor(
        ca_cert=ca_cert,
        signed_federation=signed,
        federation_source=(
            None if signed is None else FEDERATION_OPTION if federation_json else BUNDLE_FEDERATION
        ),
        log_key_bound_by=bound_by,
        crls=crls,
        crl_source=source,
    )


def check_federation_history(anchor: TrustAnchor, st: LedgerReplay, findings: Findings) -> None:
    """The manifest in force against the newest manifest the log records (``federation.loaded``
    with the latest ``created_at``; :func:`_newest_federation`)."""
    signed, source = anchor.signed_federation, anchor.federation_source
    if signed is None:
        return  # no manifest in force: check_policy_known's finding when modules need one
    newest = _newest_federation(st, findings)
    anchor.newest_federation = newest
    problem = recorded_problem(signed, newest, len(st.modules))
    if problem is None:
        return
    if problem == UNRECORDED:
        if source == BUNDLE_FEDERATION:
            findings.add(
                CHECK,
                "E_AUDIT_FEDERATION_UNRECORDED",
                f"{len(st.modules)} module(s) are registered but the log records no "
                "federation manifest (federation.loaded), so nothing ties the bundle's "
                "federation.json to the policy the aggregator enforced: its exporter could "
                "have paired any manifest the CA ever signed with this log; pass the "
                f"federation.json you hold with {FEDERATION_OPTION}",
            )
        return
    assert newest is not None  # only UNRECORDED comes without a recorded manifest
    index, facts = newest
    if problem == MISDATED:
        findings.add(
            CHECK,
            "E_AUDIT_FEDERATION_STALE",
            f"{source} is the manifest recorded at ledger entry {index}, but that entry "
            f"dates it {facts['created_at']} and the CA signed it as created "
            f"{signed.manifest.created_at}: the log misdates the manifest in force, so "
            "which recorded manifest is the newest cannot be told",
            entry=index,
            entry_type=EntryType.FEDERATION_LOADED,
        )
        return
    fix = (
        "the bundle carries an older or different CA-signed manifest; pass the manifest "
        f"you hold with {FEDERATION_OPTION}"
        if source == BUNDLE_FEDERATION
        else "the manifest you hold is not the one the aggregator enforced; get the "
        "current federation.json from the federation operator"
    )
    findings.add(
        CHECK,
        "E_AUDIT_FEDERATION_STALE",
        f"{source} (created {signed.manifest.created_at}, sha256 {signed.sha256[:12]}…) "
        "is not the manifest the aggregator recorded last (ledger entry "
        f"{index}: created {facts['created_at']}, sha256 "
        f"{str(facts['federation_sha256'])[:12]}…): {fix}",
        entry=index,
        entry_type=EntryType.FEDERATION_LOADED,
    )


def _newest_federation(st: LedgerReplay, findings: Findings) -> tuple[int, dict] | None:
    """The newest manifest recorded (latest ``created_at``, the last on a tie), or None.

    The CA may have signed several manifests, each still valid, and a restart puts whichever
    the home holds in force. A ``federation.loaded`` dated before one recorded earlier is the
    aggregator going back to an older manifest (a warning); the manifest in force must still be
    the newest, or an older, looser policy put back (at a restart, or appended at export time
    with the log key, which no trusted checkpoint catches) would judge every module.
    """
    newest, rollbacks = newest_recorded(list(st.federations))
    for (index, facts), (before, was) in rollbacks:
        findings.add(
            CHECK,
            "E_AUDIT_FEDERATION_ROLLBACK",
            f"the aggregator went back to a federation manifest created "
            f"{facts['created_at']} after the one created {was['created_at']} "
            f"(entry {before}): the newer policy was not enforced from then on",
            severity=WARNING,
            entry=index,
            entry_type=EntryType.FEDERATION_LOADED,
        )
    return newest


def _bundled_documents(
    anchor: TrustAnchor, bundle: Bundle, ca_cert: x509.Certificate
) -> tuple[dict[str, SignedManifest], dict[str, str]]:
    """Every CA-signed manifest at hand by its SHA-256, and why each bad ``federations/`` one is
    left out (by the digest its name claims)."""
    known: dict[str, SignedManifest] = {}
    if anchor.signed_federation is not None:
        known[anchor.signed_federation.sha256] = anchor.signed_federation
    if bundle.federation_json is not None:
        try:  # the trust-anchor check already reported a federation.json that does not verify
            signed = verify_federation_json(bundle.federation_json, ca_cert)
            known.setdefault(signed.sha256, signed)
        except FFSecureError:
            pass
    bad: dict[str, str] = {}
    for digest, data in sorted(bundle.federations.items()):
        try:
            signed = verify_federation_json(data, ca_cert)
        except FFSecureError as exc:
            bad[digest] = f"it does not verify against the CA: [{exc.code}] {exc.message}"
            continue
        if not hmac.compare_digest(signed.sha256, digest):
            bad[digest] = f"its signed body hashes to {signed.sha256[:12]}…, not to its name"
            continue
        known.setdefault(digest, signed)
    return known, bad


def _needed_manifests(st: LedgerReplay) -> dict[int, tuple[dict, list[str]]]:
    """Each ``federation.loaded`` in force at some registration: its facts and those modules."""
    registered = {ms.registered_index: mid for mid, ms in st.modules.items()}
    needed: dict[int, tuple[dict, list[str]]] = {}
    for at, bound in in_force_at(list(st.federations), sorted(registered)).items():
        for index, facts in bound:
            needed.setdefault(index, (facts, []))[1].append(registered[at])
    return needed


def check_federation_documents(
    anchor: TrustAnchor, bundle: Bundle, st: LedgerReplay, findings: Findings
) -> None:
    """The manifest in force at each module's registration, from the documents at hand.

    Sets ``anchor.registered_under`` for the modules registered under another manifest than
    the one in force; a needed manifest whose document is missing, does not verify, or that
    the log misdates is ``E_AUDIT_FEDERATION_HISTORY`` (an error), a ``federations/`` document
    nothing needs that does not verify, a warning.
    """
    if anchor.ca_cert is None:
        return
    known, bad = _bundled_documents(anchor, bundle, anchor.ca_cert)
    current = anchor.signed_federation.sha256 if anchor.signed_federation else None
    needed = _needed_manifests(st)
    for index, (facts, module_ids) in sorted(needed.items()):
        digest = str(facts["federation_sha256"])
        signed = known.get(digest)
        problem = _history_problem(digest, facts, signed, bad)
        if problem is not None:
            findings.add(
                CHECK,
                HISTORY_CODE,
                f"the federation manifest recorded at ledger entry {index} (created "
                f"{facts['created_at']}, sha256 {digest[:12]}…) was in force when module(s) "
                f"{', '.join(sorted(module_ids))} were registered, but {problem}: they "
                "cannot be checked against the policy the aggregator had to enforce; export "
                f"the bundle again from an aggregator that keeps {FEDERATIONS_DIR}/, or get "
                "that manifest from the federation operator",
                entry=index,
                entry_type=EntryType.FEDERATION_LOADED,
            )
            continue
        assert signed is not None  # no problem: its document is at hand
        if current is not None and hmac.compare_digest(digest, current):
            continue  # every module is checked against the manifest in force anyway
        for module_id in module_ids:
            anchor.registered_under.setdefault(module_id, []).append(ManifestInForce(index, signed))
    needed_digests = {str(facts["federation_sha256"]) for facts, _ in needed.values()}
    for digest, why in sorted(bad.items()):
        if digest not in needed_digests:
            findings.add(
                CHECK,
                HISTORY_CODE,
                f"{FEDERATIONS_DIR}/{digest}.json is left out: {why}",
                severity=WARNING,
            )


def _history_problem(
    digest: str, facts: dict, signed: SignedManifest | None, bad: dict[str, str]
) -> str | None:
    """Why the document of a needed manifest is not at hand, or None."""
    if signed is None and digest in bad:
        return f"{FEDERATIONS_DIR}/{digest}.json is not that manifest ({bad[digest]})"
    if signed is None:
        return (
            f"the bundle holds no document of it ({FEDERATIONS_DIR}/{digest}.json, "
            f"{BUNDLE_FEDERATION} or {FEDERATION_OPTION})"
        )
    if signed.manifest.created_at != facts["created_at"]:
        return f"the CA signed that manifest as created {signed.manifest.created_at}"
    return None


def _recorded_history(
    anchor: TrustAnchor, st: LedgerReplay, findings: Findings
) -> tuple[int, dict] | None:
    """The newest (highest-numbered) ``crl.loaded``; findings for foreign or backward records."""
    newest: tuple[int, dict] | None = None
    ca_fp = pki.cert_fingerprint(anchor.ca_cert) if anchor.ca_cert is not None else None
    for index, facts in st.crls:
        where = dict(entry=index, entry_type=EntryType.CRL_LOADED)
        if ca_fp is not None and not hmac.compare_digest(str(facts["issuer_sha256"]), ca_fp):
            findings.add(
                CHECK,
                "E_AUDIT_CRL_RECORD",
                f"the log records loading CRL {facts['crl_number']} of another CA "
                f"(issuer {str(facts['issuer_sha256'])[:12]}…)",
                **where,
            )
        if newest is not None and facts["crl_number"] < newest[1]["crl_number"]:
            findings.add(
                CHECK,
                "E_AUDIT_CRL_ROLLBACK",
                f"the aggregator went back to CRL {facts['crl_number']} after CRL "
                f"{newest[1]['crl_number']} (entry {newest[0]}): revocations made in "
                "between were not applied from then on",
                severity=WARNING,
                **where,
            )
        if newest is None or facts["crl_number"] >= newest[1]["crl_number"]:
            newest = (index, facts)
    return newest


def _same_hash(sha256: str, facts: dict) -> bool:
    return hmac.compare_digest(sha256, str(facts["crl_sha256"]))


def check_crl_history(anchor: TrustAnchor, st: LedgerReplay, findings: Findings) -> None:
    """Each CRL at hand against the newest CRL the log records the aggregator loading."""
    newest = anchor.newest_recorded = _recorded_history(anchor, st, findings)
    if newest is None:
        return
    index, facts = newest
    where = dict(entry=index, entry_type=EntryType.CRL_LOADED)
    for source, crl in anchor.crls.items():
        info = pki.crl_info(crl)
        if info.number < facts["crl_number"]:
            findings.add(
                CHECK,
                "E_AUDIT_CRL_OLDER",
                f"the CRL ({source}) is CRL number {info.number}, older than CRL number "
                f"{facts['crl_number']} that the aggregator recorded loading at entry "
                f"{index}: revocations since are hidden; get the CA's current CRL (--crl)",
                **where,
            )
        elif info.number == facts["crl_number"] and not _same_hash(info.sha256, facts):
            findings.add(
                CHECK,
                "E_AUDIT_CRL_MISMATCH",
                f"the CRL ({source}) has number {info.number} but not the bytes recorded "
                f"at entry {index} (sha256 {str(facts['crl_sha256'])[:12]}…)",
                **where,
            )


def check_revocations_listed(anchor: TrustAnchor, st: LedgerReplay, findings: Findings) -> None:
    """Every ``cert.revoked`` of the log is listed by the CRL in force."""
    crl = anchor.crl
    if crl is None:
        return
    for i, entry in st.revocations:
        serial = str(entry["facts"]["serial"])
        try:
            number = int(serial, 16)
        except ValueError:
            findings.add(
                CHECK,
                "E_AUDIT_CRL_STALE",
                f"cert.revoked serial {serial!r} is not hex",
                entry=i,
                entry_type=EntryType.CERT_REVOKED,
                severity=WARNING,
            )
            continue
        if crl.get_revoked_certificate_by_serial_number(number) is None:
            findings.add(
                CHECK,
                "E_AUDIT_CRL_STALE",
                f"the log records revoking certificate {serial} but the CRL "
                f"({anchor.crl_source}) does not list it: the CRL is older than the log; "
                "get the current one from the CA (--crl)",
                entry=i,
                entry_type=EntryType.CERT_REVOKED,
            )
