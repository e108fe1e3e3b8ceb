"""Building load profiles: shaped by the local working day, never negative, reproducible."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from firmware_sim.modbus.loads import DEFAULT_TZ, SHAPES, BuildingLoad, BuildingType, SmoothNoise

LOCAL_TZ = ZoneInfo(DEFAULT_TZ)

WEDNESDAY = datetime(2026, 3, 18, tzinfo=LOCAL_TZ)
SUNDAY = datetime(2026, 3, 22, tzinfo=LOCAL_TZ)


def _load(building: BuildingType, seed: str = "s") -> BuildingLoad:
    return BuildingLoad(building, random.Random(seed))


def _day(load: BuildingLoad, day: datetime, step_minutes: int = 10) -> list[float]:
    return [load.power_w(day + timedelta(minutes=m)) for m in range(0, 24 * 60, step_minutes)]


def test_a_school_peaks_on_weekday_daytime_and_rests_at_night_and_on_sunday() -> None:
    school = _load(BuildingType.SCHOOL)
    morning_class = school.power_w(WEDNESDAY.replace(hour=9, minute=30))
    afternoon_class = school.power_w(WEDNESDAY.replace(hour=15))
    night = school.power_w(WEDNESDAY.replace(hour=2))
    assert morning_class > 5 * night
    assert afternoon_class > 5 * night
    assert school.power_w(WEDNESDAY.replace(hour=12, minute=30)) < morning_class  # noon break
    assert max(_day(school, SUNDAY)) < 0.2 * morning_class
    assert school.occupancy(SUNDAY.replace(hour=10)) == 0.0


def test_an_office_follows_its_hours() -> None:
    office = _load(BuildingType.OFFICE)
    assert office.occupancy(WEDNESDAY.replace(hour=10)) == pytest.approx(1.0)
    assert office.occupancy(WEDNESDAY.replace(hour=6)) == 0.0
    assert office.occupancy(WEDNESDAY.replace(hour=19)) == 0.0
    assert office.power_w(WEDNESDAY.replace(hour=10)) > 3 * office.power_w(
        WEDNESDAY.replace(hour=22)
    )


def test_a_hospital_runs_round_the_clock_with_a_daytime_bump() -> None:
    hospital = _load(BuildingType.HOSPITAL)
    shape = SHAPES[BuildingType.HOSPITAL]
    for day in (WEDNESDAY, SUNDAY):
        values = _day(hospital, day)
        assert min(values) > 0.9 * shape.base_w  # never near zero
        assert max(values) < 1.1 * shape.peak_w
    assert (
        hospital.power_w(WEDNESDAY.replace(hour=13))
        > hospital.power_w(WEDNESDAY.replace(hour=3)) + 40_000
    )


def test_local_time_is_vietnam_time() -> None:
    school = _load(BuildingType.SCHOOL)
    # 02:00 UTC is 09:00 in Cần Thơ: class time.
    assert school.occupancy(datetime(2026, 3, 18, 2, 0, tzinfo=UTC)) == pytest.approx(1.0)


@pytest.mark.parametrize("building", list(BuildingType))
def test_same_seed_same_values_other_seed_other_noise(building: BuildingType) -> None:
    assert _day(_load(building, "a"), WEDNESDAY) == _day(_load(building, "a"), WEDNESDAY)
    assert _day(_load(building, "a"), WEDNESDAY) != _day(_load(building, "b"), WEDNESDAY)


def test_a_value_does_not_depend_on_what_was_asked_before() -> None:
    moment = WEDNESDAY.replace(hour=10, minute=17)
    fresh = _load(BuildingType.OFFICE).power_w(moment)
    used = _load(BuildingType.OFFICE)
    _day(used, SUNDAY)
    assert used.power_w(moment) == fresh


def test_noise_is_bounded_and_smooth() -> None:
    noise = SmoothNoise(seed=42, period_s=600)
    values = [noise.at(WEDNESDAY + timedelta(seconds=s)) for s in range(0, 6 * 3600, 10)]
    assert all(-1 <= v <= 1 for v in values)
    assert max(values) - min(values) > 0.5  # it does move
    steps = [abs(b - a) for a, b in itertools.pairwise(values)]
    assert max(steps) < 0.05  # 10 s of a 10-minute noise is a small step


def test_scale_multiplies_the_load() -> None:
    moment = WEDNESDAY.replace(hour=10)
    small = BuildingLoad(BuildingType.SCHOOL, random.Random("x"), scale=0.5)
    full = BuildingLoad(BuildingType.SCHOOL, random.Random("x"))
    assert small.power_w(moment) == pytest.approx(full.power_w(moment) / 2)
