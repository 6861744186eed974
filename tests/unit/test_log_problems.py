"""One log verifier: the strict ``verify_log`` and the audit's ``check_log`` read the same
problems, so a log the audit finds fault with is one ``verify_log`` refuses, with the
strict error of the first problem."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ffsecure.audit.findings import WARNING, Findings
from ffsecure.audit.logcheck import FINDING_OF, check_log
from ffsecure.errors import LedgerError
from ffsecure.ledger.checkpoint import make_vkey
from ffsecure.ledger.problems import LogProblemKind, LogState, log_problems
from ffsecure.ledger.verify import verify_log
from tests.unit.test_audit_logcheck import ORIGIN, entries, notes


@pytest.fixture(scope="module")
def key():
    return Ed25519PrivateKey.generate()


def _swap(data, i):
    out = list(data)
    out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _cases(key):
    data = entries(10)
    cps = notes(key, data, [3, 10])
    vkey = make_vkey(ORIGIN, key.public_key())
    changed = list(data)
    changed[5] = changed[5].replace(b'"superseded"', b'"unspecified"')
    return {
        "changed entry": (vkey, changed, cps, "E_INCONSISTENT"),
        "malformed entry": (vkey, [*data[:4], b"{", *data[5:]], cps, "E_ENTRY"),
        "swapped entries": (vkey, _swap(data, 6), cps, "E_INCONSISTENT"),
        "dropped entries": (vkey, data[:8], cps, "E_INCONSISTENT"),
        "unsigned tail": (vkey, [*data, *entries(11)[10:]], cps, "E_INCONSISTENT"),
        "no checkpoint": (vkey, data, {}, "E_INCONSISTENT"),
        "misnamed checkpoint": (vkey, data, {"010": cps["10"]}, "E_INCONSISTENT"),
        "bad signature": (vkey, data, {"10": cps["10"].replace(b"\n\n", b"\nx\n")}, None),
        "bad log key": ("not a key", data, cps, None),
    }


@pytest.mark.parametrize(
    "case",
    [
        "changed entry",
        "malformed entry",
        "swapped entries",
        "dropped entries",
        "unsigned tail",
        "no checkpoint",
        "misnamed checkpoint",
        "bad signature",
        "bad log key",
    ],
)
def test_verify_log_raises_the_first_problem_the_audit_reports(key, case):
    vkey, data, cps, code = _cases(key)[case]
    findings = Findings()
    check_log(vkey, data, cps, findings)
    failures = [f for f in findings.items if f.severity != WARNING]
    assert failures, case
    first = next(p for p in log_problems(vkey, data, cps, []) if not p.warning)
    assert FINDING_OF[first.kind][1] == failures[0].code
    with pytest.raises(LedgerError) as info:
        verify_log(vkey, data, cps)
    assert info.value.code == first.error.code and info.value.hint
    if code is not None:
        assert info.value.code == code


def test_a_clean_log_has_no_problem_and_a_complete_state(key):
    data = entries(6)
    cps = notes(key, data, [2, 6])
    states: list[LogState] = []
    assert list(log_problems(make_vkey(ORIGIN, key.public_key()), data, cps, states)) == []
    assert states[0].verified and states[0].good_sizes == [2, 6]
    assert verify_log(make_vkey(ORIGIN, key.public_key()), data, cps).size == 6


def test_entries_out_of_time_order_are_a_warning_that_verify_log_accepts(key):
    data = list(reversed(entries(3)))
    cps = notes(key, data, [3])
    vkey = make_vkey(ORIGIN, key.public_key())
    kinds = [(p.kind, p.warning) for p in log_problems(vkey, data, cps, [])]
    assert kinds == [(LogProblemKind.TIME_ORDER, True)] * 2
    assert verify_log(vkey, data, cps).size == 3


def test_every_problem_kind_has_an_audit_finding():
    assert set(FINDING_OF) == set(LogProblemKind)
