"""The console's routers, one per resource, gathered into one (mounted at ``/``)."""

from fastapi import APIRouter

from pharos.console.routes import alerts, auth, commissioning, devices, energy, overrides, programs

router = APIRouter()
router.include_router(auth.router)
router.include_router(commissioning.router)
router.include_router(programs.router)
router.include_router(energy.router)
router.include_router(alerts.router)
router.include_router(devices.router)
router.include_router(overrides.router)

__all__ = ["router"]
