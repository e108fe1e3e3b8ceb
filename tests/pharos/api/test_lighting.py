"""Programs, calendars, assignments, overrides, lamp states, commands and energy over
the API (database only: no control plane running in these tests)."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from pharos.apikeys import Role
from pharos.runtime import Runtime
from telemetry.points import Point
from telemetry.store import open_store
from tests.pharos.api.conftest import AsRole, errors_at, streetlight

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
DEFAULT: dict[str, Any] = {
    "id": "default",
    "name": "Default dimming",
    "steps": [
        {"event": "sunset", "offset_minutes": -10, "level": 100},
        {"at": "22:00", "level": 70},
        {"at": "00:00", "level": 50},
        {"at": "04:30", "level": 100},
        {"event": "sunrise", "offset_minutes": 10, "level": 0},
    ],
}


def set_up(client: TestClient, as_role: AsRole) -> None:
    manager, tech = as_role(Role.ENERGY_MANAGER), as_role(Role.TECHNICIAN)
    group = {"id": "hoa-binh", "name": "Đại lộ Hòa Bình", "type": "street"}
    assert client.post("/api/v1/groups", json=group, headers=tech).status_code == 201
    for n, power in ((1, 100), (2, 150)):
        lamp = streetlight(f"sl-{n}", groups=["hoa-binh"], rated_power_w=power)
        assert client.post("/api/v1/devices", json=lamp, headers=tech).status_code == 201
    assert client.put("/api/v1/programs/default", json=DEFAULT, headers=manager).status_code == 200
    calendar = {"id": "city", "name": "City", "default_program_id": "default"}
    assert client.put("/api/v1/calendars/city", json=calendar, headers=manager).status_code == 200


def test_programs_are_edited_by_energy_managers_and_read_by_anyone(
    client: TestClient, as_role: AsRole
) -> None:
    viewer, manager = as_role(Role.VIEWER), as_role(Role.ENERGY_MANAGER)
    refused = client.put("/api/v1/programs/default", json=DEFAULT, headers=viewer)
    assert refused.status_code == 403 and "energy_manager" in refused.json()["detail"]
    assert client.put("/api/v1/programs/default", json=DEFAULT, headers=manager).status_code == 200
    listed = client.get("/api/v1/programs", headers=viewer).json()
    assert [p["id"] for p in listed] == ["default"] and len(listed[0]["steps"]) == 5


def test_invalid_programs_are_refused_with_the_field_named(
    client: TestClient, as_role: AsRole
) -> None:
    manager = as_role(Role.ENERGY_MANAGER)
    out_of_range = {**DEFAULT, "steps": [{"at": "18:00", "level": 120}]}
    answer = client.put("/api/v1/programs/default", json=out_of_range, headers=manager)
    assert answer.status_code == 422
    assert ("body", "steps", "0", "level") in errors_at(answer.json())
    overlapping = {
        **DEFAULT,
        "steps": [{"at": "22:00", "level": 100}, {"at": "21:00", "level": 50}],
    }
    answer = client.put("/api/v1/programs/default", json=overlapping, headers=manager)
    assert answer.status_code == 422
    assert errors_at(answer.json()) == [("body", "steps", "1")]
    assert "out of order" in answer.json()["detail"][0]["msg"]


def test_an_assignment_to_an_unknown_group_is_refused(client: TestClient, as_role: AsRole) -> None:
    set_up(client, as_role)
    manager = as_role(Role.ENERGY_MANAGER)
    body = {"target_type": "group", "target_id": "nowhere", "calendar_id": "city"}
    answer = client.put("/api/v1/assignments", json=body, headers=manager)
    assert answer.status_code == 422 and errors_at(answer.json()) == [("body", "target_id")]
    good = {**body, "target_id": "hoa-binh"}
    assert client.put("/api/v1/assignments", json=good, headers=manager).status_code == 200
    assert len(client.get("/api/v1/assignments", headers=manager).json()) == 1


def test_overrides_are_for_operators_and_listed_until_cleared(
    client: TestClient, as_role: AsRole
) -> None:
    set_up(client, as_role)
    operator = as_role(Role.OPERATOR)
    body = {"target_type": "group", "target_id": "hoa-binh", "level": 30, "minutes": 45}
    refused = client.post("/api/v1/overrides", json=body, headers=as_role(Role.ENERGY_MANAGER))
    assert refused.status_code == 403
    created = client.post("/api/v1/overrides", json=body, headers=operator)
    assert created.status_code == 201, created.text
    override = created.json()
    assert client.get("/api/v1/overrides", headers=operator).json() == [override]
    cleared = client.delete(f"/api/v1/overrides/{override['id']}", headers=operator)
    assert cleared.status_code == 200 and cleared.json()["cleared_at"] is not None
    assert client.get("/api/v1/overrides", headers=operator).json() == []


def test_sending_a_command_needs_the_running_service(client: TestClient, as_role: AsRole) -> None:
    set_up(client, as_role)
    body = {
        "action": "set_dim",
        "params": {"level": 40},
        "target_type": "group",
        "target_id": "hoa-binh",
    }
    assert (
        client.post("/api/v1/commands", json=body, headers=as_role(Role.VIEWER)).status_code == 403
    )
    answer = client.post("/api/v1/commands", json=body, headers=as_role(Role.OPERATOR))
    assert answer.status_code == 503 and "not running" in answer.json()["detail"]
    listed = client.get("/api/v1/commands", headers=as_role(Role.VIEWER)).json()
    assert listed["total"] == 0


def test_energy_projection_as_json_and_csv(client: TestClient, as_role: AsRole) -> None:
    set_up(client, as_role)
    viewer = as_role(Role.VIEWER)
    query = "group=hoa-binh&start=2026-06-21&end=2026-06-22&program=default"
    rows = client.get(f"/api/v1/energy/projection?{query}", headers=viewer).json()
    (row,) = rows
    assert row["lamps"] == 2 and row["rated_power_w"] == 250
    projected = row["projected"]
    assert 0 < projected["kwh"] < projected["baseline_kwh"]
    assert projected["saved_vnd"] == round(projected["saved_kwh"] * 2226, 1)
    text = client.get(f"/api/v1/energy/projection?{query}&format=csv", headers=viewer).text
    (line,) = list(csv.DictReader(io.StringIO(text)))
    assert float(line["projected_kwh"]) == projected["kwh"]
    unknown = client.get(
        "/api/v1/energy/projection?group=nowhere&start=2026-06-21&end=2026-06-21", headers=viewer
    )
    assert unknown.status_code == 422 and errors_at(unknown.json()) == [("query", "group")]
    backwards = client.get(
        "/api/v1/energy/projection?group=hoa-binh&start=2026-06-21&end=2026-06-20", headers=viewer
    )
    assert backwards.status_code == 422 and errors_at(backwards.json()) == [("query", "end")]


def test_lamp_states_answer_even_when_empty(client: TestClient, as_role: AsRole) -> None:
    answer = client.get("/api/v1/lamp-states?drifting=true", headers=as_role(Role.VIEWER))
    assert answer.status_code == 200 and answer.json() == []


async def test_energy_report_puts_measured_beside_projected(
    client: TestClient, as_role: AsRole, runtime: Runtime, tmp_path: Path
) -> None:
    set_up(client, as_role)
    store = open_store(
        influx_url=None,
        database="pharos",
        embedded_path=tmp_path / "ts.db",
        sessions=runtime.sessions,
    )
    runtime.timeseries = store
    evening = datetime(2026, 6, 21, 18, 0, tzinfo=LOCAL)
    # sl-1 meters 0.9 kWh over the night, sl-2 1.2 kWh.
    points = [
        Point("streetlight", {"device_id": lamp}, {"energy_kwh": start + used * step / 2}, at)
        for lamp, start, used in (("sl-1", 10.0, 0.9), ("sl-2", 20.0, 1.2))
        for step, at in enumerate(
            (evening, evening + timedelta(hours=6), evening + timedelta(hours=12))
        )
    ]
    await store.write(points)
    query = "group=hoa-binh&start=2026-06-21&end=2026-06-21"
    answer = await asyncio.to_thread(
        client.get, f"/api/v1/energy/report?{query}", headers=as_role(Role.VIEWER)
    )
    assert answer.status_code == 200, answer.text
    (row,) = answer.json()
    assert row["measured"]["kwh"] == pytest.approx(2.1, abs=1e-6)
    assert row["measured"]["baseline_kwh"] == row["projected"]["baseline_kwh"]
