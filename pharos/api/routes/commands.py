"""``/api/v1/commands``: send a command to a device or a group, follow it per device,
cancel it. Anyone with a key may read; operators (and admins) send and cancel.

Sending needs the live command service (``runtime.control``): without it the answer is
503 with the reason. Reading works from the database alone.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from control.commands.model import CommandInvalid, CommandPublic, CommandRequest
from control.commands.records import get_command, list_commands
from control.plane import ControlPlane
from devices.registry.db import transaction
from devices.registry.schemas import Page
from pharos.api.deps import CurrentKey, PageDep, RuntimeDep, require_roles
from pharos.api.errors import invalid_at, responses
from pharos.apikeys import Role
from pharos.runtime import Runtime

router = APIRouter(prefix="/commands", tags=["commands"])

_operators = Depends(require_roles(Role.OPERATOR))


def live_control(runtime: Runtime) -> ControlPlane:
    """The running control plane, or 503 naming what is missing."""
    if runtime.control is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the control service (commands, scheduler) is not running in this process",
        )
    return runtime.control


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[_operators],
    responses=responses(503),
)
async def create_command(
    body: CommandRequest, runtime: RuntimeDep, key: CurrentKey
) -> CommandPublic:
    """Store and send; a repeated ``id`` answers the first command and does nothing again."""
    control = live_control(runtime)
    try:
        return await control.commands.submit(body, key.name)
    except CommandInvalid as exc:
        raise invalid_at(("body", exc.field), exc.reason) from None


@router.get("")
def get_commands(
    runtime: RuntimeDep,
    page: PageDep,
    target_id: Annotated[str | None, Query(description="commands to this device or group")] = None,
) -> Page[CommandPublic]:
    with transaction(runtime.sessions) as session:
        rows, total = list_commands(
            session, offset=page.offset, limit=page.limit, target_id=target_id
        )
    return Page[CommandPublic](items=rows, total=total, offset=page.offset, limit=page.limit)


@router.get("/{command_id}", responses=responses(404))
def show_command(command_id: uuid.UUID, runtime: RuntimeDep) -> CommandPublic:
    """The command with its progress and every device's status and detail."""
    with transaction(runtime.sessions) as session:
        try:
            return get_command(session, str(command_id))
        except LookupError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None


@router.post("/{command_id}/cancel", dependencies=[_operators], responses=responses(404, 503))
async def cancel_command(command_id: uuid.UUID, runtime: RuntimeDep) -> CommandPublic:
    """Devices not answered yet are marked cancelled and not tried again."""
    control = live_control(runtime)
    try:
        return await control.commands.cancel(command_id)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
