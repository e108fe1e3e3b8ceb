"""Programs, calendars, assignments and overrides in SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from control.models import LampStateRow
from control.plan import CalendarRule, CalendarSpec, LampRef, Target, TargetType, desired_level
from control.program import ProgramError, ProgramSpec, Site, default_program
from control.state import set_desired
from control.store import (
    add_override,
    assign,
    clear_override,
    delete_program,
    load_plan,
    managed_lamps,
    save_calendar,
    save_program,
)
from devices.registry.db import transaction
from devices.wire.commands import ProgramStep
from tests.control.helpers import register_lamps

SITE = Site(latitude=10.0452, longitude=105.7469)
NOW = datetime(2026, 6, 21, 14, 0, tzinfo=UTC)  # 21:00 in Cần Thơ


def test_the_plan_round_trips_and_answers_like_the_pure_function(
    sessions: sessionmaker[Session],
) -> None:
    register_lamps(sessions, "hoa-binh", ["l-1", "l-2"])
    with transaction(sessions) as session:
        save_program(session, default_program(), SITE)
        rule = CalendarRule(program_id="default", weekdays=["sat", "sun"])
        save_calendar(
            session, CalendarSpec(id="city", name="C", default_program_id="default", rules=[rule])
        )
        assign(session, Target(TargetType.GROUP, "hoa-binh"), "city")
        override = add_override(
            session, Target(TargetType.DEVICE, "l-2"), 20, NOW, NOW + timedelta(hours=1), "op"
        )
        plan = load_plan(session, SITE, NOW)
        lamps = managed_lamps(session, plan)
    assert [lamp.device_id for lamp in lamps] == ["l-1", "l-2"]
    assert plan.calendars["city"].rules == [rule]
    assert desired_level(plan, LampRef("l-1", ("hoa-binh",)), NOW).level == 100
    assert desired_level(plan, LampRef("l-2", ("hoa-binh",)), NOW).level == 20
    with transaction(sessions) as session:
        clear_override(session, override.id, NOW + timedelta(minutes=5))
        later = load_plan(session, SITE, NOW + timedelta(minutes=5))
    assert later.overrides == []


def test_references_are_checked_with_the_field_named(sessions: sessionmaker[Session]) -> None:
    register_lamps(sessions, "hoa-binh", ["l-1"])
    with transaction(sessions) as session:
        save_program(session, default_program(), SITE)
        with pytest.raises(ProgramError) as missing:
            save_calendar(
                session,
                CalendarSpec(
                    id="c",
                    name="c",
                    default_program_id="default",
                    rules=[CalendarRule(program_id="tet", dates=[NOW.date()])],
                ),
            )
        assert missing.value.field == "rules.0.program_id"
        save_calendar(session, CalendarSpec(id="c", name="c", default_program_id="default"))
        with pytest.raises(ProgramError) as unknown:
            assign(session, Target(TargetType.GROUP, "nowhere"), "c")
        assert unknown.value.field == "target_id"
        with pytest.raises(ProgramError) as used:
            delete_program(session, "default")
        assert "calendar 'c'" in used.value.reason


def test_a_changed_program_is_sent_again_to_the_lamps_running_it(
    sessions: sessionmaker[Session],
) -> None:
    register_lamps(sessions, "hoa-binh", ["l-1"])
    with transaction(sessions) as session:
        save_program(session, default_program(), SITE)
        set_desired(session, ["l-1"], NOW, program_id="default")
        save_program(session, default_program(), SITE)  # unchanged: nothing to resend
        assert session.get(LampStateRow, "l-1").desired_program_id == "default"  # type: ignore[union-attr]
        changed = default_program().model_copy(
            update={"steps": [ProgramStep(at="18:00", level=80), ProgramStep(at="06:00", level=0)]}
        )
        save_program(session, ProgramSpec.model_validate(changed.model_dump()), SITE)
        assert session.get(LampStateRow, "l-1").desired_program_id is None  # type: ignore[union-attr]
