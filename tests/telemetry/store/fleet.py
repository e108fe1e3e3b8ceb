"""A small simulated fleet with a registry and three hours of readings, made from a seed.

The same points go into InfluxDB and the embedded store, so every difference between
their answers is a difference between the stores.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from devices.registry.db import make_engine, make_session_factory
from devices.registry.schemas import DeviceCreate, GroupCreate
from devices.registry.service import registry_session
from pharos.database import upgrade
from telemetry.points import SEQ_FIELD, FieldValue, Point

T0 = datetime(2026, 11, 20, 0, 0, 7, 250_000, tzinfo=UTC)
SPAN = timedelta(hours=3)
NINH_KIEU, CAI_RANG = "Ninh Kiều", "Cái Răng"


@dataclass(frozen=True)
class FleetDevice:
    id: str
    kind: str
    district: str
    groups: tuple[str, ...]


DEVICES = (
    FleetDevice("env-001", "env_monitor", NINH_KIEU, ("street-a",)),
    FleetDevice("env-002", "env_monitor", NINH_KIEU, ()),
    FleetDevice("env-003", "env_monitor", CAI_RANG, ("park", "street-a")),
    FleetDevice("sl-001", "streetlight", NINH_KIEU, ("street-a",)),
    FleetDevice("sl-002", "streetlight", CAI_RANG, ("park",)),
)
GROUPS = ("park", "street-a")


def registry_sessions(path: Path) -> sessionmaker[Session]:
    """A migrated SQLite registry holding the fleet and its groups."""
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    sessions = make_session_factory(engine)
    with registry_session(sessions, "test") as registry:
        for group in GROUPS:
            registry.create_group(GroupCreate(id=group, name=group))
        for device in DEVICES:
            fields: dict[str, object] = {
                "id": device.id,
                "kind": device.kind,
                "name": device.id,
                "district": device.district,
                "groups": list(device.groups),
            }
            if device.kind == "streetlight":
                fields["rated_power_w"] = 120
            registry.create_device(DeviceCreate.model_validate(fields))
    return sessions


def _fields(kind: str, rng: random.Random, seq: int) -> dict[str, FieldValue]:
    fields: dict[str, FieldValue] = {SEQ_FIELD: seq}
    if kind == "env_monitor":
        fields["pm25"] = round(rng.uniform(5, 150), 3)
        if rng.random() < 0.8:  # some readings lack pm10: points differ in their fields
            fields["pm10"] = round(rng.uniform(10, 250), 3)
        fields["temperature_c"] = rng.uniform(24, 36)
    else:
        on = rng.random() < 0.7
        fields["lamp_on"] = on
        fields["dim_level"] = float(rng.choice([0, 30, 50, 70, 100])) if on else 0.0
        fields["power_w"] = rng.uniform(20, 120) if on else 0.0
        fields["energy_kwh"] = 1000.0 + seq * 0.0125  # cumulative: grows with every reading
    return fields


def fleet_points(seed: int = 20261120) -> list[Point]:
    """About 45 s between readings per device, with millisecond jitter, for ``SPAN``."""
    rng = random.Random(seed)
    points = []
    for device in DEVICES:
        tags = {"device_id": device.id, "district": device.district}
        if device.groups:
            tags["group"] = device.groups[0]
        when, seq = T0 + timedelta(milliseconds=rng.randint(0, 9_999)), 0
        while when < T0 + SPAN:
            seq += 1
            points.append(Point(device.kind, dict(tags), _fields(device.kind, rng, seq), when))
            when += timedelta(seconds=45, microseconds=rng.randint(-5_000_000, 5_000_000))
    return points
