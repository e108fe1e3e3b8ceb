"""The alert queue: open alerts to acknowledge, comment and close, each with its history.

Changes go through the rules' ``AlertStore`` (and are published on ``pharos/v1/alerts``
when the rules engine runs here), as the API's alert routes do; a state that does not
allow the change is shown with the store's reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from pharos.console.web import CheckedForm, Page, RowId, SignedIn, field_text
from rules.alerts import (
    AlertChange,
    AlertFilter,
    AlertNotFoundError,
    AlertState,
    AlertStateError,
    AlertStore,
)

router = APIRouter(prefix="/alerts")


@router.get("")
async def queue(page: SignedIn, state: Annotated[str, Query(max_length=20)] = "live") -> Response:
    store = AlertStore(page.runtime.sessions)
    filters = AlertFilter(live=True) if state == "live" else AlertFilter()
    alerts, total = await asyncio.to_thread(store.list, filters, 0, 200)
    return page.render("alerts/list.html", alerts=alerts, total=total, state=state)


async def _detail(page: Page, alert_id: int, status_code: int = 200) -> Response:
    store = AlertStore(page.runtime.sessions)
    try:
        alert = await asyncio.to_thread(store.get, alert_id)
    except AlertNotFoundError:
        return page.render("error.html", status_code=404, reason=page.t("Not found"))
    return page.render(
        "alerts/detail.html",
        status_code=status_code,
        alert=alert,
        closed=alert.state is AlertState.CLOSED,
    )


@router.get("/{alert_id}")
async def detail(alert_id: RowId, page: SignedIn) -> Response:
    return await _detail(page, alert_id)


async def _change(page: Page, alert_id: int, work: Callable[[], AlertChange]) -> Response:
    try:
        change = await asyncio.to_thread(work)
    except AlertNotFoundError:
        return page.render("error.html", status_code=404, reason=page.t("Not found"))
    except AlertStateError as exc:
        page.flash("error", f"{page.t('Refused')}: {exc}")
        return await _detail(page, alert_id, 409)
    if page.runtime.rules is not None:
        await page.runtime.rules.publish_change(change)
    page.flash("ok", page.t("Done"))
    return await _detail(page, alert_id)


@router.post("/{alert_id}/acknowledge")
async def acknowledge(alert_id: RowId, page: SignedIn, form: CheckedForm) -> Response:
    user = page.require("alert.acknowledge")
    store, now, note = (
        AlertStore(page.runtime.sessions),
        page.now(),
        field_text(form, "note", 2000) or None,
    )
    return await _change(page, alert_id, lambda: store.acknowledge(alert_id, user.name, now, note))


@router.post("/{alert_id}/comment")
async def comment(alert_id: RowId, page: SignedIn, form: CheckedForm) -> Response:
    user = page.require("alert.comment")
    text = field_text(form, "text", 2000)
    if not text:
        page.flash("error", f"{page.t('Refused')}: text: {page.t('Comment')}?")
        return await _detail(page, alert_id, 422)
    store, now = AlertStore(page.runtime.sessions), page.now()
    return await _change(page, alert_id, lambda: store.comment(alert_id, user.name, now, text))


@router.post("/{alert_id}/close")
async def close(alert_id: RowId, page: SignedIn, form: CheckedForm) -> Response:
    user = page.require("alert.close")
    store, now, note = (
        AlertStore(page.runtime.sessions),
        page.now(),
        field_text(form, "note", 2000) or None,
    )
    return await _change(page, alert_id, lambda: store.close(alert_id, user.name, now, note))
