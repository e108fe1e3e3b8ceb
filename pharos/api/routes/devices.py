"""``/api/v1/devices``: registering, listing, editing, commissioning and retiring devices.

Anyone with a key may read; technicians (and admins) change devices, move them
through their lifecycle, rotate their broker secrets and import inventories.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, Field

from devices.registry.csv_import import CsvImportError
from devices.registry.csv_import import import_devices as import_device_csv
from devices.registry.models import LifecycleState
from devices.registry.schemas import (
    BrokerCredentials,
    CommissioningPublic,
    DeviceCreate,
    DeviceCreated,
    DevicePublic,
    DeviceUpdate,
    Page,
    TransitionRequest,
)
from devices.registry.service import DeviceFilter, InvalidError, device_public
from devices.wire import DeviceKind
from pharos.api.deps import PageDep, RegistryDep, require_roles
from pharos.api.errors import CsvRejectedError, CsvRowProblem, invalid_at, responses
from pharos.api.uploads import CsvText
from pharos.apikeys import Role

router = APIRouter(prefix="/devices", tags=["devices"])

_technicians = Depends(require_roles(Role.TECHNICIAN))


class ImportReport(BaseModel):
    """What an import did, by device id; credentials of new MQTT devices are shown once."""

    created: list[str]
    updated: list[str]
    unchanged: list[str]
    credentials: list[BrokerCredentials] = Field(
        description="new MQTT devices only; store the secrets now, they are not shown again"
    )


@router.post(
    "", status_code=status.HTTP_201_CREATED, dependencies=[_technicians], responses=responses(409)
)
def create_device(body: DeviceCreate, registry: RegistryDep) -> DeviceCreated:
    """Register a device; an MQTT device's broker secret is in the answer, once."""
    device, credentials = registry.create_device(body)
    return DeviceCreated(device=device_public(device), credentials=credentials)


@router.get("")
def list_devices(
    registry: RegistryDep,
    page: PageDep,
    kind: Annotated[DeviceKind | None, Query(description="only this kind")] = None,
    district: Annotated[str | None, Query(description="only this district")] = None,
    group: Annotated[str | None, Query(description="only members of this group")] = None,
    state: Annotated[LifecycleState | None, Query(description="only this state")] = None,
) -> Page[DevicePublic]:
    filters = DeviceFilter(kind=kind, district=district, group=group, state=state)
    rows, total = registry.list_devices(filters, offset=page.offset, limit=page.limit)
    return Page[DevicePublic](
        items=[device_public(d) for d in rows], total=total, offset=page.offset, limit=page.limit
    )


@router.post("/import", dependencies=[_technicians], responses=responses(409, 413))
def import_devices(csv_text: CsvText, registry: RegistryDep) -> ImportReport:
    """Create or update devices from a CSV, all or nothing: any bad row stores none.

    A 422 lists every problem as ``{"line", "column", "reason"}`` (header = line 1).
    """
    try:
        outcome = import_device_csv(registry, csv_text)
    except CsvImportError as exc:
        problems: list[CsvRowProblem] = [
            {"line": e.line, "column": e.column, "reason": e.reason} for e in exc.errors
        ]
        # Raised through the registry dependency, so what was upserted is rolled back.
        raise CsvRejectedError(problems) from None
    return ImportReport(
        created=outcome.created,
        updated=outcome.updated,
        unchanged=outcome.unchanged,
        credentials=outcome.credentials,
    )


@router.get("/{device_id}", responses=responses(404))
def get_device(device_id: str, registry: RegistryDep) -> DevicePublic:
    return device_public(registry.get_device(device_id))


@router.patch("/{device_id}", dependencies=[_technicians], responses=responses(404, 409))
def update_device(device_id: str, body: DeviceUpdate, registry: RegistryDep) -> DevicePublic:
    """Change the fields given; ``null`` clears an optional field."""
    return device_public(registry.update_device(device_id, body))


@router.post("/{device_id}/transition", dependencies=[_technicians], responses=responses(404, 409))
def transition_device(
    device_id: str, body: TransitionRequest, registry: RegistryDep
) -> DevicePublic:
    """Move a device through its lifecycle; 409 names why a move is not allowed."""
    return device_public(registry.transition(device_id, body.to, body.note))


@router.post(
    "/{device_id}/rotate-credentials",
    dependencies=[_technicians],
    responses=responses(404, 409),
)
def rotate_credentials(device_id: str, registry: RegistryDep) -> BrokerCredentials:
    """A new broker secret for an MQTT device; the old one stops working at once."""
    try:
        return registry.rotate_credentials(device_id)
    except InvalidError as exc:  # a Modbus device: the path names the wrong kind of device
        raise invalid_at(("path", "device_id"), exc.reason, device_id) from None


@router.get("/{device_id}/commissioning", responses=responses(404))
def get_commissioning(device_id: str, registry: RegistryDep) -> CommissioningPublic:
    """The commissioning checklist: what is ticked, what is missing, who signed off."""
    return device_public(registry.get_device(device_id)).commissioning
