"""Hostile values from outside never reach the database: 422 naming the field, never 5xx.

Offsets and ids past what the columns hold (SQLite's 64 bits, PostgreSQL's 32-bit
INTEGER), NUL characters (PostgreSQL refuses them in text), and every 422 in FastAPI's
documented shape, hand-raised ones included. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from pharos.apikeys import Role
from tests.pharos.api.conftest import AsRole, errors_at, streetlight
from tests.rules.test_hostile_rule_files import BILLION_LAUGHS

HUGE = (2**31, 2**63, 2**64 + 5, 10**30)
PAGED = (
    "/api/v1/devices",
    "/api/v1/groups",
    "/api/v1/audit",
    "/api/v1/alerts",
    "/api/v1/commands",
    "/api/v1/dead-letters",
    "/api/v1/groups/ninh-kieu/devices",
)


def _assert_validation_shape(body: dict[str, Any]) -> None:
    assert isinstance(body["detail"], list), body
    for error in body["detail"]:
        assert isinstance(error["loc"], list) and isinstance(error["msg"], str), error
        assert isinstance(error["type"], str), error


@pytest.mark.parametrize("offset", HUGE)
def test_an_offset_past_the_columns_is_422_on_every_paged_list(
    offset: int, client: TestClient, as_role: AsRole
) -> None:
    for path in PAGED:
        response = client.get(path, params={"offset": offset}, headers=as_role(Role.ADMIN))
        assert response.status_code == 422, (path, response.text)
        _assert_validation_shape(response.json())
        assert errors_at(response.json()) == [("query", "offset")], path


@pytest.mark.parametrize("alert_id", HUGE)
def test_an_alert_id_past_the_columns_is_422_on_every_alert_route(
    alert_id: int, client: TestClient, as_role: AsRole
) -> None:
    headers = as_role(Role.ADMIN)
    calls = [
        client.get(f"/api/v1/alerts/{alert_id}", headers=headers),
        client.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={}, headers=headers),
        client.post(f"/api/v1/alerts/{alert_id}/close", json={}, headers=headers),
        client.post(f"/api/v1/alerts/{alert_id}/comments", json={"text": "x"}, headers=headers),
        client.delete(f"/api/v1/overrides/{alert_id}", headers=headers),
    ]
    for response in calls:
        assert response.status_code == 422, response.text
        assert errors_at(response.json())[0][:1] == ("path",)


def test_the_largest_id_the_columns_hold_is_a_plain_404(
    client: TestClient, as_role: AsRole
) -> None:
    response = client.get(f"/api/v1/alerts/{2**31 - 1}", headers=as_role(Role.ADMIN))
    assert response.status_code == 404, response.text


def test_nul_characters_are_422_naming_the_field(client: TestClient, as_role: AsRole) -> None:
    headers = as_role(Role.ADMIN)
    body = client.post("/api/v1/devices", json=streetlight(name="Đèn\x00 HB"), headers=headers)
    assert body.status_code == 422, body.text
    assert errors_at(body.json()) == [("body", "name")]

    nested = client.post("/api/v1/devices", json=streetlight(groups=["a\x00b"]), headers=headers)
    assert nested.status_code == 422, nested.text
    assert errors_at(nested.json())[0][:2] == ("body", "groups")

    query = client.get("/api/v1/devices", params={"district": "Ninh\x00Kiều"}, headers=headers)
    assert query.status_code == 422, query.text
    assert errors_at(query.json()) == [("query", "district")]

    path = client.get("/api/v1/devices/sl%000001", headers=headers)
    assert path.status_code == 422, path.text
    assert errors_at(path.json()) == [("path", "device_id")]


def test_a_hand_raised_422_has_the_documented_shape(client: TestClient, as_role: AsRole) -> None:
    response = client.post(
        "/api/v1/rules/backtest",
        json={"start": "2026-06-02T00:00:00Z", "end": "2026-06-01T00:00:00Z"},
        headers=as_role(Role.ADMIN),
    )
    assert response.status_code == 422, response.text
    _assert_validation_shape(response.json())
    assert errors_at(response.json()) == [("body", "end")]


def test_a_body_that_is_not_json_is_a_documented_400_or_422(
    client: TestClient, as_role: AsRole
) -> None:
    response = client.post(
        "/api/v1/groups",
        content=b"\xff\xfe",
        headers={**as_role(Role.ADMIN), "Content-Type": "application/json"},
    )
    assert response.status_code in (400, 422), response.text
    spec = client.get("/openapi.json").json()
    documented = spec["paths"]["/api/v1/groups"]["post"]["responses"]
    assert str(response.status_code) in documented


def test_a_hostile_rule_file_is_a_422_with_its_line(client: TestClient, as_role: AsRole) -> None:
    for text in (BILLION_LAUGHS, "rules: " + "[" * 50_000 + "]" * 50_000):
        response = client.post(
            "/api/v1/rules/check", json={"yaml": text}, headers=as_role(Role.OPERATOR)
        )
        assert response.status_code == 422, response.text
        _assert_validation_shape(response.json())
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "yaml"] and error["line"] >= 1
