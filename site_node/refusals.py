"""An aggregator's refusal, checked by the site against its own re-run of the same check.

The aggregator refuses a module only after it has received the whole envelope, which it can
open; nothing it signs records that it holds the module, so no deletion or audit covers that
copy. Its code, message and hint are its own words: a hostile aggregator could refuse a
compliant module with a made-up reason and a hint ("retrain with more epochs and DP off")
to be sent a second, differently trained release while it keeps the first.

Several of its checks are pure functions of what the site holds itself: the signed package
it sent (``STATE/modules/<id>/package.ffpk``, the bytes :func:`site_node.sync.seal_for_upload`
sealed), the CA-signed federation manifest and the site's own records. For a refusal with
one of those codes, :func:`recheck` runs the aggregator's registration steps
(:mod:`aggregator.registration`) in the aggregator's order, each through the library
function the aggregator calls, up to and including the step behind the code:

1. federation policy (``E_POLICY_SHAPE``, ``E_POLICY_GENERATOR``, ``E_POLICY_CLASSES``,
   ``E_POLICY_DP``): :func:`ffsecure.package.check_policy`;
2. privacy policy (``E_PRIVACY_POLICY``): :func:`ffsecure.privacy.policy.check_module`;
3. DP claim (``E_DP_CLAIM``): :func:`ffsecure.dp.check_claim`;
4. DP budget (``E_DP_BUDGET``): :func:`site_node.budget.federation_rule`, the aggregator's
   composition over every module of this site it may hold (a superset of what it
   registered, so a pass here is a pass there).

The verdict (:class:`Verdict`): ``agrees`` when a step refuses the package (the site's own
words are kept as the finding), ``contradicts`` when every step passes, ``not_rerun`` for
any other code (signature, certificate, duplicate: the site cannot re-run those) or when
the stored package cannot be read. A federation that replaced its manifest may run the
aggregator under a manifest the site has not installed yet, so before a contradiction
stands the site asks the aggregator for the manifest it serves (verified under the CA): if
it is a manifest of the same federation and a step refuses under it with the refusal's
own code, the refusal agrees, and the finding names both manifests: a newer one is to be
installed; an older one is what an aggregator not yet restarted with the current manifest
runs (it puts a manifest in force at start), or what a hostile one serves (the CA may have
signed older, stricter ones), and the finding says both. Otherwise, or if it cannot be
fetched, the contradiction stands and the finding says so. An ``E_DP_ACCOUNTING_TIMEOUT``
refusal is not re-run (a busy aggregator runs out of time on sound claims; the site retries
it), and a re-run whose own accounting times out decides nothing (``not_rerun``).

A contradicted refusal is aggregator misbehaviour: :class:`RefusalContradictedError`
(``E_REFUSAL_CONTRADICTED``) carries the site's finding as its message, an ALARM hint, and
the aggregator's code, message and hint apart, as its words (``aggregator``), never as
advice. Nothing is retrained or sent again on the site's behalf. The re-run reads and
writes nothing but the package and the records; the only call it makes is the manifest's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ffsecure.dp import DPAccountingTimeoutError
from ffsecure.dp import check_claim as check_dp_claim
from ffsecure.errors import FFSecureError, VerificationError
from ffsecure.federation import FederationManifest
from ffsecure.package import ModuleManifest, SignedPackage, check_policy
from ffsecure.privacy.policy import check_module as check_privacy_policy
from ffsecure.timefmt import parse_rfc3339
from site_node.budget import federation_rule
from site_node.state import ModuleRecord, StateDir

__all__ = [
    "RERUN_CODES",
    "Recheck",
    "RefusalContradictedError",
    "Verdict",
    "contradiction",
    "is_contradicted",
    "recheck",
]


class Verdict(StrEnum):
    """What the site's own re-run of the aggregator's check says about a refusal."""

    AGREES = "agrees"  # a step refuses the package here too
    CONTRADICTS = "contradicts"  # every step behind the code passes on the package sent
    NOT_RERUN = "not_rerun"  # the site cannot re-run that check


class RefusalContradictedError(VerificationError):
    """ALARM: the aggregator refused a module for a reason the site's own check contradicts.

    ``aggregator`` holds the refusal as the aggregator worded it (code, message, hint):
    evidence, never advice."""

    code = "E_REFUSAL_CONTRADICTED"

    def __init__(self, message: str, *, hint: str, aggregator: dict[str, Any]):
        super().__init__(message, hint=hint)
        self.aggregator = aggregator

    def to_dict(self) -> dict:
        return {**super().to_dict(), "aggregator": dict(self.aggregator)}


@dataclass(frozen=True)
class _Sent:
    """What the aggregator received, as the site knows it: the manifest it signed, and whose."""

    manifest: ModuleManifest
    state: StateDir
    site_id: str


def _federation_policy(sent: _Sent, federation: FederationManifest) -> None:
    check_policy(sent.manifest, federation)


def _privacy_policy(sent: _Sent, federation: FederationManifest) -> None:
    m = sent.manifest
    check_privacy_policy(
        m.privacy_report, m.dp, federation.privacy_policy, dp_policy=federation.dp_policy
    )


def _dp_claim(sent: _Sent, _federation: FederationManifest) -> None:
    if sent.manifest.dp is not None:
        check_dp_claim(sent.manifest.dp)


def _dp_budget(sent: _Sent, federation: FederationManifest) -> None:
    federation_rule(
        sent.state,
        federation.dp_policy,
        site_id=sent.site_id,
        module_id=sent.manifest.module_id,
        dp=sent.manifest.dp,
    )


Step = Callable[[_Sent, FederationManifest], None]
#: The aggregator's registration steps the site can re-run, in the aggregator's order.
_STEPS: tuple[tuple[str, Step], ...] = (
    ("federation policy", _federation_policy),
    ("privacy policy", _privacy_policy),
    ("DP claim", _dp_claim),
    ("DP budget", _dp_budget),
)
#: A refusal code -> how many of :data:`_STEPS` lead to it (the last one is its check).
RERUN_CODES: dict[str, int] = {
    "E_POLICY_SHAPE": 1,
    "E_POLICY_GENERATOR": 1,
    "E_POLICY_CLASSES": 1,
    "E_POLICY_DP": 1,
    "E_PRIVACY_POLICY": 2,
    "E_DP_CLAIM": 3,
    "E_DP_BUDGET": 4,
}


@dataclass(frozen=True)
class Recheck:
    """The site's re-run of the check behind a refusal with ``code``; ``finding`` in the site's
    own words."""

    code: str
    verdict: Verdict
    finding: str
    checks: tuple[str, ...] = ()  # the steps re-run

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "verdict": str(self.verdict),
            "finding": self.finding,
            "checks": list(self.checks),
        }


class _Inconclusive(Exception):
    """A step of the site's own re-run could not decide (its accounting ran out of time)."""


