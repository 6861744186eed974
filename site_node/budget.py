"""This site's own DP budget: its earlier releases composed with a new module before it leaves.

Under a required ``dp_policy`` the federation's ``max_epsilon`` bounds what the site's data
leaks over every module, not one: the aggregator refuses a module that takes the site over
it (``E_DP_BUDGET``), but by then the module has left the site. So the site applies the
same rule first (:func:`ffsecure.dp.check_site_budget`, the one home of the composition),
on its own records: ``STATE/modules/<id>/module.json`` keeps, for every module, its status
and the DP record it signed (``train.dp``, the manifest's ``dp``).

What counts as released: a module ``registered`` (its receipt verified), ``deleted`` (a
deletion does not take a release back), ``sealed`` (its envelope may have reached the
aggregator before the connection dropped) or ``refused`` by the aggregator (it refuses only
once it holds the envelope, which it can open: its word that it kept nothing is not
checked), also once discarded. A module ``trained`` has not left, one ``refused`` by the
site was never sealed, one ``discarded`` before it was sealed was taken out of the queue
by the operator.

``train`` judges a new module on it right after training (a module over the budget is
stored ``refused``, ``error.by = "site"``, like one that fails the privacy policy) and
``upload`` / ``run`` judge each module again before it is sealed and sent (the releases
may have changed since it was trained).
"""

from __future__ import annotations

from ffsecure.dp import DPBudgetError, DPClaim, DPClaimError, check_site_budget
from site_node.state import StateDir, state_corrupt

__all__ = ["RELEASED", "check_release", "released"]

#: The statuses of a module whose data has left the site, or may have.
RELEASED = ("sealed", "registered", "deleted")
_SHOWN_IDS = 5


def released(record) -> bool:
    """Whether ``record``'s data has left the site, or may have: a status of :data:`RELEASED`,
    ``discarded`` after it was ``sealed`` (discarding deletes only the local envelope; the
    aggregator may have registered it before the connection dropped), or ``refused`` by the
    aggregator (also once discarded): it refuses a module only after receiving its envelope,
    which it can open, so its refusal does not take the release back."""
    if record.status in RELEASED:
        return True
    if record.status in ("refused", "discarded") and (record.error or {}).get("by") == "aggregator":
        return True
    was = (record.discarded or {}).get("previous_status")
    return record.status == "discarded" and was in RELEASED


def check_release(
    state: StateDir, policy: dict, *, site_id: str, module_id: str, dp: dict | None
) -> float:
    """``E_DP_BUDGET`` unless the site's released modules composed with ``module_id`` (its DP
    record ``dp``) stay within ``policy``; returns the composed epsilon (0 when the policy is
    not required). A kept DP record that does not parse is ``E_STATE_CORRUPT``, naming it."""
    if not policy.get("required"):
        return 0.0
    earlier = [r for r in state.modules() if released(r) and r.module_id != module_id]
    records = []
    for r in earlier:
        record = r.train.get("dp") if isinstance(r.train, dict) else None
        if record is not None:
            try:
                DPClaim.from_record(record, require_parameters=True)
            except DPClaimError as exc:
                raise state_corrupt(
                    exc.message,
                    f"the DP record of module {r.module_id} "
                    f"({state.module_dir(r.module_id) / 'module.json'})",
                ) from None
        records.append(record)
    try:
        return check_site_budget([*records, dp], policy, site_id=site_id)
    except DPBudgetError as exc:
        ids = [r.module_id for r in earlier]
        shown = ", ".join(ids[:_SHOWN_IDS]) + (", ..." if len(ids) > _SHOWN_IDS else "")
        raise DPBudgetError(
            f"{exc.message}: module {module_id} with the {len(ids)} module(s) this site "
            f"has sent before ({shown}); it was not sealed or sent",
            hint="each module releases the site's data again, and deleting one does not "
            "take its release back: this module stays refused in STATE/modules and is never "
            "sent. Releasing more needs a larger dp_policy.max_epsilon from the federation "
            "operator (a new CA-signed manifest); where the earlier modules leave room, train "
            "with a lower dp.target_epsilon in site.toml",
        ) from None
