"""What ``serve`` records of each site's calls: last contact and last refusal, in the store.

Every call the service answers, accepted or refused, is a contact; a refusal
also records its error code and method (``Store.note_site``, one row per
site). The store is written at most once every :data:`CONTACT_EVERY_S`
seconds per site for plain contacts, and at once for a refusal whose code
differs from the last one written (or after the same interval), so that a
site hammering the service costs no more than a write a minute. A failed write
is logged and never fails the call: this is operational state, not evidence.

The site id of a refused call comes from its certificate even when the call
was refused for that certificate (revoked, wrong federation): TLS already
checked that it chains to the federation CA, so the CA bounds the ids; a
certificate without a site identity is not recorded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from aggregator.store.base import Store
from ffsecure.timefmt import now_rfc3339

log = logging.getLogger("aggregator.site_activity")

#: Seconds between two writes of the same site's plain contacts (or of the same refusal code).
CONTACT_EVERY_S = 60.0


class SiteActivity:
    """Throttled recorder of contacts and refusals into the store (module docstring)."""

    def __init__(
        self,
        store: Store,
        lock: threading.RLock,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._store = store
        self._store_lock = lock
        self._clock = clock
        self._lock = threading.Lock()
        self._written: dict[str, tuple[float | None, str | None]] = {}  # site -> (when, last code)

    def contact(self, site_id: str) -> None:
        self._note(site_id, None)

    def refusal(self, site_id: str, code: str, method: str) -> None:
        self._note(site_id, (code, method))

    def _due(self, site_id: str, code: str | None) -> bool:
        now = self._clock()
        with self._lock:
            when, prev_code = self._written.get(site_id, (None, None))
            fresh = when is not None and now - when < CONTACT_EVERY_S
            if fresh and (code is None or code == prev_code):
                return False
            self._written[site_id] = (now, code if code is not None else prev_code)
            return True

    def _note(self, site_id: str, refusal: tuple[str, str] | None) -> None:
        if not self._due(site_id, refusal[0] if refusal else None):
            return
        try:
            with self._store_lock:
                self._store.note_site(site_id, at=now_rfc3339(), refusal=refusal)
        except Exception as exc:  # noqa: BLE001 - operational state must never fail a call
            log.error(
                "could not record the activity of site %s: %s",
                site_id,
                exc,
                extra={"event": "site_activity_failed", "code": getattr(exc, "code", None)},
            )
