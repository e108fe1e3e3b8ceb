"""Vietnam's air quality index, VN_AQI (Decision 1459/QĐ-TCMT of 12 Nov 2019), pure.

Owns the breakpoint table, the sub-index formula, the NowCast of PM10 and PM2.5, the
hourly and daily AQI and the six categories. Concentrations are µg/m³ (CO too).

- Sub-index: ``(I[i+1] - I[i]) / (BP[i+1] - BP[i]) * (C - BP[i]) + I[i]``.
- Hourly: SO2, CO, NO2, O3 use the 1-hour mean; PM10 and PM2.5 a NowCast of the last 12
  hourly means (``w* = Cmin/Cmax``; ``w = 1/2`` if ``w* <= 1/2`` else ``w*``; a missing
  hour weighs 0; at least 2 of the last 3 hours needed); the AQI is the highest
  sub-index rounded half up.
- Daily: PM 24-hour mean; SO2, NO2, CO the highest 1-hour mean; O3 the higher of the
  highest 1-hour and highest 8-hour sub-indices (the 8-hour term dropped above 400).
  At least one of PM10 or PM2.5 must be present, hourly and daily.

The decision prints NowCast 20.27 as 20.3 (one decimal) and its hourly NO2 example
118.7 µg/m³ as 60, a misprint: the formula gives 59.35.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import IntEnum

AQI_LEVELS: tuple[int, ...] = (0, 50, 100, 150, 200, 300, 400, 500)

# Breakpoints per pollutant, aligned with AQI_LEVELS (None: no breakpoint at that level).
BREAKPOINTS: dict[str, tuple[float | None, ...]] = {
    "o3_1h": (0, 160, 200, 300, 400, 800, 1000, 1200),
    "o3_8h": (0, 100, 120, 170, 210, 400, None, None),
    "co": (0, 10000, 30000, 45000, 60000, 90000, 120000, 150000),
    "so2": (0, 125, 350, 550, 800, 1600, 2100, 2630),
    "no2": (0, 100, 200, 700, 1200, 2350, 3100, 3850),
    "pm10": (0, 50, 150, 250, 350, 420, 500, 600),
    "pm25": (0, 25, 50, 80, 150, 250, 350, 500),
}
HOURLY_GASES = ("so2", "co", "no2", "o3")
PARTICLES = ("pm25", "pm10")
NOWCAST_HOURS = 12


class Category(IntEnum):
    """The six VN_AQI categories, in order (the `aqi.category` field holds the number)."""

    GOOD = 1
    MODERATE = 2
    POOR = 3
    BAD = 4
    VERY_BAD = 5
    HAZARDOUS = 6

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def rgb(self) -> tuple[int, int, int]:
        return _COLOURS[self]


_LABELS = {
    Category.GOOD: "good",
    Category.MODERATE: "moderate",
    Category.POOR: "poor",
    Category.BAD: "bad",
    Category.VERY_BAD: "very bad",
    Category.HAZARDOUS: "hazardous",
}
_COLOURS = {
    Category.GOOD: (0, 228, 0),
    Category.MODERATE: (255, 255, 0),
    Category.POOR: (255, 126, 0),
    Category.BAD: (255, 0, 0),
    Category.VERY_BAD: (143, 63, 151),
    Category.HAZARDOUS: (126, 0, 35),
}
_UPPER = ((50, Category.GOOD), (100, Category.MODERATE), (150, Category.POOR),
          (200, Category.BAD), (300, Category.VERY_BAD))  # fmt: skip


def category(aqi: int) -> Category:
    """The category of an (integer) AQI: 0–50 good … 301 and above hazardous."""
    for upper, cat in _UPPER:
        if aqi <= upper:
            return cat
    return Category.HAZARDOUS


def round_half_up(value: float, digits: int = 0) -> float:
    """Round half up (20.25 → 20.3, 59.5 → 60), unlike Python's round-half-even."""
    quantum = Decimal(1).scaleb(-digits)
    return float(Decimal(repr(value)).quantize(quantum, rounding=ROUND_HALF_UP))


def sub_index(pollutant: str, concentration: float) -> float | None:
    """AQIx of ``concentration`` (µg/m³) for ``pollutant`` (a key of BREAKPOINTS).

    None beyond the table's last breakpoint for that pollutant (O3 8h above 400 µg/m³);
    concentrations above the 500 breakpoint extrapolate along the last segment.
    """
    points = BREAKPOINTS[pollutant]
    if concentration < 0 or math.isnan(concentration):
        raise ValueError(f"{pollutant}: concentration must be >= 0, got {concentration}")
    pairs = [(bp, level) for bp, level in zip(points, AQI_LEVELS, strict=True) if bp is not None]
    for (bp_lo, i_lo), (bp_hi, i_hi) in itertools.pairwise(pairs):
        if concentration <= bp_hi:
            return (i_hi - i_lo) / (bp_hi - bp_lo) * (concentration - bp_lo) + i_lo
    if points[-1] is None:
        return None
    (bp_lo, i_lo), (bp_hi, i_hi) = pairs[-2], pairs[-1]
    return (i_hi - i_lo) / (bp_hi - bp_lo) * (concentration - bp_lo) + i_lo


