"""The rate limit that keeps a district-wide command from flooding the broker."""

from __future__ import annotations

import time

import pytest

from control.commands.service import RateLimiter


async def test_sends_beyond_the_burst_wait_for_their_tokens() -> None:
    limiter = RateLimiter(rate_per_s=200, burst=10)
    started = time.monotonic()
    for _ in range(10):
        await limiter.take()
    burst_s = time.monotonic() - started
    for _ in range(60):
        await limiter.take()
    total_s = time.monotonic() - started
    assert burst_s < 0.05  # the burst goes at once
    assert total_s >= 60 / 200 * 0.95  # the rest at 200/s, never faster


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        RateLimiter(rate_per_s=0, burst=1)
