"""The clock rules run on: the system's, or one injected (a simulated night in a second).

Any object with ``now()`` (aware UTC) and ``async sleep(seconds)`` will do; the
simulator's clocks have exactly this shape, so a test drives rules and devices on one
clock.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
