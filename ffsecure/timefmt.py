"""Times as ffsecure writes them: RFC 3339, UTC, second precision, a ``Z`` suffix.

Every time that is signed, hashed or stored (manifests, ledger entries, CA
state, receipts, site state, bundle metadata) has exactly this shape, for
example ``2026-11-22T12:00:00Z``, so one instant has one string and strings
compare in time order. This module is the one home of that format:
:func:`rfc3339` writes it, :func:`parse_rfc3339` reads it (anything else is
``E_TIME_FORMAT``), :func:`utcnow` is the current time at second precision
and :func:`now_rfc3339` that time as text.
"""

from __future__ import annotations

import datetime as dt

from ffsecure.errors import FormatError

__all__ = ["RFC3339_FORMAT", "now_rfc3339", "parse_rfc3339", "rfc3339", "utcnow"]

RFC3339_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC, truncated to the second."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def rfc3339(when: dt.datetime) -> str:
    """``when`` as RFC 3339 UTC with second precision (sub-seconds are dropped)."""
    return when.astimezone(dt.UTC).strftime(RFC3339_FORMAT)


def now_rfc3339() -> str:
    """The current time as RFC 3339 UTC with second precision."""
    return rfc3339(utcnow())


def parse_rfc3339(text: str) -> dt.datetime:
    """Parse exactly ``YYYY-MM-DDTHH:MM:SSZ`` into an aware UTC datetime (``E_TIME_FORMAT``)."""
    try:
        when = dt.datetime.strptime(text, RFC3339_FORMAT)
    except (ValueError, TypeError):
        raise FormatError(
            f"time {text!r} is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)", code="E_TIME_FORMAT"
        ) from None
    return when.replace(tzinfo=dt.UTC)
