"""Scenarios: a simulated city in YAML, and its expansion into one spec per device.

A scenario file says the seed, the start time, how fast time runs, how long, and the
fleet district by district: lamps and smart poles placed every ~35 m along streets
given by their start and end coordinates (with a rated power drawn from the street
class's range), cabinets feeding those lamps, environment monitors, flood gauges and
building energy meters at named sites or scattered around the district centre.
Faults go to named devices or to a seeded share of a kind; events (a pollution
episode, rain, a river trend, a flood evening) change the physics for a while.

``load_scenario`` validates the file (errors name the file and the field);
``expand`` turns a scenario into ``DeviceSpec`` values, the same ones for the same
seed. Device ids follow ``{prefix}-{district code}-{number:05d}`` (``sl-nk-00001``).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from devices.wire import DeviceKind, WordOrder, is_valid_device_id
from firmware_sim.faults import Fault, FaultConfig
from firmware_sim.wire_faults import NO_FAULTS
from pharos_core.source_file import FileError, FileProblem, validation_problems, yaml_with_lines

SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"
METRES_PER_DEGREE_LAT = 110_574.0
_EQUATOR_METRES_PER_DEGREE_LON = 111_320.0
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|min|h|d)\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400}
_ACROSS_ROAD_M = 12.0

ID_PREFIX: dict[DeviceKind, str] = {
    DeviceKind.STREETLIGHT: "sl",
    DeviceKind.SMART_POLE: "sp",
    DeviceKind.ENV_MONITOR: "env",
    DeviceKind.FLOOD_GAUGE: "fg",
    DeviceKind.ENERGY_METER: "em",
    DeviceKind.LIGHTING_CABINET: "cab",
}
NAME_PREFIX: dict[DeviceKind, str] = {
    DeviceKind.STREETLIGHT: "Đèn LED",
    DeviceKind.SMART_POLE: "Trụ thông minh",
    DeviceKind.ENV_MONITOR: "Trạm quan trắc không khí",
    DeviceKind.FLOOD_GAUGE: "Trạm đo mực nước",
    DeviceKind.ENERGY_METER: "Công tơ",
    DeviceKind.LIGHTING_CABINET: "Tủ điện chiếu sáng",
}


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names the file and the field."""


