"""The token bucket, on a fake clock."""

from __future__ import annotations

from tests.recording import Clock
from tornado_ws.core.ratelimit import TokenBucket


def test_burst_then_steady_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5  # one token back at 2/s
    assert [bucket.allow(), bucket.allow()] == [True, False]
    clock.now += 100  # refills to the burst, never beyond
    assert sum(bucket.allow() for _ in range(10)) == 3


def test_rate_zero_is_unlimited() -> None:
    bucket = TokenBucket(rate=0, burst=1, clock=Clock())
    assert all(bucket.allow() for _ in range(1000))
