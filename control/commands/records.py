"""Commands in the database: creation (targets resolved, parameters checked per kind),
status updates in bulk, reading them back with progress, cancellation.

Synchronous functions over a ``Session``; the command service calls them in a thread.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from control.commands.model import (
    CommandInvalid,
    CommandPublic,
    CommandRequest,
    TargetPublic,
    TargetStatus,
    progress_of,
)
from control.models import CommandRow, CommandTargetRow
from control.plan import TargetType
from devices.registry.models import Device, Group, device_groups
from devices.wire import kind_spec
from devices.wire.commands import CommandParamsError, validate_command_params


@dataclass(frozen=True, slots=True)
class Route:
    """How to reach one device: MQTT, or a Modbus coil write to a cabinet."""

    device_id: str
    kind: str
    modbus_host: str | None = None
    modbus_port: int | None = None
    modbus_unit: int | None = None

    @property
    def is_modbus(self) -> bool:
        return self.kind == "lighting_cabinet"


def _route(device: Device) -> Route:
    return Route(device.id, device.kind, device.modbus_host, device.modbus_port, device.modbus_unit)


@dataclass(frozen=True, slots=True)
class Created:
    command: CommandPublic
    routes: list[Route]
    new: bool  # False: the id was known, nothing was done again


def _targets(session: Session, request: CommandRequest) -> list[Device]:
    if request.target_type is TargetType.DEVICE:
        device = session.get(Device, request.target_id)
        if device is None:
            raise CommandInvalid("target_id", f"unknown device {request.target_id!r}")
        return [device]
    if session.get(Group, request.target_id) is None:
        raise CommandInvalid("target_id", f"unknown group {request.target_id!r}")
    query = (
        select(Device)
        .join(device_groups, device_groups.c.device_id == Device.id)
        .where(device_groups.c.group_id == request.target_id, Device.state != "decommissioned")
        .order_by(Device.id)
    )
    return list(session.scalars(query))


def create_command(
    session: Session, request: CommandRequest, actor: str, now: datetime, source: str = "api"
) -> Created:
    """Store a new command with a pending target per device, or return the known one."""
    known = session.get(CommandRow, str(request.id))
    if known is not None:
        return Created(command_public(session, known, with_targets=False), [], new=False)
    devices = _targets(session, request)
    # A group mixes kinds: the command goes to the devices that take the action.
    takers = [d for d in devices if request.action in kind_spec(d.kind).commands]
    if not takers:
        kinds = sorted({d.kind for d in devices}) or ["no devices"]
        raise CommandInvalid(
            "action", f"no device of {request.target_id!r} takes {request.action!r} ({kinds})"
        )
    try:
        for kind in sorted({d.kind for d in takers}):
            validate_command_params(kind, request.action, request.params)
    except CommandParamsError as exc:
        raise CommandInvalid(exc.field, exc.reason) from None
    row = CommandRow(
        id=str(request.id),
        action=request.action,
        params=request.params,
        target_type=request.target_type.value,
        target_id=request.target_id,
        created_by=actor,
        created_at=now,
        expires_at=now + timedelta(seconds=request.ttl_s),
        source=source,
    )
    session.add(row)
    session.flush()
    session.execute(
        insert(CommandTargetRow),
        [
            {"command_id": row.id, "device_id": d.id, "status": "pending", "attempts": 0}
            for d in takers
        ],
    )
    routes = [_route(d) for d in takers]
    public = command_public(session, row, with_targets=False)
    return Created(public, routes, new=True)


def write_updates(session: Session, updates: Sequence[dict[str, Any]]) -> None:
    """Bulk-update target rows (each dict has ``command_id``, ``device_id`` and columns)."""
    if updates:
        session.execute(update(CommandTargetRow), list(updates))


def command_public(session: Session, row: CommandRow, *, with_targets: bool) -> CommandPublic:
    targets = list(
        session.scalars(
            select(CommandTargetRow)
            .where(CommandTargetRow.command_id == row.id)
            .order_by(CommandTargetRow.device_id)
        )
    )
    statuses = [TargetStatus(t.status) for t in targets]
    return CommandPublic(
        id=uuid.UUID(row.id),
        action=row.action,
        params=row.params,
        target_type=TargetType(row.target_type),
        target_id=row.target_id,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        cancelled_at=row.cancelled_at,
        source=row.source,
        progress=progress_of(statuses),
        targets=[
            TargetPublic(
                device_id=t.device_id,
                status=TargetStatus(t.status),
                attempts=t.attempts,
                first_sent_at=t.first_sent_at,
                last_sent_at=t.last_sent_at,
                answered_at=t.answered_at,
                detail=t.detail,
            )
            for t in targets
        ]
        if with_targets
        else None,
    )


def get_command(session: Session, command_id: str, *, with_targets: bool = True) -> CommandPublic:
    row = session.get(CommandRow, command_id)
    if row is None:
        raise LookupError(f"no command {command_id}")
    return command_public(session, row, with_targets=with_targets)


def list_commands(
    session: Session, *, offset: int = 0, limit: int = 100, target_id: str | None = None
) -> tuple[list[CommandPublic], int]:
    query = select(CommandRow)
    if target_id is not None:
        query = query.where(CommandRow.target_id == target_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(CommandRow.created_at.desc(), CommandRow.id).offset(offset).limit(limit)
    )
    return [command_public(session, r, with_targets=False) for r in rows], total


def cancel_command(session: Session, command_id: str, now: datetime) -> CommandPublic:
    row = session.get(CommandRow, command_id)
    if row is None:
        raise LookupError(f"no command {command_id}")
    if row.cancelled_at is None:
        row.cancelled_at = now
        session.execute(
            update(CommandTargetRow)
            .where(
                CommandTargetRow.command_id == command_id,
                CommandTargetRow.status.in_(["pending", "sent"]),
            )
            .values(status="cancelled", answered_at=now, detail="cancelled")
        )
    return command_public(session, row, with_targets=True)


@dataclass(frozen=True, slots=True)
class OpenTarget:
    command_id: str
    action: str
    params: dict[str, Any]
    expires_at: datetime
    route: Route
    status: TargetStatus
    attempts: int
    last_sent_at: datetime | None


def open_targets(session: Session) -> list[OpenTarget]:
    """Targets still pending or sent of commands not cancelled (to resume after a restart)."""
    query = (
        select(CommandTargetRow, CommandRow, Device)
        .join(CommandRow, CommandRow.id == CommandTargetRow.command_id)
        .join(Device, Device.id == CommandTargetRow.device_id)
        .where(CommandTargetRow.status.in_(["pending", "sent"]), CommandRow.cancelled_at.is_(None))
    )
    return [
        OpenTarget(
            command.id,
            command.action,
            command.params,
            command.expires_at,
            _route(device),
            TargetStatus(target.status),
            target.attempts,
            target.last_sent_at,
        )
        for target, command, device in session.execute(query)
    ]
