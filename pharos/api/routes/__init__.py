"""The routers: one per resource, gathered under ``/api/v1``, the one guarded prefix.

``api_router`` depends on ``require_key``: every route included in it, now or later,
answers 401 without a live key before its handler (or its validation) runs; then on
``refuse_nul_characters`` (no NUL reaches the database). What
answers without a key is the allow-list ``PUBLIC_PATHS`` and nothing else:
``/healthz`` (load balancers, systemd), ``/metrics`` (Prometheus scrapes it without
credentials; it carries pipeline counters, no device data), and the API's own
description (``/openapi.json``, ``/docs``). ``tests/pharos/api/test_auth.py`` walks
``/openapi.json`` and fails for any other route that answers without a key.
"""

from fastapi import APIRouter, Depends

from pharos.api.deps import refuse_nul_characters, require_key
from pharos.api.errors import AUTH_RESPONSES
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

API_PREFIX = "/api/v1"
PUBLIC_PATHS = frozenset(
    {"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
)

api_router = APIRouter(
    prefix=API_PREFIX,
    dependencies=[Depends(require_key), Depends(refuse_nul_characters)],
    responses=AUTH_RESPONSES,
)
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

__all__ = ["API_PREFIX", "PUBLIC_PATHS", "api_router", "health", "metrics"]
