"""``/api/v1/devices``: create, list, read, edit, credentials, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from devices.broker import verify_password
from devices.registry.db import transaction
from devices.registry.models import BrokerAccountRow, Device
from devices.registry.schemas import GroupCreate
from pharos.apikeys import Role
from pharos.runtime import Runtime
from tests.pharos.api.conftest import (
    PAGE_SIZE_MAX,
    AsRole,
    BrokerFiles,
    energy_meter,
    errors_at,
    streetlight,
)

DEVICES = "/api/v1/devices"


def create(client: TestClient, as_role: AsRole, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(DEVICES, json=body, headers=as_role(Role.TECHNICIAN))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


# -- create ----------------------------------------------------------------------


def test_create_mqtt_device_shows_its_secret_once_and_writes_the_password_file(
    client: TestClient, as_role: AsRole, broker_files: BrokerFiles
) -> None:
    created = create(client, as_role, streetlight())

    device = created["device"]
    assert device["id"] == "sl-0001"
    assert device["state"] == "registered"
    assert device["rated_power_w"] == 120
    assert device["district"] == "Ninh Kiều"
    credentials = created["credentials"]
    assert credentials["username"] == credentials["client_id"] == "sl-0001"
    assert broker_files.usernames() == ["sl-0001"]
    stored_hash = broker_files.hash_of("sl-0001")
    assert stored_hash is not None
    assert verify_password(credentials["secret"], stored_hash)
    # Reading the device back never shows a secret again.
    again = client.get(f"{DEVICES}/sl-0001", headers=as_role(Role.VIEWER)).json()
    assert "secret" not in str(again)
    assert again == device


def test_create_modbus_device_has_no_broker_account(
    client: TestClient, as_role: AsRole, broker_files: BrokerFiles
) -> None:
    created = create(client, as_role, energy_meter())

    assert created["credentials"] is None
    assert created["device"]["modbus_port"] == 502
    assert created["device"]["register_map"] == "sdm630"
    assert broker_files.usernames() == []


def test_create_twice_is_409(client: TestClient, as_role: AsRole) -> None:
    create(client, as_role, streetlight())

    response = client.post(DEVICES, json=streetlight(), headers=as_role(Role.ADMIN))

    assert response.status_code == 409
    assert response.json() == {"detail": "device 'sl-0001' already exists"}


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        (streetlight(kind="lamp_post"), ("body", "kind"), "streetlight"),
        (streetlight(latitude=95, longitude=105.7), ("body", "latitude"), "less than or equal"),
        ({k: v for k, v in streetlight().items() if k != "rated_power_w"}, ("body",),
         "rated_power_w is required"),
        (streetlight(colour="amber"), ("body", "colour"), "Extra inputs"),
        (streetlight(id="Bad Id!"), ("body", "id"), "must be 1-63"),
        ({"kind": "streetlight", "name": "x", "rated_power_w": 1}, ("body", "id"), "required"),
        (energy_meter(modbus_host=None), ("body",), "modbus_host is required"),
    ],
    ids=["unknown-kind", "latitude-95", "no-rated-power", "extra-field", "bad-id", "no-id",
         "meter-without-host"],
)  # fmt: skip
def test_create_with_a_bad_body_is_422_naming_the_field(
    client: TestClient, as_role: AsRole, body: dict[str, Any], loc: tuple[str, ...], words: str
) -> None:
    response = client.post(DEVICES, json=body, headers=as_role(Role.TECHNICIAN))

    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert loc in errors_at(response.json())
    assert any(words in e["msg"] for e in errors), errors
    assert client.get(DEVICES, headers=as_role(Role.VIEWER)).json()["total"] == 0


@pytest.mark.parametrize(
    ("fields", "loc", "words"),
    [
        ({"groups": ["nowhere"]}, ("body", "groups"), "no group 'nowhere'"),
        ({"district": "Quận 1"}, ("body", "district"), "unknown district 'Quận 1'"),
        ({"cabinet_id": "cab-404"}, ("body", "cabinet_id"), "not a registered lighting cabinet"),
    ],
)
def test_create_referring_to_what_is_not_there_is_422_in_fastapis_shape(
    client: TestClient,
    as_role: AsRole,
    broker_files: BrokerFiles,
    fields: dict[str, Any],
    loc: tuple[str, ...],
    words: str,
) -> None:
    response = client.post(DEVICES, json=streetlight(**fields), headers=as_role(Role.TECHNICIAN))

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert tuple(error["loc"]) == loc
    assert error["type"] == "value_error"
    assert words in error["msg"]
    # Rolled back: neither the device nor its broker account exists.
    assert client.get(f"{DEVICES}/sl-0001", headers=as_role(Role.VIEWER)).status_code == 404
    assert broker_files.usernames() == []


def test_a_forbidden_create_stores_nothing(client: TestClient, as_role: AsRole) -> None:
    response = client.post(DEVICES, json=streetlight(), headers=as_role(Role.OPERATOR))

    assert response.status_code == 403
    assert client.get(DEVICES, headers=as_role(Role.VIEWER)).json()["total"] == 0


def test_the_change_is_committed_before_the_answer(
    client: TestClient, as_role: AsRole, runtime: Runtime
) -> None:
    create(client, as_role, streetlight())

    # A session of our own, opened after the answer, sees the device.
    with transaction(runtime.sessions) as session:
        assert session.get(Device, "sl-0001") is not None


# -- list and read ---------------------------------------------------------------


@pytest.fixture
def fleet(client: TestClient, as_role: AsRole, runtime: Runtime) -> None:
    with runtime.registry("seed") as registry:
        registry.create_group(GroupCreate(id="hoa-binh", name="Đại lộ Hòa Bình", type="street"))
    for n in range(1, 6):
        create(client, as_role, streetlight(f"sl-{n:04d}", groups=["hoa-binh"] if n <= 2 else []))
    create(client, as_role, streetlight("sl-0100", district="Cái Răng"))
    create(client, as_role, energy_meter())
    client.post(f"{DEVICES}/sl-0003/transition", json={"to": "installed"},
                headers=as_role(Role.TECHNICIAN))  # fmt: skip


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["em-0001", "sl-0001", "sl-0002", "sl-0003", "sl-0004", "sl-0005", "sl-0100"]),
        ("?kind=energy_meter", ["em-0001"]),
        ("?district=Cái Răng", ["sl-0100"]),
        ("?group=hoa-binh", ["sl-0001", "sl-0002"]),
        ("?state=installed", ["sl-0003"]),
        ("?kind=streetlight&district=Ninh Kiều&state=registered",
         ["sl-0001", "sl-0002", "sl-0004", "sl-0005"]),
    ],
)  # fmt: skip
def test_list_filters(
    client: TestClient, as_role: AsRole, fleet: None, query: str, expected: list[str]
) -> None:
    response = client.get(DEVICES + query, headers=as_role(Role.VIEWER))

    assert response.status_code == 200, response.text
    page = response.json()
    assert ids(page) == expected
    assert page["total"] == len(expected)


def test_list_pages(client: TestClient, as_role: AsRole, fleet: None) -> None:
    response = client.get(
        f"{DEVICES}?kind=streetlight&offset=2&limit=2", headers=as_role(Role.VIEWER)
    )

    page = response.json()
    assert ids(page) == ["sl-0003", "sl-0004"]
    assert (page["total"], page["offset"], page["limit"]) == (6, 2, 2)


def test_list_default_page_size_is_capped_by_settings(client: TestClient, as_role: AsRole) -> None:
    page = client.get(DEVICES, headers=as_role(Role.VIEWER)).json()

    assert page["limit"] == min(100, PAGE_SIZE_MAX)


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("?kind=lamp_post", ("query", "kind")),
        ("?state=broken", ("query", "state")),
        (f"?limit={PAGE_SIZE_MAX + 1}", ("query", "limit")),
        ("?limit=0", ("query", "limit")),
        ("?offset=-1", ("query", "offset")),
    ],
)
def test_list_with_a_bad_query_is_422(
    client: TestClient, as_role: AsRole, query: str, loc: tuple[str, ...]
) -> None:
    response = client.get(DEVICES + query, headers=as_role(Role.VIEWER))

    assert response.status_code == 422, response.text
    assert errors_at(response.json()) == [loc]


def test_page_size_above_the_maximum_names_the_maximum(client: TestClient, as_role: AsRole) -> None:
    response = client.get(f"{DEVICES}?limit=10000", headers=as_role(Role.VIEWER))

    [error] = response.json()["detail"]
    assert error["msg"] == f"Input should be less than or equal to {PAGE_SIZE_MAX}"


def test_get_unknown_device_is_404(client: TestClient, as_role: AsRole) -> None:
    response = client.get(f"{DEVICES}/sl-9999", headers=as_role(Role.VIEWER))

    assert response.status_code == 404
    assert response.json() == {"detail": "no device 'sl-9999'"}


# -- update ----------------------------------------------------------------------


def test_patch_changes_only_the_fields_given(client: TestClient, as_role: AsRole) -> None:
    create(client, as_role, streetlight(pole="HB-016"))

    response = client.patch(
        f"{DEVICES}/sl-0001",
        json={"pole": "HB-017", "latitude": 10.0341, "longitude": 105.7852, "street": None},
        headers=as_role(Role.TECHNICIAN),
    )

    assert response.status_code == 200, response.text
    device = response.json()
    assert (device["pole"], device["latitude"], device["longitude"]) == (
        "HB-017",
        10.0341,
        105.7852,
    )
    assert device["street"] is None
    assert device["name"] == "Đèn đường Hòa Bình"
    assert device["commissioning"]["position_set"] is True


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"latitude": 95, "longitude": 105.0}, ("body", "latitude")),
        ({"rated_power_w": None}, ("body",)),  # a streetlight needs it: the registry says so
        ({"latitude": 10.0}, ("body",)),  # latitude without longitude
        ({"kind": "flood_gauge"}, ("body", "kind")),  # a device's kind never changes
        ({"groups": ["nowhere"]}, ("body", "groups")),
    ],
)
def test_patch_with_a_bad_body_is_422_and_changes_nothing(
    client: TestClient, as_role: AsRole, body: dict[str, Any], loc: tuple[str, ...]
) -> None:
    before = create(client, as_role, streetlight())["device"]

    response = client.patch(f"{DEVICES}/sl-0001", json=body, headers=as_role(Role.TECHNICIAN))

    assert response.status_code == 422, response.text
    assert loc in errors_at(response.json())
    assert client.get(f"{DEVICES}/sl-0001", headers=as_role(Role.VIEWER)).json() == before


def test_patch_unknown_device_is_404(client: TestClient, as_role: AsRole) -> None:
    response = client.patch(f"{DEVICES}/sl-9999", json={"pole": "x"}, headers=as_role(Role.ADMIN))

    assert response.status_code == 404


# -- credentials -----------------------------------------------------------------


def stored_hash(runtime: Runtime, username: str) -> str:
    with transaction(runtime.sessions) as session:
        row = session.scalar(select(BrokerAccountRow).where(BrokerAccountRow.username == username))
        assert row is not None
        return row.password_hash


def test_rotate_gives_a_new_secret_and_only_it_works(
    client: TestClient, as_role: AsRole, runtime: Runtime, broker_files: BrokerFiles
) -> None:
    old_secret = create(client, as_role, streetlight())["credentials"]["secret"]
    old_hash = stored_hash(runtime, "sl-0001")

    response = client.post(
        f"{DEVICES}/sl-0001/rotate-credentials", headers=as_role(Role.TECHNICIAN)
    )

    assert response.status_code == 200, response.text
    credentials = response.json()
    assert credentials["username"] == credentials["client_id"] == "sl-0001"
    assert credentials["secret"] != old_secret
    new_hash = stored_hash(runtime, "sl-0001")
    assert new_hash != old_hash
    assert broker_files.hash_of("sl-0001") == new_hash
    assert verify_password(credentials["secret"], new_hash)
    assert not verify_password(old_secret, new_hash)


def test_rotate_for_a_modbus_device_is_422(client: TestClient, as_role: AsRole) -> None:
    create(client, as_role, energy_meter())

    response = client.post(f"{DEVICES}/em-0001/rotate-credentials", headers=as_role(Role.ADMIN))

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["path", "device_id"]
    assert "has no broker account" in error["msg"]


def test_rotate_for_an_unknown_device_is_404(client: TestClient, as_role: AsRole) -> None:
    response = client.post(f"{DEVICES}/sl-9999/rotate-credentials", headers=as_role(Role.ADMIN))

    assert response.status_code == 404
