"""Derived values rules can name: hourly VN_AQI per monitor, flood level, lamp checks.

Owns the per-device state behind them (bounded: 13 hourly buckets of six pollutants per
air monitor) and the sun times of the site. Pure apart from ``astral``; no I/O.

- ``vn_aqi`` / ``aqi_category``: the hourly AQI of the running hour (``rules.aqi``) from
  hourly means built from the readings of ``env_monitor`` and ``smart_pole``;
- ``flood_level``: 0..3 from ``water_level_m`` against the station's BĐ levels;
- lamps (``streetlight``, ``smart_pole``), with expected power = rated × (overhead +
  (1 − overhead) × level/100) at the level the lamp should burn (control's
  ``expected_level`` when given, else the level the controller reports):
  ``lamp_failure`` (should be lit, draws under ``lamp_failure_ratio`` × expected),
  ``day_burning`` (draws over ``day_burning_w`` while the sun is up: with control's
  expected level, when that level is 0; without it, from sunrise + ``day_margin_min``
  to sunset − ``day_margin_min``, as programs light up a little before sunset),
  ``power_too_low`` / ``power_too_high`` (outside expected × (1 ± tolerance)).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import sunrise, sunset

from rules.aqi import HOURLY_GASES, NOWCAST_HOURS, PARTICLES, AqiResult, hourly_aqi
from rules.settings import FloodLevels, RulesSettings

POLLUTANTS = (*PARTICLES, *HOURLY_GASES)
AIR_KINDS = frozenset({"env_monitor", "smart_pole"})
LAMP_KINDS = frozenset({"streetlight", "smart_pole"})
_HOUR = 3600

ExpectedLevel = Callable[[str, datetime], float | None]


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What rules know of a device beyond its readings (from the registry)."""

    device_id: str
    kind: str
    district: str | None = None
    groups: frozenset[str] = frozenset()
    rated_power_w: float | None = None

    def tags(self) -> dict[str, str]:
        tags = {"device_id": self.device_id}
        if self.district:
            tags["district"] = self.district
        if self.groups:
            tags["group"] = min(self.groups)
        return tags


@dataclass(slots=True)
class _Hour:
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + value
        self.counts[name] = self.counts.get(name, 0) + 1

    def mean(self, name: str) -> float | None:
        count = self.counts.get(name)
        return self.sums[name] / count if count else None


class AqiTracker:
    """Hourly means of one monitor's pollutants, newest 12 hours kept."""

    __slots__ = ("_hours",)

    def __init__(self) -> None:
        self._hours: dict[int, _Hour] = {}  # epoch hour → means

    def add(self, when: datetime, fields: Mapping[str, float | bool | int]) -> bool:
        """Take a reading's pollutants; whether it had any."""
        hour = int(when.timestamp()) // _HOUR
        bucket: _Hour | None = None
        for name in POLLUTANTS:
            value = fields.get(name)
            if value is None or isinstance(value, bool):
                continue
            if bucket is None:
                bucket = self._hours.get(hour)
                if bucket is None:
                    bucket = self._hours[hour] = _Hour()
                    self._prune(hour)
            bucket.add(name, float(value))
        return bucket is not None

    def _prune(self, newest: int) -> None:
        for old in [h for h in self._hours if h <= newest - NOWCAST_HOURS]:
            del self._hours[old]

    def result(self, when: datetime) -> AqiResult | None:
        """The hourly AQI of the hour holding ``when`` (the running hour)."""
        hour = int(when.timestamp()) // _HOUR
        current = self._hours.get(hour)
        if current is None:
            return None
        pm_hours: dict[str, list[float | None]] = {}
        for pm in PARTICLES:
            series = [
                (self._hours[h].mean(pm) if h in self._hours else None)
                for h in range(hour, hour - NOWCAST_HOURS, -1)
            ]
            if any(v is not None for v in series):
                pm_hours[pm] = series
        gases = {g: m for g in HOURLY_GASES if (m := current.mean(g)) is not None}
        return hourly_aqi(gases, pm_hours)


