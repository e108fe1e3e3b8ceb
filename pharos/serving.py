"""One process serving the API and the long-lived services, stopped by one event.

``serve_api`` runs uvicorn inside the caller's event loop, without uvicorn's own signal
handling: the caller owns Ctrl-C and SIGTERM (``stop``), so the API and the services
beside it (ingest, the poller, later control and rules) stop together and in order.
``serve`` is ``pharos serve``: the telemetry services and the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn

from pharos.runtime import Runtime
from pharos.services import TelemetryOptions, TelemetryServices

log = logging.getLogger(__name__)


class _ApiServer(uvicorn.Server):
    """uvicorn without its signal handlers (they would re-raise Ctrl-C after stopping)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(runtime: Runtime, stop: asyncio.Event) -> None:
    """The HTTP API on ``api.host:api.port`` until ``stop`` is set."""
    from pharos.api.app import create_app  # FastAPI is only imported by what serves it

    api = runtime.settings.api
    server = _ApiServer(
        uvicorn.Config(create_app(runtime), host=api.host, port=api.port, log_level="warning")
    )
    async with asyncio.TaskGroup() as tasks:
        serving = tasks.create_task(server.serve(), name="api")
        watcher = tasks.create_task(stop.wait(), name="api-stop")
        await asyncio.wait({serving, watcher}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        watcher.cancel()
    if not server.started:
        raise OSError(f"the API could not listen on {api.host}:{api.port}")


async def serve(runtime: Runtime, stop: asyncio.Event, telemetry: TelemetryOptions | None) -> None:
    """``pharos serve``: the telemetry services (unless ``telemetry`` is None) and the API."""
    async with contextlib.AsyncExitStack() as stack:
        if telemetry is not None:
            await stack.enter_async_context(TelemetryServices(runtime, telemetry))
        log.info("API on http://%s:%d", runtime.settings.api.host, runtime.settings.api.port)
        await serve_api(runtime, stop)
