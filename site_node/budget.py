"""This site's own DP budget: what its data has spent, composed with a new module before it leaves.

Every module is a release of the site's data, and deleting one does not take its release back,
so what bounds the site is the composition of every release, not one module's epsilon. Two
rules judge it, on the site's own records (``STATE/modules/<id>/module.json`` keeps, for every
module, its status and the DP record it signed: ``train.dp``, the manifest's ``dp``):

1. **The federation's**, wherever its ``dp_policy`` bounds DP claims (``max_epsilon`` and
   ``delta`` set, required or not): ``max_epsilon`` at the policy's ``delta`` over every
   module released, or over every DP claim released where DP is not required
   (:func:`ffsecure.dp.check_site_budget`, the one home of the composition and of when it
   applies, which the aggregator applies at registration, to what it received). The
   aggregator refuses a module that breaks it (``E_DP_BUDGET``), but by then the module has
   left the site, so the site applies it first, to the same modules: those :func:`released`.
2. **The site's own**, whenever the new module carries a DP claim, required or not: every DP
   module this site has trained, whatever its status (:func:`trained_with_dp`: discarded,
   refused and not yet sent ones too), composed (:func:`ffsecure.dp.site_epsilon`) with the new
   one, stays within site.toml's ``dp.max_total_epsilon`` (:class:`site_node.config.DPLimits`;
   default ``dp.max_epsilon``, 8). A module spends the data when it is trained, not when it
   leaves: an operator who trains several candidates, reads their privacy reports and losses
   and sends the one they like has made a choice that depends on the data through every
   candidate (Papernot & Steinke 2022, "Hyperparameter tuning with Renyi differential
   privacy"), so the signed epsilon of the one sent understates the loss; the composition of
   every candidate bounds what the candidates reveal, and so whichever is chosen from them.
   The manifest's operator chooses neither the cap nor the delta: the composition is stated at
   the smallest delta any of the modules was claimed at, fixed by the site's own records, so a
   later manifest with a larger ``delta`` cannot lower what earlier modules spent. A module
   without DP is not composed (no epsilon bounds it); :func:`site_budget` names those released.

What counts as released (rule 1, and the releases without DP that :func:`site_budget` names):
a module ``registered`` (its receipt verified), ``deleted`` (a deletion does not take a
release back), ``sealed`` (its envelope may have reached the aggregator before the connection
dropped) or ``refused`` by the aggregator (it refuses only once it holds the envelope, which
it can open: its word that it kept nothing is not checked), also once discarded. A module
``trained`` has not left, one ``refused`` by the site was never sealed, one ``discarded``
before it was sealed was taken out of the queue by the operator: none of them is released, and
under DP each still counts in rule 2.

``train`` judges the planned module before training (:func:`check_plan`: nothing is trained
when it would break a rule) and the new module right after training (a module over the budget
is stored ``refused``, ``error.by = "site"``, like one that fails the privacy policy; it was
trained, so it counts in rule 2 from then on); ``upload`` / ``run`` judge each module again
before it is sealed and sent (:func:`check_release`: the site's modules may have changed since
it was trained).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ffsecure.dp import (
    CLAIM_RTOL,
    DPBudgetError,
    DPClaim,
    DPClaimError,
    check_site_budget,
    site_epsilon,
)
from site_node.config import DPLimits
from site_node.state import ModuleRecord, StateDir, state_corrupt

__all__ = [
    "RELEASED",
    "SiteBudget",
    "check_plan",
    "check_release",
    "federation_rule",
    "released",
    "site_budget",
    "trained_with_dp",
]

#: The statuses of a module whose data has left the site, or may have.
RELEASED = ("sealed", "registered", "deleted")
_SHOWN_IDS = 5
_EVERY_MODULE_SPENDS = (
    "Every DP module trained on the site's data counts, discarded and refused ones too: "
    "choosing which module to send after seeing several (their losses, their local privacy "
    "reports) depends on the data through each of them, and deleting a module does not take "
    "its release back."
)
_RAISE_KNOWINGLY = (
    "raising dp.max_total_epsilon in site.toml lets the data leak more over its life: do it "
    'only knowingly (docs/site-operator.md, "The DP budget at the site")'
)


def released(record) -> bool:
    """Whether ``record``'s data has left the site, or may have: a status of :data:`RELEASED`,
    ``discarded`` after it was ``sealed`` (discarding deletes only the local envelope; the
    aggregator may have registered it before the connection dropped), or ``refused`` by the
    aggregator (also once discarded): it refuses a module only after receiving its envelope,
    which it can open, so its refusal does not take the release back. And whatever its status
    now, any module that was ever sealed (``upload_id`` is set when it is sealed, just before
    its first upload, and never cleared): its envelope may have reached the aggregator before
    a dropped connection, so no later status (a refusal by this site, a discard) takes it back."""
    if record.status in RELEASED or record.upload_id:
        return True
    if record.status in ("refused", "discarded") and (record.error or {}).get("by") == "aggregator":
        return True
    was = (record.discarded or {}).get("previous_status")
    return record.status == "discarded" and was in RELEASED


def trained_with_dp(record: ModuleRecord) -> bool:
    """Whether ``record`` counts in the site's own rule: it carries a DP record, whatever its
    status. Training it spent the data (the module, its loss and its local privacy report
    depend on the data), whether or not it is ever sent."""
    return _dp_record(record) is not None


@dataclass(frozen=True)
class SiteBudget:
    """What this site's DP modules spent under its own rule, against its own cap."""

    epsilon: float  # every DP module trained, composed at ``delta`` (0 when there is none)
    delta: float | None  # the smallest delta any of them claims; None without DP modules
    cap: float  # site.toml dp.max_total_epsilon
    with_dp: tuple[str, ...]  # module ids of the DP modules composed: every one trained
    released_with_dp: tuple[str, ...]  # those of ``with_dp`` that left the site, or may have
    without_dp: tuple[str, ...]  # module ids released without DP: no epsilon bounds them

    @property
    def left(self) -> float:
        return max(0.0, self.cap - self.epsilon)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "max_total_epsilon": self.cap,
            "left": self.left,
            "modules_with_dp": list(self.with_dp),
            "releases_with_dp": list(self.released_with_dp),
            "releases_without_dp": list(self.without_dp),
        }


