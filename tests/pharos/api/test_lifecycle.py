"""Lifecycle over HTTP: refused moves are 409 with the reason, commissioning needs its checklist."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pharos.apikeys import Role
from pharos.runtime import Runtime
from tests.pharos.api.conftest import AsRole, BrokerFiles, errors_at, key_name, streetlight

DEVICE = "/api/v1/devices/sl-0001"
ALL_MISSING = [
    "position_set (latitude and longitude)",
    "first_telemetry_seen",
    "self_test_acknowledged",
]


@pytest.fixture
def registered(client: TestClient, as_role: AsRole) -> None:
    """A streetlight registered without a position (the technician sets it on site)."""
    response = client.post("/api/v1/devices", json=streetlight(), headers=as_role(Role.TECHNICIAN))
    assert response.status_code == 201, response.text


def move(client: TestClient, as_role: AsRole, to: str, role: Role = Role.TECHNICIAN) -> Any:
    return client.post(f"{DEVICE}/transition", json={"to": to}, headers=as_role(role))


def tick_checklist(runtime: Runtime) -> None:
    """What ingest and the command service do when telemetry and the self-test ack arrive."""
    with runtime.registry("ingest") as registry:
        registry.record_first_telemetry("sl-0001", datetime(2026, 11, 22, 11, 5, tzinfo=UTC))
        registry.record_self_test("sl-0001", datetime(2026, 11, 22, 11, 6, tzinfo=UTC))


def test_registered_to_in_service_is_409_with_the_reason(
    client: TestClient, as_role: AsRole, registered: None
) -> None:
    response = move(client, as_role, "in_service")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "cannot go from registered to in_service; allowed: decommissioned, installed"
    }
    assert client.get(DEVICE, headers=as_role(Role.VIEWER)).json()["state"] == "registered"


def test_commissioning_with_items_missing_is_409_naming_them(
    client: TestClient, as_role: AsRole, registered: None
) -> None:
    assert move(client, as_role, "installed").status_code == 200

    response = move(client, as_role, "commissioned")

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert detail.startswith("commissioning checklist incomplete: missing ")
    for item in ALL_MISSING:
        assert item in detail


def test_commissioning_succeeds_once_the_checklist_is_complete_and_names_who_signed(
    client: TestClient, as_role: AsRole, runtime: Runtime, registered: None
) -> None:
    assert move(client, as_role, "installed").status_code == 200
    tick_checklist(runtime)

    still_missing = move(client, as_role, "commissioned")
    assert still_missing.status_code == 409
    assert still_missing.json()["detail"] == (
        "commissioning checklist incomplete: missing position_set (latitude and longitude)"
    )
    position = {"latitude": 10.0341, "longitude": 105.7852}
    assert client.patch(DEVICE, json=position, headers=as_role(Role.TECHNICIAN)).status_code == 200

    response = move(client, as_role, "commissioned")

    assert response.status_code == 200, response.text
    device = response.json()
    assert device["state"] == "commissioned"
    commissioning = device["commissioning"]
    assert commissioning["signed_off_by"] == key_name(Role.TECHNICIAN)
    assert commissioning["signed_off_at"] is not None
    assert commissioning["missing"] == []
    assert move(client, as_role, "in_service").json()["state"] == "in_service"
    assert move(client, as_role, "maintenance").json()["state"] == "maintenance"
    assert move(client, as_role, "in_service").json()["state"] == "in_service"


def test_commissioning_checklist_route(
    client: TestClient, as_role: AsRole, runtime: Runtime, registered: None
) -> None:
    url = f"{DEVICE}/commissioning"
    fresh = client.get(url, headers=as_role(Role.VIEWER))
    assert fresh.status_code == 200
    assert fresh.json() == {
        "position_set": False,
        "first_telemetry_at": None,
        "self_test_ok_at": None,
        "signed_off_by": None,
        "signed_off_at": None,
        "missing": ALL_MISSING,
    }

    tick_checklist(runtime)
    ticked = client.get(url, headers=as_role(Role.VIEWER)).json()

    assert datetime.fromisoformat(ticked["first_telemetry_at"]) == datetime(
        2026, 11, 22, 11, 5, tzinfo=UTC
    )
    assert ticked["missing"] == ["position_set (latitude and longitude)"]
    assert client.get("/api/v1/devices/sl-9999/commissioning",
                      headers=as_role(Role.VIEWER)).status_code == 404  # fmt: skip


def test_decommissioning_removes_the_broker_account_and_is_final(
    client: TestClient, as_role: AsRole, broker_files: BrokerFiles, registered: None
) -> None:
    assert broker_files.usernames() == ["sl-0001"]

    response = move(client, as_role, "decommissioned")

    assert response.status_code == 200, response.text
    assert response.json()["state"] == "decommissioned"
    assert broker_files.usernames() == []
    assert move(client, as_role, "installed").json() == {
        "detail": "cannot go from decommissioned to installed; allowed: none (final state)"
    }
    rotate = client.post(f"{DEVICE}/rotate-credentials", headers=as_role(Role.TECHNICIAN))
    assert rotate.status_code == 409
    assert broker_files.usernames() == []
    edit = client.patch(DEVICE, json={"pole": "HB-1"}, headers=as_role(Role.TECHNICIAN))
    assert edit.status_code == 409


def test_moving_to_the_current_state_is_409(
    client: TestClient, as_role: AsRole, registered: None
) -> None:
    response = move(client, as_role, "registered")

    assert response.status_code == 409
    assert response.json() == {"detail": "device is already registered"}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"to": "flying"}, ("body", "to")),
        ({}, ("body", "to")),
        ({"to": "installed", "why": "because"}, ("body", "why")),
        ({"to": "installed", "note": "x" * 501}, ("body", "note")),
    ],
)
def test_transition_with_a_bad_body_is_422(
    client: TestClient, as_role: AsRole, registered: None, body: dict[str, Any],
    loc: tuple[str, ...],
) -> None:  # fmt: skip
    response = client.post(f"{DEVICE}/transition", json=body, headers=as_role(Role.TECHNICIAN))

    assert response.status_code == 422
    assert errors_at(response.json()) == [loc]
    assert client.get(DEVICE, headers=as_role(Role.VIEWER)).json()["state"] == "registered"


def test_transition_of_an_unknown_device_is_404(client: TestClient, as_role: AsRole) -> None:
    response = client.post("/api/v1/devices/sl-9999/transition", json={"to": "installed"},
                           headers=as_role(Role.TECHNICIAN))  # fmt: skip

    assert response.status_code == 404
