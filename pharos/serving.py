"""One process serving the API and the long-lived services, stopped by one event.

``serve_api`` runs uvicorn inside the caller's event loop, without uvicorn's own signal
handling: the caller owns Ctrl-C and SIGTERM (``stop``), so the API and the services
beside it (ingest, the poller, later control and rules) stop together and in order.
``serve`` is ``pharos serve``: every service of ``pharos.composition`` and the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn

from pharos.composition import PharosServices, ServiceSet
from pharos.runtime import Runtime, freeze_startup_heap

log = logging.getLogger(__name__)


class _ApiServer(uvicorn.Server):
    """uvicorn without its signal handlers (they would re-raise Ctrl-C after stopping)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(
    runtime: Runtime, stop: asyncio.Event, *, metrics_only_port: int | None = None
) -> None:
    """The HTTP API on ``api.host:api.port`` until ``stop`` is set.

    With ``metrics_only_port``: only ``/metrics`` and ``/healthz``, on that port (an
    ingest worker's figures for Prometheus).
    """
    from pharos.api.app import create_app, create_metrics_app  # imported by what serves

    host, port = runtime.settings.api.host, runtime.settings.api.port
    app = create_app(runtime)
    if metrics_only_port is not None:
        port, app = metrics_only_port, create_metrics_app(runtime)
    server = _ApiServer(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    async with asyncio.TaskGroup() as tasks:
        serving = tasks.create_task(server.serve(), name="api")
        watcher = tasks.create_task(stop.wait(), name="api-stop")
        await asyncio.wait({serving, watcher}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        watcher.cancel()
    if not server.started:
        raise OSError(f"the API could not listen on {host}:{port}")


async def serve(runtime: Runtime, stop: asyncio.Event, services: ServiceSet | None) -> None:
    """``pharos serve``: the services (none when ``services`` is None) and the API."""
    async with contextlib.AsyncExitStack() as stack:
        if services is not None:
            await stack.enter_async_context(PharosServices(runtime, services))
        freeze_startup_heap()
        log.info("API on http://%s:%d", runtime.settings.api.host, runtime.settings.api.port)
        await serve_api(runtime, stop)
