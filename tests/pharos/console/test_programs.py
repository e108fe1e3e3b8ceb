"""The program editor's form and its fast projection."""

from __future__ import annotations

from datetime import date

import pytest
from starlette.datastructures import FormData

from control.energy import EnergySettings, Lamp, project_group
from control.program import ProgramError, Site, default_program
from pharos.console.routes.programs import program_from_form, project_program

SITE = Site(latitude=10.0452, longitude=105.7469)


def test_the_group_projects_as_one_lamp_of_its_summed_power() -> None:
    lamps = [Lamp(f"l-{n}", 60.0 + 15 * (n % 5), ("g",)) for n in range(40)]
    start, end = date(2026, 12, 1), date(2026, 12, 14)
    program = default_program()
    slow = project_group("g", lamps, start, end, SITE, EnergySettings(), program=program)
    fast = project_program("g", lamps, start, end, SITE, EnergySettings(), program)
    assert fast.lamps == slow.lamps == 40
    assert fast.rated_power_w == slow.rated_power_w
    for name in ("kwh", "baseline_kwh", "saved_kwh", "saved_vnd", "saved_co2_kg"):
        assert getattr(fast.projected, name) == pytest.approx(
            getattr(slow.projected, name), rel=1e-6
        )
    assert project_program("g", [], start, end, SITE, EnergySettings(), program).lamps == 0


def _form(rows: list[tuple[str, str, str, str]]) -> FormData:
    items = [("name", "Edited")]
    for kind, at, offset, level in rows:
        items += [
            ("step_kind", kind),
            ("step_at", at),
            ("step_offset", offset),
            ("step_level", level),
        ]
    return FormData(items)


def test_the_form_becomes_a_checked_program() -> None:
    spec = program_from_form(
        "p",
        _form(
            [("sunset", "", "-10", "100"), ("at", "23:00", "0", "40,5"), ("sunrise", "", "5", "0")]
        ),
        SITE,
    )
    assert [s.level for s in spec.steps] == [100, 40.5, 0]
    assert spec.steps[0].event == "sunset" and spec.steps[0].offset_minutes == -10


@pytest.mark.parametrize(
    ("rows", "field"),
    [
        ([("at", "18:00", "0", "150")], "steps.0.level"),
        ([("at", "25:00", "0", "10")], "steps.0.at"),
        ([("sunset", "", "999", "10")], "steps.0.offset_minutes"),
        ([], "steps"),
        ([("at", "23:00", "0", "10"), ("at", "19:00", "0", "50")], "steps.1"),
        ([("at", "18:00", "0", "1")] * 30, "steps"),
    ],
)
def test_a_bad_form_names_the_step(rows: list[tuple[str, str, str, str]], field: str) -> None:
    with pytest.raises(ProgramError) as refused:
        program_from_form("p", _form(rows), SITE)
    assert refused.value.field.startswith(field)
