"""Lighting: ``/programs``, ``/calendars``, ``/assignments``, ``/overrides`` and
``/lamp-states`` (desired beside reported, drift).

Anyone with a key may read. Energy managers (and admins) edit programs, calendars and
assignments; operators (and admins) set and clear overrides. A refused program,
calendar or assignment is a 422 naming the field (``steps.2``, ``target_id``).
Changes reach the lamps through the running control plane when there is one.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from control.commands.model import CommandRequest
from control.models import AssignmentRow, OverrideRow
from control.plan import CalendarSpec, Target, TargetType
from control.program import ProgramError, ProgramSpec, Site
from control.state import LampStatePublic, list_lamp_states
from control.store import (
    NotFound,
    add_override,
    assign,
    clear_override,
    delete_program,
    get_calendar,
    get_program,
    list_assignments,
    list_calendars,
    list_programs,
    live_overrides,
    save_calendar,
    save_program,
    unassign,
)
from devices.registry.db import transaction
from pharos.api.clock import ClockDep
from pharos.api.deps import CurrentKey, RowId, RuntimeDep, require_roles
from pharos.api.errors import invalid_at, responses
from pharos.apikeys import Role
from pharos.runtime import Runtime

router = APIRouter(tags=["lighting"])

_energy_managers = Depends(require_roles(Role.ENERGY_MANAGER))
_operators = Depends(require_roles(Role.OPERATOR))


def site_of(runtime: Runtime) -> Site:
    site = runtime.settings.site
    return Site(latitude=site.latitude, longitude=site.longitude, timezone=site.timezone)


def _refused(exc: ProgramError) -> Exception:
    return invalid_at(("body", *exc.field.split(".")), exc.reason)


def _missing(exc: NotFound) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))


def _replan(runtime: Runtime) -> None:
    if runtime.control is not None:
        runtime.control.scheduler.plan_changed()


# --- programs -------------------------------------------------------------------------------


def store_program(runtime: Runtime, spec: ProgramSpec) -> ProgramSpec:
    """Save ``spec`` and re-plan: the lamps running it get its new steps (the API and
    the console's program editor both save through here). ``ProgramError`` names the step."""
    with transaction(runtime.sessions) as session:
        saved = save_program(session, spec, site_of(runtime))
    _replan(runtime)
    return saved


@router.put("/programs/{program_id}", dependencies=[_energy_managers])
def put_program(program_id: str, body: ProgramSpec, runtime: RuntimeDep) -> ProgramSpec:
    """Create or replace a program; its steps must keep their order on every day."""
    if body.id != program_id:
        raise invalid_at(("body", "id"), f"does not match the path ({program_id!r})")
    try:
        return store_program(runtime, body)
    except ProgramError as exc:
        raise _refused(exc) from None


@router.get("/programs")
def get_programs(runtime: RuntimeDep) -> list[ProgramSpec]:
    with transaction(runtime.sessions) as session:
        return list_programs(session)


@router.get("/programs/{program_id}", responses=responses(404))
def show_program(program_id: str, runtime: RuntimeDep) -> ProgramSpec:
    try:
        with transaction(runtime.sessions) as session:
            return get_program(session, program_id)
    except NotFound as exc:
        raise _missing(exc) from None


@router.delete(
    "/programs/{program_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[_energy_managers],
    responses=responses(404, 409, meanings={409: "the program is still in use"}),
)
def remove_program(program_id: str, runtime: RuntimeDep) -> None:
    try:
        with transaction(runtime.sessions) as session:
            delete_program(session, program_id)
    except NotFound as exc:
        raise _missing(exc) from None
    except ProgramError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None


# --- calendars -------------------------------------------------------------------------------


@router.put("/calendars/{calendar_id}", dependencies=[_energy_managers])
def put_calendar(calendar_id: str, body: CalendarSpec, runtime: RuntimeDep) -> CalendarSpec:
    """Ordered rules (date ranges, weekdays, single dates): the first match picks the
    night's program, else the default."""
    if body.id != calendar_id:
        raise invalid_at(("body", "id"), f"does not match the path ({calendar_id!r})")
    try:
        with transaction(runtime.sessions) as session:
            saved = save_calendar(session, body)
    except ProgramError as exc:
        raise _refused(exc) from None
    _replan(runtime)
    return saved


@router.get("/calendars")
def get_calendars(runtime: RuntimeDep) -> list[CalendarSpec]:
    with transaction(runtime.sessions) as session:
        return list_calendars(session)


@router.get("/calendars/{calendar_id}", responses=responses(404))
def show_calendar(calendar_id: str, runtime: RuntimeDep) -> CalendarSpec:
    try:
        with transaction(runtime.sessions) as session:
            return get_calendar(session, calendar_id)
    except NotFound as exc:
        raise _missing(exc) from None


# --- assignments -----------------------------------------------------------------------------


class AssignmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_type: TargetType = Field(description="a group or a single lamp")
    target_id: Annotated[str, Field(min_length=1, max_length=63, description="its id")]
    calendar_id: Annotated[str, Field(min_length=1, max_length=64, description="calendar")]


class AssignmentPublic(AssignmentCreate):
    id: int
    created_at: datetime


def _assignment_public(row: AssignmentRow) -> AssignmentPublic:
    return AssignmentPublic(
        id=row.id,
        target_type=TargetType(row.target_type),
        target_id=row.target_id,
        calendar_id=row.calendar_id,
        created_at=row.created_at,
    )


@router.put("/assignments", dependencies=[_energy_managers])
def put_assignment(body: AssignmentCreate, runtime: RuntimeDep) -> AssignmentPublic:
    """Give a group or lamp a calendar (a lamp's own beats its groups')."""
    try:
        with transaction(runtime.sessions) as session:
            row = assign(session, Target(body.target_type, body.target_id), body.calendar_id)
            public = _assignment_public(row)
    except ProgramError as exc:
        raise _refused(exc) from None
    _replan(runtime)
    return public


@router.get("/assignments")
def get_assignments(runtime: RuntimeDep) -> list[AssignmentPublic]:
    with transaction(runtime.sessions) as session:
        return [_assignment_public(r) for r in list_assignments(session)]


@router.delete(
    "/assignments/{target_type}/{target_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[_energy_managers],
    responses=responses(404),
)
def remove_assignment(target_type: TargetType, target_id: str, runtime: RuntimeDep) -> None:
    try:
        with transaction(runtime.sessions) as session:
            unassign(session, Target(target_type, target_id))
    except NotFound as exc:
        raise _missing(exc) from None
    _replan(runtime)


# --- overrides -------------------------------------------------------------------------------


class OverrideCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_type: TargetType = Field(description="a group or a single lamp")
    target_id: Annotated[str, Field(min_length=1, max_length=63)]
    level: Annotated[float, Field(ge=0, le=100, description="light level in percent")]
    minutes: Annotated[int, Field(ge=1, le=24 * 60)] | None = Field(
        None, description="how long it holds; none: until cleared"
    )
    reason: Annotated[str, Field(max_length=500)] = ""


class OverridePublic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    target_type: TargetType
    target_id: str
    level: float
    starts_at: datetime
    until: datetime | None
    cleared_at: datetime | None
    created_by: str
    reason: str


def _override_public(row: OverrideRow) -> OverridePublic:
    return OverridePublic(
        id=row.id,
        target_type=TargetType(row.target_type),
        target_id=row.target_id,
        level=row.level,
        starts_at=row.starts_at,
        until=row.until,
        cleared_at=row.cleared_at,
        created_by=row.created_by,
        reason=row.reason,
    )


@router.post("/overrides", status_code=status.HTTP_201_CREATED, dependencies=[_operators])
async def create_override(
    body: OverrideCreate, runtime: RuntimeDep, key: CurrentKey, clock: ClockDep
) -> OverridePublic:
    """A level over the program, for ``minutes`` or until cleared; sent to the lamps at
    once (timed overrides as the lamps' own ``override``, so they fall back by themselves)."""
    target = Target(body.target_type, body.target_id)
    now = clock.now()
    until = now + timedelta(minutes=body.minutes) if body.minutes else None
    try:
        with transaction(runtime.sessions) as session:
            row = add_override(session, target, body.level, now, until, key.name, body.reason)
            public = _override_public(row)
    except ProgramError as exc:
        raise _refused(exc) from None
    control = runtime.control
    if control is not None:
        if body.minutes:
            request = CommandRequest(
                action="override",
                params={"level": body.level, "minutes": body.minutes},
                target_type=body.target_type,
                target_id=body.target_id,
            )
            await control.commands.submit(request, key.name, source="override")
        else:
            await control.scheduler.refresh(target)
        control.scheduler.plan_changed()
    return public


@router.get("/overrides")
def get_overrides(runtime: RuntimeDep, clock: ClockDep) -> list[OverridePublic]:
    """Overrides holding now or later."""
    with transaction(runtime.sessions) as session:
        return [_override_public(r) for r in live_overrides(session, clock.now())]


@router.delete("/overrides/{override_id}", dependencies=[_operators], responses=responses(404))
async def remove_override(
    override_id: RowId, runtime: RuntimeDep, clock: ClockDep
) -> OverridePublic:
    """Clear an override: its lamps go back to their program's level now."""
    try:
        with transaction(runtime.sessions) as session:
            row = clear_override(session, override_id, clock.now())
            public = _override_public(row)
    except NotFound as exc:
        raise _missing(exc) from None
    if runtime.control is not None:
        await runtime.control.scheduler.refresh(Target(public.target_type, public.target_id))
        runtime.control.scheduler.plan_changed()
    return public


# --- desired and reported state ----------------------------------------------------------------


@router.get("/lamp-states")
def get_lamp_states(
    runtime: RuntimeDep,
    drifting: Annotated[bool, Query(description="only lamps off their desired state")] = False,
) -> list[LampStatePublic]:
    with transaction(runtime.sessions) as session:
        return list_lamp_states(session, drifting_only=drifting)
