"""Which of a site's own modules count against its DP budget before a new one leaves it, and
the two budgets that bound them: the federation's (``max_epsilon`` at the policy's delta,
wherever the policy sets both, over the modules released) and the site's own (site.toml
``dp.max_total_epsilon``, at the smallest delta its DP modules claim, whenever the module has
DP, over every DP module the site trained, discarded ones too).

A real state directory with module records of every status; the DP-SGD claims spend, at delta
1e-5 (RDP), epsilon 3.70 alone, 4.86 twice, 5.85 three times, 7.53 five times and 8.28 six times
(6.18 six times at delta 1e-3), against max_epsilon 5 or the site's default cap 8.
"""

from __future__ import annotations

import re

import pytest

from ffsecure.dp import DPBudgetError
from ffsecure.errors import FormatError
from site_node.budget import RELEASED, check_plan, check_release, site_budget
from site_node.config import DPLimits
from site_node.state import STATUSES, ModuleRecord, StateDir
from tests.dp_records import DP_SGD_CLAIM

POLICY = {"required": True, "max_epsilon": 5.0, "delta": 1e-5}
CLAIM = DP_SGD_CLAIM  # 3.70 alone, 4.86 twice (RDP)
NEW = "f" * 32
LIMITS = DPLimits()  # the site.toml defaults: 8 per release, 8 in all
OPTIONAL = {"required": False, "max_epsilon": None, "delta": None}


def _state(tmp_path, statuses, dp=CLAIM) -> StateDir:
    state = StateDir(tmp_path / "state").ensure()
    for i, status in enumerate(statuses):
        record = ModuleRecord(
            f"{i:032x}", status, f"2026-01-0{i + 1}T00:00:00Z", [0], 10, "fp", train={"dp": dp}
        )
        state.save_module(record)
    return state


@pytest.mark.parametrize("status", STATUSES)
def test_the_federation_counts_modules_that_left_and_the_site_every_dp_module(tmp_path, status):
    state = _state(tmp_path, [status, status])
    if status in RELEASED:  # sealed: its envelope may have reached the aggregator
        with pytest.raises(DPBudgetError) as info:
            check_release(state, POLICY, LIMITS, site_id="st-mary", module_id=NEW, dp=CLAIM)
        assert info.value.code == "E_DP_BUDGET" and "5.8" in info.value.message
        assert f"{0:032x}" in info.value.message and "not sealed or sent" in info.value.message
        assert "dp_policy.max_epsilon" in info.value.hint
    else:  # trained, refused or discarded: never left, but trained on the site's data
        assert check_release(state, POLICY, LIMITS, site_id="st-mary", module_id=NEW, dp=CLAIM) == (
            pytest.approx(5.85, abs=0.01)
        )
        assert site_budget(state, LIMITS).epsilon == pytest.approx(4.86, abs=0.01)


def test_the_module_itself_counts_once_and_a_release_without_dp_or_required_dp_is_free(tmp_path):
    state = _state(tmp_path, ["registered", "sealed"])
    resumed = f"{1:032x}"  # the sealed module, sent again after an interrupted upload
    spent = check_release(state, POLICY, LIMITS, site_id="st-mary", module_id=resumed, dp=CLAIM)
    assert spent == pytest.approx(4.86, abs=0.01)
    state = _state(tmp_path, ["registered"] * 3)
    assert check_release(state, OPTIONAL, LIMITS, site_id="s", module_id=NEW, dp=None) == 0.0


def test_an_earlier_module_without_dp_or_with_a_damaged_record_is_named(tmp_path):
    with pytest.raises(DPBudgetError, match="without DP"):
        check_release(
            _state(tmp_path / "a", ["registered"], dp=None),
            POLICY,
            LIMITS,
            site_id="st-mary",
            module_id=NEW,
            dp=CLAIM,
        )
    with pytest.raises(FormatError) as info:
        check_release(
            _state(tmp_path / "b", ["deleted"], dp={**CLAIM, "steps": "many"}),
            POLICY,
            LIMITS,
            site_id="st-mary",
            module_id=NEW,
            dp=CLAIM,
        )
    assert info.value.code == "E_STATE_CORRUPT" and f"{0:032x}" in info.value.message


