"""``/api/v1/audit``: who changed what and when, with the record before and after.

Readable by admins, IOC operators and energy managers: the people who supervise the
city's devices and answer for changes to them. Viewers (IOC screens, embeds) and
field technicians cannot: the log names every member of staff behind every change
city-wide, which neither needs; a technician sees a device's current state and
commissioning sign-off on the device itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from devices.registry.schemas import AuditPublic, Page
from pharos.api.deps import PageDep, RegistryDep, require_roles
from pharos.apikeys import Role

router = APIRouter(prefix="/audit", tags=["audit"])

_auditors = Depends(require_roles(Role.OPERATOR, Role.ENERGY_MANAGER))


@router.get("", dependencies=[_auditors])
def list_audit(
    registry: RegistryDep,
    page: PageDep,
    entity_type: Annotated[
        str | None, Query(max_length=32, description="device, group, broker_account")
    ] = None,
    entity_id: Annotated[str | None, Query(max_length=200, description="its id")] = None,
) -> Page[AuditPublic]:
    """Newest first."""
    rows, total = registry.audit_log(
        entity_type=entity_type, entity_id=entity_id, offset=page.offset, limit=page.limit
    )
    return Page[AuditPublic](
        items=[AuditPublic.model_validate(r) for r in rows],
        total=total,
        offset=page.offset,
        limit=page.limit,
    )
