"""Registry operations: every change to devices, groups and credentials, with its audit entry.

``Registry`` works inside one session (one transaction) for one actor. Callers open
it with ``registry_session``, which commits and then rewrites the broker's password
and ACL files when credentials changed, so the broker never sees an uncommitted
account.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from devices.broker import BrokerAccount, hash_password, new_secret
from devices.registry.db import utcnow
from devices.registry.lifecycle import Checklist, TransitionError, check_transition
from devices.registry.models import (
    AuditEntry,
    BrokerAccountRow,
    Commissioning,
    Device,
    Group,
    LifecycleState,
)
from devices.registry.schemas import (
    BrokerCredentials,
    CommissioningPublic,
    DeviceCreate,
    DevicePublic,
    DeviceUpdate,
    GroupCreate,
    GroupPublic,
    GroupUpdate,
    check_kind_fields,
)
from devices.wire import DeviceKind, Transport, is_valid_device_id, kind_spec


class RegistryError(Exception):
    """Base of the errors the API maps to status codes."""


class NotFoundError(RegistryError):
    pass


class ConflictError(RegistryError):
    pass


class InvalidError(RegistryError):
    """A request that validates alone but not against the registry; names the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


_DEVICE_FIELDS = (
    "kind", "name", "latitude", "longitude", "district", "ward", "street", "pole",
    "cabinet_id", "cabinet_circuit", "rated_power_w", "modbus_host", "modbus_port",
    "modbus_unit", "register_map", "modbus_word_order", "poll_interval_s", "firmware",
)  # fmt: skip


def device_snapshot(device: Device) -> dict[str, Any]:
    """The audited view of a device: its fields, groups and state."""
    snap = {name: getattr(device, name) for name in _DEVICE_FIELDS}
    snap["groups"] = [g.id for g in device.groups]
    snap["state"] = device.state
    return snap


def checklist_of(device: Device) -> Checklist:
    c = device.commissioning
    return Checklist(
        position_set=device.latitude is not None and device.longitude is not None,
        first_telemetry_at=c.first_telemetry_at if c else None,
        self_test_ok_at=c.self_test_ok_at if c else None,
    )


def device_public(device: Device) -> DevicePublic:
    checklist = checklist_of(device)
    c = device.commissioning
    return DevicePublic.model_validate(
        {
            **{name: getattr(device, name) for name in _DEVICE_FIELDS},
            "id": device.id,
            "groups": [g.id for g in device.groups],
            "state": device.state,
            "created_at": device.created_at,
            "updated_at": device.updated_at,
            "commissioning": CommissioningPublic(
                position_set=checklist.position_set,
                first_telemetry_at=checklist.first_telemetry_at,
                self_test_ok_at=checklist.self_test_ok_at,
                signed_off_by=c.signed_off_by if c else None,
                signed_off_at=c.signed_off_at if c else None,
                missing=checklist.missing(),
            ),
        }
    )


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    kind: DeviceKind | None = None
    district: str | None = None
    group: str | None = None
    state: LifecycleState | None = None


@dataclass
class ImportOutcome:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    credentials: list[BrokerCredentials] = field(default_factory=list)