def test_a_sealed_module_discarded_afterwards_still_counts(tmp_path):
    """Red team: ``sealed`` counts because its envelope may have reached the aggregator, and
    discarding it deletes only the local envelope: the aggregator may have registered it, so
    its release must still count (else the site's next module leaves it over the budget)."""
    state = _state(tmp_path, ["registered", "sealed"])
    state.discard_module(f"{1:032x}", "the upload was interrupted; start over")
    assert state.load_module(f"{1:032x}").discarded["previous_status"] == "sealed"
    with pytest.raises(DPBudgetError) as info:
        check_release(state, POLICY, LIMITS, site_id="st-mary", module_id=NEW, dp=CLAIM)
    assert "5.8" in info.value.message


def test_without_a_required_policy_a_dp_release_is_composed_and_capped_by_the_site(tmp_path):
    """Red team: under ``required = false`` a site with its own ``[dp]`` released the same data
    again and again, its check saying "spent 0.0" each time. Its DP releases are composed
    whatever the policy says, and capped by its own dp.max_total_epsilon (default 8)."""
    state = _state(tmp_path / "a", ["registered"] * 4)
    composed = check_release(state, OPTIONAL, LIMITS, site_id="st-mary", module_id=NEW, dp=CLAIM)
    assert composed == pytest.approx(7.53, abs=0.01)  # five releases, not 0
    state = _state(tmp_path / "b", ["registered"] * 5)
    with pytest.raises(DPBudgetError) as info:
        check_release(state, OPTIONAL, LIMITS, site_id="st-mary", module_id=NEW, dp=CLAIM)
    message, hint = info.value.message, info.value.hint or ""
    assert info.value.code == "E_DP_BUDGET" and "8.28" in message and "delta 1e-05" in message
    assert "dp.max_total_epsilon 8" in message and "not sealed or sent" in message
    assert re.search(r"spent epsilon 7\.53 of its 8 \(0\.4\d* left\)", hint)  # spent, left
    assert "raising dp.max_total_epsilon" in hint and "knowingly" in hint
    # a site that raises its cap knowingly releases again
    roomy = DPLimits(max_epsilon=8.0, max_total_epsilon=9.0)
    assert check_release(state, OPTIONAL, roomy, site_id="s", module_id=NEW, dp=CLAIM) < 9.0


def test_a_bounded_policy_that_does_not_require_dp_still_composes_the_site_s_dp_claims(tmp_path):
    """``required = false`` with ``max_epsilon`` and ``delta``: the aggregator composes the
    site's DP claims against ``max_epsilon`` (each stands in for the privacy limits), so the
    site applies the same rule first; its modules without DP compose with nothing."""
    bounded = {**POLICY, "required": False}
    state = _state(tmp_path, ["registered", "sealed"])  # two DP releases: 4.86
    without_dp = {"dp": None}
    state.save_module(
        ModuleRecord("e" * 32, "registered", "2026-01-09T00:00:00Z", [0], 10, "fp", without_dp)
    )
    with pytest.raises(DPBudgetError) as info:
        check_release(state, bounded, LIMITS, site_id="st-mary", module_id=NEW, dp=CLAIM)
    message, hint = info.value.message, info.value.hint or ""
    assert "above the federation's max_epsilon 5" in message and "5.8" in message
    assert "3 modules with a DP claim (of 4)" in message and "not sealed or sent" in message
    assert re.search(r"spent epsilon 4\.86\d* of the federation's max_epsilon 5", hint)
    # a release without DP is allowed beside them and spends none of the DP budget
    spent = check_release(state, bounded, LIMITS, site_id="st-mary", module_id=NEW, dp=None)
    assert spent == pytest.approx(4.86, abs=0.01)


