"""Mounting the console on the API's app: its state, static files, routes and the
handlers that turn "sign in first" and "not your role" into pages."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from pharos.console.routes import router
from pharos.console.web import (
    STATIC_PATH,
    ConsoleState,
    ForbiddenError,
    LoginRequiredError,
    Page,
    login_redirect,
)
from pharos.settings import ConsoleSettings

STATIC_DIR = Path(__file__).parent / "static"


def install_console(app: FastAPI, settings: ConsoleSettings) -> None:
    app.state.console = ConsoleState.build(app, settings)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(router, include_in_schema=False)
    app.add_exception_handler(LoginRequiredError, _to_login)  # type: ignore[arg-type]
    app.add_exception_handler(ForbiddenError, _forbidden)  # type: ignore[arg-type]


async def _to_login(request: Request, exc: LoginRequiredError) -> Response:
    url = login_redirect(exc.next_url, exc.expired)
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=401, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


async def _forbidden(request: Request, exc: ForbiddenError) -> Response:
    page: Page = request.state.console_page
    roles = sorted(role.value for role in exc.allowed)
    return page.render("forbidden.html", status_code=403, reason=exc.reason, roles=roles)
