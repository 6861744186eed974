"""The site's log names a withheld figure and its verdict, never its value.

A DP module keeps every figure measured on its training images out of its signed report
(``ffsecure.privacy.report.releasable``); the site's log may be kept less tightly than the
local report (mode 0600), so what the privacy gate logs about those figures holds no value.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

from site_node.privacy import REPORT_FILE, judge
from tests.unit.test_privacy_policy import REQUIRED

DP = {"epsilon": 7.99, "delta": 1e-5, "mechanism": "dp-sgd"}
#: figures a DP module measured and does not release, each written distinctly
FULL = {
    "module_id": "ab" * 16,
    "membership": {"members": 5461, "non_members": 787, "auroc": 0.873214, "tpr_at_1pct_fpr": 0.3},
    "memorization": {
        "generated": 1000,
        "ratio": 0.4,
        "near_copy_fraction": 0.212345,
        "near_copy_threshold": 0.0517,
        "near_copy_quantile": 0.01,
    },
    "accounting": {},
}
WITHHELD = ("0.873214", "0.873", "0.212345", "0.212", "5461", "787", "0.0517")
REPORT = Path("/srv/site/state/modules/abab/privacy-report.json")
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def test_a_warning_on_a_withheld_figure_logs_its_name_and_verdict_but_no_value(caplog):
    federation = SimpleNamespace(
        privacy_policy={"max_near_copy_fraction": 0.05}, dp_policy=REQUIRED
    )
    with caplog.at_level(logging.DEBUG, logger="site_node.privacy"):
        verdict = judge(FULL, DP, federation, report_path=REPORT)
    assert verdict.passes  # the DP claim covers the figures: warnings, not refusals
    records = [r for r in caplog.records if getattr(r, "event", None) == "privacy_warning"]
    assert len(records) == 2  # the membership AUROC and the near-copy fraction
    for record in records:
        # the message and the extras the site attaches; the LogRecord's own attributes
        # (created, msecs, thread ids) are numbers that may hold any digits
        extras = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}
        logged = f"{record.getMessage()} {extras}"
        assert not [figure for figure in WITHHELD if figure in logged], logged
        assert " fails the federation's limit (" in record.getMessage()
        assert str(REPORT) in record.getMessage()
        assert record.passes is False and record.source == "federation"
        assert record.report == str(REPORT)
    assert [r.figure for r in records] == ["max_membership_auroc", "max_near_copy_fraction"]
    assert [r.getMessage() for r in caplog.records if r not in records] == []
    # the local report keeps the figures: the verdict's warnings, written into the 0600 file
    assert "membership AUROC 0.873214 is above" in verdict.warnings[0]
    assert REPORT.name == REPORT_FILE