def _earlier_records(state: StateDir, module_id: str | None) -> list[ModuleRecord]:
    """The site's modules other than ``module_id``; a kept DP record that does not parse is
    ``E_STATE_CORRUPT``, naming it."""
    earlier = [r for r in state.modules() if r.module_id != module_id]
    for r in earlier:
        record = _dp_record(r)
        if record is not None:
            try:
                DPClaim.from_record(record, require_parameters=True)
            except DPClaimError as exc:
                raise state_corrupt(
                    exc.message,
                    f"the DP record of module {r.module_id} "
                    f"({state.module_dir(r.module_id) / 'module.json'})",
                ) from None
    return earlier


def _dp_record(record: ModuleRecord) -> dict | None:
    return record.train.get("dp") if isinstance(record.train, dict) else None


def _dp_records(records: Sequence[ModuleRecord]) -> list[dict]:
    """The DP records of ``records`` that have one."""
    return [dp for dp in map(_dp_record, records) if dp is not None]


def _compose(records: Sequence[dict]) -> tuple[float, float | None]:
    """The site's rule: ``records`` composed at the smallest delta any of them claims."""
    claims = [DPClaim.from_record(r, require_parameters=True) for r in records]
    known = [c for c in claims if c is not None]
    if not known:
        return 0.0, None
    delta = min(c.delta for c in known)
    return site_epsilon(known, delta), delta


def _site_budget(earlier: Sequence[ModuleRecord], limits: DPLimits) -> SiteBudget:
    with_dp = [r for r in earlier if trained_with_dp(r)]
    epsilon, delta = _compose(_dp_records(with_dp))
    return SiteBudget(
        epsilon=epsilon,
        delta=delta,
        cap=limits.max_total_epsilon,
        with_dp=tuple(r.module_id for r in with_dp),
        released_with_dp=tuple(r.module_id for r in with_dp if released(r)),
        without_dp=tuple(r.module_id for r in earlier if released(r) and not trained_with_dp(r)),
    )


def site_budget(state: StateDir, limits: DPLimits) -> SiteBudget:
    """What every DP module of this site spent, by the site's own rule (``status``)."""
    return _site_budget(_earlier_records(state, None), limits)


def _shown(ids: Sequence[str]) -> str:
    return ", ".join(ids[:_SHOWN_IDS]) + (", ..." if len(ids) > _SHOWN_IDS else "")


def _judge(
    state: StateDir,
    policy: dict,
    limits: DPLimits,
    *,
    site_id: str,
    module_id: str | None,
    dp: dict | None,
    what: str,
    outcome: str,
) -> float:
    """Both rules of the module docstring for the module ``dp`` (``what``, e.g. "module ID");
    returns the site's composed epsilon with it (0 when neither rule applies)."""
    earlier = _earlier_records(state, module_id)
    sent = [r for r in earlier if released(r)]
    records = [_dp_record(r) for r in sent]
    try:
        composed = check_site_budget([*records, dp], policy, site_id=site_id)
    except DPBudgetError as exc:
        ids = [r.module_id for r in sent]
        raise DPBudgetError(
            f"{exc.message}: {what} with the {len(ids)} module(s) this site has sent "
            f"before ({_shown(ids)}); {outcome}",
            hint=_federation_hint(records, policy),
        ) from None
    if dp is None:
        return composed
    composed, delta = _compose([*_dp_records(earlier), dp])
    if composed > limits.max_total_epsilon * (1 + CLAIM_RTOL):
        before = _site_budget(earlier, limits)
        raise DPBudgetError(
            f"this site's DP modules together would spend epsilon {composed:.4g} at delta "
            f"{delta:g}, above its own dp.max_total_epsilon {limits.max_total_epsilon:g} "
            f"(site.toml): {what} with {_trained_before(before)}; {outcome}",
            hint=f"the DP modules this site trained before spent epsilon {before.epsilon:.4g} "
            f"of its {before.cap:g} ({before.left:.4g} left). {_EVERY_MODULE_SPENDS} Where room "
            f"is left, train with a lower dp.target_epsilon; {_RAISE_KNOWINGLY}",
        )
    return composed


