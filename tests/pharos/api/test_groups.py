"""``/api/v1/groups``: create, list, read, edit, delete, and a group's devices."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from pharos.apikeys import Role
from tests.pharos.api.conftest import PAGE_SIZE_MAX, AsRole, errors_at, streetlight

GROUPS = "/api/v1/groups"
HOA_BINH = {"id": "hoa-binh", "name": "Đại lộ Hòa Bình", "type": "street", "district": "Ninh Kiều"}


def create_group(client: TestClient, as_role: AsRole, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(GROUPS, json=body, headers=as_role(Role.ENERGY_MANAGER))
    assert response.status_code == 201, response.text
    group: dict[str, Any] = response.json()
    return group


def add_lights(client: TestClient, as_role: AsRole, *device_ids: str) -> None:
    for device_id in device_ids:
        body = streetlight(device_id, groups=["hoa-binh"])
        response = client.post("/api/v1/devices", json=body, headers=as_role(Role.TECHNICIAN))
        assert response.status_code == 201, response.text


def test_create_and_read_a_group(client: TestClient, as_role: AsRole) -> None:
    created = create_group(client, as_role, HOA_BINH)

    assert {k: created[k] for k in HOA_BINH} == HOA_BINH
    assert created["device_count"] == 0
    assert created["description"] is None
    read = client.get(f"{GROUPS}/hoa-binh", headers=as_role(Role.VIEWER))
    assert read.status_code == 200
    assert read.json() == created


def test_create_twice_is_409(client: TestClient, as_role: AsRole) -> None:
    create_group(client, as_role, HOA_BINH)

    response = client.post(GROUPS, json=HOA_BINH, headers=as_role(Role.TECHNICIAN))

    assert response.status_code == 409
    assert response.json() == {"detail": "group 'hoa-binh' already exists"}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({**HOA_BINH, "id": "Hòa Bình"}, ("body", "id")),
        ({**HOA_BINH, "type": "galaxy"}, ("body", "type")),
        ({**HOA_BINH, "name": ""}, ("body", "name")),
        ({**HOA_BINH, "colour": "red"}, ("body", "colour")),
        ({**HOA_BINH, "district": "Quận 1"}, ("body", "district")),  # from the registry
    ],
)
def test_create_with_a_bad_body_is_422(
    client: TestClient, as_role: AsRole, body: dict[str, Any], loc: tuple[str, ...]
) -> None:
    response = client.post(GROUPS, json=body, headers=as_role(Role.ADMIN))

    assert response.status_code == 422, response.text
    assert errors_at(response.json()) == [loc]
    assert client.get(GROUPS, headers=as_role(Role.VIEWER)).json()["total"] == 0


def test_list_groups_pages(client: TestClient, as_role: AsRole) -> None:
    for n in range(3):
        create_group(
            client, as_role, {"id": f"circuit-{n}", "name": f"Mạch {n}", "type": "circuit"}
        )

    page = client.get(f"{GROUPS}?offset=1&limit=1", headers=as_role(Role.VIEWER)).json()

    assert [g["id"] for g in page["items"]] == ["circuit-1"]
    assert (page["total"], page["offset"], page["limit"]) == (3, 1, 1)
    too_big = client.get(f"{GROUPS}?limit={PAGE_SIZE_MAX + 1}", headers=as_role(Role.VIEWER))
    assert too_big.status_code == 422
    assert errors_at(too_big.json()) == [("query", "limit")]


def test_patch_group(client: TestClient, as_role: AsRole) -> None:
    create_group(client, as_role, HOA_BINH)

    response = client.patch(
        f"{GROUPS}/hoa-binh",
        json={"description": "Trục chính", "district": None},
        headers=as_role(Role.TECHNICIAN),
    )

    assert response.status_code == 200, response.text
    group = response.json()
    assert (group["description"], group["district"], group["name"]) == (
        "Trục chính", None, "Đại lộ Hòa Bình",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"type": "galaxy"}, ("body", "type")),
        ({"id": "renamed"}, ("body", "id")),  # ids never change
        ({"district": "Quận 1"}, ("body", "district")),
    ],
)
def test_patch_group_with_a_bad_body_is_422(
    client: TestClient, as_role: AsRole, body: dict[str, Any], loc: tuple[str, ...]
) -> None:
    created = create_group(client, as_role, HOA_BINH)

    response = client.patch(f"{GROUPS}/hoa-binh", json=body, headers=as_role(Role.ADMIN))

    assert response.status_code == 422
    assert errors_at(response.json()) == [loc]
    assert client.get(f"{GROUPS}/hoa-binh", headers=as_role(Role.VIEWER)).json() == created


def test_unknown_group_is_404_everywhere(client: TestClient, as_role: AsRole) -> None:
    admin = as_role(Role.ADMIN)
    assert client.get(f"{GROUPS}/nowhere", headers=admin).status_code == 404
    assert client.patch(f"{GROUPS}/nowhere", json={"name": "x"}, headers=admin).status_code == 404
    assert client.delete(f"{GROUPS}/nowhere", headers=admin).status_code == 404
    response = client.get(f"{GROUPS}/nowhere/devices", headers=admin)
    assert response.status_code == 404
    assert response.json() == {"detail": "no group 'nowhere'"}


def test_a_groups_devices(client: TestClient, as_role: AsRole) -> None:
    create_group(client, as_role, HOA_BINH)
    add_lights(client, as_role, "sl-0001", "sl-0002", "sl-0003")
    loner = client.post("/api/v1/devices", json=streetlight("sl-0100"), headers=as_role(Role.ADMIN))
    assert loner.status_code == 201

    page = client.get(f"{GROUPS}/hoa-binh/devices?limit=2", headers=as_role(Role.VIEWER)).json()

    assert [d["id"] for d in page["items"]] == ["sl-0001", "sl-0002"]
    assert page["total"] == 3
    assert page["items"][0]["groups"] == ["hoa-binh"]
    count = client.get(f"{GROUPS}/hoa-binh", headers=as_role(Role.VIEWER)).json()["device_count"]
    assert count == 3
    bad = client.get(f"{GROUPS}/hoa-binh/devices?offset=-1", headers=as_role(Role.VIEWER))
    assert bad.status_code == 422


def test_delete_group_keeps_its_devices(client: TestClient, as_role: AsRole) -> None:
    create_group(client, as_role, HOA_BINH)
    add_lights(client, as_role, "sl-0001")

    response = client.delete(f"{GROUPS}/hoa-binh", headers=as_role(Role.ADMIN))

    assert response.status_code == 204
    assert response.content == b""
    assert client.get(f"{GROUPS}/hoa-binh", headers=as_role(Role.ADMIN)).status_code == 404
    device = client.get("/api/v1/devices/sl-0001", headers=as_role(Role.VIEWER)).json()
    assert device["groups"] == []


def test_delete_group_by_an_energy_manager_is_403_and_keeps_it(
    client: TestClient, as_role: AsRole
) -> None:
    create_group(client, as_role, HOA_BINH)

    response = client.delete(f"{GROUPS}/hoa-binh", headers=as_role(Role.ENERGY_MANAGER))

    assert response.status_code == 403
    assert response.json() == {
        "detail": "role 'energy_manager' may not do this; allowed roles: admin"
    }
    assert client.get(f"{GROUPS}/hoa-binh", headers=as_role(Role.VIEWER)).status_code == 200
