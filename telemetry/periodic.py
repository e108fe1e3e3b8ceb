"""A round of work every interval until a stop event: the loop several services share.

The registry views (ingest's device directory, rules' catalog), the fleet statistics
and the Modbus meter list all re-read something on a timer. ``repeat_every`` is that
timer: it waits on the stop event with a timeout (so stopping never waits out an
interval), and a failing round is logged and tried again next interval rather than
ending the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Whether ``stop`` is set within ``seconds`` (waits at most that long)."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return False
    return True


async def repeat_every(
    interval_s: float,
    stop: asyncio.Event,
    work: Callable[[], Awaitable[object]],
    *,
    what: str,
    at_once: bool = False,
) -> None:
    """Run ``work`` every ``interval_s`` (first at once if ``at_once``) until ``stop``."""
    if at_once:
        await _round(work, what, interval_s)
    while not await stopped_within(stop, interval_s):
        await _round(work, what, interval_s)


async def _round(work: Callable[[], Awaitable[object]], what: str, interval_s: float) -> None:
    try:
        await work()
    except Exception:  # the database or a sink away for a moment: the next round retries
        log.exception("%s failed; trying again in %.0f s", what, interval_s)
