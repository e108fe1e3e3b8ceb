"""Every route of ``/openapi.json``: no key, a bad key, a revoked key → 401; each role
allowed or refused (403) exactly as ``ROLES`` declares.

The routes come from the served OpenAPI, not from a list here: a route added without
the guard fails ``test_every_route_refuses_missing_bad_and_revoked_keys``, and a route
missing from ``ROLES`` fails ``test_the_role_matrix_names_every_route``. The guard runs
before validation, so each route is called with placeholder path values and no body.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.db import transaction
from pharos.api import create_app
from pharos.api.routes import PUBLIC_PATHS
from pharos.apikeys import Role, create_api_key, revoke_api_key
from pharos.runtime import Runtime

EVERYONE = frozenset(Role)
ADMINS = frozenset({Role.ADMIN})
TECHNICIANS = ADMINS | {Role.TECHNICIAN}
OPERATORS = ADMINS | {Role.OPERATOR}
ENERGY_MANAGERS = ADMINS | {Role.ENERGY_MANAGER}
GROUP_EDITORS = TECHNICIANS | {Role.ENERGY_MANAGER}
AUDITORS = OPERATORS | {Role.ENERGY_MANAGER}
FIELD_STAFF = OPERATORS | {Role.TECHNICIAN}  # dead letters, alert comments

# Who may call what: the product's intent, one line per operation of /openapi.json.
ROLES: dict[str, frozenset[Role]] = {
    "POST /api/v1/devices": TECHNICIANS,
    "GET /api/v1/devices": EVERYONE,
    "POST /api/v1/devices/import": TECHNICIANS,
    "GET /api/v1/devices/{device_id}": EVERYONE,
    "PATCH /api/v1/devices/{device_id}": TECHNICIANS,
    "POST /api/v1/devices/{device_id}/transition": TECHNICIANS,
    "POST /api/v1/devices/{device_id}/rotate-credentials": TECHNICIANS,
    "GET /api/v1/devices/{device_id}/commissioning": EVERYONE,
    "POST /api/v1/groups": GROUP_EDITORS,
    "GET /api/v1/groups": EVERYONE,
    "GET /api/v1/groups/{group_id}": EVERYONE,
    "PATCH /api/v1/groups/{group_id}": GROUP_EDITORS,
    "DELETE /api/v1/groups/{group_id}": ADMINS,
    "GET /api/v1/groups/{group_id}/devices": EVERYONE,
    "GET /api/v1/audit": AUDITORS,
    "GET /api/v1/devices/{device_id}/telemetry": EVERYONE,
    "GET /api/v1/telemetry/latest": EVERYONE,
    "GET /api/v1/devices/{device_id}/twin": EVERYONE,
    "GET /api/v1/dead-letters": FIELD_STAFF,
    "GET /api/v1/alerts": EVERYONE,
    "GET /api/v1/alerts/work-items": EVERYONE,
    "GET /api/v1/alerts/{alert_id}": EVERYONE,
    "POST /api/v1/alerts/{alert_id}/acknowledge": OPERATORS,
    "POST /api/v1/alerts/{alert_id}/comments": FIELD_STAFF,
    "POST /api/v1/alerts/{alert_id}/close": OPERATORS,
    "GET /api/v1/rules": EVERYONE,
    "POST /api/v1/rules/check": OPERATORS,
    "POST /api/v1/rules/reload": OPERATORS,
    "POST /api/v1/rules/backtest": OPERATORS,
    "GET /api/v1/ioc/summary": EVERYONE,
    "GET /api/v1/grafana/boards": EVERYONE,
    "GET /api/v1/grafana/embed": EVERYONE,
    "POST /api/v1/commands": OPERATORS,
    "GET /api/v1/commands": EVERYONE,
    "GET /api/v1/commands/{command_id}": EVERYONE,
    "POST /api/v1/commands/{command_id}/cancel": OPERATORS,
    "PUT /api/v1/programs/{program_id}": ENERGY_MANAGERS,
    "GET /api/v1/programs/{program_id}": EVERYONE,
    "DELETE /api/v1/programs/{program_id}": ENERGY_MANAGERS,
    "GET /api/v1/programs": EVERYONE,
    "PUT /api/v1/calendars/{calendar_id}": ENERGY_MANAGERS,
    "GET /api/v1/calendars/{calendar_id}": EVERYONE,
    "GET /api/v1/calendars": EVERYONE,
    "GET /api/v1/assignments": EVERYONE,
    "PUT /api/v1/assignments": ENERGY_MANAGERS,
    "DELETE /api/v1/assignments/{target_type}/{target_id}": ENERGY_MANAGERS,
    "GET /api/v1/overrides": EVERYONE,
    "POST /api/v1/overrides": OPERATORS,
    "DELETE /api/v1/overrides/{override_id}": OPERATORS,
    "GET /api/v1/lamp-states": EVERYONE,
    "GET /api/v1/energy/projection": EVERYONE,
    "GET /api/v1/energy/report": EVERYONE,
}


def _placeholder(schema: dict[str, Any], spec: dict[str, Any]) -> str:
    """A path value the route's own validation would take (the guard comes first anyway)."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "enum" in schema:
        return str(schema["enum"][0])
    if schema.get("type") == "integer":
        return "1"
    if schema.get("format") == "uuid":
        return str(uuid.UUID(int=1))
    return "x"