class SunTimes:
    """Sunrise and sunset at the site, per local date (cached, bounded)."""

    def __init__(self, latitude: float, longitude: float, timezone: str) -> None:
        self._observer = Observer(latitude=latitude, longitude=longitude)
        self._tz = ZoneInfo(timezone)
        self._cache: dict[date, tuple[datetime, datetime]] = {}

    def on(self, day: date) -> tuple[datetime, datetime]:
        found = self._cache.get(day)
        if found is None:
            if len(self._cache) > 64:
                self._cache.clear()
            found = (
                sunrise(self._observer, day, tzinfo=self._tz),
                sunset(self._observer, day, tzinfo=self._tz),
            )
            self._cache[day] = found
        return found

    def is_day(self, when: datetime, margin: timedelta = timedelta(0)) -> bool:
        """The sun is up at ``when`` (and has been, and will be, for ``margin``)."""
        rise, set_ = self.on(when.astimezone(self._tz).date())
        return rise + margin <= when < set_ - margin

    def next_sunrise(self, when: datetime) -> datetime:
        day = when.astimezone(self._tz).date()
        for offset in (0, 1, 2):
            rise, _ = self.on(day + timedelta(days=offset))
            if rise > when:
                return rise
        return when + timedelta(hours=12)


class Derivations:
    """Computes the derived values of one reading (``values``), given device facts."""

    def __init__(
        self,
        settings: RulesSettings,
        sun: SunTimes,
        expected_level: ExpectedLevel | None = None,
    ) -> None:
        self._settings = settings
        self._sun = sun
        self._expected_level = expected_level
        self._aqi: dict[str, AqiTracker] = {}
        self._floods: dict[str, FloodLevels] = {}

    def forget(self, device_id: str) -> None:
        self._aqi.pop(device_id, None)
        self._floods.pop(device_id, None)

    def flood_levels(self, facts: DeviceFacts) -> FloodLevels:
        found = self._floods.get(facts.device_id)
        if found is None:
            found = self._settings.flood_levels(facts.device_id, facts.district)
            self._floods[facts.device_id] = found
        return found

    def aqi(
        self, facts: DeviceFacts, when: datetime, fields: Mapping[str, float | bool | int]
    ) -> AqiResult | None:
        if facts.kind not in AIR_KINDS:
            return None
        tracker = self._aqi.get(facts.device_id)
        if tracker is None:
            tracker = self._aqi[facts.device_id] = AqiTracker()
        if not tracker.add(when, fields):
            return None
        return tracker.result(when)

    def values(
        self, facts: DeviceFacts, when: datetime, fields: Mapping[str, float | bool | int]
    ) -> tuple[dict[str, float], AqiResult | None]:
        """Derived values by name (floats; flags 1.0/0.0), and the AQI result if any."""
        out: dict[str, float] = {}
        result = self.aqi(facts, when, fields)
        if result is not None:
            out["vn_aqi"] = float(result.aqi)
            out["aqi_category"] = float(result.category)
        level = fields.get("water_level_m")
        if level is not None and facts.kind == "flood_gauge":
            out["flood_level"] = float(self.flood_levels(facts).level_of(float(level)))
        if facts.kind in LAMP_KINDS and "power_w" in fields:
            self._lamp(facts, when, fields, out)
        return out, result

    def _lamp(
        self,
        facts: DeviceFacts,
        when: datetime,
        fields: Mapping[str, float | bool | int],
        out: dict[str, float],
    ) -> None:
        settings = self._settings
        power = float(fields["power_w"])
        planned = self._expected_level(facts.device_id, when) if self._expected_level else None
        drawing = power > settings.day_burning_w
        if planned is not None:  # control knows the lamp should be off: exact
            out["day_burning"] = float(drawing and planned == 0 and self._sun.is_day(when))
        else:
            margin = timedelta(minutes=settings.day_margin_min)
            out["day_burning"] = float(drawing and self._sun.is_day(when, margin))
        level = self._should_be(facts.device_id, when, fields)
        rated = facts.rated_power_w
        if level is None or not rated:
            return
        expected = rated * (settings.driver_overhead + (1 - settings.driver_overhead) * level / 100)
        lit = level > 0
        out["lamp_failure"] = float(lit and power < settings.lamp_failure_ratio * expected)
        tolerance = settings.power_tolerance
        out["power_too_low"] = float(lit and power < expected * (1 - tolerance))
        out["power_too_high"] = float(lit and power > expected * (1 + tolerance))

    def _should_be(
        self, device_id: str, when: datetime, fields: Mapping[str, float | bool | int]
    ) -> float | None:
        if self._expected_level is not None:
            level = self._expected_level(device_id, when)
            if level is not None:
                return level
        reported = fields.get("dim_level")
        if reported is not None:
            on = fields.get("lamp_on")
            return 0.0 if on is False else float(reported)
        return None
