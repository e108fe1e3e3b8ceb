"""Telemetry reads: a device's history and latest values, the twin, and dead letters.

Anyone with a key may read telemetry (IOC screens show it). Dead letters hold raw
payloads from the street and are for the people who fix devices and feeds:
operators, technicians and admins. The time series come from ``runtime.timeseries``
(InfluxDB or the embedded store, the same answers either way); status, last values
and dead letters from the registry database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import AwareDatetime, Field
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.models import Device, Group
from devices.registry.schemas import Page
from devices.registry.service import NotFoundError
from devices.wire import DeviceKind
from pharos.api.clock import ClockDep
from pharos.api.deps import PageDep, RuntimeDep, require_roles
from pharos.api.errors import invalid_at, responses
from pharos.apikeys import Role
from pharos.runtime import Runtime
from telemetry.deadletters import DeadLetterPublic, DeadLetterStore
from telemetry.query import (
    DEFAULT_INTERVAL,
    HistoryPublic,
    LatestPublic,
    ParamError,
    check_metric,
    history_public,
    history_window,
    latest_public,
)
from telemetry.store import (
    Aggregate,
    QueryError,
    StoreUnavailableError,
    TimeSeriesStore,
    UnsupportedAggregateError,
)
from telemetry.twin import TwinPublic, read_twin

router = APIRouter(tags=["telemetry"])

_dead_letter_readers = Depends(require_roles(Role.OPERATOR, Role.TECHNICIAN))
_STORE_RESPONSES = responses(502, 503)

T = TypeVar("T")


class DeadLetterPage(Page[DeadLetterPublic]):
    by_reason: dict[str, int] = Field(description="letters per reason class, for the filters")


def get_timeseries(runtime: RuntimeDep) -> TimeSeriesStore:
    # getattr: the store is built by the composition root next to the runtime's other
    # services; an app without one answers 503 rather than failing at startup.
    store: TimeSeriesStore | None = getattr(runtime, "timeseries", None)
    if store is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no time-series store configured")
    return store


TimeSeriesDep = Annotated[TimeSeriesStore, Depends(get_timeseries)]


@router.get("/devices/{device_id}/telemetry", responses={**_STORE_RESPONSES, **responses(404)})
async def device_telemetry(
    device_id: str,
    runtime: RuntimeDep,
    store: TimeSeriesDep,
    clock: ClockDep,
    metric: Annotated[
        str | None, Query(max_length=64, description="history of this metric; none: latest")
    ] = None,
    start: Annotated[AwareDatetime | None, Query(description="default: a day before end")] = None,
    end: Annotated[AwareDatetime | None, Query(description="exclusive; default: now")] = None,
    interval: Annotated[
        str, Query(max_length=16, description="30s, 5m, 1h, 1d, 1w; at least 1s")
    ] = DEFAULT_INTERVAL,
    aggregate: Annotated[Aggregate, Query(description="per interval")] = "mean",
) -> HistoryPublic | LatestPublic:
    """A metric's history, aggregated per interval; without ``metric``, the latest values.

    Intervals are aligned to the Unix epoch (like InfluxQL's ``GROUP BY time``);
    intervals without points are left out. The range is ``start <= time < end``.
    """
    kind = await _device_kind(runtime.sessions, device_id)
    if metric is None:
        return latest_public(await _ask(store.latest(device_ids=[device_id], kind=kind)))
    with _param_errors():
        check_metric(metric, kind)
        window = history_window(
            start=start, end=end, interval=interval, aggregate=aggregate, now=clock.now()
        )
    buckets = await _ask(
        store.history(
            kind=kind,
            device_id=device_id,
            metric=metric,
            start=window.start,
            end=window.end,
            interval=window.interval,
            aggregate=window.aggregate,
        )
    )
    return history_public(device_id, metric, window, buckets)


@router.get("/telemetry/latest", responses=_STORE_RESPONSES)
async def latest_telemetry(
    runtime: RuntimeDep,
    store: TimeSeriesDep,
    kind: Annotated[DeviceKind | None, Query(description="only this kind")] = None,
    district: Annotated[str | None, Query(max_length=100, description="only this district")] = None,
    group: Annotated[
        str | None, Query(max_length=63, description="only this group's members")
    ] = None,
    metric: Annotated[
        list[str] | None, Query(description="only these metrics (repeat the parameter)")
    ] = None,
) -> LatestPublic:
    """The newest value of each metric of each device in the selection."""
    kind_name = kind.value if kind is not None else None
    with _param_errors():
        for name in metric or []:
            check_metric(name, kind_name)
        _check_district(runtime, district)
    if group is not None:
        await _check_group(runtime.sessions, group)
    values = await _ask(
        store.latest(kind=kind_name, district=district, group=group, metrics=metric)
    )
    return latest_public(values)


@router.get("/devices/{device_id}/twin", responses=responses(404))
async def device_twin(device_id: str, runtime: RuntimeDep) -> TwinPublic:
    """What the device last reported: online/offline since when, last values, its state."""
    await _device_kind(runtime.sessions, device_id)
    return await read_twin(runtime.sessions, device_id)


@router.get("/dead-letters", dependencies=[_dead_letter_readers])
async def list_dead_letters(
    runtime: RuntimeDep,
    page: PageDep,
    device_id: Annotated[str | None, Query(max_length=255, description="only this device")] = None,
    source: Annotated[
        Literal["mqtt", "modbus", "influx"] | None, Query(description="only this source")
    ] = None,
) -> DeadLetterPage:
    """Input that could not be stored, newest first, with the reason and the payload."""
    letters = DeadLetterStore(runtime.sessions)
    items, total = await letters.list(page.offset, page.limit, device_id=device_id, source=source)
    by_reason = await letters.counts(device_id=device_id, source=source)
    return DeadLetterPage(
        items=items, total=total, offset=page.offset, limit=page.limit, by_reason=by_reason
    )


# -- helpers ---------------------------------------------------------------------------


@contextmanager
def _param_errors() -> Iterator[None]:
    """Turn a ``ParamError`` into FastAPI's 422, located at the query parameter."""
    try:
        yield
    except ParamError as exc:
        raise invalid_at(("query", exc.field), exc.reason) from None


async def _ask(query: Awaitable[T]) -> T:
    """Await a store query; its failures become 422 (the request's fault), 503 or 502."""
    try:
        return await query
    except UnsupportedAggregateError as exc:
        raise invalid_at(("query", "aggregate"), str(exc)) from None
    except StoreUnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    except QueryError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from None


async def _device_kind(sessions: sessionmaker[Session], device_id: str) -> str:
    """The device's kind; 404 for an unknown device."""

    def lookup() -> str | None:
        with sessions() as session:
            device = session.get(Device, device_id)
            return device.kind if device is not None else None

    kind = await asyncio.to_thread(lookup)
    if kind is None:
        raise NotFoundError(f"no device {device_id!r}")
    return kind


async def _check_group(sessions: sessionmaker[Session], group_id: str) -> None:
    def exists() -> bool:
        with sessions() as session:
            return session.get(Group, group_id) is not None

    if not await asyncio.to_thread(exists):
        raise invalid_at(("query", "group"), f"unknown group {group_id!r}", group_id)


def _check_district(runtime: Runtime, district: str | None) -> None:
    districts = runtime.settings.site.districts
    if district is not None and districts and district not in districts:
        raise ParamError(
            "district", f"unknown district {district!r}; known: {', '.join(districts)}"
        )
