"""Commissioning on a phone: find a device (typed or from its QR code), see its kind,
place, state and checklist, set its position from the phone, watch its readings, run
its self-test, sign it off. Each step goes through the registry and the command
service exactly as the API's, and a refusal shows the registry's reason.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import ValidationError

from control.commands.model import CommandInvalid, CommandPublic, CommandRequest
from control.commands.records import get_command, list_commands
from control.plan import TargetType
from devices.registry.db import transaction
from devices.registry.lifecycle import ALLOWED
from devices.registry.models import LifecycleState
from devices.registry.schemas import DevicePublic, DeviceUpdate
from devices.registry.service import NotFoundError, RegistryError, device_public
from devices.wire import kind_spec
from pharos.console.charts import Bounds, MapPoint, device_map
from pharos.console.web import CheckedForm, Page, SignedIn, field_text
from telemetry.twin import TwinPublic, read_twin

router = APIRouter(prefix="/commission")

DEVICE_ID = re.compile(r"^[a-z0-9_-]{1,63}$")
# The lifecycle steps a technician takes on this page, in order.
STEPS = (LifecycleState.INSTALLED, LifecycleState.COMMISSIONED, LifecycleState.IN_SERVICE)


def _device(page: Page, device_id: str) -> DevicePublic | None:
    with page.runtime.registry(page.user.name if page.user else "console") as registry:
        try:
            return device_public(registry.get_device(device_id))
        except NotFoundError:
            return None


def _last_self_test(page: Page, device_id: str) -> CommandPublic | None:
    with transaction(page.runtime.sessions) as session:
        commands, _ = list_commands(session, limit=20, target_id=device_id)
        for command in commands:
            if command.action == "self_test":
                return get_command(session, str(command.id))
    return None


def _map(page: Page, device: DevicePublic) -> object:
    site = page.runtime.settings.site
    points = []
    if device.latitude is not None and device.longitude is not None:
        points.append(MapPoint(device.id, device.latitude, device.longitude, "selected"))
    bounds = Bounds.around(points, (site.latitude, site.longitude))
    if points:  # a few hundred metres around the device
        lat, lon = points[0].latitude, points[0].longitude
        bounds = Bounds(lat - 0.004, lon - 0.004, lat + 0.004, lon + 0.004)
    return device_map(points, bounds, page.state.settings.tile_url, label=device.id)


@router.get("")
async def find(page: SignedIn, id: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    """The search form; with ``id``, straight to the device (or the reason it is not there)."""
    if id is not None:
        wanted = id.strip().lower()
        # A QR label may carry a URL or "pharos:<id>": the id is its last part.
        wanted = re.split(r"[/:]", wanted)[-1]
        found = await asyncio.to_thread(_device, page, wanted) if DEVICE_ID.match(wanted) else None
        if found is not None:
            return page.redirect(f"/commission/{wanted}")
        page.flash("error", f"{page.t('No device with this id')}: {id}")
    return page.render("commission/find.html", query=id or "")


async def _context(page: Page, device: DevicePublic) -> dict[str, Any]:
    twin: TwinPublic = await read_twin(page.runtime.sessions, device.id)
    test = await asyncio.to_thread(_last_self_test, page, device.id)
    spec = kind_spec(device.kind)
    allowed = ALLOWED[device.state]
    return {
        "device": device,
        "twin": twin,
        "self_test": test,
        "is_lamp": spec.is_lamp,
        "has_self_test": "self_test" in spec.commands,
        "next_steps": [s for s in STEPS if s in allowed],
        "checklist": device.commissioning,
    }


async def _show(page: Page, device_id: str, status_code: int = 200) -> Response:
    device = await asyncio.to_thread(_device, page, device_id)
    if device is None:
        page.flash("error", f"{page.t('No device with this id')}: {device_id}")
        return page.render("commission/find.html", status_code=404, query=device_id)
    context = await _context(page, device)
    return page.render(
        "commission/device.html", status_code=status_code, map=_map(page, device), **context
    )


@router.get("/{device_id}")
async def show(device_id: str, page: SignedIn) -> Response:
    return await _show(page, device_id)


@router.get("/{device_id}/live")
async def live(device_id: str, page: SignedIn) -> Response:
    """The part that changes on its own (readings, checklist, self-test): polled by htmx."""
    device = await asyncio.to_thread(_device, page, device_id)
    if device is None:
        return page.render("partial_error.html", status_code=404, reason=page.t("Not found"))
    return page.render("commission/live.html", **(await _context(page, device)))


@router.post("/{device_id}/position")
async def set_position(device_id: str, page: SignedIn, form: CheckedForm) -> Response:
    user = page.require("device.update")
    try:
        update = DeviceUpdate(
            latitude=float(field_text(form, "latitude", 40).replace(",", ".")),
            longitude=float(field_text(form, "longitude", 40).replace(",", ".")),
        )
    except (ValueError, ValidationError) as exc:
        page.flash("error", f"{page.t('Refused')}: {_reason(exc)}")
        return await _show(page, device_id, 422)

    def save() -> None:
        with page.runtime.registry(user.name) as registry:
            registry.update_device(device_id, update)

    try:
        await asyncio.to_thread(save)
    except RegistryError as exc:
        page.flash("error", f"{page.t('Refused')}: {exc}")
        return await _show(page, device_id, 409)
    page.flash("ok", page.t("Position saved"))
    return await _show(page, device_id)


@router.post("/{device_id}/transition")
async def transition(device_id: str, page: SignedIn, form: CheckedForm) -> Response:
    """Move the device one step; the registry says why not (the checklist's missing items)."""
    user = page.require("device.transition")
    try:
        target = LifecycleState(field_text(form, "to", 40))
    except ValueError:
        page.flash("error", f"{page.t('Refused')}: to: not a lifecycle state")
        return await _show(page, device_id, 422)

    def move() -> None:
        with page.runtime.registry(user.name) as registry:
            registry.transition(device_id, target, field_text(form, "note") or None)

    try:
        await asyncio.to_thread(move)
    except RegistryError as exc:
        page.flash("error", f"{page.t('Refused')}: {exc}")
        return await _show(page, device_id, 409)
    page.flash("ok", f"{page.t('Done')}: {page.t(target.value)}")
    return await _show(page, device_id)


@router.post("/{device_id}/self-test")
async def self_test(device_id: str, page: SignedIn, form: CheckedForm) -> Response:
    """Send ``self_test`` through the command service (its ``ok`` ticks the checklist)."""
    user = page.require("device.self_test")
    control = page.runtime.control
    if control is None:
        page.flash("error", page.t("The control service is not running in this process."))
        return await _show(page, device_id, 503)
    request = CommandRequest(action="self_test", target_type=TargetType.DEVICE, target_id=device_id)
    try:
        await control.commands.submit(request, user.name, source="console")
    except CommandInvalid as exc:
        page.flash("error", f"{page.t('Refused')}: {exc}")
        return await _show(page, device_id, 422)
    page.flash("ok", page.t("Self-test sent"))
    return await _show(page, device_id, 202)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
    return "latitude, longitude: numbers in degrees"
