"""Env monitor physics: Cần Thơ's traffic peaks, heat and humidity, pollution episodes."""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from firmware_sim.model import MetricValue
from firmware_sim.physics.environment import EnvironmentModel, diurnal_temperature

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
FIRST_DAY = date(2026, 4, 1)


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), TZ)


def run(
    model: EnvironmentModel, days: int, step: timedelta = timedelta(minutes=5)
) -> list[tuple[datetime, dict[str, MetricValue]]]:
    start = local(FIRST_DAY, 0)
    count = int(timedelta(days=days) / step)
    return [(start + i * step, model.sample(start + i * step)) for i in range(count)]


def hourly_means(
    readings: list[tuple[datetime, dict[str, MetricValue]]], metric: str
) -> dict[int, float]:
    by_hour: dict[int, list[float]] = defaultdict(list)
    for when, metrics in readings:
        by_hour[when.hour].append(float(metrics[metric]))
    return {hour: statistics.fmean(values) for hour, values in by_hour.items()}


def mean_over(means: dict[int, float], hours: range) -> float:
    return statistics.fmean(means[h] for h in hours)


@pytest.fixture(params=[1, 2, 3])
def week(request: pytest.FixtureRequest) -> list[tuple[datetime, dict[str, MetricValue]]]:
    return run(EnvironmentModel("env-0001", random.Random(request.param)), days=7)


def test_pm25_and_noise_peak_with_the_rush_hours(
    week: list[tuple[datetime, dict[str, MetricValue]]],
) -> None:
    for metric in ("pm25", "no2"):
        means = hourly_means(week, metric)
        night = mean_over(means, range(1, 4))
        assert mean_over(means, range(7, 9)) > 1.5 * night
        assert mean_over(means, range(17, 19)) > 1.5 * night
    noise = hourly_means(week, "noise_dba")
    night_dba = mean_over(noise, range(1, 4))
    assert mean_over(noise, range(7, 9)) > night_dba + 10
    assert mean_over(noise, range(17, 19)) > night_dba + 10


def test_temperature_stays_in_range_coolest_at_dawn_hottest_in_the_afternoon(
    week: list[tuple[datetime, dict[str, MetricValue]]],
) -> None:
    temperatures = [float(m["temperature_c"]) for _, m in week]
    assert min(temperatures) >= 25.0
    assert max(temperatures) <= 34.0
    means = hourly_means(week, "temperature_c")
    assert 12 <= max(means, key=means.__getitem__) <= 16
    assert 3 <= min(means, key=means.__getitem__) <= 7


def test_humidity_moves_against_temperature(
    week: list[tuple[datetime, dict[str, MetricValue]]],
) -> None:
    temperatures = [float(m["temperature_c"]) for _, m in week]
    humidities = [float(m["humidity_pct"]) for _, m in week]
    assert statistics.correlation(temperatures, humidities) < -0.8
    assert min(humidities) >= 60.0
    assert max(humidities) <= 95.0


def test_ozone_peaks_mid_afternoon(week: list[tuple[datetime, dict[str, MetricValue]]]) -> None:
    means = hourly_means(week, "o3")
    assert 13 <= max(means, key=means.__getitem__) <= 16


def test_diurnal_temperature_shape() -> None:
    assert diurnal_temperature(5.0, 25.5, 33.0) == pytest.approx(25.5)
    assert diurnal_temperature(14.0, 25.5, 33.0) == pytest.approx(33.0)
    assert diurnal_temperature(23.99, 25.5, 33.0) == pytest.approx(
        diurnal_temperature(0.0, 25.5, 33.0), abs=0.01
    )


def test_a_pollution_episode_raises_pm_and_no2_only_while_it_lasts() -> None:
    calm = EnvironmentModel("env-0002", random.Random(4))
    smoky = EnvironmentModel("env-0002", random.Random(4))
    smoky.start_episode(local(FIRST_DAY, 10), hours=6, factor=4.0)
    in_episode = range(
        int(timedelta(hours=11) / timedelta(minutes=5)),
        int(timedelta(hours=15) / timedelta(minutes=5)),
    )
    calm_day, smoky_day = run(calm, days=1), run(smoky, days=1)
    for metric, ratio in (("pm25", 4.0), ("no2", 4.0), ("o3", 1.0)):
        calm_mean = statistics.fmean(float(calm_day[i][1][metric]) for i in in_episode)
        smoky_mean = statistics.fmean(float(smoky_day[i][1][metric]) for i in in_episode)
        assert smoky_mean == pytest.approx(ratio * calm_mean, rel=0.01)
    # Before and well after the episode the two stations read the same.
    assert calm_day[12][1] == smoky_day[12][1]
    assert calm_day[-1][1] == smoky_day[-1][1]


def test_an_episode_needs_positive_hours_and_factor() -> None:
    model = EnvironmentModel("env-0003", random.Random(1))
    with pytest.raises(ValueError, match="positive hours and factor"):
        model.start_episode(local(FIRST_DAY, 10), hours=0, factor=2)


def test_self_test_is_ok_and_other_actions_are_rejected() -> None:
    model = EnvironmentModel("env-0004", random.Random(1))
    ok = model.handle("self_test", {}, local(FIRST_DAY, 9))
    assert ok.status == "ok"
    assert "pm25" in ok.detail
    refused = model.handle("set_dim", {"level": 10}, local(FIRST_DAY, 9))
    assert refused.status == "rejected"
    assert "env_monitor does not take 'set_dim'" in refused.detail
    assert model.state(local(FIRST_DAY, 9)) == {"fw": "2.3.0", "interval_s": 60}


def test_readings_do_not_depend_on_state_or_command_calls() -> None:
    quiet = EnvironmentModel("env-0005", random.Random(8))
    busy = EnvironmentModel("env-0005", random.Random(8))
    for minutes in range(0, 600, 10):
        now = local(FIRST_DAY, 0) + timedelta(minutes=minutes)
        busy.state(now)
        assert quiet.sample(now) == busy.sample(now)
