"""Every route: no key, a bad key, a revoked key → 401; a role not allowed → 403."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.db import transaction
from devices.registry.schemas import DeviceCreate, GroupCreate
from pharos.apikeys import Role, create_api_key, revoke_api_key
from pharos.runtime import Runtime
from tests.pharos.api.conftest import streetlight

EVERYONE = frozenset(Role)
TECHNICIANS = frozenset({Role.ADMIN, Role.TECHNICIAN})
GROUP_EDITORS = frozenset({Role.ADMIN, Role.ENERGY_MANAGER, Role.TECHNICIAN})
ADMINS = frozenset({Role.ADMIN})
AUDITORS = frozenset({Role.ADMIN, Role.OPERATOR, Role.ENERGY_MANAGER})

CSV = "id,kind,name,rated_power_w\nsl-csv-1,streetlight,Đèn 1,100\n"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    allowed: frozenset[Role]
    json: dict[str, Any] | None = None
    csv: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def call(self, client: TestClient, headers: dict[str, str]) -> Response:
        if self.csv is not None:
            headers = {**headers, "Content-Type": "text/csv"}
            return client.request(self.method, self.path, content=self.csv, headers=headers)
        return client.request(self.method, self.path, json=self.json, headers=headers)


ROUTES = [
    Route("POST", "/api/v1/devices", TECHNICIANS, json=streetlight("sl-auth")),
    Route("GET", "/api/v1/devices", EVERYONE),
    Route("POST", "/api/v1/devices/import", TECHNICIANS, csv=CSV),
    Route("GET", "/api/v1/devices/sl-0001", EVERYONE),
    Route("PATCH", "/api/v1/devices/sl-0001", TECHNICIANS, json={"pole": "HB-017"}),
    Route("POST", "/api/v1/devices/sl-0001/transition", TECHNICIANS, json={"to": "installed"}),
    Route("POST", "/api/v1/devices/sl-0001/rotate-credentials", TECHNICIANS),
    Route("GET", "/api/v1/devices/sl-0001/commissioning", EVERYONE),
    Route("POST", "/api/v1/groups", GROUP_EDITORS, json={"id": "hoa-binh", "name": "Hòa Bình"}),
    Route("GET", "/api/v1/groups", EVERYONE),
    Route("GET", "/api/v1/groups/ninh-kieu", EVERYONE),
    Route("PATCH", "/api/v1/groups/ninh-kieu", GROUP_EDITORS, json={"description": "quận"}),
    Route("DELETE", "/api/v1/groups/ninh-kieu", ADMINS),
    Route("GET", "/api/v1/groups/ninh-kieu/devices", EVERYONE),
    Route("GET", "/api/v1/audit", AUDITORS),
]


@pytest.fixture
def seeded(runtime: Runtime) -> None:
    """A device and a group for the routes that name one."""
    with runtime.registry("seed") as registry:
        registry.create_group(GroupCreate(id="ninh-kieu", name="Ninh Kiều", type="district"))
        registry.create_device(DeviceCreate.model_validate(streetlight(groups=["ninh-kieu"])))


@pytest.fixture
def revoked_key(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        key = create_api_key(session, "former-admin@cantho", Role.ADMIN)
        assert revoke_api_key(session, "former-admin@cantho")
    return key


def _assert_unauthorized(response: Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_route_refuses_missing_bad_and_revoked_keys(
    route: Route, client: TestClient, keys: dict[Role, str], revoked_key: str, seeded: None
) -> None:
    _assert_unauthorized(route.call(client, {}))
    _assert_unauthorized(route.call(client, {"X-API-Key": "phk_not-a-key-we-issued"}))
    _assert_unauthorized(route.call(client, {"Authorization": "Bearer phk_not-a-key-either"}))
    _assert_unauthorized(route.call(client, {"X-API-Key": revoked_key}))
    # A valid key in the wrong scheme is not taken as a bearer token.
    _assert_unauthorized(route.call(client, {"Authorization": f"Basic {keys[Role.ADMIN]}"}))


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_route_lets_in_exactly_its_roles(
    route: Route, client: TestClient, keys: dict[Role, str], seeded: None
) -> None:
    allowed_names = ", ".join(sorted(role.value for role in route.allowed))
    for role in sorted(EVERYONE - route.allowed):
        response = route.call(client, {"X-API-Key": keys[role]})
        assert response.status_code == 403, (role, response.text)
        assert response.json()["detail"] == (
            f"role {role.value!r} may not do this; allowed roles: {allowed_names}"
        )
    for role in sorted(route.allowed):
        # Bearer here, X-API-Key above: both ways reach the same check.
        response = route.call(client, {"Authorization": f"Bearer {keys[role]}"})
        assert response.status_code not in (401, 403), (role, response.text)
        assert response.status_code < 500, (role, response.text)