def _first_failure(
    sent: _Sent, federation: FederationManifest, steps: tuple[tuple[str, Step], ...]
) -> tuple[str, str] | None:
    """The code and the site's words of the first step that refuses ``sent`` under
    ``federation``, or None; :class:`_Inconclusive` when a step timed out (a busy machine
    decides nothing about the claim)."""
    for name, step in steps:
        try:
            step(sent, federation)
        except DPAccountingTimeoutError as exc:
            raise _Inconclusive(f"{name}: [{exc.code}] {exc.message}") from None
        except FFSecureError as exc:
            return exc.code, f"{name}: [{exc.code}] {exc.message}"
    return None


def _newer(served: FederationManifest, own: FederationManifest) -> bool:
    """Whether ``served`` was made after ``own`` (both CA-verified, so their ``created_at``
    are RFC 3339 UTC times; the caller has checked they are of one federation)."""
    return parse_rfc3339(served.created_at) > parse_rfc3339(own.created_at)


def _served_manifest(client, trust) -> FederationManifest | str:
    """The manifest the aggregator serves, verified under the CA, or why it could not be had."""
    try:
        return client.get_federation(trust.ca_cert)
    except FFSecureError as exc:
        return f"[{exc.code}] {exc.message}"  # the client wrote any control character out


def recheck(state: StateDir, client, trust, record: ModuleRecord, exc: FFSecureError) -> Recheck:
    """Re-run, on the package this site sent for ``record``, the checks behind the aggregator's
    refusal ``exc`` (module docstring); the verdict and the site's finding."""
    try:
        return _recheck(state, client, trust, record, exc)
    except _Inconclusive as why:
        return Recheck(
            exc.code, Verdict.NOT_RERUN, f"this site's own re-run could not decide: {why}"
        )


