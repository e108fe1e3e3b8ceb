"""API and import schemas of the registry: ``XCreate`` / ``XUpdate`` / ``XPublic``.

Validation here is everything that needs no database: id format, kind, ranges, and
the fields a kind requires (rated power for lamps, a Modbus address for meters).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from devices.registry.models import GroupType, LifecycleState
from devices.wire import DeviceKind, Transport, WordOrder, is_valid_device_id, kind_spec

KNOWN_REGISTER_MAPS = ("sdm630", "sdm120", "lighting_cabinet")
DEFAULT_REGISTER_MAP = {
    DeviceKind.ENERGY_METER: "sdm630",
    DeviceKind.LIGHTING_CABINET: "lighting_cabinet",
}

Latitude = Annotated[float, Field(ge=-90, le=90, description="WGS 84 latitude")]
Longitude = Annotated[float, Field(ge=-180, le=180, description="WGS 84 longitude")]
Text200 = Annotated[str, Field(min_length=1, max_length=200)]
GroupId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$", description="slug id")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _check_device_id(value: str) -> str:
    if not is_valid_device_id(value):
        raise ValueError("must be 1-63 of a-z, 0-9, '-' and '_', starting with a letter or digit")
    return value


class _DeviceFields(_Strict):
    name: Text200 | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    district: Annotated[str, Field(max_length=100)] | None = None
    ward: Annotated[str, Field(max_length=100)] | None = None
    street: Annotated[str, Field(max_length=200)] | None = None
    pole: Annotated[str, Field(max_length=100)] | None = None
    cabinet_id: str | None = Field(None, description="the lighting cabinet that feeds it")
    cabinet_circuit: Annotated[int, Field(ge=1, le=16)] | None = None
    groups: list[GroupId] | None = None
    rated_power_w: Annotated[float, Field(gt=0, le=2000)] | None = None
    modbus_host: Annotated[str, Field(max_length=255)] | None = None
    modbus_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    modbus_unit: Annotated[int, Field(ge=0, le=247)] | None = None
    register_map: str | None = None
    modbus_word_order: WordOrder | None = Field(
        None, description="ABCD (Eastron), BADC, CDAB or DCBA; default: the map's own"
    )
    poll_interval_s: Annotated[float, Field(ge=1, le=86_400)] | None = Field(
        None, description="Modbus poll interval; default: settings"
    )
    firmware: Annotated[str, Field(max_length=64)] | None = None

    @field_validator("cabinet_id")
    @classmethod
    def _cabinet_id(cls, value: str | None) -> str | None:
        return None if value is None else _check_device_id(value)

    @field_validator("register_map")
    @classmethod
    def _register_map(cls, value: str | None) -> str | None:
        if value is not None and value not in KNOWN_REGISTER_MAPS:
            raise ValueError(f"unknown register map; known: {', '.join(KNOWN_REGISTER_MAPS)}")
        return value

    @field_validator("groups")
    @classmethod
    def _unique_groups(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else sorted(set(value))


class DeviceCreate(_DeviceFields):
    id: str = Field(description="device id: also its MQTT username and client id")
    kind: DeviceKind
    name: Text200

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _check_device_id(value)

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Self:
        check_kind_fields(self.kind, self.model_dump())
        if self.groups is None:
            self.groups = []
        spec = kind_spec(self.kind)
        if spec.transport is Transport.MODBUS_TCP:
            self.modbus_port = self.modbus_port or 502
            self.modbus_unit = 1 if self.modbus_unit is None else self.modbus_unit
            self.register_map = self.register_map or DEFAULT_REGISTER_MAP[self.kind]
        return self


def _article(kind: DeviceKind) -> str:
    return ("an " if kind.value[0] in "aeiou" else "a ") + kind.value


def check_kind_fields(kind: DeviceKind, values: dict[str, Any]) -> None:
    """The fields a kind requires or forbids, checked on the merged record."""
    spec = kind_spec(kind)
    if spec.is_lamp and values.get("rated_power_w") is None:
        raise ValueError(f"rated_power_w is required for {_article(kind)}")
    if not spec.is_lamp and values.get("rated_power_w") is not None:
        raise ValueError(f"rated_power_w is only for lamps, not {_article(kind)}")
    if (values.get("latitude") is None) != (values.get("longitude") is None):
        raise ValueError("latitude and longitude go together")
    modbus = (
        "modbus_host", "modbus_port", "modbus_unit", "register_map", "modbus_word_order",
        "poll_interval_s",
    )  # fmt: skip
    if spec.transport is Transport.MODBUS_TCP:
        if not values.get("modbus_host"):
            raise ValueError(f"modbus_host is required for {_article(kind)}")
    elif any(values.get(f) is not None for f in modbus):
        raise ValueError(f"{', '.join(modbus)} are only for Modbus devices, not {_article(kind)}")
    if values.get("cabinet_circuit") is not None and values.get("cabinet_id") is None:
        raise ValueError("cabinet_circuit needs cabinet_id")


class DeviceUpdate(_DeviceFields):
    """Fields to change; absent fields stay, ``null`` clears an optional field."""


class CommissioningPublic(_Strict):
    position_set: bool
    first_telemetry_at: datetime | None
    self_test_ok_at: datetime | None
    signed_off_by: str | None
    signed_off_at: datetime | None
    missing: list[str]


class DevicePublic(_Strict):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: DeviceKind
    name: str
    latitude: float | None
    longitude: float | None
    district: str | None
    ward: str | None
    street: str | None
    pole: str | None
    cabinet_id: str | None
    cabinet_circuit: int | None
    groups: list[str]
    rated_power_w: float | None
    modbus_host: str | None
    modbus_port: int | None
    modbus_unit: int | None
    register_map: str | None
    modbus_word_order: WordOrder | None
    poll_interval_s: float | None
    firmware: str | None
    state: LifecycleState
    commissioning: CommissioningPublic
    created_at: datetime
    updated_at: datetime


class BrokerCredentials(_Strict):
    """Shown once: the secret is stored only as a hash."""

    username: str
    secret: str
    client_id: str


class DeviceCreated(_Strict):
    device: DevicePublic
    credentials: BrokerCredentials | None = Field(
        None, description="MQTT devices only; store the secret now, it is not shown again"
    )


class TransitionRequest(_Strict):
    to: LifecycleState
    note: Annotated[str, Field(max_length=500)] | None = None


class GroupCreate(_Strict):
    id: GroupId
    name: Text200
    type: GroupType = GroupType.CUSTOM
    district: Annotated[str, Field(max_length=100)] | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None


class GroupUpdate(_Strict):
    name: Text200 | None = None
    type: GroupType | None = None
    district: Annotated[str, Field(max_length=100)] | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None


class GroupPublic(_Strict):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    type: GroupType
    district: str | None
    description: str | None
    device_count: int
    created_at: datetime


class AuditPublic(_Strict):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


T = TypeVar("T")


class Page(_Strict, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int
