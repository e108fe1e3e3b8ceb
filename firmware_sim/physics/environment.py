"""Environment monitor physics: Cần Thơ's daily patterns of air, heat and noise.

PM2.5, PM10, NO2, CO and noise follow the traffic, which peaks 07–09 and 17–19 local
time; temperature runs 25–34 °C with its minimum near 05:00 and maximum near 14:00;
humidity moves against temperature (60–95 %); ozone peaks mid-afternoon with the sun.
Smooth seeded AR(1) noise rides on every pattern, and pollution episodes
(``start_episode``) multiply PM and NO2 for a while.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from devices.wire import CommandParamsError, DeviceKind, kind_spec, validate_command_params
from firmware_sim.faults import FaultConfig
from firmware_sim.model import Ack, MetricValue
from firmware_sim.physics import ReadingFaults, SmoothNoise, bell, local_hour, seconds_between
from firmware_sim.program import DEFAULT_TZ

TEMPERATURE_MIN_C = 25.0
TEMPERATURE_MAX_C = 34.0
HUMIDITY_MIN_PCT = 60.0
HUMIDITY_MAX_PCT = 95.0
_COLDEST_HOUR = 5.0
_HOTTEST_HOUR = 14.0
# An episode ramps in and out over this long rather than jumping (smoke drifting in).
_EPISODE_RAMP = timedelta(minutes=30)


def traffic_index(hour: float) -> float:
    """Relative road traffic at a local hour: about 1 at the rush peaks, 0.15 at night."""
    rush = max(bell(hour, 7.9, 0.9), bell(hour, 18.0, 1.0))
    daytime = bell(hour, 12.5, 3.5)
    return 0.15 + 0.85 * rush + 0.35 * daytime


def diurnal_temperature(hour: float, coldest_c: float, hottest_c: float) -> float:
    """Half-cosines through the minimum at 05:00 and the maximum at 14:00."""
    span = hottest_c - coldest_c
    if _COLDEST_HOUR <= hour < _HOTTEST_HOUR:
        phase = (hour - _COLDEST_HOUR) / (_HOTTEST_HOUR - _COLDEST_HOUR)
        return coldest_c + span * (1 - math.cos(math.pi * phase)) / 2
    cooling_h = 24.0 - (_HOTTEST_HOUR - _COLDEST_HOUR)
    phase = ((hour - _HOTTEST_HOUR) % 24.0) / cooling_h
    return hottest_c - span * (1 - math.cos(math.pi * phase)) / 2


def humidity_for(temperature_c: float) -> float:
    """Relative humidity falling linearly as the air warms (95 % at 25 °C, 60 % at 34 °C)."""
    share = (temperature_c - TEMPERATURE_MIN_C) / (TEMPERATURE_MAX_C - TEMPERATURE_MIN_C)
    return HUMIDITY_MAX_PCT - share * (HUMIDITY_MAX_PCT - HUMIDITY_MIN_PCT)


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


@dataclass(frozen=True, slots=True)
class PollutionEpisode:
    start: datetime
    end: datetime
    factor: float

    def factor_at(self, when: datetime) -> float:
        """The multiplier at ``when``: 1 outside, ``factor`` inside, ramped at the edges."""
        if not self.start <= when < self.end:
            return 1.0
        ramp = min(
            1.0,
            (when - self.start) / _EPISODE_RAMP,
            (self.end - when) / _EPISODE_RAMP,
        )
        return 1.0 + (self.factor - 1.0) * ramp


class _Noises:
    """The smooth noise of each pattern, stepped together."""

    __slots__ = ("co", "humidity", "no2", "noise", "o3", "pm", "so2", "temperature")

    def __init__(self, rng: random.Random) -> None:
        self.pm = SmoothNoise(rng, sigma=0.15, tau_s=1800)
        self.no2 = SmoothNoise(rng, sigma=0.15, tau_s=1800)
        self.co = SmoothNoise(rng, sigma=0.12, tau_s=1800)
        self.so2 = SmoothNoise(rng, sigma=0.15, tau_s=3600)
        self.o3 = SmoothNoise(rng, sigma=0.12, tau_s=3600)
        self.temperature = SmoothNoise(rng, sigma=0.4, tau_s=3600)
        self.humidity = SmoothNoise(rng, sigma=2.0, tau_s=3600)
        self.noise = SmoothNoise(rng, sigma=1.5, tau_s=600)

    def step(self, elapsed_s: float) -> None:
        for noise in (
            self.pm,
            self.no2,
            self.co,
            self.so2,
            self.o3,
            self.temperature,
            self.humidity,
            self.noise,
        ):
            noise.step(elapsed_s)


class EnvironmentModel:
    """An air-quality and noise station (``env_monitor``) in Cần Thơ."""

    def __init__(
        self,
        device_id: str,
        rng: random.Random,
        faults: FaultConfig | None = None,
        interval_s: float = 60,
        *,
        tz: str = DEFAULT_TZ,
        fw: str = "2.3.0",
    ) -> None:
        self.kind = DeviceKind.ENV_MONITOR
        self.device_id = device_id
        self.fw = fw
        self._interval_s = interval_s
        self._tz = ZoneInfo(tz)
        self._rng = rng
        # Each station sits somewhere of its own: a busy crossing or a quiet park.
        self._site_pollution = rng.uniform(0.8, 1.25)
        self._site_noise_db = rng.uniform(-3.0, 3.0)
        self._coldest_c = rng.uniform(25.3, 26.3)
        self._hottest_c = rng.uniform(31.8, 33.4)
        self._noises = _Noises(rng)
        self._episodes: list[PollutionEpisode] = []
        self._last: datetime | None = None
        published = [m.name for m in kind_spec(self.kind).metrics]
        self._faults = ReadingFaults(self.kind, faults or FaultConfig(), rng, published)

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def start_episode(self, start: datetime, hours: float, factor: float) -> None:
        """Multiply PM and NO2 by ``factor`` from ``start`` for ``hours`` (ramped in and out)."""
        if hours <= 0 or factor <= 0:
            raise ValueError("an episode needs positive hours and factor")
        self._episodes.append(PollutionEpisode(start, start + timedelta(hours=hours), factor))

    def sample(self, now: datetime) -> dict[str, MetricValue]:
        return self._faults.apply(self.measure(now))

    def measure(self, now: datetime) -> dict[str, MetricValue]:
        """Advance to ``now`` and return the true values (no sensor faults)."""
        self._advance(now)
        hour = local_hour(now, self._tz)
        traffic = traffic_index(hour)
        episode = self._episode_factor(now)
        noises = self._noises
        pm25 = self._site_pollution * (14 + 38 * traffic) * math.exp(noises.pm.value) * episode
        pm10 = pm25 * (1.55 + 0.2 * traffic)
        no2 = self._site_pollution * (12 + 45 * traffic) * math.exp(noises.no2.value) * episode
        o3 = (18 + 75 * bell(hour, 14.5, 2.3)) * math.exp(noises.o3.value)
        temperature = _clamp(
            diurnal_temperature(hour, self._coldest_c, self._hottest_c) + noises.temperature.value,
            TEMPERATURE_MIN_C,
            TEMPERATURE_MAX_C,
        )
        humidity = _clamp(
            humidity_for(temperature) + noises.humidity.value, HUMIDITY_MIN_PCT, HUMIDITY_MAX_PCT
        )
        noise_dba = 46 + self._site_noise_db + 22 * traffic + noises.noise.value
        return {
            "pm25": round(self._saturate("pm25", pm25), 1),
            "pm10": round(self._saturate("pm10", pm10), 1),
            "no2": round(self._saturate("no2", no2), 1),
            "so2": round((6 + 8 * traffic) * math.exp(noises.so2.value), 1),
            "co": round((500 + 1800 * traffic) * math.exp(noises.co.value), 0),
            "o3": round(o3, 1),
            "temperature_c": round(temperature, 1),
            "humidity_pct": round(humidity, 1),
            "noise_dba": round(noise_dba + self._rng.gauss(0.0, 0.8), 1),
        }

    def _advance(self, now: datetime) -> None:
        if self._last is not None:
            self._noises.step(seconds_between(self._last, now))
        if self._last is None or now > self._last:
            self._last = now
        self._episodes = [e for e in self._episodes if e.end > now]

    def _episode_factor(self, now: datetime) -> float:
        factor = 1.0
        for episode in self._episodes:
            factor *= episode.factor_at(now)
        return factor

    def _saturate(self, metric: str, value: float) -> float:
        """A sensor reads no higher than its range (the catalogue's valid maximum)."""
        spec = kind_spec(self.kind).metric(metric)
        maximum = spec.maximum if spec is not None and spec.maximum is not None else value
        return min(value, maximum)

    def state(self, now: datetime) -> dict[str, Any]:
        return {"fw": self.fw, "interval_s": round(self._interval_s)}

    def handle(self, action: str, params: dict[str, Any], now: datetime) -> Ack:
        try:
            validate_command_params(self.kind, action, params)
        except CommandParamsError as exc:
            return Ack("rejected", str(exc))
        # self_test is the only command of an env monitor.
        sensors = ", ".join(m.name for m in kind_spec(self.kind).metrics)
        return Ack("ok", f"sensors responding: {sensors}")
