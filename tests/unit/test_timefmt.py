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