class ScenarioFileError(FileError, ScenarioError):
    """A scenario file's problems, each ``file:line: field: reason``, all at once."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _parse_duration(value: object) -> object:
    """Seconds, ``"90s"``, ``"30m"``, ``"6h"``, ``"1d"``, or anything pydantic reads."""
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return timedelta(seconds=float(match.group(1)) * _DURATION_UNITS[match.group(2)])
    return value


Duration = Annotated[timedelta, Field(gt=timedelta(0))]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
Share = Annotated[float, Field(ge=0, le=1)]


class LatLon(_Model):
    """A WGS 84 position; written ``[lat, lon]`` or ``{lat: …, lon: …}`` in the file."""

    lat: Latitude
    lon: Longitude

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise ValueError("a position is [latitude, longitude]")
            return {"lat": value[0], "lon": value[1]}
        return value


class RoadClass(StrEnum):
    RESIDENTIAL = "residential"
    SECONDARY = "secondary"
    MAIN = "main"
    HIGHWAY = "highway"


class BuildingType(StrEnum):
    HOSPITAL = "hospital"
    SCHOOL = "school"
    OFFICE = "office"


BUILDING_LABEL = {
    BuildingType.HOSPITAL: "Bệnh viện",
    BuildingType.SCHOOL: "Trường học",
    BuildingType.OFFICE: "Trụ sở cơ quan",
}


class StreetSpec(_Model):
    """A street whose lamps stand in a line from ``start`` to ``end``."""

    name: str = Field(min_length=1, max_length=200, description="the street's real name")
    start: LatLon = Field(description="first pole")
    end: LatLon = Field(description="last pole (roughly)")
    road: RoadClass = Field(RoadClass.SECONDARY, description="sets the lamps' rated power")
    streetlights: int | Literal["fill"] = Field(
        "fill", description="how many lamps; 'fill' places one every spacing_m"
    )
    smart_poles: int = Field(0, ge=0, description="smart poles among the lamp positions")
    cabinets: int = Field(0, ge=0, description="lighting cabinets feeding this street's lamps")
    circuits_per_cabinet: int = Field(4, ge=1, le=16, description="circuits each cabinet feeds")
    spacing_m: float = Field(35.0, gt=5, le=200, description="distance between poles")
    sides: Literal[1, 2] = Field(
        1, description="2: a lamp on each side (or a double-arm median pole) at every position"
    )

    @field_validator("streetlights")
    @classmethod
    def _non_negative(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 0 or more, or 'fill'")
        return value

    def length_m(self) -> float:
        return distance_m(self.start, self.end)


class Site(_Model):
    """A named place for one device (a monitoring station, a hospital's meter)."""

    name: str = Field(min_length=1, max_length=200)
    at: LatLon
    building: BuildingType | None = Field(None, description="energy meters: the load profile")
    word_order: WordOrder | None = Field(
        None, description="energy meters: register word order (default: the map's, ABCD)"
    )


class BuildingCounts(_Model):
    """Energy meters scattered around the district, by building type."""

    hospital: int = Field(0, ge=0)
    school: int = Field(0, ge=0)
    office: int = Field(0, ge=0)


class DistrictSpec(_Model):
    name: str = Field(min_length=1, description="quận/huyện, as the registry knows it")
    code: str = Field(pattern=r"^[a-z]{1,4}$", description="short code in device ids (nk)")
    centre: LatLon = Field(description="where scattered devices are placed around")
    radius_m: float = Field(2000, gt=0, description="how far from the centre they scatter")
    streets: list[StreetSpec] = Field(default_factory=list)
    env_monitors: int | list[Site] = Field(0, description="a count (scattered) or sites")
    flood_gauges: int | list[Site] = Field(0, description="a count (scattered) or sites")
    energy_meters: BuildingCounts | list[Site] = Field(
        default_factory=BuildingCounts, description="counts per building type, or sites"
    )


class FaultRule(_Model):
    """A fault for named ``devices``, or for a seeded ``share`` of a kind (and district)."""

    fault: Fault
    devices: list[str] | None = Field(None, description="exact device ids")
    share: Share | None = Field(None, description="share of the matching devices, 0–1")
    kind: DeviceKind | None = Field(None, description="with share: only this kind")
    district: str | None = Field(None, description="with share: only this district")
    stuck_metric: str | None = None
    spike_probability: Share | None = None
    malformed_probability: Share | None = None
    flap_period_s: float | None = Field(None, gt=0)
    skew_s: float | None = None
    modbus_exception_code: int | None = Field(None, ge=1, le=11)

    @model_validator(mode="after")
    def _one_target(self) -> FaultRule:
        if (self.devices is None) == (self.share is None):
            raise ValueError("give exactly one of 'devices' or 'share'")
        if self.devices is not None and (self.kind is not None or self.district is not None):
            raise ValueError("'kind' and 'district' select by share; not with 'devices'")
        return self

    def knobs(self) -> dict[str, Any]:
        names = ("stuck_metric", "spike_probability", "malformed_probability",
                 "flap_period_s", "skew_s", "modbus_exception_code")  # fmt: skip
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class _Event(_Model):
    start: AwareDatetime
    hours: float = Field(gt=0, le=24 * 30)
    districts: list[str] | None = Field(None, description="where; all districts if absent")

    def covers(self, district: str) -> bool:
        return self.districts is None or district in self.districts


class PollutionEpisodeEvent(_Event):
    """PM and NO2 multiplied by ``factor`` (ramped in and out): smoke, a traffic jam."""

    type: Literal["pollution_episode"]
    factor: float = Field(gt=1, le=50)


class RainEvent(_Event):
    """Rain at ``mm_per_hour`` on the gauges (and a rise of the river it feeds)."""

    type: Literal["rain"]
    mm_per_hour: float = Field(gt=0, le=200)


class RiverTrendEvent(_Event):
    """The river's mean level moves by ``rise_m`` over the event (negative: it falls)."""

    type: Literal["river_trend"]
    rise_m: float = Field(ge=-5, le=5)


class FloodEveningEvent(_Event):
    """The evening high tide on a swollen river peaks at ``peak_m`` (national datum)."""

    type: Literal["flood_evening"]
    peak_m: float = Field(gt=0, le=5, description="Cần Thơ BĐ III is 2.00 m")


Event = Annotated[
    PollutionEpisodeEvent | RainEvent | RiverTrendEvent | FloodEveningEvent,
    Field(discriminator="type"),
]


class WireMix(_Model):
    """How the MQTT devices talk: shares drawn per device from the seed."""

    mqtt5_share: Share = Field(0.0, description="share of MQTT 5 clients (others 3.1.1)")
    senml_share: Share = Field(0.0, description="share sending SenML packs (others plain)")
    meter_word_order_share: Share = Field(
        0.0, description="share of energy meters with a word order other than ABCD (seeded)"
    )


def _default_lamp_power() -> dict[RoadClass, tuple[float, float]]:
    # DOMAIN.md: residential 30–50 W, secondary 60–90 W, main 100–150 W, highway 160–200 W.
    return {
        RoadClass.RESIDENTIAL: (30.0, 50.0),
        RoadClass.SECONDARY: (60.0, 90.0),
        RoadClass.MAIN: (100.0, 150.0),
        RoadClass.HIGHWAY: (160.0, 200.0),
    }


class Scenario(_Model):
    """A simulated city: fleet, time, faults and events."""

    name: str = Field(min_length=1, description="short name")
    description: str = ""
    seed: int = Field(description="same seed, same devices and readings")
    start: AwareDatetime = Field(description="simulated start time, with its offset")
    duration: Duration = Field(description="simulated length: seconds, '90m', '6h', '1d'")
    acceleration: Annotated[float, Field(gt=0)] | Literal["max"] = Field(
        "max", description="1 = real time, N = N times faster, 'max' = as fast as possible"
    )
    lamp_power_w: dict[RoadClass, tuple[float, float]] = Field(
        default_factory=_default_lamp_power, description="rated power range per road class"
    )
    intervals_s: dict[DeviceKind, Annotated[float, Field(ge=1)]] = Field(
        default_factory=dict, description="reporting interval per kind (model default if absent)"
    )
    wire: WireMix = Field(default_factory=WireMix)
    districts: list[DistrictSpec] = Field(min_length=1)
    faults: list[FaultRule] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return _parse_duration(value)

    @field_validator("lamp_power_w")
    @classmethod
    def _ranges(
        cls, value: dict[RoadClass, tuple[float, float]]
    ) -> dict[RoadClass, tuple[float, float]]:
        merged = {**_default_lamp_power(), **value}
        for road, (low, high) in merged.items():
            if not 0 < low <= high <= 2000:
                raise ValueError(f"{road}: need 0 < low <= high <= 2000 W, got [{low}, {high}]")
        return merged

    @model_validator(mode="after")
    def _unique_districts(self) -> Scenario:
        codes = [d.code for d in self.districts]
        if len(set(codes)) != len(codes):
            raise ValueError("district codes must be unique")
        return self

    @property
    def end(self) -> datetime:
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class Circuit:
    """One circuit of a cabinet: how many lamps, each of this rated power."""

    lamps: int
    rated_power_w: float


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """Everything about one simulated device that the fleet and the registry need."""

    device_id: str
    kind: DeviceKind
    name: str
    district: str
    latitude: float
    longitude: float
    street: str | None = None
    pole: str | None = None
    rated_power_w: float | None = None
    interval_s: float | None = None
    faults: FaultConfig = NO_FAULTS
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    payload_format: Literal["plain", "senml"] = "plain"
    cabinet_id: str | None = None
    cabinet_circuit: int | None = None
    circuits: tuple[Circuit, ...] = ()  # cabinets: the lamps they feed
    building: BuildingType | None = None  # energy meters: the load profile
    word_order: WordOrder | None = None  # Modbus: None is the register map's own

    @property
    def is_modbus(self) -> bool:
        return self.kind in (DeviceKind.ENERGY_METER, DeviceKind.LIGHTING_CABINET)


# --- loading ----------------------------------------------------------------------------


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate a scenario file; ``ScenarioError`` names the file and field.

    A bare name (``ci-small``) means a file shipped in ``firmware_sim/scenarios``.
    """
    path = resolve_scenario_path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = f"cannot read: {exc.strerror or exc}"
        raise ScenarioFileError(source, [FileProblem(None, "file", reason)]) from None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte {exc.start})"
        raise ScenarioFileError(source, [FileProblem(None, "file", reason)]) from None
    try:
        document, lines = yaml_with_lines(text, source)
    except FileError as exc:
        raise ScenarioFileError(source, exc.problems) from None
    if not isinstance(document, dict):
        reason = "a scenario is a YAML mapping (name, seed, start, …)"
        raise ScenarioFileError(source, [FileProblem(1, "file", reason)])
    try:
        return Scenario.model_validate(document)
    except ValidationError as exc:
        raise ScenarioFileError(source, validation_problems(exc, lines)) from None


def resolve_scenario_path(path: Path | str) -> Path:
    candidate = Path(path)
    if candidate.exists() or candidate.suffix:
        return candidate
    return SCENARIOS_DIR / f"{candidate}.yaml"


def shipped_scenarios() -> list[Path]:
    return sorted(SCENARIOS_DIR.glob("*.yaml"))


# --- geometry -----------------------------------------------------------------------------


def distance_m(a: LatLon, b: LatLon) -> float:
    """Equirectangular distance: metres-exact enough over a city."""
    mean_lat = math.radians((a.lat + b.lat) / 2)
    dy = (b.lat - a.lat) * METRES_PER_DEGREE_LAT
    dx = (b.lon - a.lon) * _EQUATOR_METRES_PER_DEGREE_LON * math.cos(mean_lat)
    return math.hypot(dx, dy)


def along(street: StreetSpec, metres: float) -> tuple[float, float]:
    """The point ``metres`` from the street's start toward its end (beyond it if longer)."""
    length = street.length_m()
    share = metres / length if length > 0 else 0.0
    lat = street.start.lat + (street.end.lat - street.start.lat) * share
    lon = street.start.lon + (street.end.lon - street.start.lon) * share
    return round(lat, 6), round(lon, 6)


def scatter(centre: LatLon, radius_m: float, rng: random.Random) -> tuple[float, float]:
    """A seeded point within ``radius_m`` of ``centre`` (uniform over the disc)."""
    distance = radius_m * math.sqrt(rng.random())
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = distance * math.cos(bearing) / METRES_PER_DEGREE_LAT
    metres_per_lon = _EQUATOR_METRES_PER_DEGREE_LON * math.cos(math.radians(centre.lat))
    dlon = distance * math.sin(bearing) / metres_per_lon
    return round(centre.lat + dlat, 6), round(centre.lon + dlon, 6)


# --- expansion ----------------------------------------------------------------------------


class _Numbering:
    """Device numbers per (kind, district): ``sl-nk-00001``, ``sl-nk-00002``, …"""

    def __init__(self) -> None:
        self._next: dict[tuple[DeviceKind, str], int] = {}

    def next_id(self, kind: DeviceKind, code: str) -> str:
        number = self._next.get((kind, code), 0) + 1
        self._next[(kind, code)] = number
        device_id = f"{ID_PREFIX[kind]}-{code}-{number:05d}"
        assert is_valid_device_id(device_id)
        return device_id


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in (seed, *parts)))  # noqa: S311 - simulation


