"""Which of a site's own modules count against its DP budget before a new one leaves it.

A real state directory with module records of every status; the DP-SGD claims spend
epsilon 3.70 alone, 4.86 twice and 5.85 three times (RDP), against max_epsilon 5.
"""

from __future__ import annotations

import pytest

from ffsecure.dp import DPBudgetError
from ffsecure.errors import FormatError
from site_node.budget import RELEASED, check_release
from site_node.state import STATUSES, ModuleRecord, StateDir
from tests.dp_records import DP_SGD_CLAIM

POLICY = {"required": True, "max_epsilon": 5.0, "delta": 1e-5}
CLAIM = DP_SGD_CLAIM  # 3.70 alone, 4.86 twice (RDP)
NEW = "f" * 32


def _state(tmp_path, statuses, dp=CLAIM) -> StateDir:
    state = StateDir(tmp_path / "state").ensure()
    for i, status in enumerate(statuses):
        record = ModuleRecord(
            f"{i:032x}", status, f"2026-01-0{i + 1}T00:00:00Z", [0], 10, "fp", train={"dp": dp}
        )
        state.save_module(record)
    return state


@pytest.mark.parametrize("status", STATUSES)
def test_only_modules_whose_data_left_or_may_have_left_the_site_count(tmp_path, status):
    state = _state(tmp_path, [status, status])
    if status in RELEASED:  # sealed: its envelope may have reached the aggregator
        with pytest.raises(DPBudgetError) as info:
            check_release(state, POLICY, site_id="st-mary", module_id=NEW, dp=CLAIM)
        assert info.value.code == "E_DP_BUDGET" and "5.8" in info.value.message
        assert f"{0:032x}" in info.value.message and "not sealed or sent" in info.value.message
        assert "dp_policy.max_epsilon" in info.value.hint
    else:  # trained, refused or discarded: never left
        assert check_release(state, POLICY, site_id="st-mary", module_id=NEW, dp=CLAIM) == (
            pytest.approx(3.7, abs=0.01)
        )


def test_the_module_itself_counts_once_and_an_unrequired_policy_checks_nothing(tmp_path):
    state = _state(tmp_path, ["registered", "sealed"])
    resumed = f"{1:032x}"  # the sealed module, sent again after an interrupted upload
    spent = check_release(state, POLICY, site_id="st-mary", module_id=resumed, dp=CLAIM)
    assert spent == pytest.approx(4.86, abs=0.01)
    state = _state(tmp_path, ["registered"] * 3)
    assert check_release(state, {"required": False}, site_id="s", module_id=NEW, dp=None) == 0.0


def test_an_earlier_module_without_dp_or_with_a_damaged_record_is_named(tmp_path):
    with pytest.raises(DPBudgetError, match="without DP"):
        check_release(
            _state(tmp_path / "a", ["registered"], dp=None),
            POLICY,
            site_id="st-mary",
            module_id=NEW,
            dp=CLAIM,
        )
    with pytest.raises(FormatError) as info:
        check_release(
            _state(tmp_path / "b", ["deleted"], dp={**CLAIM, "steps": "many"}),
            POLICY,
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
        check_release(state, POLICY, site_id="st-mary", module_id=NEW, dp=CLAIM)
    assert "5.8" in info.value.message
