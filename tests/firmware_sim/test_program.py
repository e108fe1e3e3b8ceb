"""The lamp's program runner: step times from astral for Cần Thơ, levels across midnight."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from devices.wire.commands import DEFAULT_PROGRAM, LampProgram, ProgramStep
from firmware_sim.program import ProgramError, ProgramRunner

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
CAN_THO = (10.0452, 105.7469)
# DOMAIN.md (astral 3.2): local sunrise / sunset.
DOMAIN_SUN = {
    date(2026, 3, 20): (time(6, 1), time(18, 7)),
    date(2026, 6, 21): (time(5, 37), time(18, 20)),
    date(2026, 12, 21): (time(6, 9), time(17, 41)),
}


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), TZ)


def within_a_minute(actual: datetime, expected: datetime) -> bool:
    return abs((actual - expected).total_seconds()) <= 60


@pytest.fixture
def runner() -> ProgramRunner:
    return ProgramRunner(DEFAULT_PROGRAM, *CAN_THO)


def test_default_program_is_domain_default() -> None:
    steps = [(s.at, s.event, s.offset_minutes, s.level) for s in DEFAULT_PROGRAM.steps]
    assert DEFAULT_PROGRAM.id == "default"
    assert steps == [
        (None, "sunset", -10, 100),
        ("22:00", None, 0, 70),
        ("00:00", None, 0, 50),
        ("04:30", None, 0, 100),
        (None, "sunrise", 10, 0),
    ]


@pytest.mark.parametrize("day", sorted(DOMAIN_SUN))
def test_sun_times_match_domain_within_a_minute(runner: ProgramRunner, day: date) -> None:
    sunrise, sunset = DOMAIN_SUN[day]
    sun = runner.sun_times(day)
    assert within_a_minute(sun.sunrise, datetime.combine(day, sunrise, TZ))
    assert within_a_minute(sun.sunset, datetime.combine(day, sunset, TZ))


@pytest.mark.parametrize("day", sorted(DOMAIN_SUN))
def test_default_program_changes_at_the_domain_times(runner: ProgramRunner, day: date) -> None:
    sunrise, sunset = DOMAIN_SUN[day]
    expected = [
        (local(day, 0), 50.0),
        (local(day, 4, 30), 100.0),
        (datetime.combine(day, sunrise, TZ) + timedelta(minutes=10), 0.0),
        (datetime.combine(day, sunset, TZ) - timedelta(minutes=10), 100.0),
        (local(day, 22), 70.0),
        (local(day + timedelta(days=1), 0), 50.0),
    ]
    cursor = local(day, 0) - timedelta(seconds=1)
    assert runner.level_at(cursor) == 70.0  # yesterday's 22:00 step still holds
    for expected_at, expected_level in expected:
        change = runner.next_change(cursor)
        assert within_a_minute(change, expected_at), (change, expected_at)
        assert runner.level_at(change - timedelta(seconds=1)) != expected_level
        assert runner.level_at(change) == expected_level
        cursor = change


def test_walking_a_night_minute_by_minute_sees_only_the_step_levels(
    runner: ProgramRunner,
) -> None:
    day = date(2026, 6, 21)
    start = local(day, 12)
    levels = [runner.level_at(start + timedelta(minutes=m)) for m in range(24 * 60)]
    transitions = [levels[i] for i in range(1, len(levels)) if levels[i] != levels[i - 1]]
    assert transitions == [100.0, 70.0, 50.0, 100.0, 0.0]


def test_a_step_at_sunset_yesterday_still_holds_after_midnight() -> None:
    program = LampProgram(
        id="dusk-dawn",
        steps=[
            ProgramStep(event="sunset", level=80),
            ProgramStep(event="sunrise", level=0),
        ],
    )
    runner = ProgramRunner(program, *CAN_THO)
    day = date(2026, 3, 21)
    assert runner.level_at(local(day, 1)) == 80.0
    assert runner.level_at(local(day, 12)) == 0.0
    assert runner.level_at(local(day, 19)) == 80.0


def test_of_two_steps_at_the_same_time_the_later_listed_wins() -> None:
    program = LampProgram(
        id="tie",
        steps=[ProgramStep(at="20:00", level=30), ProgramStep(at="20:00", level=60)],
    )
    runner = ProgramRunner(program, *CAN_THO)
    assert runner.level_at(local(date(2026, 3, 20), 20)) == 60.0


def test_a_single_step_program_changes_once_a_day() -> None:
    program = LampProgram(id="always", steps=[ProgramStep(at="18:00", level=40)])
    runner = ProgramRunner(program, *CAN_THO)
    after = local(date(2026, 3, 20), 19)
    assert runner.next_change(after) == local(date(2026, 3, 21), 18)
    assert runner.level_at(after + timedelta(hours=12)) == 40.0


@pytest.mark.parametrize(
    "step",
    [
        ProgramStep(level=50),
        ProgramStep(at="20:00", event="sunset", level=50),
    ],
)
def test_a_step_needs_exactly_one_of_at_or_event(step: ProgramStep) -> None:
    program = LampProgram(id="bad", steps=[ProgramStep(at="18:00", level=100), step])
    with pytest.raises(ProgramError) as caught:
        ProgramRunner(program, *CAN_THO)
    assert caught.value.field == "steps.1"
    assert "exactly one of 'at' or 'event'" in caught.value.reason


def test_sun_times_are_cached_per_date(runner: ProgramRunner) -> None:
    day = date(2026, 3, 20)
    assert runner.sun_times(day) is runner.sun_times(day)


def test_the_cache_stays_bounded_over_a_simulated_month(runner: ProgramRunner) -> None:
    start = local(date(2026, 1, 1), 12)
    for days in range(31):
        runner.level_at(start + timedelta(days=days))
    assert len(runner._sun) <= 4
    assert len(runner._steps) <= 4


def test_with_program_keeps_position_and_sun_cache(runner: ProgramRunner) -> None:
    other = runner.with_program(
        LampProgram(id="late", steps=[ProgramStep(event="sunset", offset_minutes=30, level=90)])
    )
    day = date(2026, 12, 21)
    assert other.program.id == "late"
    assert other.sun_times(day) is runner.sun_times(day)
    assert within_a_minute(other.next_change(local(day, 12)), local(day, 18, 11))


def test_daylight_is_between_sunrise_and_sunset(runner: ProgramRunner) -> None:
    day = date(2026, 6, 21)
    assert not runner.is_daylight(local(day, 5, 30))
    assert runner.is_daylight(local(day, 5, 40))
    assert runner.is_daylight(local(day, 18, 19))
    assert not runner.is_daylight(local(day, 18, 21))
