"""Days left before a certificate or a CRL stops being usable: the one rule.

Every place that warns about expiry (``site-node status`` and ``check``,
``aggregator status`` and ``check``, the Prometheus gauges and the site's
node-exporter textfile) computes it here, so that they agree on the numbers
and on the threshold:

* a certificate is usable until its ``notAfter``;
* a CRL is usable until its ``nextUpdate`` (a CRL without one never expires
  here, and :attr:`Expiry.days_left` is ``None``);
* a certificate is ``warn`` from :data:`EXPIRY_WARN_DAYS` (30) days before
  that moment, a CRL from :data:`CRL_WARN_DAYS` (7) days before it; at or
  after it, ``expired``; otherwise ``ok``. A CRL lives 30 days by default
  (``pki crl``), so a 30-day threshold would warn from the day it is signed
  and the warning would mean nothing; its last week is when to re-sign it.

Days are fractional (``seconds / 86400``) so that a gauge moves smoothly; the
human line rounds down to whole days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

from ffsecure.timefmt import rfc3339, utcnow

#: Below this many days left on a certificate, every status and check warns.
EXPIRY_WARN_DAYS = 30
#: Below this many days left on a CRL (its nextUpdate), every status and check warns.
CRL_WARN_DAYS = 7

State = Literal["ok", "warn", "expired", "never"]


@dataclass(frozen=True)
class Expiry:
    """When ``what`` stops being usable, seen at ``now``."""

    what: str
    not_after: dt.datetime | None
    now: dt.datetime
    warn_days: int = EXPIRY_WARN_DAYS

    @property
    def days_left(self) -> float | None:
        if self.not_after is None:
            return None
        return (self.not_after - self.now).total_seconds() / 86400.0

    @property
    def state(self) -> State:
        days = self.days_left
        if days is None:
            return "never"
        if days <= 0:
            return "expired"
        return "warn" if days < self.warn_days else "ok"

    def line(self) -> str:
        """One human line: ``site certificate: expires 2027-01-05T00:00:00Z (29 days left)``."""
        days = self.days_left
        if days is None or self.not_after is None:
            return f"{self.what}: no expiry date"
        when = rfc3339(self.not_after)
        if days <= 0:
            return f"{self.what}: EXPIRED at {when} ({int(-days)} days ago)"
        return f"{self.what}: expires {when} ({int(days)} days left)"

    def as_dict(self) -> dict[str, object]:
        days = self.days_left
        return {
            "what": self.what,
            "not_after": None if self.not_after is None else rfc3339(self.not_after),
            "days_left": None if days is None else round(days, 3),
            "state": self.state,
        }


def cert_expiry(cert: x509.Certificate, what: str, now: dt.datetime | None = None) -> Expiry:
    """Expiry of a certificate (its ``notAfter``)."""
    return Expiry(what, cert.not_valid_after_utc, now or utcnow())


def crl_expiry(
    crl: x509.CertificateRevocationList, what: str = "CRL", now: dt.datetime | None = None
) -> Expiry:
    """Expiry of a CRL (its ``nextUpdate``; ``None`` when it has none)."""
    return Expiry(what, crl.next_update_utc, now or utcnow(), CRL_WARN_DAYS)
