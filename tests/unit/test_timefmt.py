"""The one RFC 3339 format: second precision, UTC, a Z suffix; anything else is E_TIME_FORMAT."""

from __future__ import annotations

import datetime as dt

import pytest

from ffsecure import pki, timefmt
from ffsecure.errors import FFSecureError
from ffsecure.ledger import make_entry


def test_a_time_is_written_in_utc_to_the_second_and_read_back():
    plus_two = dt.timezone(dt.timedelta(hours=2))
    when = dt.datetime(2026, 11, 22, 14, 0, 5, 999_999, tzinfo=plus_two)
    assert timefmt.rfc3339(when) == "2026-11-22T12:00:05Z"
    back = timefmt.parse_rfc3339("2026-11-22T12:00:05Z")
    assert back == when.replace(microsecond=0) and back.tzinfo == dt.UTC


def test_now_has_no_sub_seconds_and_is_what_every_writer_stamps():
    assert timefmt.utcnow().microsecond == 0 and timefmt.utcnow().tzinfo == dt.UTC
    before = timefmt.now_rfc3339()
    stamped = make_entry("cert.revoked", "operator:ops", {"serial": "0b", "reason": "t"})["time"]
    after = timefmt.now_rfc3339()
    assert before <= stamped <= after
    assert timefmt.parse_rfc3339(stamped) is not None
    assert pki.rfc3339 is timefmt.rfc3339 and pki.utcnow is timefmt.utcnow


@pytest.mark.parametrize(
    "bad", ["2026-11-22T12:00:00", "2026-11-22 12:00:00Z", "2026-11-22T12:00:00+00:00", "", None]
)
def test_anything_but_the_one_format_is_refused_with_its_code(bad):
    with pytest.raises(FFSecureError) as info:
        timefmt.parse_rfc3339(bad)
    assert info.value.code == "E_TIME_FORMAT"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7d", 7 * 86400),
        ("36h", 36 * 3600),
        ("1d12h", 36 * 3600),
        ("90m", 5400),
        ("45s", 45),
        ("1d2h3m4s", 93784),
        (" 30d ", 30 * 86400),
        ("000001s", 1),
    ],
)
def test_a_duration_is_whole_units_largest_first(text, seconds):
    assert timefmt.parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "7", "d", "7 d", "-1d", "1.5d", "1w", "1h2d", "7d7d", "7D", "1234567s", "0d0h"]
)
def test_anything_else_is_a_config_error_showing_the_form(text):
    with pytest.raises(FFSecureError) as refused:
        timefmt.parse_duration(text)
    assert refused.value.code == "E_CONFIG" and "7d" in (refused.value.hint or "")


def test_a_duration_is_written_as_it_is_read():
    for seconds in (1, 59, 60, 3600, 86399, 86400, 7 * 86400, 90 * 86400 + 61):
        text = timefmt.format_duration(dt.timedelta(seconds=seconds))
        assert timefmt.parse_duration(text) == dt.timedelta(seconds=seconds), text
    assert timefmt.format_duration(dt.timedelta(days=1, hours=12)) == "1d12h"
    assert timefmt.format_duration(dt.timedelta(0)) == "0s"
