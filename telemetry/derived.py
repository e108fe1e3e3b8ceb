"""The schema of the time-series store: readings per device kind plus the derived measurements.

Readings follow DESIGN.md "Storage" (measurement = device kind, tags ``device_id``,
``district``, ``group``, fields = the kind's catalogue metrics plus ``seq`` and
``ts_replaced``). Values the backend derives are written through the same sink under
the measurements of the contract between issues 5 (control), 6 (rules) and 7
(grafana), kept here as a small typed table both the writers and the Grafana boards
read: a panel that names a measurement or field missing here is wrong.

``devices`` is this package's own addition (written by ``telemetry.fleet_stats``):
one point per device per minute with its position and liveness, so that panels that
only speak InfluxQL can draw devices on a map and list when each was last seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from devices.wire import DeviceKind, kind_spec
from telemetry.points import SEQ_FIELD, TS_REPLACED_FIELD


class FieldType(StrEnum):
    FLOAT = "float"
    INTEGER = "integer"
    BOOLEAN = "boolean"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: FieldType
    unit: str
    description: str


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measurement of the store: its tags and fields, and who writes it."""

    name: str
    tags: tuple[str, ...]
    fields: tuple[FieldSpec, ...]
    written_by: str
    cadence: str

    def field_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)


_F, _I = FieldType.FLOAT, FieldType.INTEGER
READING_TAGS = ("device_id", "district", "group")

AQI = Measurement(
    "aqi",
    READING_TAGS,
    (
        FieldSpec("vn_aqi", _I, "", "hourly VN_AQI (Decision 1459/QĐ-TCMT)"),
        FieldSpec("category", _I, "", "1..6: good, moderate, poor, bad, very bad, hazardous"),
        FieldSpec("pm25_nowcast", _F, "µg/m³", "PM2.5 NowCast"),
        FieldSpec("pm10_nowcast", _F, "µg/m³", "PM10 NowCast"),
    ),
    written_by="rules (issue 6)",
    cadence="each hour per env_monitor / smart_pole",
)
FLOOD = Measurement(
    "flood",
    READING_TAGS,
    (
        FieldSpec("water_level_m", _F, "m", "river level on the national datum"),
        FieldSpec("alert_level", _I, "", "0 none, 1 BĐ I, 2 BĐ II, 3 BĐ III"),
        FieldSpec("bd1_m", _F, "m", "the station's BĐ I line"),
        FieldSpec("bd2_m", _F, "m", "the station's BĐ II line"),
        FieldSpec("bd3_m", _F, "m", "the station's BĐ III line"),
    ),
    written_by="rules (issue 6)",
    cadence="on each gauge reading",
)
ALERTS = Measurement(
    "alerts",
    ("severity", "district"),
    (FieldSpec("open", _I, "", "alerts open"),),
    written_by="rules (issue 6)",
    cadence="every minute and on every change",
)
ENERGY = Measurement(
    "energy",
    ("group", "district"),
    (
        FieldSpec("kwh", _F, "kWh", "measured today so far"),
        FieldSpec("baseline_kwh", _F, "kWh", "rated power from dusk to dawn, today so far"),
        FieldSpec("saved_kwh", _F, "kWh", "baseline minus measured"),
        FieldSpec("saved_vnd", _F, "VND", "saved energy at the tariff"),
        FieldSpec("saved_co2_kg", _F, "kg", "saved energy at the grid emission factor"),
    ),
    written_by="control (issue 5)",
    cadence="every 15 minutes, time = the day's local midnight",
)
FLEET = Measurement(
    "fleet",
    ("kind", "district"),
    (
        FieldSpec("devices", _I, "", "devices registered and not decommissioned"),
        FieldSpec("online", _I, "", "devices whose last status is online"),
        FieldSpec("commissioned", _I, "", "devices commissioned or in service"),
        FieldSpec("lamps_on", _I, "", "lamps whose last reading says lit"),
        FieldSpec("dead_letters", _I, "", "dead letters kept for these devices"),
    ),
    written_by="telemetry.fleet_stats",
    cadence="every minute",
)
DEVICES = Measurement(
    "devices",
    ("device_id", "kind", "district"),
    (
        FieldSpec("latitude", _F, "°", "position (WGS 84)"),
        FieldSpec("longitude", _F, "°", "position (WGS 84)"),
        FieldSpec("online", _I, "", "1 online, 0 offline or never reported"),
        FieldSpec("last_seen_age_s", _F, "s", "seconds since its newest reading"),
        FieldSpec("commissioned", _I, "", "1 commissioned or in service"),
    ),
    written_by="telemetry.fleet_stats",
    cadence="every minute, devices with a position",
)

DERIVED: dict[str, Measurement] = {m.name: m for m in (AQI, FLOOD, ALERTS, ENERGY, FLEET, DEVICES)}


def reading_measurement(kind: DeviceKind) -> Measurement:
    """The measurement readings of ``kind`` are stored under."""
    spec = kind_spec(kind)
    fields = tuple(
        FieldSpec(
            name,
            FieldType.BOOLEAN if (m := spec.metric(name)) is not None and m.boolean else _F,
            m.unit if m is not None else "",
            m.description if m is not None else "",
        )
        for name in spec.metric_names()
    )
    fields += (
        FieldSpec(SEQ_FIELD, _I, "", "the device's message counter"),
        FieldSpec(TS_REPLACED_FIELD, FieldType.BOOLEAN, "", "ts was missing or implausible"),
    )
    return Measurement(kind.value, READING_TAGS, fields, "telemetry ingest", "each reading")


def store_schema() -> dict[str, Measurement]:
    """Every measurement of the store, readings and derived, by name."""
    schema = {kind.value: reading_measurement(kind) for kind in DeviceKind}
    clash = set(schema) & set(DERIVED)
    if clash:  # a kind named like a derived measurement would mix two schemas
        raise ValueError(f"measurement names used twice: {sorted(clash)}")
    return schema | DERIVED
