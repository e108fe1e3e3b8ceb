"""The FastAPI application, built around a ``Runtime`` the caller made from settings.

There is no module-level app: ``pharos serve`` calls
``create_app(build_runtime(settings))`` and hands the result to uvicorn, and each
test builds its own around its own database.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from pharos.api.errors import install_error_handlers
from pharos.api.routes import api_router, health, metrics
from pharos.runtime import Runtime

DESCRIPTION = (
    "Device registry and telemetry of the Intelligent Operations Centre: devices, "
    "groups, commissioning, broker credentials, the audit log, readings and dead "
    "letters. Send an API key in "
    "`X-API-Key` (or `Authorization: Bearer`)."
)


def _pharos_version() -> str:
    try:
        return version("pharos-iot")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="Pharos", version=_pharos_version(), description=DESCRIPTION, docs_url="/docs"
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(api_router)
    # The web console at /, outside /openapi.json (imported here: it builds on the API).
    from pharos.console.mount import install_console

    install_console(app, runtime.settings.console)
    return app


def create_metrics_app(runtime: Runtime) -> FastAPI:
    """Only ``/metrics`` and ``/healthz``: what an ``pharos ingest`` worker exposes."""
    app = FastAPI(title="Pharos ingest", version=_pharos_version(), docs_url=None)
    app.state.runtime = runtime
    app.include_router(health.router)
    app.include_router(metrics.router)
    return app
