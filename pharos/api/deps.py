"""Request dependencies: the runtime, sessions, the registry, API-key authentication, roles.

Everything comes from the ``Runtime`` on ``app.state`` (built from settings by the
caller), never from module state. Keys arrive in ``X-API-Key`` or as
``Authorization: Bearer <key>`` and are checked against their stored hash.

``require_key`` is the one guard: the ``/api/v1`` router depends on it, so every route
under it needs a live key whatever its handler declares (``pharos.api.routes``); routes
outside it are the public allow-list (``PUBLIC_PATHS``). Roles are declared per route
with ``require_roles``; FastAPI caches ``require_key`` per request, so a route that
also asks for ``CurrentKey`` (to name the actor) shares the same lookup.

Integers that come from outside and reach the database are bounded here (``RowId``,
``PageDep``'s offset) so no value overflows a column or SQLite's 64-bit integers, and
``refuse_nul_characters`` (also on the router) refuses a NUL in any path value, query
value or JSON string, which PostgreSQL cannot store in text.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from devices.registry.service import Registry
from pharos.apikeys import Role, authenticate
from pharos.runtime import Runtime

API_KEY_HEADER = "X-API-Key"
# The challenge a client gets with every 401 (RFC 9110 §11.6.1 requires one).
AUTH_CHALLENGE = 'Bearer realm="pharos"'

# auto_error=False: we raise our own 401 so both ways of sending a key share one answer;
# declaring both still gives /docs its "Authorize" button for each.
_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)
_bearer = HTTPBearer(auto_error=False)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """A session for this request, closed (and rolled back if still open) before the response."""
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """The caller: the name and role of the API key it presented (never the key itself)."""

    name: str
    role: Role


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": AUTH_CHALLENGE}
    )


def require_key(
    runtime: RuntimeDep,
    header_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    presented = header_key or (bearer.credentials if bearer else None)
    if not presented:
        raise _unauthorized(f"an API key is required: send {API_KEY_HEADER} or Bearer")
    # A short session of its own: the connection is back in the pool before the route's
    # registry transaction takes one, so a request never holds two.
    with runtime.sessions() as session:
        row = authenticate(session, presented)
        if row is None:
            raise _unauthorized("unknown or revoked API key")
        return ApiKey(name=row.name, role=Role(row.role))


CurrentKey = Annotated[ApiKey, Depends(require_key)]
"""The caller's key, for routes that record who acted (the guard itself is the router's)."""


_NUL = "\x00"
_NUL_REASON = "NUL characters (\\u0000) are not allowed"


def _nul_locations(document: Any) -> list[tuple[str | int, ...]]:
    """Where strings (values or keys) of a parsed JSON document hold a NUL; no recursion,
    so a deeply nested body costs a loop, not the stack."""
    found: list[tuple[str | int, ...]] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [(("body",), document)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, str):
            if _NUL in value:
                found.append(loc)
        elif isinstance(value, dict):
            for key, item in value.items():
                if _NUL in key:
                    found.append((*loc, key))
                stack.append(((*loc, key), item))
        elif isinstance(value, list):
            stack.extend(((*loc, index), item) for index, item in enumerate(value))
    return sorted(found, key=str)


async def refuse_nul_characters(request: Request) -> None:
    """422 naming every path, query or JSON field that holds a NUL character."""
    locations: list[tuple[str | int, ...]] = [
        ("path", name) for name, value in request.path_params.items() if _NUL in str(value)
    ]
    locations += [
        ("query", name) for name, value in request.query_params.multi_items() if _NUL in value
    ]
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type.endswith("json"):
        body = await request.body()  # already read (and cached) by FastAPI for the route
        if b"\\u0000" in body:  # JSON can only carry a NUL escaped
            # Not JSON: the route's own validation says so.
            with contextlib.suppress(ValueError, RecursionError):
                locations += _nul_locations(json.loads(body))
    if locations:
        raise RequestValidationError(
            [
                {"type": "string_nul", "loc": loc, "msg": _NUL_REASON, "input": None}
                for loc in locations
            ]
        )


def require_roles(*roles: Role) -> Callable[[ApiKey], ApiKey]:
    """A dependency letting through keys with one of ``roles``; admin always passes."""
    allowed = frozenset({Role.ADMIN, *roles})
    names = ", ".join(sorted(role.value for role in allowed))

    def check_role(key: CurrentKey) -> ApiKey:
        if key.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role {key.role.value!r} may not do this; allowed roles: {names}",
            )
        return key

    return check_role


def get_registry(runtime: RuntimeDep, key: CurrentKey) -> Iterator[Registry]:
    """The registry in one transaction for the caller; an error in the route rolls it back."""
    with runtime.registry(key.name) as registry:
        yield registry


# scope="function": the commit (and the broker file sync after it) runs when the route
# returns, before the response is sent, so a client never sees a 2xx for a change
# that then fails to commit.
RegistryDep = Annotated[Registry, Depends(get_registry, scope="function")]


DEFAULT_PAGE_SIZE = 100
# The largest integer every registry database stores: ids are INTEGER columns, 32-bit
# on PostgreSQL (SQLite takes 64 bits and raises OverflowError beyond). Offsets and
# ids from outside are refused above it with a 422 naming the parameter.
DB_INT_MAX = 2**31 - 1

RowId = Annotated[int, Path(ge=1, le=DB_INT_MAX, description="the numeric id")]


@dataclass(frozen=True, slots=True)
class Pagination:
    offset: int
    limit: int


def get_pagination(
    runtime: RuntimeDep,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX, description="items to skip")] = 0,
    limit: Annotated[
        int | None,
        Query(ge=1, description="page size: 100 by default, at most `api.page_size_max`"),
    ] = None,
) -> Pagination:
    maximum = runtime.settings.api.page_size_max
    if limit is None:
        return Pagination(offset, min(DEFAULT_PAGE_SIZE, maximum))
    if limit > maximum:
        # The same error FastAPI gives for a static `le=`, so clients see one 422 shape.
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("query", "limit"),
                    "msg": f"Input should be less than or equal to {maximum}",
                    "input": limit,
                    "ctx": {"le": maximum},
                }
            ]
        )
    return Pagination(offset, limit)


PageDep = Annotated[Pagination, Depends(get_pagination)]
