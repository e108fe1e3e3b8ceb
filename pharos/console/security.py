"""Who is using the console and what they may do: the signed session cookie, the CSRF
token bound to it, and the role rules, read from the API's own routes.

The session cookie holds the name of the API key the person signed in with and a CSRF
token, signed (itsdangerous) with the console's secret and limited in age; it is
``HttpOnly`` and ``SameSite=Strict``. Every request looks the key up again, so a key
revoked in the meantime ends its sessions at once. Every form (and every htmx request,
through a header) carries the CSRF token, and the server compares it with the
session's before doing anything.

Roles are not restated here: ``RoleRules`` walks the API's route for the same action
(``PUT /api/v1/programs/{program_id}`` for saving a program) and asks that route's own
role check which roles pass, so the console and the API can never disagree.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.models import ApiKeyRow
from pharos.api.deps import ApiKey
from pharos.apikeys import Role

SESSION_COOKIE = "pharos_console"
LANGUAGE_COOKIE = "pharos_lang"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """What the cookie carries: the signed-in key's name (None before sign-in) and the
    CSRF token of this session."""

    key_name: str | None
    csrf: str

    @classmethod
    def anonymous(cls) -> ConsoleSession:
        return cls(None, secrets.token_urlsafe(32))


class SessionCodec:
    """Signs and reads session cookies; a cookie older than ``max_age_s`` is refused."""

    def __init__(self, secret: str, max_age_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="pharos-console-session")
        self.max_age_s = max_age_s

    def dumps(self, session: ConsoleSession) -> str:
        return self._serializer.dumps({"k": session.key_name, "c": session.csrf})

    def loads(self, cookie: str | None) -> ConsoleSession | None:
        if not cookie or len(cookie) > 4096:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age_s)
        except (BadSignature, SignatureExpired):
            return None
        if not isinstance(data, dict):
            return None
        key_name, csrf = data.get("k"), data.get("c")
        if not isinstance(csrf, str) or not (key_name is None or isinstance(key_name, str)):
            return None
        return ConsoleSession(key_name, csrf)


def csrf_matches(session: ConsoleSession, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(session.csrf, presented)


def live_key(sessions: sessionmaker[Session], name: str) -> ApiKey | None:
    """The key ``name`` as the API sees it, unless it was revoked."""
    with sessions() as session:
        row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.name == name))
        if row is None or row.revoked_at is not None:
            return None
        return ApiKey(name=row.name, role=Role(row.role))


# --- role rules, read from the API -------------------------------------------------------

ROLE_CHECK_NAME = "check_role"  # the inner function of pharos.api.deps.require_roles


def _role_checks(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None and getattr(sub.call, "__name__", "") == ROLE_CHECK_NAME:
            yield sub.call
        yield from _role_checks(sub)


def _api_routes(routes: Iterable[Any]) -> Iterator[tuple[str, set[str], Dependant]]:
    """Every API route as (full path, methods, dependant). FastAPI 0.16x keeps included
    routers as branches whose routes it resolves with their prefixes and the router-level
    dependencies (``effective_route_contexts``); older versions flatten them to APIRoutes."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route.path, set(route.methods or ()), route.dependant
        elif hasattr(route, "effective_route_contexts"):
            for context in route.effective_route_contexts():
                dependant = getattr(context, "dependant", None)
                if isinstance(dependant, Dependant):
                    yield str(context.path), set(context.methods or ()), dependant


def _passes(check: Callable[..., Any], role: Role) -> bool:
    try:
        check(ApiKey(name="console-role-probe", role=role))
    except HTTPException:
        return False
    return True


@dataclass
class RoleRules:
    """Which roles the API lets do ``METHOD path``, from the route's own role checks."""

    app: FastAPI
    _cache: dict[tuple[str, str], frozenset[Role]] = field(default_factory=dict)

    def roles_for(self, method: str, path: str) -> frozenset[Role]:
        key = (method.upper(), path)
        if key not in self._cache:
            self._cache[key] = self._read(*key)
        return self._cache[key]

    def _read(self, method: str, path: str) -> frozenset[Role]:
        for route_path, methods, dependant in _api_routes(self.app.routes):
            if route_path == path and method in methods:
                allowed = set(Role)
                for check in _role_checks(dependant):
                    allowed &= {role for role in Role if _passes(check, role)}
                return frozenset(allowed)
        raise LookupError(f"the API has no route {method} {path}: the console's rule is stale")


# The API operation each console action is; a self-test is part of commissioning, so it
# is allowed to whoever may move the device through its lifecycle.
ACTIONS: dict[str, tuple[str, str]] = {
    "device.update": ("PATCH", "/api/v1/devices/{device_id}"),
    "device.transition": ("POST", "/api/v1/devices/{device_id}/transition"),
    "device.self_test": ("POST", "/api/v1/devices/{device_id}/transition"),
    "program.save": ("PUT", "/api/v1/programs/{program_id}"),
    "alert.acknowledge": ("POST", "/api/v1/alerts/{alert_id}/acknowledge"),
    "alert.close": ("POST", "/api/v1/alerts/{alert_id}/close"),
    "alert.comment": ("POST", "/api/v1/alerts/{alert_id}/comments"),
    "override.create": ("POST", "/api/v1/overrides"),
    "override.clear": ("DELETE", "/api/v1/overrides/{override_id}"),
    "dead_letters.read": ("GET", "/api/v1/dead-letters"),
}


def allowed_roles(rules: RoleRules, action: str) -> frozenset[Role]:
    return rules.roles_for(*ACTIONS[action])
