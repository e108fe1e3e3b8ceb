"""Simulated time: real time, accelerated ×N, or stepped as fast as the system allows.

Every device model and the fleet take their time from a ``SimClock``, never from the
system clock, so a whole night runs in a second in a test and the same seed gives the
same readings.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class SimClock(Protocol):
    def now(self) -> datetime:
        """The simulated time (aware, UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of simulated time."""
        ...


class AcceleratedClock:
    """Simulated time runs ``factor`` times faster than the wall clock (1 = real time)."""

    def __init__(self, start: datetime | None = None, factor: float = 1.0) -> None:
        if factor <= 0:
            raise ValueError("factor must be positive")
        self._start = start or datetime.now(UTC)
        self._wall_start = time.monotonic()
        self.factor = factor

    def now(self) -> datetime:
        elapsed = (time.monotonic() - self._wall_start) * self.factor
        return self._start + timedelta(seconds=elapsed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.factor)


class SteppedClock:
    """Time moves only when told (``advance``), or jumps to the next sleeper (fast mode).

    In fast mode a ``sleep`` parks the caller until ``advance`` or ``run_until`` moves
    time past its wake-up, so a test drives a whole night deterministically.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._now = start.astimezone(UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._counter = 0

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        wake = self._now + timedelta(seconds=max(0.0, seconds))
        future: asyncio.Future[None] = loop.create_future()
        self._counter += 1
        self._sleepers.append((wake, self._counter, future))
        try:
            await future
        finally:
            self._sleepers = [s for s in self._sleepers if s[2] is not future]

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose time has come, in time order."""
        self._now += timedelta(seconds=seconds)
        for wake, _, future in sorted(self._sleepers, key=lambda s: (s[0], s[1])):
            if wake <= self._now and not future.done():
                future.set_result(None)

    def next_wake(self) -> datetime | None:
        pending = [wake for wake, _, future in self._sleepers if not future.done()]
        return min(pending, default=None)

    async def run_until(self, end: datetime) -> None:
        """Jump from wake-up to wake-up until ``end``, letting woken tasks run between."""
        while True:
            await _settle()
            wake = self.next_wake()
            if wake is None or wake > end:
                break
            self.advance((wake - self._now).total_seconds())
        if end > self._now:
            self.advance((end - self._now).total_seconds())
        await _settle()


async def _settle(rounds: int = 20) -> None:
    """Let runnable tasks run (woken sleepers do their work before time moves again)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
