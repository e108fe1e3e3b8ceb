"""Flood gauge physics: tide highs in DOMAIN.md's windows, trend over the alert levels, rain."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from firmware_sim.physics.flood import FloodGaugeModel, tide_m

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
FIRST_DAY = date(2026, 10, 20)
ALERT_LEVELS_M = (1.80, 1.90, 2.00)  # Cần Thơ BĐ I, II, III


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), TZ)


def run(
    model: FloodGaugeModel, days: float, step: timedelta = timedelta(minutes=5)
) -> list[tuple[datetime, float, float, float]]:
    """(time, water_level_m, rain_mm, battery_v) every ``step``."""
    start = local(FIRST_DAY, 0)
    count = int(timedelta(days=days) / step)
    rows = []
    for i in range(count):
        now = start + i * step
        metrics = model.sample(now)
        rows.append(
            (
                now,
                float(metrics["water_level_m"]),
                float(metrics["rain_mm"]),
                float(metrics["battery_v"]),
            )
        )
    return rows


def gauge(
    seed: int = 1,
    *,
    base_m: float = 1.1,
    tide_amplitude_m: float = 0.6,
    trend_m_per_day: float = 0.0,
) -> FloodGaugeModel:
    return FloodGaugeModel(
        "flood-0001",
        random.Random(seed),
        base_m=base_m,
        tide_amplitude_m=tide_amplitude_m,
        trend_m_per_day=trend_m_per_day,
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_two_daily_highs_fall_in_the_domain_windows(seed: int) -> None:
    rows = run(gauge(seed), days=4)
    for day in range(4):
        one_day = rows[day * 288 : (day + 1) * 288]
        morning = max(one_day[:144], key=lambda row: row[1])
        evening = max(one_day[144:], key=lambda row: row[1])
        assert 5 <= morning[0].hour < 8, morning
        assert 17 <= evening[0].hour < 20, evening
        assert morning[1] > evening[1]  # the two highs differ a little
        assert morning[1] - evening[1] < 0.15


def test_tide_shape() -> None:
    assert tide_m(6.5, 0.7) == pytest.approx(0.7)
    assert tide_m(18.5, 0.7) == pytest.approx(0.7 * (1 - 0.06) / (1 + 0.06))
    assert max(tide_m(h / 10, 0.7) for h in range(240)) == pytest.approx(0.7)
    assert min(tide_m(h / 10, 0.7) for h in range(240)) < -0.6


def test_with_default_parameters_the_highs_stay_below_bd_i() -> None:
    assert max(level for _, level, _, _ in run(gauge(), days=3)) < ALERT_LEVELS_M[0]


def test_a_rising_river_crosses_bd_i_ii_and_iii_in_order() -> None:
    rows = run(gauge(base_m=1.3, trend_m_per_day=0.15), days=4)
    crossings = []
    for alert in ALERT_LEVELS_M:
        first = next((when for when, level, _, _ in rows if level >= alert), None)
        assert first is not None, f"never reached {alert} m"
        crossings.append(first)
    assert crossings == sorted(crossings)
    assert crossings[0] < crossings[-1]


def test_the_trend_can_change_mid_run() -> None:
    model = gauge(tide_amplitude_m=0.0)
    model.sample(local(FIRST_DAY, 0))
    model.trend_m_per_day = 0.48
    level = float(model.sample(local(FIRST_DAY, 12))["water_level_m"])
    assert level == pytest.approx(1.1 + 0.24, abs=0.05)


def test_rain_events_give_rain_and_lift_the_level() -> None:
    dry, wet = gauge(seed=5), gauge(seed=5)
    wet.add_rain_event(local(FIRST_DAY, 14), hours=3, mm_per_hour=20)
    dry_rows, wet_rows = run(dry, days=1), run(wet, days=1)
    total_rain = sum(rain for _, _, rain, _ in wet_rows)
    assert total_rain == pytest.approx(60, abs=0.5)
    assert all(rain == 0 for when, _, rain, _ in wet_rows if when.hour < 14)
    assert sum(rain for _, _, rain, _ in dry_rows) == 0
    after_rain = next(i for i, row in enumerate(wet_rows) if row[0] == local(FIRST_DAY, 17))
    lift = wet_rows[after_rain][1] - dry_rows[after_rain][1]
    assert 0.08 < lift < 0.3


def test_rain_mm_is_rain_since_the_last_reading() -> None:
    model = gauge()
    model.add_rain_event(local(FIRST_DAY, 10), hours=1, mm_per_hour=12)
    model.sample(local(FIRST_DAY, 10))
    assert model.sample(local(FIRST_DAY, 10, 30))["rain_mm"] == pytest.approx(6.0)
    assert model.sample(local(FIRST_DAY, 12))["rain_mm"] == pytest.approx(6.0)
    assert model.sample(local(FIRST_DAY, 13))["rain_mm"] == 0.0


def test_the_battery_drains_at_night_and_charges_by_day() -> None:
    rows = run(gauge(seed=4), days=5)
    volts = [battery for _, _, _, battery in rows]
    assert min(volts) >= 3.5
    assert max(volts) <= 4.2
    dawn = [battery for when, _, _, battery in rows if when.hour == 6]
    afternoon = [battery for when, _, _, battery in rows if when.hour == 15]
    assert sum(afternoon) / len(afternoon) > sum(dawn) / len(dawn)


def test_set_interval_changes_the_reporting_interval() -> None:
    model = gauge()
    now = local(FIRST_DAY, 9)
    ack = model.handle("set_interval", {"seconds": 900}, now)
    assert ack.status == "ok"
    assert model.interval_s == 900
    assert model.state(now)["interval_s"] == 900
    refused = model.handle("set_interval", {"seconds": 5}, now)
    assert refused.status == "rejected"
    assert refused.detail.startswith("params.seconds:")
    assert model.interval_s == 900
