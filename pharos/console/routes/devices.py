"""Devices for operators: a list with filters (kind, district, group, state, online) and
a map; one device's page with its twin, recent readings as charts, the commands sent
to it with its status in each, and its dead letters."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import select

from control.commands.model import CommandPublic, TargetPublic
from control.commands.records import get_command, list_commands
from devices.registry.db import transaction
from devices.registry.models import LifecycleState
from devices.registry.schemas import DevicePublic
from devices.registry.service import DeviceFilter, NotFoundError, device_public
from devices.wire import DeviceKind, kind_spec
from pharos.console.charts import Bounds, MapPoint, device_map, line_chart
from pharos.console.web import Page, SignedIn
from telemetry.deadletters import DeadLetterPublic, DeadLetterStore
from telemetry.models import DeviceStatusRow
from telemetry.twin import read_twin

router = APIRouter(prefix="/devices")

LIST_MAX = 1000
CHART_HOURS = 6
CHART_METRICS = 4


def _online(page: Page, device_ids: list[str]) -> dict[str, bool | None]:
    with page.runtime.sessions() as session:
        rows = session.execute(
            select(DeviceStatusRow.device_id, DeviceStatusRow.online).where(
                DeviceStatusRow.device_id.in_(device_ids)
            )
        )
        return {device_id: online for device_id, online in rows}


def _list(page: Page, filters: DeviceFilter) -> tuple[list[DevicePublic], int]:
    assert page.user is not None
    with page.runtime.registry(page.user.name) as registry:
        rows, total = registry.list_devices(filters, limit=LIST_MAX)
        return [device_public(d) for d in rows], total


def _groups(page: Page) -> list[str]:
    assert page.user is not None
    with page.runtime.registry(page.user.name) as registry:
        groups, _ = registry.list_groups(limit=500)
        return [g.id for g in groups]


def _css(online: bool | None) -> str:
    return "online" if online else ("offline" if online is False else "unknown")


@router.get("")
async def devices(
    page: SignedIn,
    kind: Annotated[str, Query(max_length=40)] = "",
    district: Annotated[str, Query(max_length=100)] = "",
    group: Annotated[str, Query(max_length=63)] = "",
    state: Annotated[str, Query(max_length=40)] = "",
    online: Annotated[str, Query(max_length=5)] = "",
) -> Response:
    kinds = [k.value for k in DeviceKind]
    states = [s.value for s in LifecycleState]
    filters = DeviceFilter(
        kind=DeviceKind(kind) if kind in kinds else None,
        district=district or None,
        group=group or None,
        state=LifecycleState(state) if state in states else None,
    )
    rows, total = await asyncio.to_thread(_list, page, filters)
    status = await asyncio.to_thread(_online, page, [d.id for d in rows])
    if online in ("yes", "no"):
        rows = [d for d in rows if bool(status.get(d.id)) is (online == "yes")]
    points = [
        MapPoint(d.id, d.latitude, d.longitude, _css(status.get(d.id)), f"/devices/{d.id}")
        for d in rows
        if d.latitude is not None and d.longitude is not None
    ]
    site = page.runtime.settings.site
    bounds = Bounds.around(points, (site.latitude, site.longitude))
    return page.render(
        "devices/list.html",
        rows=rows,
        total=total,
        shown_max=LIST_MAX,
        status=status,
        map=device_map(points, bounds, page.state.settings.tile_url, page.t("Map")),
        kinds=kinds,
        states=states,
        districts=site.districts,
        groups=await asyncio.to_thread(_groups, page),
        chosen={
            "kind": kind,
            "district": district,
            "group": group,
            "state": state,
            "online": online,
        },
    )


def _device(page: Page, device_id: str) -> DevicePublic | None:
    assert page.user is not None
    with page.runtime.registry(page.user.name) as registry:
        try:
            return device_public(registry.get_device(device_id))
        except NotFoundError:
            return None


def _commands(page: Page, device: DevicePublic) -> list[tuple[CommandPublic, TargetPublic | None]]:
    """Commands to the device and to its groups, newest first, with its own status."""
    found: list[tuple[CommandPublic, TargetPublic | None]] = []
    with transaction(page.runtime.sessions) as session:
        for target in [device.id, *device.groups]:
            commands, _ = list_commands(session, limit=10, target_id=target)
            for command in commands:
                full = get_command(session, str(command.id))
                mine = next((t for t in full.targets or [] if t.device_id == device.id), None)
                if mine is not None or target == device.id:
                    found.append((full, mine))
    found.sort(key=lambda pair: pair[0].created_at, reverse=True)
    return found[:20]


async def _charts(
    page: Page, device: DevicePublic, metrics: list[str]
) -> list[tuple[str, str, Any]]:
    store = page.runtime.timeseries
    if store is None:
        return []
    end = page.now()
    start = end - timedelta(hours=CHART_HOURS)
    spec = kind_spec(device.kind)
    charts = []
    ticks = [start + timedelta(hours=h) for h in range(0, CHART_HOURS + 1)]
    for metric in metrics[:CHART_METRICS]:
        buckets = await store.history(
            kind=device.kind.value,
            metric=metric,
            start=start,
            end=end,
            interval=timedelta(minutes=5),
            aggregate="mean",
            device_id=device.id,
        )
        points = [(b.start, b.value) for b in buckets]
        unit = m.unit if (m := spec.metric(metric)) else ""
        chart = line_chart(points, ticks, page.fmt.time, partial(page.fmt.unit, unit=unit), metric)
        charts.append((metric, unit, chart))
    return charts


@router.get("/{device_id}")
async def device(device_id: str, page: SignedIn) -> Response:
    found = await asyncio.to_thread(_device, page, device_id)
    if found is None:
        return page.render("error.html", status_code=404, reason=page.t("Not found"))
    twin = await read_twin(page.runtime.sessions, device_id)
    spec = kind_spec(found.kind)
    numeric = [
        name for name in twin.last_values if (m := spec.metric(name)) is not None and not m.boolean
    ]
    preferred = [
        m for m in ("power_w", "level", "pm25", "water_level_m", "voltage_v") if m in numeric
    ]
    metrics = preferred + [m for m in numeric if m not in preferred]
    letters: list[DeadLetterPublic] = []
    if page.can("dead_letters.read"):
        letters, _ = await DeadLetterStore(page.runtime.sessions).list(0, 20, device_id=device_id)
    points = []
    if found.latitude is not None and found.longitude is not None:
        points = [MapPoint(found.id, found.latitude, found.longitude, "selected")]
    site = page.runtime.settings.site
    return page.render(
        "devices/detail.html",
        device=found,
        twin=twin,
        charts=await _charts(page, found, metrics),
        commands=await asyncio.to_thread(_commands, page, found),
        letters=letters,
        map=device_map(
            points,
            Bounds.around(points, (site.latitude, site.longitude)),
            page.state.settings.tile_url,
            found.id,
        ),
    )
