"""Control's data in the database: programs, calendars, assignments, overrides, the plan.

Plain functions over a SQLAlchemy ``Session`` (the caller owns the transaction; async
services call them through ``asyncio.to_thread``). Every check raises ``ProgramError``
naming the field: an unknown group, a calendar naming a missing program, a program
whose steps overlap. ``load_plan`` reads everything ``desired_level`` needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from control.models import AssignmentRow, CalendarRow, LampStateRow, OverrideRow, ProgramRow
from control.plan import (
    ActiveOverride,
    CalendarRule,
    CalendarSpec,
    ControlPlan,
    LampRef,
    Target,
    TargetType,
)
from control.program import ProgramError, ProgramSpec, Site, check_program
from devices.registry.models import Device, Group, device_groups
from devices.wire.commands import ProgramStep

LAMP_KINDS = ("streetlight", "smart_pole")


class NotFound(LookupError):
    """No such program, calendar, assignment, override or command."""


# --- programs -----------------------------------------------------------------------------


def program_of(row: ProgramRow) -> ProgramSpec:
    steps = [ProgramStep.model_validate(s) for s in row.steps["steps"]]
    return ProgramSpec(id=row.id, name=row.name, steps=steps)


def save_program(session: Session, spec: ProgramSpec, site: Site) -> ProgramSpec:
    """Create or replace a program after checking its steps all year at ``site``."""
    check_program(spec, site)
    row = session.get(ProgramRow, spec.id)
    steps = {"steps": [s.model_dump(exclude_defaults=True) for s in spec.steps]}
    if row is None:
        session.add(ProgramRow(id=spec.id, name=spec.name, steps=steps))
    else:
        if row.steps != steps:
            # Lamps hold the old steps under this id: the next step sends them the new.
            session.execute(
                update(LampStateRow)
                .where(LampStateRow.desired_program_id == spec.id)
                .values(desired_program_id=None)
            )
        row.name, row.steps = spec.name, steps
    session.flush()
    return spec


def get_program(session: Session, program_id: str) -> ProgramSpec:
    row = session.get(ProgramRow, program_id)
    if row is None:
        raise NotFound(f"no program {program_id!r}")
    return program_of(row)


def list_programs(session: Session) -> list[ProgramSpec]:
    return [program_of(r) for r in session.scalars(select(ProgramRow).order_by(ProgramRow.id))]


def delete_program(session: Session, program_id: str) -> None:
    row = session.get(ProgramRow, program_id)
    if row is None:
        raise NotFound(f"no program {program_id!r}")
    for calendar in list_calendars(session):
        if program_id in {calendar.default_program_id, *(r.program_id for r in calendar.rules)}:
            raise ProgramError("id", f"calendar {calendar.id!r} uses program {program_id!r}")
    session.delete(row)


# --- calendars ----------------------------------------------------------------------------


def calendar_of(row: CalendarRow) -> CalendarSpec:
    rules = [CalendarRule.model_validate(r) for r in row.rules["rules"]]
    return CalendarSpec(
        id=row.id, name=row.name, default_program_id=row.default_program_id, rules=rules
    )


def missing_programs(session: Session, spec: CalendarSpec) -> list[tuple[str, str]]:
    """(field, program id) of every program ``spec`` names that is not stored."""
    named = [("default_program_id", spec.default_program_id)] + [
        (f"rules.{index}.program_id", rule.program_id) for index, rule in enumerate(spec.rules)
    ]
    return [
        (f, program_id) for f, program_id in named if session.get(ProgramRow, program_id) is None
    ]


def save_calendar(session: Session, spec: CalendarSpec) -> CalendarSpec:
    for field, program_id in missing_programs(session, spec):
        raise ProgramError(field, f"no program {program_id!r}")
    rules = {"rules": [r.model_dump(mode="json", exclude_none=True) for r in spec.rules]}
    row = session.get(CalendarRow, spec.id)
    if row is None:
        session.add(
            CalendarRow(
                id=spec.id, name=spec.name, default_program_id=spec.default_program_id, rules=rules
            )
        )
    else:
        row.name, row.default_program_id, row.rules = spec.name, spec.default_program_id, rules
    session.flush()
    return spec


def get_calendar(session: Session, calendar_id: str) -> CalendarSpec:
    row = session.get(CalendarRow, calendar_id)
    if row is None:
        raise NotFound(f"no calendar {calendar_id!r}")
    return calendar_of(row)


def list_calendars(session: Session) -> list[CalendarSpec]:
    return [calendar_of(r) for r in session.scalars(select(CalendarRow).order_by(CalendarRow.id))]


# --- targets, assignments, overrides --------------------------------------------------------


def check_target(session: Session, target: Target, field: str = "target_id") -> None:
    """``ProgramError`` naming ``field`` unless the group or lamp exists."""
    if target.type is TargetType.GROUP:
        if session.get(Group, target.id) is None:
            raise ProgramError(field, f"unknown group {target.id!r}")
        return
    device = session.get(Device, target.id)
    if device is None:
        raise ProgramError(field, f"unknown device {target.id!r}")


def assign(session: Session, target: Target, calendar_id: str) -> AssignmentRow:
    check_target(session, target)
    if session.get(CalendarRow, calendar_id) is None:
        raise ProgramError("calendar_id", f"no calendar {calendar_id!r}")
    row = session.scalar(
        select(AssignmentRow).where(
            AssignmentRow.target_type == target.type.value, AssignmentRow.target_id == target.id
        )
    )
    if row is None:
        row = AssignmentRow(
            target_type=target.type.value, target_id=target.id, calendar_id=calendar_id
        )
        session.add(row)
    else:
        row.calendar_id = calendar_id
    session.flush()
    return row


def unassign(session: Session, target: Target) -> None:
    row = session.scalar(
        select(AssignmentRow).where(
            AssignmentRow.target_type == target.type.value, AssignmentRow.target_id == target.id
        )
    )
    if row is None:
        raise NotFound(f"nothing assigned to {target}")
    session.delete(row)


def list_assignments(session: Session) -> list[AssignmentRow]:
    return list(session.scalars(select(AssignmentRow).order_by(AssignmentRow.id)))


def add_override(
    session: Session,
    target: Target,
    level: float,
    starts_at: datetime,
    until: datetime | None,
    actor: str,
    reason: str = "",
) -> OverrideRow:
    check_target(session, target)
    if not 0 <= level <= 100:
        raise ProgramError("level", "must be within 0..100")
    if until is not None and until <= starts_at:
        raise ProgramError("minutes", "an override must last at least a minute")
    row = OverrideRow(
        target_type=target.type.value,
        target_id=target.id,
        level=level,
        starts_at=starts_at,
        until=until,
        created_by=actor,
        reason=reason,
    )
    session.add(row)
    session.flush()
    return row


def clear_override(session: Session, override_id: int, at: datetime) -> OverrideRow:
    row = session.get(OverrideRow, override_id)
    if row is None:
        raise NotFound(f"no override {override_id}")
    if row.cleared_at is None:
        row.cleared_at = at
        if row.until is None or row.until > at:
            row.until = at
    return row


def live_overrides(session: Session, at: datetime) -> list[OverrideRow]:
    return list(
        session.scalars(
            select(OverrideRow)
            .where(OverrideRow.cleared_at.is_(None))
            .where(or_(OverrideRow.until.is_(None), OverrideRow.until > at))
            .order_by(OverrideRow.id)
        )
    )


# --- the plan and the lamps ----------------------------------------------------------------


def load_plan(session: Session, site: Site, at: datetime) -> ControlPlan:
    """Everything ``desired_level`` needs, with overrides that have not ended by ``at``."""
    return ControlPlan(
        site=site,
        programs={p.id: p for p in list_programs(session)},
        calendars={c.id: c for c in list_calendars(session)},
        assignments={
            Target(TargetType(a.target_type), a.target_id): a.calendar_id
            for a in list_assignments(session)
        },
        overrides=[
            ActiveOverride(
                o.id, Target(TargetType(o.target_type), o.target_id), o.level, o.starts_at, o.until
            )
            for o in live_overrides(session, at)
        ],
    )


def lamps_of(session: Session, target: Target) -> list[LampRef]:
    """The lamps (streetlights, smart poles) of a group, or the one lamp, with their groups."""
    query = select(Device).where(Device.kind.in_(LAMP_KINDS), Device.state != "decommissioned")
    if target.type is TargetType.GROUP:
        query = query.join(device_groups, device_groups.c.device_id == Device.id).where(
            device_groups.c.group_id == target.id
        )
    else:
        query = query.where(Device.id == target.id)
    return [
        LampRef(d.id, tuple(g.id for g in d.groups))
        for d in session.scalars(query.order_by(Device.id))
    ]


def managed_lamps(session: Session, plan: ControlPlan) -> list[LampRef]:
    """Every lamp a program or an override reaches."""
    targets: set[Target] = set(plan.assignments) | {o.target for o in plan.overrides}
    seen: dict[str, LampRef] = {}
    for target in sorted(targets, key=str):
        for lamp in lamps_of(session, target):
            seen.setdefault(lamp.device_id, lamp)
    return [seen[k] for k in sorted(seen)]


def group_devices(session: Session, group_id: str) -> Sequence[Device]:
    query = (
        select(Device)
        .join(device_groups, device_groups.c.device_id == Device.id)
        .where(device_groups.c.group_id == group_id, Device.state != "decommissioned")
        .order_by(Device.id)
    )
    return list(session.scalars(query))