def _trained_before(budget: SiteBudget) -> str:
    """The DP modules composed before a new one, and how many of them never left the site."""
    unsent = len(budget.with_dp) - len(budget.released_with_dp)
    return (
        f"the {len(budget.with_dp)} DP module(s) this site has trained before "
        f"({_shown(budget.with_dp)}), {unsent} of them never sent (discarded, refused or "
        "waiting), which count all the same"
    )


def _federation_hint(records: Sequence[dict | None], policy: dict) -> str:
    """What to do when the federation's rule refuses: what the earlier modules spent of it."""
    if policy.get("required") and any(r is None for r in records):
        spent_before = "an earlier module of this site has no DP, so its data has no DP bound"
    else:
        claims = [DPClaim.from_record(r, require_parameters=True) for r in records if r is not None]
        epsilon = site_epsilon([c for c in claims if c is not None], float(policy["delta"]))
        left = max(0.0, float(policy["max_epsilon"]) - epsilon)
        spent_before = (
            f"the modules it sent before spent epsilon {epsilon:.4g} of the federation's "
            f"max_epsilon {policy['max_epsilon']:g} at delta {policy['delta']:g} "
            f"({left:.4g} left)"
        )
    return (
        "each module releases the site's data again, and deleting one does not take its "
        f"release back; {spent_before}. Releasing more needs a larger dp_policy.max_epsilon "
        "from the federation operator (a new CA-signed manifest); where the earlier modules "
        "leave room, train with a lower dp.target_epsilon in site.toml"
    )


def check_release(
    state: StateDir,
    policy: dict,
    limits: DPLimits,
    *,
    site_id: str,
    module_id: str,
    dp: dict | None,
) -> float:
    """``E_DP_BUDGET`` unless the site's other modules composed with ``module_id`` (its DP
    record ``dp``) keep both rules of the module docstring (``policy`` the federation's
    ``dp_policy``, over the modules released; ``limits`` the site's own, over every DP module
    trained); returns the site's composed epsilon (0 when
    neither rule applies: no DP claim under a policy that bounds none). A kept DP
    record that does not parse is ``E_STATE_CORRUPT``, naming it."""
    return _judge(
        state,
        policy,
        limits,
        site_id=site_id,
        module_id=module_id,
        dp=dp,
        what=f"module {module_id}",
        outcome="it was not sealed or sent",
    )


def federation_rule(
    state: StateDir, policy: dict, *, site_id: str, module_id: str, dp: dict | None
) -> float:
    """The federation's rule alone (rule 1, :func:`ffsecure.dp.check_site_budget`) for
    ``module_id`` with its DP record ``dp``, as the aggregator would judge it at registration
    from what this site knows: every released module of this site other than ``module_id``
    (the aggregator can hold no other; composing more can only spend more). ``E_DP_BUDGET``
    when it breaks the rule; returns the composed epsilon (0 where ``policy`` bounds no DP claim).
    :mod:`site_node.refusals` re-runs it against an aggregator's ``E_DP_BUDGET`` refusal."""
    sent = [r for r in _earlier_records(state, module_id) if released(r)]
    return check_site_budget([*map(_dp_record, sent), dp], policy, site_id=site_id)


def check_plan(
    state: StateDir,
    policy: dict,
    limits: DPLimits,
    *,
    site_id: str,
    plan: Callable[[], dict | None],
) -> None:
    """:func:`check_release` for a module about to be trained, before anything is trained.

    ``plan()`` gives the DP record the run would sign (its noise, sample rate and steps: what
    the composition reads; its epsilon is the target, at least the one achieved); it is called
    only when an earlier module was released or trained with DP (discarded or not), since a
    first one alone is within both rules by ``training.resolve_dp``.
    """
    earlier = _earlier_records(state, None)
    if not any(released(r) or trained_with_dp(r) for r in earlier):
        return
    _judge(
        state,
        policy,
        limits,
        site_id=site_id,
        module_id=None,
        dp=plan(),
        what="a new module at the planned epsilon",
        outcome="nothing was trained",
    )
