"""``POST /api/v1/devices/import``: a CSV inventory, all or nothing, as multipart or text/csv."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from pharos.apikeys import Role
from tests.pharos.api.conftest import AsRole, BrokerFiles, errors_at

IMPORT = "/api/v1/devices/import"

GOOD = """\
id,kind,name,district,latitude,longitude,rated_power_w,modbus_host,cabinet_id,cabinet_circuit
sl-0001,streetlight,Đèn Hòa Bình 1,Ninh Kiều,10.0341,105.7852,120,,cab-001,1
sl-0002,streetlight,Đèn Hòa Bình 2,Ninh Kiều,10.0343,105.7855,120,,cab-001,2
cab-001,lighting_cabinet,Tủ điện Hòa Bình,Ninh Kiều,,,,10.20.0.9,,
env-0001,env_monitor,Quan trắc Ninh Kiều,Ninh Kiều,10.0300,105.7800,,,,
"""

BAD = """\
id,kind,name,district,latitude,longitude,rated_power_w
sl-0001,streetlight,Đèn 1,Ninh Kiều,10.0341,105.7852,120
sl-0002,streetlight,Đèn 2,Ninh Kiều,95,105.7855,120
sl-0003,lamp_post,Đèn 3,Ninh Kiều,10.0345,105.7857,120
sl-0004,streetlight,Đèn 4,Ninh Kiều,10.0347,105.7859,
sl-0005,streetlight,Đèn 5,Quận 1,10.0349,105.7861,120
"""


def upload(client: TestClient, as_role: AsRole, text: str | bytes) -> Any:
    data = text.encode() if isinstance(text, str) else text
    return client.post(
        IMPORT,
        files={"file": ("kiem-ke.csv", data, "text/csv")},
        headers=as_role(Role.TECHNICIAN),
    )


def device_total(client: TestClient, as_role: AsRole) -> int:
    total: int = client.get("/api/v1/devices", headers=as_role(Role.VIEWER)).json()["total"]
    return total


def test_good_file_creates_every_device_and_shows_mqtt_secrets_once(
    client: TestClient, as_role: AsRole, broker_files: BrokerFiles
) -> None:
    response = upload(client, as_role, GOOD)

    assert response.status_code == 200, response.text
    report = response.json()
    assert sorted(report["created"]) == ["cab-001", "env-0001", "sl-0001", "sl-0002"]
    assert (report["updated"], report["unchanged"]) == ([], [])
    # The cabinet talks Modbus: no broker account, no secret.
    assert sorted(c["username"] for c in report["credentials"]) == [
        "env-0001",
        "sl-0001",
        "sl-0002",
    ]
    assert broker_files.usernames() == ["env-0001", "sl-0001", "sl-0002"]
    lamp = client.get("/api/v1/devices/sl-0002", headers=as_role(Role.VIEWER)).json()
    assert (lamp["cabinet_id"], lamp["cabinet_circuit"], lamp["latitude"]) == (
        "cab-001",
        2,
        10.0343,
    )


def test_the_same_file_twice_changes_nothing_the_second_time(
    client: TestClient, as_role: AsRole, broker_files: BrokerFiles
) -> None:
    assert upload(client, as_role, GOOD).status_code == 200
    password_file = broker_files.password_file.read_text(encoding="utf-8")

    response = upload(client, as_role, GOOD)

    assert response.status_code == 200, response.text
    report = response.json()
    assert sorted(report["unchanged"]) == ["cab-001", "env-0001", "sl-0001", "sl-0002"]
    assert (report["created"], report["updated"], report["credentials"]) == ([], [], [])
    assert broker_files.password_file.read_text(encoding="utf-8") == password_file


def test_an_edited_file_updates_only_the_changed_rows(client: TestClient, as_role: AsRole) -> None:
    assert upload(client, as_role, GOOD).status_code == 200

    response = upload(client, as_role, GOOD.replace("Đèn Hòa Bình 2", "Đèn Hòa Bình 2B"))

    report = response.json()
    assert report["updated"] == ["sl-0002"]
    assert sorted(report["unchanged"]) == ["cab-001", "env-0001", "sl-0001"]


def test_bad_rows_are_422_with_line_column_and_reason_and_store_nothing(
    client: TestClient, as_role: AsRole, broker_files: BrokerFiles
) -> None:
    response = upload(client, as_role, BAD)

    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    # FastAPI's 422 shape (loc, msg, type) with line, column and reason beside it.
    assert all(set(p) == {"loc", "msg", "type", "line", "column", "reason"} for p in problems)
    assert all(p["loc"] == ["body", "file", p["line"], p["column"]] for p in problems)
    assert all(p["msg"] == p["reason"] for p in problems)
    by_line = {p["line"]: p for p in problems}
    assert sorted(by_line) == [3, 4, 5, 6]
    assert by_line[3]["column"] == "latitude"
    assert by_line[4]["column"] == "kind"
    assert "rated_power_w is required" in by_line[5]["reason"]
    assert by_line[6]["column"] == "district"
    assert "Quận 1" in by_line[6]["reason"]
    # All or nothing: the good row on line 2 was not stored either.
    assert device_total(client, as_role) == 0
    assert broker_files.usernames() == []


def test_a_raw_text_csv_body_is_accepted(client: TestClient, as_role: AsRole) -> None:
    response = client.post(
        IMPORT,
        content=GOOD.encode(),
        headers={**as_role(Role.TECHNICIAN), "Content-Type": "text/csv; charset=utf-8"},
    )

    assert response.status_code == 200, response.text
    assert len(response.json()["created"]) == 4


def test_an_excel_utf8_file_with_a_bom_is_read(client: TestClient, as_role: AsRole) -> None:
    response = upload(client, as_role, b"\xef\xbb\xbf" + GOOD.encode())

    assert response.status_code == 200, response.text
    assert len(response.json()["created"]) == 4


def test_a_file_that_is_not_utf8_is_422_naming_the_line(
    client: TestClient, as_role: AsRole
) -> None:
    windows_1258 = GOOD.replace("Hòa", "H\udcf2a").encode("utf-8", errors="surrogateescape")

    response = upload(client, as_role, windows_1258)

    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["line"] == 2
    assert "UTF-8" in problem["reason"]


def test_no_file_is_422_naming_the_field(client: TestClient, as_role: AsRole) -> None:
    response = client.post(IMPORT, json={"rows": []}, headers=as_role(Role.TECHNICIAN))

    assert response.status_code == 422
    assert errors_at(response.json()) == [("body", "file")]


def test_an_empty_file_is_422(client: TestClient, as_role: AsRole) -> None:
    response = upload(client, as_role, "")

    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["line"] == 1
    assert "header" in problem["reason"]
