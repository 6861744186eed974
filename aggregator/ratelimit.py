"""Per-site rate limits: one token bucket per (site, kind of call).

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per
second; each call takes one. The clock is injected so the logic is tested
without sleeping. Thread-safe: the gRPC server calls it from many threads.
``on_limit(name, key)``, when given, is told of every refusal (the
``rate_limited`` metric of :mod:`aggregator.metrics`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from aggregator.grpc_errors import RequestError


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by site; ``check(site)`` takes a token or raises E_RATE_LIMIT."""

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        name: str,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
        on_limit: Callable[[str, str], None] | None = None,
    ):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self.name = name
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._max_keys = max_keys
        self._on_limit = on_limit

    def _refill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now

    def check(self, key: str) -> None:
        """Take one token for ``key``; raise E_RATE_LIMIT (with the wait) when none is left."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self._max_keys:
                    self._evict_full(now)
                bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), updated=now)
            self._refill(bucket, now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = (1.0 - bucket.tokens) / self.rate
        if self._on_limit is not None:
            self._on_limit(self.name, key)
        raise RequestError(
            f"rate limit for {self.name} exceeded ({self.rate:g}/s, burst {self.burst})",
            code="E_RATE_LIMIT",
            hint=f"retry in {math.ceil(wait * 1000) / 1000:g} s, with exponential backoff",
        )

    def _evict_full(self, now: float) -> None:
        # Buckets that have refilled completely carry no state worth keeping.
        for key in [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.rate >= self.burst
        ]:
            del self._buckets[key]