def test_under_a_required_policy_the_site_s_own_cap_binds_below_a_loose_max_epsilon(tmp_path):
    """Red team: with ``required = true, max_epsilon = 50`` (the operator's choice) the site's
    check let the same data go out again and again; the cap was never site.toml's."""
    loose = {"required": True, "max_epsilon": 50.0, "delta": 1e-5}
    state = _state(tmp_path, ["registered"] * 5)
    with pytest.raises(DPBudgetError, match=r"dp\.max_total_epsilon 8 \(site\.toml\)"):
        check_release(state, loose, LIMITS, site_id="st-mary", module_id=NEW, dp=CLAIM)
    # the federation's rule still applies first where it is the lower one (max_epsilon 5)
    with pytest.raises(DPBudgetError, match="above the federation's max_epsilon 5"):
        check_release(state, POLICY, LIMITS, site_id="st-mary", module_id=NEW, dp=CLAIM)


def test_the_site_composes_at_its_own_delta_not_the_manifest_s(tmp_path):
    """Red team: composing at the current manifest's delta let a manifest with a larger delta
    (1e-3 instead of 1e-5) lower what the earlier releases spent (8.28 -> 6.18). The site
    composes at the smallest delta its releases claim, whatever the manifest says."""
    state = _state(tmp_path, ["registered"] * 5)
    for policy in (
        {"required": True, "max_epsilon": 50.0, "delta": 1e-3},
        {"required": False, "max_epsilon": None, "delta": 1e-3},
    ):
        with pytest.raises(DPBudgetError) as info:
            check_release(state, policy, LIMITS, site_id="st-mary", module_id=NEW, dp=CLAIM)
        assert "8.28" in info.value.message and "delta 1e-05" in info.value.message
    assert site_budget(state, LIMITS).delta == 1e-5


def test_a_planned_release_over_the_budget_is_refused_before_training(tmp_path):
    state = _state(tmp_path / "a", ["registered"] * 5)
    planned = []

    def plan():
        planned.append(True)
        return CLAIM

    with pytest.raises(DPBudgetError) as info:
        check_plan(state, OPTIONAL, LIMITS, site_id="st-mary", plan=plan)
    assert "nothing was trained" in info.value.message and planned
    # a first DP module is within both budgets by resolve_dp: nothing is planned twice for it
    planned.clear()
    without_dp = _state(tmp_path / "b", ["trained", "discarded"], dp=None)
    check_plan(without_dp, OPTIONAL, LIMITS, site_id="s", plan=plan)
    assert not planned


def test_what_the_site_spent_is_its_composed_total_against_its_cap(tmp_path):
    state = _state(tmp_path, ["registered", "deleted", "trained", "refused"])
    for module_id, status in (("e" * 32, "registered"), ("d" * 32, "discarded")):
        state.save_module(
            ModuleRecord(module_id, status, "2026-01-09T00:00:00Z", [0], 10, "fp", train={})
        )
    budget = site_budget(state, DPLimits(8.0, 7.0))
    assert budget.epsilon == pytest.approx(6.72, abs=0.01) and budget.cap == 7.0  # four modules
    assert budget.left == pytest.approx(0.28, abs=0.01) and budget.delta == 1e-5
    assert budget.with_dp == tuple(f"{i:032x}" for i in range(4))
    assert budget.released_with_dp == (f"{0:032x}", f"{1:032x}")
    assert budget.without_dp == ("e" * 32,)  # a module without DP is named only once released
    assert budget.to_dict()["max_total_epsilon"] == 7.0
    assert budget.to_dict()["modules_with_dp"] == list(budget.with_dp)
    assert budget.to_dict()["releases_with_dp"] == list(budget.released_with_dp)


