"""ServiceTasks: named loops stopped by their events or cancelled, failures raised."""

from __future__ import annotations

import asyncio

import pytest

from pharos_core.clock import settle
from pharos_core.lifecycle import ServiceTasks


async def test_stop_sets_the_events_and_waits_for_the_loops_to_finish_their_round() -> None:
    stopping = asyncio.Event()
    rounds: list[str] = []

    async def loop() -> None:
        await stopping.wait()
        await asyncio.sleep(0)  # the round after the stop still runs to its end
        rounds.append("finished")

    tasks = ServiceTasks(stopping)
    await tasks.start(("the-loop", loop()))
    assert tasks.running
    assert [t.get_name() for t in asyncio.all_tasks()].count("the-loop") == 1
    await tasks.stop()
    assert stopping.is_set()
    assert rounds == ["finished"]
    assert not tasks.running


async def test_cancel_mode_cancels_the_loops_but_waits_for_spawned_tasks() -> None:
    spawned_done = asyncio.Event()
    release = asyncio.Event()

    async def forever() -> None:
        await asyncio.Event().wait()

    async def action() -> None:
        await release.wait()
        spawned_done.set()

    tasks = ServiceTasks(cancel=True)
    await tasks.start(("queue-reader", forever()))
    tasks.spawn(action(), name="an-action")
    stopper = asyncio.create_task(tasks.stop())
    await settle()  # every runnable task has run: the loop is cancelled by now
    assert not stopper.done()  # the action is still running: stop waits for it
    release.set()
    await asyncio.wait_for(stopper, 5)
    assert spawned_done.is_set()


async def test_a_failing_loop_ends_the_service_and_stop_raises_it() -> None:
    async def fails() -> None:
        raise ValueError("the database went away")

    async def waits(stopping: asyncio.Event) -> None:
        await stopping.wait()

    stopping = asyncio.Event()
    tasks = ServiceTasks(stopping)

    async def owner() -> None:
        await tasks.start(("fails", fails()), ("waits", waits(stopping)))
        try:
            await asyncio.sleep(10)  # the failure cancels the code inside the service
        except asyncio.CancelledError as cancelled:
            await tasks.stop(type(cancelled), cancelled, None)
            raise AssertionError("stop should have raised the failure") from None

    with pytest.raises(ExceptionGroup) as raised:
        await asyncio.wait_for(owner(), 5)
    assert [str(e) for e in raised.value.exceptions] == ["the database went away"]


async def test_an_error_leaving_the_service_is_not_hidden_and_cancels_the_loops() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    tasks = ServiceTasks()
    await tasks.start(("forever", forever()))
    error = RuntimeError("the caller failed")
    with pytest.raises(ExceptionGroup) as raised:
        await tasks.stop(RuntimeError, error, None)
    assert raised.value.exceptions == (error,)


async def test_stop_before_start_only_sets_the_events_and_spawn_refuses() -> None:
    stopping = asyncio.Event()
    tasks = ServiceTasks(stopping)
    await tasks.stop()
    assert stopping.is_set()

    async def nothing() -> None:
        pass

    with pytest.raises(RuntimeError, match="not running"):
        tasks.spawn(nothing())


async def test_start_twice_is_refused() -> None:
    stopping = asyncio.Event()
    tasks = ServiceTasks(stopping)

    async def waits() -> None:
        await stopping.wait()

    await tasks.start(("one", waits()))
    with pytest.raises(RuntimeError, match="already running"):
        await tasks.start(("two", waits()))
    await tasks.stop()
