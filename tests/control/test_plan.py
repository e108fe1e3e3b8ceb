"""The pure core: what level a lamp should have at time t, on chosen Cần Thơ nights."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from astral import Observer
from astral.sun import sunrise, sunset
from pydantic import ValidationError

from control.plan import (
    ActiveOverride,
    CalendarRule,
    CalendarSpec,
    ControlPlan,
    LampRef,
    Target,
    TargetType,
    desired_level,
    next_change,
)
from control.program import ProgramError, ProgramSpec, Site, check_program, default_program
from devices.wire.commands import ProgramStep

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
SITE = Site(latitude=10.0452, longitude=105.7469)
LAMP = LampRef("lamp-1", ("hoa-binh",))
HOLIDAY = ProgramSpec(
    id="tet",
    name="Tết: full all night",
    steps=[
        ProgramStep(event="sunset", offset_minutes=-10, level=100),
        ProgramStep(event="sunrise", offset_minutes=10, level=0),
    ],
)


def plan(*overrides: ActiveOverride, rules: list[CalendarRule] | None = None) -> ControlPlan:
    calendar = CalendarSpec(id="city", name="City", default_program_id="default", rules=rules or [])
    return ControlPlan(
        site=SITE,
        programs={"default": default_program(), "tet": HOLIDAY},
        calendars={"city": calendar},
        assignments={Target(TargetType.GROUP, "hoa-binh"): "city"},
        overrides=overrides,
    )


def night_changes(p: ControlPlan, evening: date) -> list[tuple[datetime, float]]:
    """Walk ``next_change`` from noon to noon, recording the level after each change."""
    now = datetime.combine(evening, datetime.min.time(), LOCAL) + timedelta(hours=12)
    end = now + timedelta(days=1)
    changes = []
    while (when := next_change(p, LAMP, now)) is not None and when < end:
        level = desired_level(p, LAMP, when).level
        assert level is not None
        changes.append((when, level))
        now = when
    return changes


@pytest.mark.parametrize("evening", [date(2026, 3, 20), date(2026, 6, 21), date(2026, 12, 21)])
def test_a_night_of_the_default_program_at_astrals_times(evening: date) -> None:
    observer = Observer(latitude=SITE.latitude, longitude=SITE.longitude)
    dusk = sunset(observer, evening, LOCAL) - timedelta(minutes=10)
    dawn = sunrise(observer, evening + timedelta(days=1), LOCAL) + timedelta(minutes=10)
    morning = evening + timedelta(days=1)
    expected = [
        (dusk, 100.0),
        (datetime.combine(evening, datetime.min.time(), LOCAL) + timedelta(hours=22), 70.0),
        (datetime.combine(morning, datetime.min.time(), LOCAL), 50.0),
        (datetime.combine(morning, datetime.min.time(), LOCAL) + timedelta(hours=4.5), 100.0),
        (dawn, 0.0),
    ]
    assert night_changes(plan(), evening) == expected
    # DOMAIN.md's sunset for these dates (astral 3.2), printed to the minute.
    domain = {
        date(2026, 3, 20): ("18:07",),
        date(2026, 6, 21): ("18:20",),
        date(2026, 12, 21): ("17:41",),
    }[evening]
    hours, minutes = (int(x) for x in domain[0].split(":"))
    printed = datetime.combine(evening, datetime.min.time(), LOCAL).replace(
        hour=hours, minute=minutes
    )
    assert abs((dusk + timedelta(minutes=10) - printed).total_seconds()) <= 60
    # Between the steps: 23:30 is 70 %, 02:00 is 50 %, noon is off.
    at = datetime.combine(evening, datetime.min.time(), LOCAL)
    assert desired_level(plan(), LAMP, at + timedelta(hours=23, minutes=30)).level == 70
    assert desired_level(plan(), LAMP, at + timedelta(hours=26)).level == 50
    assert desired_level(plan(), LAMP, at + timedelta(hours=12)).level == 0


def test_a_holiday_rule_picks_its_program_for_its_night() -> None:
    tet = date(2027, 2, 6)  # Tết eve 2027, given as a date
    p = plan(rules=[CalendarRule(program_id="tet", dates=[tet])])
    at = datetime(2027, 2, 7, 1, 0, tzinfo=LOCAL)  # 01:00 after Tết eve: still full
    decision = desired_level(p, LAMP, at)
    assert (decision.level, decision.program_id) == (100, "tet")
    normal = desired_level(p, LAMP, datetime(2027, 2, 8, 1, 0, tzinfo=LOCAL))
    assert (normal.level, normal.program_id) == (50, "default")
    weekend = plan(rules=[CalendarRule(program_id="tet", weekdays=["sat"])])
    saturday = datetime(2027, 2, 13, 23, 0, tzinfo=LOCAL)
    assert desired_level(weekend, LAMP, saturday).program_id == "tet"
    assert desired_level(weekend, LAMP, saturday - timedelta(days=1)).program_id == "default"


def test_an_override_wins_then_falls_back_and_the_lamps_own_beats_its_groups() -> None:
    start = datetime(2026, 6, 21, 20, 0, tzinfo=LOCAL)
    group = ActiveOverride(
        1, Target(TargetType.GROUP, "hoa-binh"), 30, start, start + timedelta(minutes=45)
    )
    own = ActiveOverride(2, Target(TargetType.DEVICE, "lamp-1"), 80, start, None)
    p = plan(group)
    assert desired_level(p, LAMP, start + timedelta(minutes=10)).level == 30
    assert desired_level(p, LAMP, start + timedelta(minutes=10)).source == "override"
    assert next_change(p, LAMP, start) == start + timedelta(minutes=45)
    after = desired_level(p, LAMP, start + timedelta(minutes=45))
    assert (after.level, after.source) == (100, "program")
    assert desired_level(plan(group, own), LAMP, start + timedelta(minutes=5)).level == 80


def test_a_lamp_without_a_calendar_has_no_desired_level() -> None:
    alone = LampRef("lamp-9", ("elsewhere",))
    assert desired_level(plan(), alone, datetime(2026, 6, 21, 20, tzinfo=LOCAL)).level is None


def test_overlapping_steps_are_refused_with_the_step_named() -> None:
    late_sunset = ProgramSpec(
        id="bad",
        name="bad",
        steps=[
            ProgramStep(at="18:00", level=100),
            ProgramStep(event="sunset", offset_minutes=0, level=80),  # 17:41 in December
        ],
    )
    with pytest.raises(ProgramError) as error:
        check_program(late_sunset, SITE)
    assert error.value.field == "steps.1" and "out of order" in error.value.reason
    same_time = ProgramSpec(
        id="bad",
        name="bad",
        steps=[ProgramStep(at="22:00", level=100), ProgramStep(at="22:00", level=50)],
    )
    with pytest.raises(ProgramError, match=r"steps\.1"):
        check_program(same_time, SITE)
    check_program(default_program(), SITE)


def test_levels_out_of_range_and_half_steps_are_refused_with_the_field() -> None:
    with pytest.raises(ValidationError) as error:
        ProgramSpec.model_validate(
            {"id": "p", "name": "p", "steps": [{"at": "18:00", "level": 120}]}
        )
    assert error.value.errors()[0]["loc"] == ("steps", 0, "level")
    with pytest.raises(ValidationError, match=r"steps\.0: a step needs exactly one"):
        ProgramSpec.model_validate({"id": "p", "name": "p", "steps": [{"level": 20}]})