def operations(spec: dict[str, Any]) -> dict[str, str]:
    """``"METHOD /path"`` → a concrete URL, for every operation of the OpenAPI."""
    found = {}
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            values = {
                p["name"]: _placeholder(p["schema"], spec)
                for p in operation.get("parameters", [])
                if p["in"] == "path"
            }
            found[f"{method.upper()} {path}"] = path.format_map(values)
    return found


def guarded(name: str) -> bool:
    return name.split(" ", 1)[1] not in PUBLIC_PATHS


def call(client: TestClient, name: str, url: str, headers: dict[str, str]) -> Response:
    return client.request(name.split(" ", 1)[0], url, headers=headers)


def answering_without_a_key(client: TestClient, headers: dict[str, str]) -> list[str]:
    """Guarded operations of the app's OpenAPI that do not answer 401 to ``headers``."""
    spec = client.get("/openapi.json").json()
    wrong = []
    for name, url in operations(spec).items():
        if not guarded(name):
            continue
        response = call(client, name, url, headers)
        if response.status_code != 401 or not response.headers.get(
            "WWW-Authenticate", ""
        ).startswith("Bearer"):
            wrong.append(f"{name}: {response.status_code}")
    return wrong


@pytest.fixture
def revoked_key(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        key = create_api_key(session, "former-admin@cantho", Role.ADMIN)
        assert revoke_api_key(session, "former-admin@cantho")
    return key


def test_every_route_refuses_missing_bad_and_revoked_keys(
    client: TestClient, keys: dict[Role, str], revoked_key: str
) -> None:
    refused = [
        {},
        {"X-API-Key": "phk_not-a-key-we-issued"},
        {"Authorization": "Bearer phk_not-a-key-either"},
        {"X-API-Key": revoked_key},
        {"Authorization": f"Bearer {revoked_key}"},
        # A valid key in the wrong scheme is not taken as a bearer token.
        {"Authorization": f"Basic {keys[Role.ADMIN]}"},
    ]
    for headers in refused:
        assert answering_without_a_key(client, headers) == [], headers


def test_a_route_added_outside_the_guarded_router_fails_the_walk(runtime: Runtime) -> None:
    app: FastAPI = create_app(runtime)

    @app.get("/api/v1/unguarded")
    def unguarded() -> dict[str, str]:
        return {"secret": "yes"}

    with TestClient(app) as client:
        assert answering_without_a_key(client, {}) == ["GET /api/v1/unguarded: 200"]


def test_only_the_public_allow_list_answers_without_a_key(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    public = sorted(name for name in operations(spec) if not guarded(name))
    assert public == ["GET /healthz", "GET /metrics"]
    for path in ("/healthz", "/metrics", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path


def test_the_role_matrix_names_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    routes = {name for name in operations(spec) if guarded(name)}
    assert sorted(routes - ROLES.keys()) == [], "routes without a declared role set"
    assert sorted(ROLES.keys() - routes) == [], "declared routes that no longer exist"


@pytest.mark.parametrize("role", sorted(Role), ids=str)
def test_each_role_is_let_in_exactly_where_the_matrix_says(
    role: Role, client: TestClient, keys: dict[Role, str]
) -> None:
    spec = client.get("/openapi.json").json()
    wrong = []
    for name, url in operations(spec).items():
        if not guarded(name):
            continue
        allowed = ROLES[name]
        # X-API-Key for one half of the roles, Bearer for the other: both reach one check.
        headers = (
            {"X-API-Key": keys[role]}
            if role in (Role.ADMIN, Role.OPERATOR, Role.VIEWER)
            else {"Authorization": f"Bearer {keys[role]}"}
        )
        response = call(client, name, url, headers)
        if role in allowed:
            if response.status_code in (401, 403):
                wrong.append(f"{name}: {response.status_code}, expected in")
        elif response.status_code != 403:
            wrong.append(f"{name}: {response.status_code}, expected 403")
        else:
            names = ", ".join(sorted(r.value for r in allowed))
            expected = f"role {role.value!r} may not do this; allowed roles: {names}"
            if response.json()["detail"] != expected:
                wrong.append(f"{name}: {response.json()['detail']!r}")
    assert wrong == []
