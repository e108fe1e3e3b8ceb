"""The one clock of Pharos: ``now()`` and ``sleep()``, the system's or a simulated one.

Every service, route and simulated device takes its time from a ``Clock`` handed to it,
never from ``datetime.now``: production passes ``SystemClock``, the demo an accelerated
``HeldClock``, tests a ``SteppedClock``, so a whole night of dimming, a flood rising over
six hours or a day of alerts runs in seconds on one timeline.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from datetime import UTC, datetime, timedelta
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


class SteppedClock:
    """Time moves only when told (``advance``), or jumps to the next sleeper (``run_until``).

    A ``sleep`` parks the caller until time passes its wake-up, so a test drives a whole
    night deterministically. Sleepers wait in a heap (time, then first come): thousands of
    simulated devices on one clock cost O(log n) per sleep (profiled with 1,000 devices,
    a list took a quarter of the process's time); a cancelled sleeper is dropped when it
    reaches the top.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._now = start.astimezone(UTC)
        self._heap: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._sequence = 0

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sequence += 1
        wake = self._now + timedelta(seconds=max(0.0, seconds))
        heapq.heappush(self._heap, (wake, self._sequence, future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose time has come, in time order."""
        self._now += timedelta(seconds=seconds)
        heap = self._heap
        while heap and heap[0][0] <= self._now:
            _, _, future = heapq.heappop(heap)
            if not future.done():
                future.set_result(None)

    def next_wake(self) -> datetime | None:
        heap = self._heap
        while heap and heap[0][2].done():
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    async def run_until(self, end: datetime) -> None:
        """Jump from wake-up to wake-up until ``end``, letting woken tasks run between."""
        while True:
            await settle()
            wake = self.next_wake()
            if wake is None or wake > end:
                break
            self.advance((wake - self._now).total_seconds())
        if end > self._now:
            self.advance((end - self._now).total_seconds())
        await settle()


class HeldClock:
    """Time ``factor`` times faster than the wall clock, standing at ``start`` until released.

    Provisioning and connecting thousands of devices takes a while; holding the clock
    keeps that out of simulated time (the fleet releases it once every device has tried
    its first connect). ``factor=1`` released at once is real time from ``start``.
    """

    def __init__(self, start: datetime, factor: float = 1.0, *, released: bool = False) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if factor <= 0:
            raise ValueError("factor must be positive")
        self._start = start.astimezone(UTC)
        self.factor = factor
        self._released_at: float | None = None
        self._released = asyncio.Event()
        if released:
            self.release()

    @property
    def released(self) -> bool:
        return self._released_at is not None

    def release(self) -> None:
        if self._released_at is None:
            self._released_at = time.monotonic()
            self._released.set()

    def now(self) -> datetime:
        if self._released_at is None:
            return self._start
        return self._start + timedelta(seconds=(time.monotonic() - self._released_at) * self.factor)

    async def sleep(self, seconds: float) -> None:
        await self._released.wait()
        await asyncio.sleep(max(0.0, seconds) / self.factor)


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


async def settle(rounds: int = 20) -> None:
    """Let runnable tasks run (woken sleepers do their work before time moves again)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