class Registry:
    """Registry operations for one actor inside one session."""

    def __init__(
        self,
        session: Session,
        actor: str,
        *,
        districts: Sequence[str] | None = None,
        hash_iterations: int = 101,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.session = session
        self.actor = actor
        self.districts = list(districts) if districts is not None else None
        self.hash_iterations = hash_iterations
        self.clock = clock
        self.credentials_changed = False

    # -- devices -------------------------------------------------------------

    def get_device(self, device_id: str) -> Device:
        device = self.session.get(Device, device_id)
        if device is None:
            raise NotFoundError(f"no device {device_id!r}")
        return device

    def list_devices(
        self, filters: DeviceFilter, *, offset: int = 0, limit: int = 100
    ) -> tuple[list[Device], int]:
        query = select(Device)
        if filters.kind is not None:
            query = query.where(Device.kind == filters.kind.value)
        if filters.district is not None:
            query = query.where(Device.district == filters.district)
        if filters.state is not None:
            query = query.where(Device.state == filters.state.value)
        if filters.group is not None:
            query = query.where(Device.groups.any(Group.id == filters.group))
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = self.session.scalars(query.order_by(Device.id).offset(offset).limit(limit))
        return list(rows.unique()), total

    def create_device(self, data: DeviceCreate) -> tuple[Device, BrokerCredentials | None]:
        if self.session.get(Device, data.id) is not None:
            raise ConflictError(f"device {data.id!r} already exists")
        if self.session.get(BrokerAccountRow, data.id) is not None:
            raise ConflictError(f"{data.id!r} is a backend broker account; pick another device id")
        self._check_references(data.model_dump())
        device = Device(id=data.id, state=LifecycleState.REGISTERED, created_at=self.clock())
        self._apply(device, data.model_dump(exclude={"id", "groups"}))
        device.groups = self._groups(data.groups or [])
        device.commissioning = Commissioning(device_id=data.id)
        self.session.add(device)
        credentials = None
        if kind_spec(data.kind).transport is Transport.MQTT:
            credentials = self._set_secret(device.id, device_id=device.id)
        self.session.flush()
        self._audit("device.create", "device", device.id, None, device_snapshot(device))
        return device, credentials

    def update_device(self, device_id: str, data: DeviceUpdate) -> Device:
        device = self.get_device(device_id)
        if device.state == LifecycleState.DECOMMISSIONED:
            raise ConflictError(f"device {device_id!r} is decommissioned")
        before = device_snapshot(device)
        changes = data.model_dump(exclude_unset=True)
        merged = {**before, **changes}
        try:
            check_kind_fields(DeviceKind(device.kind), merged)
        except ValueError as exc:
            raise InvalidError("body", str(exc)) from None
        self._check_references(merged, device_id=device_id)
        self._apply(device, {k: v for k, v in changes.items() if k != "groups"})
        if "groups" in changes:
            device.groups = self._groups(changes["groups"] or [])
        after = device_snapshot(device)
        if after != before:
            device.updated_at = self.clock()
            self.session.flush()
            self._audit("device.update", "device", device_id, before, after)
        return device

    def transition(self, device_id: str, target: LifecycleState, note: str | None = None) -> Device:
        device = self.get_device(device_id)
        current = LifecycleState(device.state)
        try:
            check_transition(current, target, checklist_of(device))
        except TransitionError as exc:
            raise ConflictError(str(exc)) from None
        before = device_snapshot(device)
        device.state = target.value
        device.updated_at = self.clock()
        if target == LifecycleState.COMMISSIONED:
            device.commissioning.signed_off_by = self.actor
            device.commissioning.signed_off_at = self.clock()
        if target == LifecycleState.DECOMMISSIONED:
            self._disable_account(device_id)
        after = device_snapshot(device)
        if note:
            after["note"] = note
        self._audit(f"device.transition.{target.value}", "device", device_id, before, after)
        return device

    def rotate_credentials(self, device_id: str) -> BrokerCredentials:
        device = self.get_device(device_id)
        if kind_spec(device.kind).transport is not Transport.MQTT:
            raise InvalidError("device", f"a {device.kind} talks Modbus and has no broker account")
        if device.state == LifecycleState.DECOMMISSIONED:
            raise ConflictError(f"device {device_id!r} is decommissioned")
        credentials = self._set_secret(device_id, device_id=device_id)
        self._audit("device.rotate_credentials", "device", device_id, None, {"username": device_id})
        return credentials

    def record_first_telemetry(self, device_id: str, at: datetime) -> bool:
        """Tick 'first telemetry seen'; True if this call ticked it."""
        device = self.get_device(device_id)
        if device.commissioning.first_telemetry_at is not None:
            return False
        device.commissioning.first_telemetry_at = at
        self._audit(
            "commissioning.first_telemetry", "device", device_id, None, {"at": at.isoformat()}
        )
        return True

    def record_self_test(self, device_id: str, at: datetime) -> bool:
        """Tick 'self-test acknowledged'; True if this call ticked it."""
        device = self.get_device(device_id)
        if device.commissioning.self_test_ok_at is not None:
            return False
        device.commissioning.self_test_ok_at = at
        self._audit("commissioning.self_test", "device", device_id, None, {"at": at.isoformat()})
        return True

    def upsert_devices(self, rows: Iterable[DeviceCreate]) -> ImportOutcome:
        """Create or update by id; a row equal to the stored device changes nothing."""
        outcome = ImportOutcome()
        for row in rows:
            existing = self.session.get(Device, row.id)
            if existing is None:
                _, credentials = self.create_device(row)
                outcome.created.append(row.id)
                if credentials:
                    outcome.credentials.append(credentials)
                continue
            if existing.kind != row.kind.value:
                raise InvalidError(
                    "kind", f"device {row.id!r} is a {existing.kind}, not {row.kind}"
                )
            before = device_snapshot(existing)
            self.update_device(row.id, DeviceUpdate(**row.model_dump(exclude={"id", "kind"})))
            changed = device_snapshot(existing) != before
            (outcome.updated if changed else outcome.unchanged).append(row.id)
        return outcome

    # -- groups --------------------------------------------------------------

    def get_group(self, group_id: str) -> Group:
        group = self.session.get(Group, group_id)
        if group is None:
            raise NotFoundError(f"no group {group_id!r}")
        return group

    def group_public(self, group: Group) -> GroupPublic:
        count = self.session.scalar(
            select(func.count()).select_from(Device).where(Device.groups.any(Group.id == group.id))
        )
        return GroupPublic.model_validate(
            {**_group_snapshot(group), "device_count": count or 0, "created_at": group.created_at}
        )

    def list_groups(self, *, offset: int = 0, limit: int = 100) -> tuple[list[Group], int]:
        total = self.session.scalar(select(func.count()).select_from(Group)) or 0
        rows = self.session.scalars(select(Group).order_by(Group.id).offset(offset).limit(limit))
        return list(rows), total

    def create_group(self, data: GroupCreate) -> Group:
        if self.session.get(Group, data.id) is not None:
            raise ConflictError(f"group {data.id!r} already exists")
        self._check_district(data.district)
        group = Group(**data.model_dump(), created_at=self.clock())
        self.session.add(group)
        self.session.flush()
        self._audit("group.create", "group", group.id, None, _group_snapshot(group))
        return group

    def update_group(self, group_id: str, data: GroupUpdate) -> Group:
        group = self.get_group(group_id)
        changes = data.model_dump(exclude_unset=True)
        if "district" in changes:
            self._check_district(changes["district"])
        before = _group_snapshot(group)
        for name, value in changes.items():
            setattr(group, name, value)
        if (after := _group_snapshot(group)) != before:
            self._audit("group.update", "group", group_id, before, after)
        return group

    def add_members(self, group_id: str, device_ids: Sequence[str]) -> list[str]:
        """Put devices into the group (each an audited device update, as ``PATCH
        /devices/{id}`` with ``groups``); the ids that were not members already."""
        self.get_group(group_id)
        added = []
        for device_id in dict.fromkeys(device_ids):
            current = [g.id for g in self.get_device(device_id).groups]
            if group_id not in current:
                self.update_device(device_id, DeviceUpdate(groups=[*current, group_id]))
                added.append(device_id)
        return added

    def remove_members(self, group_id: str, device_ids: Sequence[str]) -> list[str]:
        """Take devices out of the group; the ids that were members."""
        self.get_group(group_id)
        removed = []
        for device_id in dict.fromkeys(device_ids):
            current = [g.id for g in self.get_device(device_id).groups]
            if group_id in current:
                kept = [g for g in current if g != group_id]
                self.update_device(device_id, DeviceUpdate(groups=kept))
                removed.append(device_id)
        return removed

    def delete_group(self, group_id: str) -> None:
        group = self.get_group(group_id)
        before = _group_snapshot(group)
        self.session.delete(group)
        self._audit("group.delete", "group", group_id, before, None)

    # -- broker service accounts ---------------------------------------------

    def ensure_service_account(self, username: str, secret: str | None = None) -> BrokerCredentials:
        """Create or reset a backend account (ingest worker, command service)."""
        if not is_valid_device_id(username):
            raise InvalidError("username", "must be 1-63 of a-z, 0-9, '-' and '_'")
        if self.session.get(Device, username) is not None:
            raise ConflictError(f"{username!r} is a device id; pick another account name")
        credentials = self._set_secret(username, device_id=None, secret=secret)
        self._audit("broker.service_account", "broker_account", username, None, {"role": "service"})
        return credentials

    def broker_accounts(self) -> list[BrokerAccount]:
        rows = self.session.scalars(
            select(BrokerAccountRow).where(BrokerAccountRow.enabled.is_(True))
        )
        return [BrokerAccount(r.username, r.password_hash, r.role) for r in rows]  # type: ignore[arg-type]

    # -- audit ---------------------------------------------------------------

    def audit_log(
        self,
        *,
        entity_type: str | None = None,
        entity_id: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[AuditEntry], int]:
        query = select(AuditEntry)
        if entity_type is not None:
            query = query.where(AuditEntry.entity_type == entity_type)
        if entity_id is not None:
            query = query.where(AuditEntry.entity_id == entity_id)
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = self.session.scalars(
            query.order_by(AuditEntry.id.desc()).offset(offset).limit(limit)
        )
        return list(rows), total

    # -- internals -----------------------------------------------------------

    def _apply(self, device: Device, values: dict[str, Any]) -> None:
        for name, value in values.items():
            setattr(device, name, value.value if isinstance(value, Enum) else value)

    def _groups(self, group_ids: Sequence[str]) -> list[Group]:
        found = {group_id: self.session.get(Group, group_id) for group_id in group_ids}
        if missing := [group_id for group_id, group in found.items() if group is None]:
            # Every missing one at once: the import says which to create in one pass.
            raise InvalidError("groups", "; ".join(f"no group {g!r}" for g in missing))
        return [group for group in found.values() if group is not None]

    def _check_district(self, district: str | None) -> None:
        if district is not None and self.districts is not None and district not in self.districts:
            raise InvalidError(
                "district", f"unknown district {district!r}; known: " + ", ".join(self.districts)
            )

    def _check_references(self, values: dict[str, Any], device_id: str | None = None) -> None:
        self._check_district(values.get("district"))
        cabinet_id = values.get("cabinet_id")
        if cabinet_id is not None:
            cabinet = self.session.get(Device, cabinet_id)
            if cabinet is None or cabinet.kind != DeviceKind.LIGHTING_CABINET.value:
                raise InvalidError(
                    "cabinet_id", f"{cabinet_id!r} is not a registered lighting cabinet"
                )
            if cabinet_id == device_id:
                raise InvalidError("cabinet_id", "a device cannot feed itself")

    def _set_secret(
        self, username: str, *, device_id: str | None, secret: str | None = None
    ) -> BrokerCredentials:
        secret = secret or new_secret()
        hashed = hash_password(secret, iterations=self.hash_iterations)
        row = self.session.get(BrokerAccountRow, username)
        if row is None:
            role = "device" if device_id else "service"
            row = BrokerAccountRow(
                username=username, role=role, device_id=device_id, created_at=self.clock()
            )
            self.session.add(row)
        else:
            row.rotated_at = self.clock()
        row.password_hash = hashed
        row.enabled = True
        self.credentials_changed = True
        return BrokerCredentials(username=username, secret=secret, client_id=username)

    def _disable_account(self, device_id: str) -> None:
        row = self.session.get(BrokerAccountRow, device_id)
        if row is not None and row.enabled:
            row.enabled = False
            self.credentials_changed = True

    def _audit(
        self,
        action: str,
        entity_type: str,
        entity_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        self.session.add(AuditEntry(
            at=self.clock(), actor=self.actor, action=action, entity_type=entity_type,
            entity_id=entity_id, before=_jsonable(before), after=_jsonable(after),
        ))  # fmt: skip


def _group_snapshot(group: Group) -> dict[str, Any]:
    return {
        "id": group.id,
        "name": group.name,
        "type": group.type,
        "district": group.district,
        "description": group.description,
    }


def _jsonable(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in value.items()}


BrokerSync = Callable[[list[BrokerAccount]], None]


@contextmanager
def registry_session(
    factory: sessionmaker[Session],
    actor: str,
    *,
    broker_sync: BrokerSync | None = None,
    districts: Sequence[str] | None = None,
    hash_iterations: int = 101,
) -> Iterator[Registry]:
    """A ``Registry`` in one transaction; after commit, the broker files follow the accounts."""
    with factory() as session:
        with session.begin():
            registry = Registry(
                session, actor, districts=districts, hash_iterations=hash_iterations
            )
            yield registry
        if registry.credentials_changed and broker_sync is not None:
            broker_sync(registry.broker_accounts())
