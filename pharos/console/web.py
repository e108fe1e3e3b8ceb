"""What every console page shares: the console's state on the app, the per-request
``Page`` (session, signed-in key, language, formatter, clock), rendering with the
security headers, and the checks (signed in, CSRF, role) as dependencies.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData

from pharos.api.deps import ApiKey
from pharos.apikeys import Role
from pharos.console.i18n import Formatter, Language, negotiate, translate
from pharos.console.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    LANGUAGE_COOKIE,
    SESSION_COOKIE,
    ConsoleSession,
    RoleRules,
    SessionCodec,
    allowed_roles,
    csrf_matches,
    live_key,
)
from pharos.runtime import Runtime
from pharos.settings import ConsoleSettings
from pharos_core.clock import Clock, SystemClock

STATIC_PATH = "/console/static"
# A database row id in a path: bounded, so a huge number is a 422, not a driver error.
RowId = Annotated[int, Path(ge=1, le=2_147_483_647)]


@dataclass
class ConsoleState:
    """Built once per app (never at import): templates, the cookie signer, role rules."""

    codec: SessionCodec
    templates: Environment
    rules: RoleRules
    settings: ConsoleSettings
    system_clock: Clock = field(default_factory=SystemClock)

    @classmethod
    def build(cls, app: FastAPI, settings: ConsoleSettings) -> ConsoleState:
        secret = (
            settings.session_secret.get_secret_value()
            if settings.session_secret is not None
            else secrets.token_urlsafe(32)
        )
        templates = Environment(
            loader=PackageLoader("pharos.console", "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        return cls(
            SessionCodec(secret, settings.session_max_age_s), templates, RoleRules(app), settings
        )


class LoginRequiredError(Exception):
    """No live session: the person is sent to the sign-in page."""

    def __init__(self, next_url: str, expired: bool) -> None:
        self.next_url = next_url
        self.expired = expired


class ForbiddenError(Exception):
    """The role may not do this (or the CSRF token is wrong): 403 with the reason."""

    def __init__(self, reason: str, allowed: frozenset[Role] = frozenset()) -> None:
        self.reason = reason
        self.allowed = allowed


@dataclass
class Page:
    """One request as the console sees it."""

    request: Request
    runtime: Runtime
    state: ConsoleState
    session: ConsoleSession
    user: ApiKey | None
    language: Language
    fmt: Formatter
    new_session: bool = False
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def t(self, text: str) -> str:
        return translate(self.language, text)

    def now(self) -> datetime:
        """The one clock: control's (the demo's accelerated day) when it runs here."""
        control = self.runtime.control
        return control.clock.now() if control is not None else self.state.system_clock.now()

    def can(self, action: str) -> bool:
        return self.user is not None and self.user.role in allowed_roles(self.state.rules, action)

    def require(self, action: str) -> ApiKey:
        """The signed-in key, or ``ForbiddenError`` naming the roles that may."""
        allowed = allowed_roles(self.state.rules, action)
        if self.user is None or self.user.role not in allowed:
            raise ForbiddenError(self.t("Your role may not do this"), allowed)
        return self.user

    @property
    def is_htmx(self) -> bool:
        return self.request.headers.get("HX-Request") == "true"

    def flash(self, kind: str, text: str) -> None:
        self.flashes.append((kind, text))

    def render(self, template: str, status_code: int = 200, **context: Any) -> Response:
        html = self.state.templates.get_template(template).render(
            page=self,
            t=self.t,
            fmt=self.fmt,
            user=self.user,
            csrf=self.session.csrf,
            csrf_field=CSRF_FIELD,
            csrf_header=CSRF_HEADER,
            static=STATIC_PATH,
            lang=self.language,
            **context,
        )
        return self.finish(HTMLResponse(html, status_code=status_code))

    def finish(self, response: Response) -> Response:
        """Security headers, and the session cookie when this request started one."""
        img_src = "'self' data:"
        if self.state.settings.tile_url:
            parts = urlsplit(self.state.settings.tile_url)
            img_src += f" {parts.scheme}://{parts.netloc}"
        response.headers["Content-Security-Policy"] = (
            f"default-src 'self'; img-src {img_src}; script-src 'self'; style-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        if self.new_session:
            set_session_cookie(self, response, self.session)
        return response

    def redirect(self, url: str) -> Response:
        """After a form post: back to a page (htmx follows ``HX-Redirect``)."""
        if self.is_htmx:
            response: Response = Response(status_code=204, headers={"HX-Redirect": url})
        else:
            response = RedirectResponse(url, status_code=303)
        return self.finish(response)


def set_session_cookie(page: Page, response: Response, session: ConsoleSession) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        page.state.codec.dumps(session),
        max_age=page.state.codec.max_age_s,
        httponly=True,
        samesite="strict",
        secure=page.state.settings.secure_cookie,
        path="/",
    )


def _page(request: Request) -> Page:
    runtime: Runtime = request.app.state.runtime
    state: ConsoleState = request.app.state.console
    cookie = request.cookies.get(SESSION_COOKIE)
    session = state.codec.loads(cookie)
    new_session = session is None
    if session is None:
        session = ConsoleSession.anonymous()
    user = live_key(runtime.sessions, session.key_name) if session.key_name else None
    if session.key_name and user is None:  # the key was revoked: the session ends
        session, new_session = ConsoleSession.anonymous(), True
    language = negotiate(
        request.headers.get("Accept-Language"), request.cookies.get(LANGUAGE_COOKIE)
    )
    fmt = Formatter(language, _zone(runtime))
    page = Page(request, runtime, state, session, user, language, fmt, new_session)
    request.state.console_page = page
    return page


def _zone(runtime: Runtime) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(runtime.settings.site.timezone)


AnyPage = Annotated[Page, Depends(_page)]


def _signed_in(page: AnyPage) -> Page:
    if page.user is None:
        target = page.request.url.path
        if page.request.url.query:
            target += "?" + page.request.url.query
        raise LoginRequiredError(
            target, expired=page.request.cookies.get(SESSION_COOKIE) is not None
        )
    return page


SignedIn = Annotated[Page, Depends(_signed_in)]


async def checked_form(page: SignedIn) -> FormData:
    """The posted form, once its CSRF token (field or htmx header) matches the session's."""
    return await form_with_csrf(page)


async def form_with_csrf(page: Page) -> FormData:
    form = await page.request.form()
    token = form.get(CSRF_FIELD)
    presented = token if isinstance(token, str) else page.request.headers.get(CSRF_HEADER)
    if not csrf_matches(page.session, presented):
        raise ForbiddenError(
            page.t("The form expired (CSRF check failed): reload the page and try again.")
        )
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]


def field_text(form: FormData, name: str, limit: int = 500) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def login_redirect(next_url: str, expired: bool) -> str:
    query = f"?next={quote(next_url, safe='')}"
    return "/login" + query + ("&expired=1" if expired else "")


def safe_next(url: str | None) -> str:
    """Only a path on this site (never ``//evil`` or ``https://…``) after sign-in."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url
