"""Overrides for a group: a level over its program, with an expiry, set and cleared
through the API's own override functions (stored, sent to the lamps, re-planned)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from control.plan import TargetType
from pharos.api.routes.programs import (
    OverrideCreate,
    create_override,
    get_overrides,
    remove_override,
)
from pharos.console.routes.energy import lighting_groups
from pharos.console.web import CheckedForm, Page, RowId, SignedIn, field_text

router = APIRouter(prefix="/overrides")


async def _show(page: Page, status_code: int = 200) -> Response:
    overrides = await asyncio.to_thread(get_overrides, page.runtime, page.runtime.clock)
    groups = await asyncio.to_thread(lighting_groups, page)
    return page.render(
        "overrides.html", status_code=status_code, overrides=overrides, groups=groups
    )


@router.get("")
async def overrides(page: SignedIn) -> Response:
    return await _show(page)


@router.post("")
async def set_override(page: SignedIn, form: CheckedForm) -> Response:
    user = page.require("override.create")
    minutes = field_text(form, "minutes", 6)
    try:
        body = OverrideCreate(
            target_type=TargetType.GROUP,
            target_id=field_text(form, "group", 63),
            level=float(field_text(form, "level", 6).replace(",", ".")),
            minutes=int(minutes) if minutes else None,
            reason=field_text(form, "reason", 500),
        )
        await create_override(body, page.runtime, user, page.runtime.clock)
    except (ValueError, ValidationError, RequestValidationError) as exc:
        page.flash("error", f"{page.t('Refused')}: {_reason(exc)}")
        return await _show(page, 422)
    page.flash("ok", page.t("Override set"))
    return await _show(page)


@router.post("/{override_id}/clear")
async def clear(override_id: RowId, page: SignedIn, form: CheckedForm) -> Response:
    page.require("override.clear")
    try:
        await remove_override(override_id, page.runtime, page.runtime.clock)
    except HTTPException as exc:  # the route's 404 for an unknown id
        page.flash("error", f"{page.t('Refused')}: {exc.detail}")
        return await _show(page, 404)
    page.flash("ok", page.t("Override cleared"))
    return await _show(page)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError | RequestValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)
