"""Per-site token buckets with an injected clock."""

import pytest

from aggregator.grpc_errors import RequestError
from aggregator.ratelimit import RateLimiter


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_burst_then_refusal_then_refill():
    clock = Clock()
    rl = RateLimiter(rate=2.0, burst=3, name="uploads", clock=clock)
    for _ in range(3):
        rl.check("a")
    with pytest.raises(RequestError) as err:
        rl.check("a")
    assert err.value.code == "E_RATE_LIMIT"
    assert "retry in 0.5 s" in err.value.hint
    rl.check("b")  # other sites have their own bucket
    clock.t += 0.5
    rl.check("a")
    with pytest.raises(RequestError):
        rl.check("a")
    clock.t += 100
    for _ in range(3):
        rl.check("a")
    with pytest.raises(RequestError):
        rl.check("a")


def test_eviction_keeps_only_useful_state():
    clock = Clock()
    rl = RateLimiter(rate=1.0, burst=1, name="calls", clock=clock, max_keys=2)
    rl.check("a")
    rl.check("b")
    clock.t += 5
    rl.check("c")  # a and b refilled: evicted
    assert set(rl._buckets) == {"c"}