def expand(scenario: Scenario) -> list[DeviceSpec]:
    """One spec per device, in a stable order; the same scenario gives the same list."""
    numbering = _Numbering()
    specs: list[DeviceSpec] = []
    for district in scenario.districts:
        for street in district.streets:
            specs += _street_devices(scenario, district, street, numbering)
        specs += _sited_devices(scenario, district, DeviceKind.ENV_MONITOR, numbering)
        specs += _sited_devices(scenario, district, DeviceKind.FLOOD_GAUGE, numbering)
        specs += _meters(scenario, district, numbering)
    specs = _with_wire_mix(scenario, specs)
    return _with_faults(scenario, specs)


def _lamp_count(street: StreetSpec) -> int:
    if street.streetlights == "fill":
        positions = int(street.length_m() // street.spacing_m) + 1
        return positions * street.sides - street.smart_poles
    return street.streetlights


def _position(street: StreetSpec, index: int) -> tuple[float, float]:
    """Pole ``index`` along the street; with two sides, odd ones across the road (~12 m)."""
    lat, lon = along(street, (index // street.sides) * street.spacing_m)
    if street.sides == 2 and index % 2 == 1:
        lat, lon = _across(street, lat, lon, _ACROSS_ROAD_M)
    return lat, lon


def _across(street: StreetSpec, lat: float, lon: float, metres: float) -> tuple[float, float]:
    """The point ``metres`` to the left of the street's direction."""
    length = street.length_m()
    if length == 0:
        return lat, lon
    metres_per_lon = _EQUATOR_METRES_PER_DEGREE_LON * math.cos(math.radians(lat))
    north = (street.end.lat - street.start.lat) * METRES_PER_DEGREE_LAT / length
    east = (street.end.lon - street.start.lon) * metres_per_lon / length
    # Left of (east, north) is (-north, east).
    return (
        round(lat + east * metres / METRES_PER_DEGREE_LAT, 6),
        round(lon - north * metres / metres_per_lon, 6),
    )


def _street_devices(
    scenario: Scenario, district: DistrictSpec, street: StreetSpec, numbering: _Numbering
) -> list[DeviceSpec]:
    """Lamps and smart poles every ``spacing_m``; cabinets feeding contiguous runs."""
    lamps = max(0, _lamp_count(street))
    total = lamps + street.smart_poles
    if total == 0:
        return []
    rng = _rng(scenario.seed, "street", district.code, street.name)
    low, high = scenario.lamp_power_w[street.road]
    # One lamp model per street, as a retrofit contract buys them: rated power in 10 W steps.
    rated = float(round(rng.uniform(low, high) / 10) * 10) or low
    # Smart poles spread evenly among the lamp positions, each in the middle of its share.
    smart = {int((k + 0.5) * total / street.smart_poles) for k in range(street.smart_poles)}
    poles: list[DeviceSpec] = []
    for index in range(total):
        kind = DeviceKind.SMART_POLE if index in smart else DeviceKind.STREETLIGHT
        lat, lon = _position(street, index)
        device_id = numbering.next_id(kind, district.code)
        pole = f"{_initials(street.name)}-{index + 1:03d}"
        poles.append(
            DeviceSpec(
                device_id=device_id,
                kind=kind,
                name=f"{NAME_PREFIX[kind]} {street.name} trụ {pole}",
                district=district.name,
                latitude=lat,
                longitude=lon,
                street=street.name,
                pole=pole,
                rated_power_w=rated,
                interval_s=scenario.intervals_s.get(kind),
            )
        )
    cabinets = _cabinets(scenario, district, street, poles, rated, numbering)
    return [*cabinets[0], *cabinets[1]]


def _initials(name: str) -> str:
    """``Đại lộ Hòa Bình`` → ``HB`` (the words after the road type), for pole numbers."""
    words = [w for w in name.split() if w.lower() not in {"đường", "đại", "lộ", "quốc", "tỉnh"}]
    letters = "".join(w[0] for w in words if w[0].isalnum()).upper()
    return letters[:4] or "P"


def _cabinets(
    scenario: Scenario,
    district: DistrictSpec,
    street: StreetSpec,
    poles: list[DeviceSpec],
    rated: float,
    numbering: _Numbering,
) -> tuple[list[DeviceSpec], list[DeviceSpec]]:
    """Cabinets (each at the middle of its run) and the poles with their cabinet and circuit."""
    if street.cabinets == 0:
        return [], poles
    runs = _split(len(poles), street.cabinets)
    cabinet_name = NAME_PREFIX[DeviceKind.LIGHTING_CABINET]
    cabinets: list[DeviceSpec] = []
    fed: list[DeviceSpec] = []
    for run_start, run_length in runs:
        if run_length == 0:
            continue
        cabinet_id = numbering.next_id(DeviceKind.LIGHTING_CABINET, district.code)
        middle = poles[run_start + run_length // 2]
        circuits = _split(run_length, min(street.circuits_per_cabinet, run_length))
        cabinets.append(
            DeviceSpec(
                device_id=cabinet_id,
                kind=DeviceKind.LIGHTING_CABINET,
                name=f"{cabinet_name} {street.name} số {len(cabinets) + 1}",
                district=district.name,
                latitude=middle.latitude,
                longitude=middle.longitude,
                street=street.name,
                interval_s=scenario.intervals_s.get(DeviceKind.LIGHTING_CABINET),
                circuits=tuple(Circuit(count, rated) for _, count in circuits),
            )
        )
        for number, (circuit_start, count) in enumerate(circuits, start=1):
            for pole in poles[run_start + circuit_start : run_start + circuit_start + count]:
                fed.append(_replace(pole, cabinet_id=cabinet_id, cabinet_circuit=number))
    return cabinets, fed


def _split(total: int, parts: int) -> list[tuple[int, int]]:
    """``total`` items in ``parts`` contiguous runs as even as can be: (start, length)."""
    parts = max(1, parts)
    base, extra = divmod(total, parts)
    runs, start = [], 0
    for index in range(parts):
        length = base + (1 if index < extra else 0)
        runs.append((start, length))
        start += length
    return runs


def _replace(spec: DeviceSpec, **changes: Any) -> DeviceSpec:
    values = {name: getattr(spec, name) for name in DeviceSpec.__dataclass_fields__}
    return DeviceSpec(**{**values, **changes})


def _sites(
    scenario: Scenario, district: DistrictSpec, kind: DeviceKind, given: int | list[Site]
) -> list[Site]:
    if isinstance(given, list):
        return given
    rng = _rng(scenario.seed, "sites", district.code, kind.value)
    return [
        Site(
            name=f"{district.name} số {n}",
            at=LatLon.model_validate(scatter(district.centre, district.radius_m, rng)),
        )
        for n in range(1, given + 1)
    ]


def _sited_devices(
    scenario: Scenario, district: DistrictSpec, kind: DeviceKind, numbering: _Numbering
) -> list[DeviceSpec]:
    given = district.env_monitors if kind is DeviceKind.ENV_MONITOR else district.flood_gauges
    return [
        DeviceSpec(
            device_id=numbering.next_id(kind, district.code),
            kind=kind,
            name=f"{NAME_PREFIX[kind]} {site.name}",
            district=district.name,
            latitude=site.at.lat,
            longitude=site.at.lon,
            interval_s=scenario.intervals_s.get(kind),
        )
        for site in _sites(scenario, district, kind, given)
    ]


def _meters(scenario: Scenario, district: DistrictSpec, numbering: _Numbering) -> list[DeviceSpec]:
    given = district.energy_meters
    if isinstance(given, BuildingCounts):
        rng = _rng(scenario.seed, "meters", district.code)
        sites = []
        for building in BuildingType:
            for n in range(1, getattr(given, building.value) + 1):
                lat, lon = scatter(district.centre, district.radius_m, rng)
                label = f"{BUILDING_LABEL[building]} {district.name} số {n}"
                sites.append(Site(name=label, at=LatLon(lat=lat, lon=lon), building=building))
    else:
        sites = given
    return [
        DeviceSpec(
            device_id=numbering.next_id(DeviceKind.ENERGY_METER, district.code),
            kind=DeviceKind.ENERGY_METER,
            name=f"{NAME_PREFIX[DeviceKind.ENERGY_METER]} {site.name}",
            district=district.name,
            latitude=site.at.lat,
            longitude=site.at.lon,
            interval_s=scenario.intervals_s.get(DeviceKind.ENERGY_METER),
            building=site.building or BuildingType.OFFICE,
            word_order=site.word_order,
        )
        for site in sites
    ]


def _with_wire_mix(scenario: Scenario, specs: list[DeviceSpec]) -> list[DeviceSpec]:
    mix = scenario.wire
    if mix.mqtt5_share == 0 and mix.senml_share == 0 and mix.meter_word_order_share == 0:
        return specs
    out = []
    for spec in specs:
        rng = _rng(scenario.seed, "wire", spec.device_id)
        if spec.kind is DeviceKind.ENERGY_METER:
            if spec.word_order is None and rng.random() < mix.meter_word_order_share:
                others = [order for order in WordOrder if order is not WordOrder.ABCD]
                spec = _replace(spec, word_order=rng.choice(others))
            out.append(spec)
        elif spec.is_modbus:
            out.append(spec)
        else:
            protocol = "5" if rng.random() < mix.mqtt5_share else "3.1.1"
            payload = "senml" if rng.random() < mix.senml_share else "plain"
            out.append(_replace(spec, protocol=protocol, payload_format=payload))
    return out


def _with_faults(scenario: Scenario, specs: list[DeviceSpec]) -> list[DeviceSpec]:
    """Each rule's faults and knobs on its devices; later rules' knobs win."""
    faults: dict[str, set[Fault]] = {}
    knobs: dict[str, dict[str, Any]] = {}
    known = {spec.device_id for spec in specs}
    for index, rule in enumerate(scenario.faults):
        for device_id in _fault_targets(scenario.seed, index, rule, specs, known):
            faults.setdefault(device_id, set()).add(rule.fault)
            knobs.setdefault(device_id, {}).update(rule.knobs())
    return [
        _replace(
            spec,
            faults=FaultConfig(faults=frozenset(faults[spec.device_id]), **knobs[spec.device_id]),
        )
        if spec.device_id in faults
        else spec
        for spec in specs
    ]


def _fault_targets(
    seed: int, index: int, rule: FaultRule, specs: list[DeviceSpec], known: set[str]
) -> list[str]:
    if rule.devices is not None:
        unknown = sorted(set(rule.devices) - known)
        if unknown:
            raise ScenarioError(f"faults[{index}].devices: no such devices: {', '.join(unknown)}")
        return rule.devices
    candidates = sorted(
        spec.device_id
        for spec in specs
        if (rule.kind is None or spec.kind is rule.kind)
        and (rule.district is None or spec.district == rule.district)
    )
    assert rule.share is not None
    count = round(rule.share * len(candidates))
    return sorted(_rng(seed, "faults", index).sample(candidates, count))


def limit_devices(specs: Sequence[DeviceSpec], count: int) -> list[DeviceSpec]:
    """``count`` specs spread evenly over the list, so the mix of kinds and districts holds."""
    if count < 1:
        raise ScenarioError(f"--devices must be at least 1, not {count}")
    if count >= len(specs):
        return list(specs)
    step = len(specs) / count
    kept = [specs[int(i * step)] for i in range(count)]
    cabinets = {s.device_id for s in kept if s.kind is DeviceKind.LIGHTING_CABINET}
    # A lamp whose cabinet was left out is fed by nobody the registry knows.
    return [
        s
        if s.cabinet_id is None or s.cabinet_id in cabinets
        else _replace(s, cabinet_id=None, cabinet_circuit=None)
        for s in kept
    ]
