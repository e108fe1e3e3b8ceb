"""Control's view of time: an injectable clock (``now`` and ``sleep``) and a wake-able wait.

Every control service takes its time from a ``Clock``; the system clock in production,
a stepped simulated clock in tests, so a whole night of dimming runs in a second.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time (aware, UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


async def sleep_until(clock: Clock, until: datetime) -> None:
    """Sleep on ``clock`` until ``until`` (at once if it has passed).

    The remaining time is measured when the sleep starts, not when it was asked for:
    a stepped clock may have moved in between.
    """
    seconds = (until - clock.now()).total_seconds()
    if seconds > 0:
        await clock.sleep(seconds)


async def sleep_or_wake(clock: Clock, until: datetime, wake: asyncio.Event) -> None:
    """Sleep on ``clock`` until ``until``, or less if ``wake`` is set first (then clear it)."""
    if wake.is_set():
        wake.clear()
        return
    sleeper = asyncio.ensure_future(sleep_until(clock, until))
    waker = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waker):
            task.cancel()
        await asyncio.gather(sleeper, waker, return_exceptions=True)
    wake.clear()
