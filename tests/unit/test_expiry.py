"""The one expiry rule shared by status, check and the metrics."""

import datetime as dt

from ffsecure.pki.expiry import CRL_WARN_DAYS, EXPIRY_WARN_DAYS, Expiry

NOW = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)


def _at(days: float) -> Expiry:
    return Expiry("site certificate", NOW + dt.timedelta(days=days), NOW)


def test_states_follow_the_threshold():
    assert _at(EXPIRY_WARN_DAYS + 1).state == "ok"
    assert _at(EXPIRY_WARN_DAYS - 0.5).state == "warn"
    assert _at(0).state == "expired"
    assert _at(-3).state == "expired"
    assert Expiry("CRL", None, NOW).state == "never"


def test_days_left_is_fractional_and_the_line_rounds_down():
    e = _at(29.75)
    assert e.days_left == 29.75
    assert e.line() == "site certificate: expires 2027-01-04T18:00:00Z (29 days left)"
    assert _at(-2.5).line().startswith("site certificate: EXPIRED at ")
    assert e.as_dict() == {
        "what": "site certificate",
        "not_after": "2027-01-04T18:00:00Z",
        "days_left": 29.75,
        "state": "warn",
    }


def test_a_crl_warns_only_in_its_last_week():
    # a CRL lives 30 days by default: a fresh one must not warn
    fresh = Expiry("CRL", NOW + dt.timedelta(days=29.9), NOW, CRL_WARN_DAYS)
    assert fresh.state == "ok"
    assert Expiry("CRL", NOW + dt.timedelta(days=6), NOW, CRL_WARN_DAYS).state == "warn"
