"""``/api/v1/audit``: who did what, when, and the record before and after."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pharos.apikeys import Role
from tests.pharos.api.conftest import AsRole, errors_at, key_name, streetlight

AUDIT = "/api/v1/audit"


@pytest.fixture
def history(client: TestClient, as_role: AsRole) -> tuple[datetime, datetime]:
    """A create, an update and a transition by a technician; the time window they fall in."""
    started = datetime.now(UTC)
    technician = as_role(Role.TECHNICIAN)
    for method, url, body in [
        ("POST", "/api/v1/devices", streetlight(pole="HB-016")),
        ("PATCH", "/api/v1/devices/sl-0001", {"pole": "HB-017"}),
        ("POST", "/api/v1/devices/sl-0001/transition", {"to": "installed", "note": "on pole"}),
        ("POST", "/api/v1/devices/sl-0001/rotate-credentials", None),
    ]:
        response = client.request(method, url, json=body, headers=technician)
        assert response.status_code < 300, response.text
    group = {"id": "hoa-binh", "name": "Hòa Bình", "type": "street"}
    response = client.post("/api/v1/groups", json=group, headers=as_role(Role.ENERGY_MANAGER))
    assert response.status_code == 201
    return started, datetime.now(UTC)


def entries(client: TestClient, as_role: AsRole, query: str = "") -> dict[str, Any]:
    response = client.get(AUDIT + query, headers=as_role(Role.OPERATOR))
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_audit_records_who_when_before_and_after(
    client: TestClient, as_role: AsRole, history: tuple[datetime, datetime]
) -> None:
    page = entries(client, as_role, "?entity_type=device&entity_id=sl-0001")

    rotate, transition, update, create = page["items"]  # newest first
    assert [e["action"] for e in (create, update, transition, rotate)] == [
        "device.create", "device.update", "device.transition.installed",
        "device.rotate_credentials",
    ]  # fmt: skip
    started, finished = history
    for entry in page["items"]:
        assert entry["actor"] == key_name(Role.TECHNICIAN)
        assert started <= datetime.fromisoformat(entry["at"]) <= finished
    assert create["before"] is None
    assert create["after"]["pole"] == "HB-016"
    assert create["after"]["rated_power_w"] == 120
    assert (update["before"]["pole"], update["after"]["pole"]) == ("HB-016", "HB-017")
    assert (transition["before"]["state"], transition["after"]["state"]) == (
        "registered", "installed",
    )  # fmt: skip
    assert transition["after"]["note"] == "on pole"
    assert "secret" not in str(rotate)


def test_audit_filters_and_pages(
    client: TestClient, as_role: AsRole, history: tuple[datetime, datetime]
) -> None:
    groups = entries(client, as_role, "?entity_type=group")
    assert [(e["action"], e["entity_id"], e["actor"]) for e in groups["items"]] == [
        ("group.create", "hoa-binh", key_name(Role.ENERGY_MANAGER))
    ]

    first = entries(client, as_role, "?entity_id=sl-0001&limit=1")
    second = entries(client, as_role, "?entity_id=sl-0001&limit=1&offset=1")

    assert (first["total"], first["limit"], len(first["items"])) == (4, 1, 1)
    assert first["items"][0]["action"] == "device.rotate_credentials"
    assert second["items"][0]["action"] == "device.transition.installed"
    assert entries(client, as_role, "?entity_type=device&entity_id=sl-9999")["total"] == 0


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("?limit=0", ("query", "limit")),
        ("?offset=-5", ("query", "offset")),
        ("?entity_type=" + "x" * 33, ("query", "entity_type")),
    ],
)
def test_audit_with_a_bad_query_is_422(
    client: TestClient, as_role: AsRole, query: str, loc: tuple[str, ...]
) -> None:
    response = client.get(AUDIT + query, headers=as_role(Role.ADMIN))

    assert response.status_code == 422
    assert errors_at(response.json()) == [loc]
