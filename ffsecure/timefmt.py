"""Times as ffsecure writes them: RFC 3339, UTC, second precision, a ``Z`` suffix.

Every time that is signed, hashed or stored (manifests, ledger entries, CA
state, receipts, site state, bundle metadata) has exactly this shape, for
example ``2026-11-22T12:00:00Z``, so one instant has one string and strings
compare in time order. This module is the one home of that format:
:func:`rfc3339` writes it, :func:`parse_rfc3339` reads it (anything else is
``E_TIME_FORMAT``), :func:`utcnow` is the current time at second precision
and :func:`now_rfc3339` that time as text.

It is also the home of durations an operator or auditor types (``--witness-max-age``):
whole units, largest first, each at most once: ``7d``, ``36h``, ``1d12h``, ``90m``,
``45s`` (:func:`parse_duration`, anything else ``E_CONFIG``; :func:`format_duration`
writes the same form), and of :data:`CLOCK_SKEW`, how far ahead of our clock a time
another party signed may be before it counts as "in the future".
"""

from __future__ import annotations

import datetime as dt
import re

from ffsecure.errors import ConfigError, FormatError

__all__ = [
    "CLOCK_SKEW",
    "RFC3339_FORMAT",
    "format_duration",
    "now_rfc3339",
    "parse_duration",
    "parse_rfc3339",
    "rfc3339",
    "utcnow",
]

RFC3339_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

#: How far past our clock a time signed by another party (a site's ``created_at``, a
#: witness's cosignature) may lie before it is refused as in the future.
CLOCK_SKEW = dt.timedelta(minutes=5)

_DURATION = re.compile(r"(?:([0-9]{1,6})d)?(?:([0-9]{1,6})h)?(?:([0-9]{1,6})m)?(?:([0-9]{1,6})s)?")
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


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


def parse_duration(text: str) -> dt.timedelta:
    """Parse a positive duration such as ``7d``, ``36h``, ``1d12h`` or ``90m`` (``E_CONFIG``)."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or not any(match.groups()):
        raise ConfigError(
            f"duration {text!r} is not a number of days, hours, minutes or seconds",
            hint="write it like 7d, 36h, 1d12h, 90m or 45s",
        )
    seconds = sum(int(n) * size for n, (_u, size) in zip(match.groups(), _UNITS, strict=True) if n)
    if seconds == 0:
        raise ConfigError(f"duration {text!r} is zero", hint="give a positive duration, e.g. 7d")
    return dt.timedelta(seconds=seconds)


def format_duration(duration: dt.timedelta) -> str:
    """``duration`` in the form :func:`parse_duration` reads, to the second (``1d12h``, ``0s``)."""
    left = int(abs(duration).total_seconds())
    parts = []
    for unit, size in _UNITS:
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    text = "".join(parts) or "0s"
    return "-" + text if duration < dt.timedelta(0) else text