def test_dp_candidates_trained_and_discarded_before_sealing_spend_the_site_s_budget(tmp_path):
    """Twenty DP candidates trained on the same data and discarded, a twenty-first sent: the
    choice among them depends on the data through every candidate, so the site's own budget
    composes them all. Before, the discarded ones cost nothing (7.99 of 8 checked, 0.0 shown)."""
    state = _state(tmp_path, ["trained"] * 5)
    for i in range(5):
        state.discard_module(f"{i:032x}", "did not like its local privacy report")
    budget = site_budget(state, LIMITS)
    assert budget.epsilon == pytest.approx(7.53, abs=0.01) and budget.released_with_dp == ()
    assert len(budget.with_dp) == 5 and budget.left == pytest.approx(0.47, abs=0.01)
    with pytest.raises(DPBudgetError) as info:
        check_release(state, OPTIONAL, LIMITS, site_id="st-mary", module_id=NEW, dp=CLAIM)
    message, hint = info.value.message, info.value.hint or ""
    assert "8.28" in message and "dp.max_total_epsilon 8" in message
    assert "5 DP module(s) this site has trained before" in message
    assert "5 of them never sent" in message and "not sealed or sent" in message
    assert "discarded and refused ones too" in hint and "choosing which module" in hint
    # the federation's rule (max_epsilon 5) reads what left the site only, as the aggregator
    # does: the new module alone (3.70) is within it; a site cap of 9 holds all six (8.28)
    roomy = DPLimits(8.0, 9.0)
    spent = check_release(state, POLICY, roomy, site_id="s", module_id=NEW, dp=CLAIM)
    assert spent == pytest.approx(8.28, abs=0.01)


def test_a_planned_module_over_what_discarded_candidates_left_is_refused_before_training(
    tmp_path,
):
    state = _state(tmp_path, ["trained"] * 5)
    for i in range(5):
        state.discard_module(f"{i:032x}", "trying another learning rate")
    with pytest.raises(DPBudgetError) as info:
        check_plan(state, OPTIONAL, LIMITS, site_id="st-mary", plan=lambda: CLAIM)
    assert "nothing was trained" in info.value.message and "8.28" in info.value.message


def test_a_module_once_sealed_counts_whatever_its_status_and_its_resend_is_not_rechecked(
    tmp_path, monkeypatch
):
    """A sealed module's envelope may have reached the aggregator before a dropped connection.
    Its retry under a tighter manifest used to be refused by this site's own check, which made
    it ``refused`` by the site, out of the budget (also once discarded): the operator could then
    put the loose manifest back and the site released again as if it never had. A resend is no
    new release: it is not checked again, and a module ever sealed counts."""
    from types import SimpleNamespace

    from ffsecure.errors import TransientError
    from site_node import sync
    from site_node.budget import released

    state = _state(tmp_path, ["sealed"])
    sealed = state.load_module(f"{0:032x}")
    sealed.upload_id = "u" * 32
    state.save_module(sealed)
    hostile = {"required": True, "max_epsilon": 1.0, "delta": 1e-5}  # A alone spends 3.70
    trust = SimpleNamespace(
        federation=SimpleNamespace(dp_policy=hostile), identity=SimpleNamespace(site_id="st-a")
    )

    class DroppedConnection:
        def upload(self, *args, **kwargs):
            raise TransientError("connection dropped", code="E_UNAVAILABLE")

    monkeypatch.setattr(sync, "seal_for_upload", lambda *args: b"envelope")  # no real key here
    results = sync.upload_queue(
        state, DroppedConnection(), trust, [sealed], defer_transient=True, limits=LIMITS
    )
    assert results[0]["outcome"] != "refused" and state.load_module(sealed.module_id).status == (
        "sealed"
    )
    for status, by in (("refused", "site"), ("discarded", "site"), ("trained", None)):
        record = ModuleRecord(
            sealed.module_id, status, sealed.created_at, [0], 10, "fp", train={"dp": CLAIM}
        )
        record.upload_id = sealed.upload_id
        record.error = {"by": by} if by else None
        assert released(record), status
    spent = check_release(state, OPTIONAL, LIMITS, site_id="st-a", module_id=NEW, dp=CLAIM)
    assert spent == pytest.approx(4.86, abs=0.01)  # the sealed module and the new one
