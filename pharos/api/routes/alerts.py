"""``/api/v1/alerts``: the IOC's alerts: list and filter, history, acknowledge, comment, close.

Anyone with a key reads alerts (the IOC wall shows them). Operators acknowledge and
close them; operators and technicians comment. Alerts come from the database alone,
so listing works whether or not the rules engine runs in this process; when it does
(``runtime.rules``), every change made here is also published on ``pharos/v1/alerts``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import AwareDatetime

from devices.registry.schemas import Page
from pharos.api.clock import ClockDep
from pharos.api.deps import CurrentKey, PageDep, RowId, RuntimeDep, require_roles
from pharos.api.errors import responses
from pharos.apikeys import Role
from rules.alerts import (
    AlertChange,
    AlertCommentCreate,
    AlertDetail,
    AlertFilter,
    AlertNote,
    AlertNotFoundError,
    AlertPublic,
    AlertState,
    AlertStateError,
    AlertStore,
    WorkItemPublic,
)
from rules.spec import Severity

router = APIRouter(prefix="/alerts", tags=["alerts"])

_operators = Depends(require_roles(Role.OPERATOR))
_commenters = Depends(require_roles(Role.OPERATOR, Role.TECHNICIAN))
_RESPONSES = responses(404, 409, meanings={404: "no such alert"})
T = TypeVar("T")


async def _call(work: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(work)
    except AlertNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except AlertStateError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


async def _published(runtime: RuntimeDep, change: AlertChange) -> AlertPublic:
    if runtime.rules is not None:
        await runtime.rules.publish_change(change)
    return change.alert


@router.get("")
async def list_alerts(
    runtime: RuntimeDep,
    page: PageDep,
    state: Annotated[AlertState | None, Query(description="only this state")] = None,
    live: Annotated[bool, Query(description="only open or acknowledged alerts")] = False,
    severity: Annotated[Severity | None, Query()] = None,
    rule_id: Annotated[str | None, Query(max_length=100)] = None,
    device_id: Annotated[str | None, Query(max_length=255)] = None,
    district: Annotated[str | None, Query(max_length=100)] = None,
    since: Annotated[AwareDatetime | None, Query(description="raised at or after")] = None,
) -> Page[AlertPublic]:
    """Alerts, newest first."""
    filters = AlertFilter(state, live, severity, rule_id, device_id, district, since)
    store = AlertStore(runtime.sessions)
    items, total = await _call(lambda: store.list(filters, page.offset, page.limit))
    return Page[AlertPublic](items=items, total=total, offset=page.offset, limit=page.limit)


@router.get("/work-items")
async def list_work_items(
    runtime: RuntimeDep,
    device_id: Annotated[str | None, Query(max_length=255)] = None,
) -> list[WorkItemPublic]:
    """Work items alerts opened for the technicians (a lamp failure's repair)."""
    store = AlertStore(runtime.sessions)
    return await _call(lambda: store.work_items(device_id))


@router.get("/{alert_id}", responses=_RESPONSES)
async def get_alert(alert_id: RowId, runtime: RuntimeDep) -> AlertDetail:
    """One alert with its history (every event, oldest first)."""
    store = AlertStore(runtime.sessions)
    return await _call(lambda: store.get(alert_id))


@router.post("/{alert_id}/acknowledge", responses=_RESPONSES, dependencies=[_operators])
async def acknowledge_alert(
    alert_id: RowId, body: AlertNote, runtime: RuntimeDep, key: CurrentKey, clock: ClockDep
) -> AlertPublic:
    store = AlertStore(runtime.sessions)
    now = clock.now()  # the process's clock: history stays in order with the rules'
    change = await _call(lambda: store.acknowledge(alert_id, key.name, now, body.note))
    return await _published(runtime, change)


@router.post(
    "/{alert_id}/comments",
    status_code=status.HTTP_201_CREATED,
    responses=_RESPONSES,
    dependencies=[_commenters],
)
async def comment_alert(
    alert_id: RowId,
    body: AlertCommentCreate,
    runtime: RuntimeDep,
    key: CurrentKey,
    clock: ClockDep,
) -> AlertDetail:
    store = AlertStore(runtime.sessions)
    now = clock.now()  # the process's clock: history stays in order with the rules'
    change = await _call(lambda: store.comment(alert_id, key.name, now, body.text))
    await _published(runtime, change)
    return await _call(lambda: store.get(alert_id))


@router.post("/{alert_id}/close", responses=_RESPONSES, dependencies=[_operators])
async def close_alert(
    alert_id: RowId, body: AlertNote, runtime: RuntimeDep, key: CurrentKey, clock: ClockDep
) -> AlertPublic:
    store = AlertStore(runtime.sessions)
    now = clock.now()  # the process's clock: history stays in order with the rules'
    change = await _call(lambda: store.close(alert_id, key.name, now, body.note))
    return await _published(runtime, change)
