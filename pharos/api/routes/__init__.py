"""The routers: one per resource, gathered under ``/api/v1``; ``/healthz`` stands outside."""

from typing import Any

from fastapi import APIRouter

from pharos.api.routes import (
    alerts,
    audit,
    commands,
    devices,
    energy,
    grafana,
    groups,
    health,
    ioc,
    metrics,
    programs,
    rules,
    telemetry,
)

# Documented once for every route under /api/v1: they all need a key.
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no API key, or an unknown or revoked one"},
    403: {"description": "the key's role may not do this; the answer names the roles that may"},
}

api_router = APIRouter(prefix="/api/v1", responses=_AUTH_RESPONSES)
api_router.include_router(devices.router)
api_router.include_router(groups.router)
api_router.include_router(audit.router)
api_router.include_router(telemetry.router)
api_router.include_router(alerts.router)
api_router.include_router(rules.router)
api_router.include_router(ioc.router)
api_router.include_router(grafana.router)
api_router.include_router(commands.router)
api_router.include_router(programs.router)
api_router.include_router(energy.router)

__all__ = ["api_router", "health", "metrics"]