def _recheck(state: StateDir, client, trust, record: ModuleRecord, exc: FFSecureError) -> Recheck:
    count = RERUN_CODES.get(exc.code)
    if count is None:
        return Recheck(exc.code, Verdict.NOT_RERUN, "this site cannot re-run that check")
    steps = _STEPS[:count]
    names = tuple(name for name, _ in steps)
    path = state.package_path(record.module_id)
    try:
        package = SignedPackage.from_bytes(path.read_bytes())
    except OSError as err:
        why = f"the package this site sent cannot be read ({path}: {err.strerror})"
        return Recheck(exc.code, Verdict.NOT_RERUN, why)
    except FFSecureError as err:
        why = f"the package this site stored does not parse ([{err.code}] {err.message})"
        return Recheck(exc.code, Verdict.NOT_RERUN, why)
    sent = _Sent(package.manifest, state, trust.identity.site_id)
    own = _first_failure(sent, trust.federation, steps)
    if own is not None:
        return Recheck(exc.code, Verdict.AGREES, f"this site's own {own[1]}", names)
    served = _served_manifest(client, trust)
    passed = f"this site's own check of the package it sent passes ({', '.join(names)})"
    if isinstance(served, str):
        return Recheck(
            exc.code,
            Verdict.CONTRADICTS,
            f"{passed}; the manifest the aggregator serves could not be read to compare: {served}",
            names,
        )
    if served == trust.federation:
        return Recheck(
            exc.code,
            Verdict.CONTRADICTS,
            f"{passed} under the federation manifest this site and the aggregator both hold",
            names,
        )
    if served.federation_id != trust.federation.federation_id:
        return Recheck(
            exc.code,
            Verdict.CONTRADICTS,
            f"{passed}; the manifest the aggregator serves is of federation "
            f"{served.federation_id!r}, not this site's {trust.federation.federation_id!r}",
            names,
        )
    failure = _first_failure(sent, served, steps)
    if failure is None or failure[0] != exc.code:
        under = "" if failure is None else f" (there it fails another check: {failure[1]})"
        return Recheck(
            exc.code,
            Verdict.CONTRADICTS,
            f"{passed} under this site's manifest (created {trust.federation.created_at}), "
            f"and no check gives {exc.code} under the one the aggregator serves "
            f"(created {served.created_at}){under}",
            names,
        )
    if _newer(served, trust.federation):
        return Recheck(
            exc.code,
            Verdict.AGREES,
            f"under the newer manifest the aggregator serves (created {served.created_at}), "
            f"not this site's (created {trust.federation.created_at}), the {failure[1]}; "
            "install that manifest from the federation's operator (site-node install-kit or "
            "install-cert)",
            names,
        )
    return Recheck(
        exc.code,
        Verdict.AGREES,
        f"the aggregator serves an older manifest (created {served.created_at}) than this "
        f"site's (created {trust.federation.created_at}), and under it the {failure[1]}: an "
        "aggregator puts a new manifest in force only when it restarts, so ask its operator "
        "to restart it with the current one. If it already runs the current one, the refusal "
        "is false (a hostile aggregator can serve an older manifest the CA once signed): "
        "tell the federation's auditors, whose audit names the manifest its log records",
        names,
    )


def contradiction(
    record: ModuleRecord, exc: FFSecureError, check: Recheck
) -> RefusalContradictedError:
    """The alarm for a refusal ``exc`` of ``record`` that ``check`` contradicts."""
    return RefusalContradictedError(
        f"the aggregator refused module {record.module_id} with {exc.code}, but "
        f"{check.finding}: the aggregator received the module and gave a reason this site "
        "can show is false",
        hint=(
            "ALARM: do not retrain or resend on the aggregator's word; the aggregator holds "
            "this module and no ledger entry records it. Keep STATE/modules/"
            f"{record.module_id} (package and module.json) as evidence and tell the "
            "federation's auditors; `site-node discard` records that you dealt with it"
        ),
        aggregator=exc.to_dict(),
    )


def is_contradicted(error: dict | None) -> bool:
    """Whether a module's stored ``error`` is a contradicted refusal (an alarm)."""
    return (error or {}).get("code") == RefusalContradictedError.code