def nowcast(hourly_means: Sequence[float | None]) -> float | None:
    """NowCast of hourly means, newest first (``[c1, c2, …]``, up to 12; None = missing).

    None when fewer than 2 of the 3 newest hours are present. Not rounded (see
    ``nowcast_rounded`` for the decision's one decimal).
    """
    hours = list(hourly_means[:NOWCAST_HOURS])
    if sum(1 for c in hours[:3] if c is not None) < 2:
        return None
    present = [c for c in hours if c is not None]
    c_max = max(present)
    if c_max <= 0:
        return 0.0
    w_star = min(present) / c_max
    w = 0.5 if w_star <= 0.5 else w_star
    num = den = 0.0
    for i, c in enumerate(hours):
        if c is None:
            continue
        weight = w**i
        num += weight * c
        den += weight
    return num / den


def nowcast_rounded(hourly_means: Sequence[float | None]) -> float | None:
    """The NowCast to one decimal, half up, as the decision prints it (20.27 → 20.3)."""
    value = nowcast(hourly_means)
    return None if value is None else round_half_up(value, 1)


@dataclass(frozen=True, slots=True)
class AqiResult:
    aqi: int
    category: Category
    sub_indices: dict[str, float]  # pollutant → AQIx (unrounded)
    pm25_nowcast: float | None = None
    pm10_nowcast: float | None = None

    @property
    def dominant(self) -> str:
        return max(self.sub_indices, key=lambda k: self.sub_indices[k])


def hourly_aqi(
    gases_1h: Mapping[str, float], pm_hours: Mapping[str, Sequence[float | None]]
) -> AqiResult | None:
    """The hourly VN_AQI.

    ``gases_1h``: 1-hour means of ``so2``, ``co``, ``no2``, ``o3`` (any subset);
    ``pm_hours``: per ``pm25``/``pm10``, hourly means newest first (for the NowCast).
    None when neither PM10 nor PM2.5 has a NowCast (the decision requires one).
    """
    subs: dict[str, float] = {}
    casts: dict[str, float | None] = {}
    for pm in PARTICLES:
        hours = pm_hours.get(pm)
        cast = nowcast_rounded(hours) if hours else None
        casts[pm] = cast
        if cast is not None:
            value = sub_index(pm, cast)
            if value is not None:
                subs[pm] = value
    if not subs:
        return None
    for gas in HOURLY_GASES:
        if gas in gases_1h:
            value = sub_index("o3_1h" if gas == "o3" else gas, gases_1h[gas])
            if value is not None:
                subs[gas] = value
    aqi = int(round_half_up(max(subs.values())))
    return AqiResult(aqi, category(aqi), subs, casts["pm25"], casts["pm10"])


def daily_aqi(
    *,
    pm_24h: Mapping[str, float],
    max_1h: Mapping[str, float],
    o3_max_8h: float | None = None,
) -> AqiResult | None:
    """The daily VN_AQI from the day's aggregates.

    ``pm_24h``: 24-hour means of ``pm25``/``pm10``; ``max_1h``: the day's highest 1-hour
    means of ``so2``, ``no2``, ``co``, ``o3``; ``o3_max_8h``: the highest 8-hour rolling
    mean of O3. None without a PM value.
    """
    subs: dict[str, float] = {}
    for pm in PARTICLES:
        if pm in pm_24h:
            value = sub_index(pm, pm_24h[pm])
            if value is not None:
                subs[pm] = value
    if not subs:
        return None
    for gas in ("so2", "no2", "co"):
        if gas in max_1h:
            value = sub_index(gas, max_1h[gas])
            if value is not None:
                subs[gas] = value
    o3_terms = []
    if "o3" in max_1h:
        o3_terms.append(sub_index("o3_1h", max_1h["o3"]))
    if o3_max_8h is not None:
        o3_terms.append(sub_index("o3_8h", o3_max_8h))  # None above 400: dropped
    present = [t for t in o3_terms if t is not None]
    if present:
        subs["o3"] = max(present)
    aqi = int(round_half_up(max(subs.values())))
    return AqiResult(aqi, category(aqi), subs)
