"""Sign-in with an API key, sign-out, the language switch, and the home page."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select

from pharos.apikeys import authenticate
from pharos.console.i18n import LANGUAGES
from pharos.console.security import LANGUAGE_COOKIE, ConsoleSession
from pharos.console.web import (
    AnyPage,
    Page,
    SignedIn,
    field_text,
    form_with_csrf,
    safe_next,
    set_session_cookie,
)
from rules.alerts import AlertFilter, AlertStore
from telemetry.models import DeviceStatusRow

router = APIRouter()


@router.get("/login")
def login_form(
    page: AnyPage,
    next: Annotated[str, Query(max_length=2000)] = "/",
    expired: bool = False,
) -> Response:
    if expired:
        page.flash("error", page.t("Your session expired: sign in again."))
    return page.render("login.html", next_url=safe_next(next))


@router.post("/login")
async def login(page: AnyPage) -> Response:
    form = await form_with_csrf(page)
    presented = field_text(form, "api_key", 200)
    next_url = safe_next(field_text(form, "next", 2000))
    row = None
    if presented:

        def check() -> str | None:
            with page.runtime.sessions() as session:
                found = authenticate(session, presented)
                return found.name if found is not None else None

        row = await asyncio.to_thread(check)
    if row is None:
        page.flash("error", page.t("Unknown or revoked API key"))
        return page.render("login.html", status_code=401, next_url=next_url)
    # A fresh session (and CSRF token) at sign-in: nothing from before carries over.
    response = page.finish(RedirectResponse(next_url, status_code=303))
    set_session_cookie(page, response, ConsoleSession(row, ConsoleSession.anonymous().csrf))
    return response


@router.post("/logout")
async def logout(page: SignedIn) -> Response:
    await form_with_csrf(page)
    response = page.finish(RedirectResponse("/login", status_code=303))
    set_session_cookie(page, response, ConsoleSession.anonymous())
    return response


@router.get("/lang/{code}")
def switch_language(
    code: str, page: AnyPage, next: Annotated[str, Query(max_length=2000)] = "/"
) -> Response:
    """Remember the chosen language (a preference, not a change of data)."""
    response = page.finish(RedirectResponse(safe_next(next), status_code=303))
    if code in LANGUAGES:
        response.set_cookie(
            LANGUAGE_COOKIE, code, max_age=365 * 86400, samesite="lax", httponly=True
        )
    return response


def _counts(page: Page) -> tuple[int, int, int]:
    store = AlertStore(page.runtime.sessions)
    _, open_alerts = store.list(AlertFilter(live=True), 0, 1)
    with page.runtime.sessions() as session:
        online = session.scalar(
            select(func.count())
            .select_from(DeviceStatusRow)
            .where(DeviceStatusRow.online.is_(True))
        )
        total = session.scalar(select(func.count()).select_from(DeviceStatusRow))
    return open_alerts, int(online or 0), int(total or 0)


@router.get("/")
async def home(page: SignedIn) -> Response:
    open_alerts, online, reporting = await asyncio.to_thread(_counts, page)
    return page.render("home.html", open_alerts=open_alerts, online=online, reporting=reporting)
