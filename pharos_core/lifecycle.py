"""The lifecycle of a long-lived service: its background tasks, named, in one TaskGroup.

Every service of Pharos is an async context manager that owns its tasks for exactly as
long as it is entered (no fire-and-forget). ``ServiceTasks`` is the part they all
share, so each service says only what is its own: what to load before the tasks start,
which loops to run, what to flush after they stopped.

- ``start`` opens the TaskGroup and starts the named loops;
- ``spawn`` adds a task later (rules' command actions); it belongs to the same group,
  so its failure ends the service like any other, and stopping waits for it;
- ``stop`` sets the service's stop events (its loops finish their round and return) or,
  for loops that only wait on a queue, cancels them; then waits for every task.

A task that fails cancels the others and the code that entered the service (the
TaskGroup's rule), and ``stop`` raises it (an ``ExceptionGroup``); an error the service
left with is passed in and never hidden. ``stop`` on tasks never started only sets the
events, so a service whose start failed half-way can still be closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

Loop = Coroutine[Any, Any, None]


class ServiceTasks:
    """The tasks of one service; see the module docstring.

    ``stop_events`` are set when the service stops (its ``stopping`` event and any wake
    event a loop sleeps on); ``cancel=True`` cancels the loops started by ``start``
    instead (the tasks from ``spawn`` are always waited for, not cancelled).
    """

    def __init__(self, *stop_events: asyncio.Event, cancel: bool = False) -> None:
        self._stop_events = stop_events
        self._cancel = cancel
        self._group: asyncio.TaskGroup | None = None
        self._loops: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return self._group is not None

    async def start(self, *loops: tuple[str, Loop]) -> None:
        """Open the group and start each ``(name, coroutine)``."""
        if self._group is not None:
            for _, coroutine in loops:
                coroutine.close()
            raise RuntimeError("the service's tasks are already running")
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        self._loops = [group.create_task(coroutine, name=name) for name, coroutine in loops]

    def spawn(self, coroutine: Loop, *, name: str | None = None) -> asyncio.Task[None]:
        """Run ``coroutine`` as one more task of the service."""
        if self._group is None:
            coroutine.close()
            raise RuntimeError("the service is not running")
        return self._group.create_task(coroutine, name=name)

    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        """Stop the loops and wait for every task; the arguments are the service's
        ``__aexit__`` ones (an error leaving the service cancels the tasks at once)."""
        for event in self._stop_events:
            event.set()
        group, self._group = self._group, None
        loops, self._loops = self._loops, []
        if group is None:
            return
        if self._cancel:
            for task in loops:
                task.cancel()
        await group.__aexit__(exc_type, exc, tb)
