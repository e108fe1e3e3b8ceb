"""Lighting files: programs, calendars and assignments in one YAML document, checked as
a whole (every problem names its place, ``programs.1.steps.2.level``) and applied in
one transaction, or not at all.

```yaml
programs:
  - {id: default, name: Default, steps: [{event: sunset, offset_minutes: -10, level: 100}, ...]}
calendars:
  - {id: city, name: City, default_program_id: default,
     rules: [{program_id: tet, dates: [2027-02-06]}]}
assignments:
  - {target_type: group, target_id: hoa-binh, calendar_id: city}
```
"""

from __future__ import annotations

from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from control.plan import CalendarSpec, Target, TargetType
from control.program import ProgramError, ProgramSpec, Site
from control.store import assign, save_calendar, save_program


class AssignmentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_type: TargetType = Field(description="group or device")
    target_id: Annotated[str, Field(min_length=1, max_length=63)]
    calendar_id: Annotated[str, Field(min_length=1, max_length=64)]


class LightingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    programs: list[ProgramSpec] = Field(default_factory=list)
    calendars: list[CalendarSpec] = Field(default_factory=list)
    assignments: list[AssignmentSpec] = Field(default_factory=list)


class LightingFileError(ValueError):
    """Every problem of a lighting file, each as ``place: reason``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_lighting_file(text: str) -> LightingFile:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LightingFileError([f"file: not valid YAML ({exc})"]) from None
    try:
        return LightingFile.model_validate(document or {})
    except ValidationError as exc:
        raise LightingFileError(
            [f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()]
        ) from None


def apply_lighting_file(session: Session, lighting: LightingFile, site: Site) -> None:
    """Store everything in ``lighting``; ``LightingFileError`` (nothing kept by the caller's
    rollback) listing the first problem of each section."""
    problems: list[str] = []
    for index, program in enumerate(lighting.programs):
        try:
            save_program(session, program, site)
        except ProgramError as exc:
            problems.append(f"programs.{index}.{exc.field}: {exc.reason}")
    for index, calendar in enumerate(lighting.calendars):
        try:
            save_calendar(session, calendar)
        except ProgramError as exc:
            problems.append(f"calendars.{index}.{exc.field}: {exc.reason}")
    for index, item in enumerate(lighting.assignments):
        try:
            assign(session, Target(item.target_type, item.target_id), item.calendar_id)
        except ProgramError as exc:
            problems.append(f"assignments.{index}.{exc.field}: {exc.reason}")
    if problems:
        raise LightingFileError(problems)
