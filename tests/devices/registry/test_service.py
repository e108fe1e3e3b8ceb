"""Registry operations on SQLite and on a real PostgreSQL, with their audit entries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from devices.broker import BrokerAccount, verify_password
from devices.registry.models import AuditEntry, BrokerAccountRow, LifecycleState
from devices.registry.schemas import DeviceCreate, DeviceUpdate, GroupCreate
from devices.registry.service import (
    ConflictError,
    DeviceFilter,
    InvalidError,
    NotFoundError,
    device_public,
    registry_session,
)
from devices.wire import DeviceKind

DISTRICTS = ["Ninh Kiều", "Cái Răng"]
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def lamp(device_id: str, **extra: object) -> DeviceCreate:
    fields: dict[str, object] = {
        "id": device_id, "kind": "streetlight", "name": f"Lamp {device_id}",
        "rated_power_w": 90, "district": "Ninh Kiều", "street": "Đại lộ Hòa Bình",
    }  # fmt: skip
    return DeviceCreate.model_validate(fields | extra)


class Synced:
    def __init__(self) -> None:
        self.calls: list[list[BrokerAccount]] = []

    def __call__(self, accounts: list[BrokerAccount]) -> None:
        self.calls.append(accounts)


def registry(sessions: sessionmaker[Session], sync: Synced | None = None, actor: str = "tech"):  # type: ignore[no-untyped-def]
    return registry_session(sessions, actor, broker_sync=sync, districts=DISTRICTS)


def test_create_gives_mqtt_devices_hashed_credentials(sessions: sessionmaker[Session]) -> None:
    sync = Synced()
    with registry(sessions, sync) as reg:
        device, credentials = reg.create_device(lamp("sl-0001"))
    assert credentials is not None and credentials.username == "sl-0001"
    with sessions() as session:
        row = session.get(BrokerAccountRow, "sl-0001")
        assert row is not None and row.role == "device"
        assert row.password_hash.startswith("$7$") and credentials.secret not in row.password_hash
        assert verify_password(credentials.secret, row.password_hash)
    assert [a.username for a in sync.calls[-1]] == ["sl-0001"]
    assert device.state == LifecycleState.REGISTERED


def test_modbus_devices_get_no_broker_account(sessions: sessionmaker[Session]) -> None:
    sync = Synced()
    with registry(sessions, sync) as reg:
        meter = DeviceCreate(
            id="em-001", kind=DeviceKind.ENERGY_METER, name="Hospital meter", modbus_host="10.0.0.5"
        )
        _, credentials = reg.create_device(meter)
        with pytest.raises(InvalidError, match="Modbus"):
            reg.rotate_credentials("em-001")
    assert credentials is None
    assert sync.calls == []
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(BrokerAccountRow)) == 0


def test_duplicate_unknown_group_district_and_cabinet(sessions: sessionmaker[Session]) -> None:
    with registry(sessions) as reg:
        reg.create_device(lamp("sl-0001"))
    with registry(sessions) as reg, pytest.raises(ConflictError, match="already exists"):
        reg.create_device(lamp("sl-0001"))
    with registry(sessions) as reg, pytest.raises(InvalidError) as caught:
        reg.create_device(lamp("sl-0002", groups=["nowhere"]))
    assert caught.value.field == "groups"
    with registry(sessions) as reg, pytest.raises(InvalidError) as caught:
        reg.create_device(lamp("sl-0003", district="Hà Nội"))
    assert caught.value.field == "district"
    with registry(sessions) as reg, pytest.raises(InvalidError) as caught:
        reg.create_device(lamp("sl-0004", cabinet_id="sl-0001"))
    assert caught.value.field == "cabinet_id"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(BrokerAccountRow)) == 1


def test_update_audits_before_and_after(sessions: sessionmaker[Session]) -> None:
    with registry(sessions) as reg:
        reg.create_group(GroupCreate(id="hoa-binh", name="Đại lộ Hòa Bình", type="street"))
        reg.create_device(lamp("sl-0001"))
    with registry(sessions, actor="alice") as reg:
        reg.update_device("sl-0001", DeviceUpdate(rated_power_w=120, groups=["hoa-binh"]))
        reg.update_device("sl-0001", DeviceUpdate(rated_power_w=120))  # no change: no entry
    with registry(sessions) as reg:
        entries, total = reg.audit_log(entity_type="device", entity_id="sl-0001")
        public = device_public(reg.get_device("sl-0001"))
    assert total == 2
    update = entries[0]
    assert update.action == "device.update" and update.actor == "alice"
    assert update.before is not None and update.after is not None
    assert update.before["rated_power_w"] == 90 and update.after["rated_power_w"] == 120
    assert update.after["groups"] == ["hoa-binh"]
    assert public.groups == ["hoa-binh"]


def test_update_cannot_break_kind_rules(sessions: sessionmaker[Session]) -> None:
    with registry(sessions) as reg:
        reg.create_device(lamp("sl-0001"))
    with registry(sessions) as reg, pytest.raises(InvalidError, match="rated_power_w"):
        reg.update_device("sl-0001", DeviceUpdate(rated_power_w=None))
    with registry(sessions) as reg, pytest.raises(InvalidError, match="Modbus"):
        reg.update_device("sl-0001", DeviceUpdate(modbus_host="10.0.0.1"))


def test_list_filters_and_pagination(sessions: sessionmaker[Session]) -> None:
    with registry(sessions) as reg:
        reg.create_group(GroupCreate(id="cai-rang", name="Cái Răng lamps"))
        for n in range(5):
            reg.create_device(lamp(f"sl-{n:04d}", district="Cái Răng", groups=["cai-rang"]))
        reg.create_device(lamp("sl-0100"))
        reg.create_device(
            DeviceCreate(
                id="fg-01", kind=DeviceKind.FLOOD_GAUGE, name="Gauge", district="Ninh Kiều"
            )
        )
    with registry(sessions) as reg:
        rows, total = reg.list_devices(DeviceFilter(district="Cái Răng"), offset=2, limit=2)
        assert total == 5 and [d.id for d in rows] == ["sl-0002", "sl-0003"]
        _, total = reg.list_devices(DeviceFilter(group="cai-rang"))
        assert total == 5
        rows, total = reg.list_devices(DeviceFilter(kind=DeviceKind.FLOOD_GAUGE))
        assert total == 1 and rows[0].id == "fg-01"
        _, total = reg.list_devices(DeviceFilter(state=LifecycleState.INSTALLED))
        assert total == 0
        assert reg.group_public(reg.get_group("cai-rang")).device_count == 5


def test_commissioning_walk_and_sign_off(sessions: sessionmaker[Session]) -> None:
    with registry(sessions) as reg:
        reg.create_device(lamp("sl-0001"))
        reg.transition("sl-0001", LifecycleState.INSTALLED)
    with registry(sessions) as reg, pytest.raises(ConflictError) as caught:
        reg.transition("sl-0001", LifecycleState.COMMISSIONED)
    assert "position_set" in str(caught.value) and "self_test" in str(caught.value)
    with registry(sessions) as reg:
        reg.update_device("sl-0001", DeviceUpdate(latitude=10.0339, longitude=105.7795))
        assert reg.record_first_telemetry("sl-0001", T0) is True
        assert reg.record_first_telemetry("sl-0001", T0) is False
        reg.record_self_test("sl-0001", T0)
    with registry(sessions, actor="technician:binh") as reg:
        device = reg.transition("sl-0001", LifecycleState.COMMISSIONED, note="pole 12 OK")
        reg.transition("sl-0001", LifecycleState.IN_SERVICE)
        reg.transition("sl-0001", LifecycleState.MAINTENANCE)
        reg.transition("sl-0001", LifecycleState.IN_SERVICE)
    assert device.commissioning.signed_off_by == "technician:binh"
    with registry(sessions) as reg:
        public = device_public(reg.get_device("sl-0001"))
        entries, _ = reg.audit_log(entity_id="sl-0001")
    assert public.state == LifecycleState.IN_SERVICE and public.commissioning.missing == []
    actions = [e.action for e in entries]
    assert "device.transition.commissioned" in actions
    assert "commissioning.first_telemetry" in actions


def test_decommission_disables_the_account(sessions: sessionmaker[Session]) -> None:
    sync = Synced()
    with registry(sessions, sync) as reg:
        reg.create_device(lamp("sl-0001"))
        reg.create_device(lamp("sl-0002"))
    with registry(sessions, sync) as reg:
        reg.transition("sl-0001", LifecycleState.DECOMMISSIONED)
    assert [a.username for a in sync.calls[-1]] == ["sl-0002"]
    with registry(sessions) as reg:
        with pytest.raises(ConflictError, match="decommissioned"):
            reg.rotate_credentials("sl-0001")
        with pytest.raises(ConflictError, match="final state"):
            reg.transition("sl-0001", LifecycleState.IN_SERVICE)


def test_rotation_replaces_the_hash(sessions: sessionmaker[Session]) -> None:
    with registry(sessions) as reg:
        _, first = reg.create_device(lamp("sl-0001"))
    with registry(sessions) as reg:
        second = reg.rotate_credentials("sl-0001")
    assert first is not None and first.secret != second.secret
    with sessions() as session:
        row = session.get(BrokerAccountRow, "sl-0001")
        assert row is not None and row.rotated_at is not None
        assert verify_password(second.secret, row.password_hash)
        assert not verify_password(first.secret, row.password_hash)


def test_error_rolls_back_the_whole_transaction(sessions: sessionmaker[Session]) -> None:
    sync = Synced()
    with pytest.raises(NotFoundError), registry(sessions, sync) as reg:
        reg.create_device(lamp("sl-0001"))
        reg.get_device("missing")
    assert sync.calls == []
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0


def test_service_accounts_are_listed_with_devices(sessions: sessionmaker[Session]) -> None:
    with registry(sessions) as reg:
        reg.create_device(lamp("sl-0001"))
        backend = reg.ensure_service_account("pharos-backend")
        with pytest.raises(ConflictError):
            reg.ensure_service_account("sl-0001")
    with registry(sessions) as reg:
        roles = {a.username: a.role for a in reg.broker_accounts()}
    assert roles == {"sl-0001": "device", "pharos-backend": "service"}
    assert backend.client_id == "pharos-backend"


def test_device_ids_and_service_accounts_never_collide(sessions: sessionmaker[Session]) -> None:
    with registry(sessions) as reg:
        reg.ensure_service_account("pharos-ingest-1")
    with registry(sessions) as reg, pytest.raises(ConflictError, match="backend broker account"):
        reg.create_device(lamp("pharos-ingest-1"))
    with registry(sessions) as reg, pytest.raises(InvalidError) as caught:
        reg.ensure_service_account("bad name")
    assert caught.value.field == "username"
    with registry(sessions) as reg:
        assert {a.username: a.role for a in reg.broker_accounts()} == {"pharos-ingest-1": "service"}
