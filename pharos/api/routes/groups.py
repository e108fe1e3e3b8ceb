"""``/api/v1/groups``: streets, districts, circuits and other sets of devices.

Anyone with a key may read. Energy managers group devices to schedule them and
technicians to organise the field, so both (and admins) create and edit groups;
deleting one (which also removes every membership) is for admins only.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status

from devices.registry.schemas import DevicePublic, GroupCreate, GroupPublic, GroupUpdate, Page
from devices.registry.service import DeviceFilter, device_public
from pharos.api.deps import PageDep, RegistryDep, require_roles
from pharos.api.errors import responses
from pharos.apikeys import Role

router = APIRouter(prefix="/groups", tags=["groups"])

_editors = Depends(require_roles(Role.ENERGY_MANAGER, Role.TECHNICIAN))
_admins = Depends(require_roles(Role.ADMIN))


@router.post(
    "", status_code=status.HTTP_201_CREATED, dependencies=[_editors], responses=responses(409)
)
def create_group(body: GroupCreate, registry: RegistryDep) -> GroupPublic:
    return registry.group_public(registry.create_group(body))


@router.get("")
def list_groups(registry: RegistryDep, page: PageDep) -> Page[GroupPublic]:
    rows, total = registry.list_groups(offset=page.offset, limit=page.limit)
    return Page[GroupPublic](
        items=[registry.group_public(g) for g in rows],
        total=total,
        offset=page.offset,
        limit=page.limit,
    )


@router.get("/{group_id}", responses=responses(404))
def get_group(group_id: str, registry: RegistryDep) -> GroupPublic:
    return registry.group_public(registry.get_group(group_id))


@router.patch("/{group_id}", dependencies=[_editors], responses=responses(404, 409))
def update_group(group_id: str, body: GroupUpdate, registry: RegistryDep) -> GroupPublic:
    return registry.group_public(registry.update_group(group_id, body))


@router.delete(
    "/{group_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[_admins],
    responses=responses(404),
)
def delete_group(group_id: str, registry: RegistryDep) -> None:
    """Delete the group; its devices stay, only their membership goes."""
    registry.delete_group(group_id)


@router.get("/{group_id}/devices", responses=responses(404))
def list_group_devices(group_id: str, registry: RegistryDep, page: PageDep) -> Page[DevicePublic]:
    registry.get_group(group_id)  # 404 for an unknown group rather than an empty page
    rows, total = registry.list_devices(
        DeviceFilter(group=group_id), offset=page.offset, limit=page.limit
    )
    return Page[DevicePublic](
        items=[device_public(d) for d in rows], total=total, offset=page.offset, limit=page.limit
    )
