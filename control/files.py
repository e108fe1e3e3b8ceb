"""Lighting files: programs, calendars and assignments in one YAML document, checked as
a whole (every problem as ``file:line: field: reason``, all of them in one pass:
``lighting.yaml:14: programs[1].steps[2].level: …``) and applied in one transaction,
or not at all. Unknown names (a program, calendar, group or lamp) are problems too.

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

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from control.models import CalendarRow, ProgramRow
from control.plan import CalendarSpec, Target, TargetType
from control.program import ProgramError, ProgramSpec, Site
from control.store import assign, check_target, save_calendar, save_program
from pharos_core.source_file import (
    FileError,
    FileProblem,
    LineMap,
    field_name,
    line_for,
    validation_problems,
    yaml_with_lines,
)


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


class LightingFileError(FileError):
    """Every problem of a lighting file, each as ``file:line: field: reason``."""


_SECTIONS: dict[str, type[BaseModel]] = {
    "programs": ProgramSpec,
    "calendars": CalendarSpec,
    "assignments": AssignmentSpec,
}


def _document(text: str, source: str) -> tuple[dict[str, Any], LineMap]:
    try:
        data, lines = yaml_with_lines(text, source)
    except FileError as exc:
        raise LightingFileError(source, exc.problems) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        reason = "expected a mapping with programs, calendars and assignments"
        raise LightingFileError(source, [FileProblem(1, "file", reason)])
    return data, lines


def parse_lighting_file(text: str, source: str = "<lighting>") -> LightingFile:
    """The file's programs, calendars and assignments, checked as a whole (no database)."""
    data, lines = _document(text, source)
    try:
        return LightingFile.model_validate(data)
    except ValidationError as exc:
        raise LightingFileError(source, validation_problems(exc, lines)) from None


def load_lighting_file(session: Session, text: str, source: str, site: Site) -> LightingFile:
    """Check and store a lighting file in one pass: every item is validated on its own,
    every name it uses is looked up (programs, calendars, groups, lamps; the file's own
    first), the valid items are stored (a program's steps checked all year at ``site``),
    and ``LightingFileError`` lists every problem found (the caller rolls back: nothing
    of a bad file is kept)."""
    data, lines = _document(text, source)
    problems: list[FileProblem] = []
    for key in data:
        if key not in _SECTIONS:
            path = (key,)
            reason = f"unknown section; a lighting file has {', '.join(_SECTIONS)}"
            problems.append(FileProblem(line_for(path, lines), field_name(path), reason))
    raw: dict[str, list[Any]] = {}
    valid: dict[str, dict[int, Any]] = {name: {} for name in _SECTIONS}
    for name, model in _SECTIONS.items():
        items = data.get(name) or []
        if not isinstance(items, list):
            problems.append(FileProblem(line_for((name,), lines), name, "expected a list"))
            items = []
        raw[name] = items
        for index, item in enumerate(items):
            try:
                valid[name][index] = model.model_validate(item)
            except ValidationError as exc:
                problems += validation_problems(exc, lines, prefix=(name, index))
    _store(session, raw, valid, lines, site, problems)
    if problems:
        raise LightingFileError(source, problems)
    return LightingFile(
        programs=list(valid["programs"].values()),
        calendars=list(valid["calendars"].values()),
        assignments=list(valid["assignments"].values()),
    )


def apply_lighting_file(session: Session, lighting: LightingFile, site: Site) -> None:
    """Store everything in ``lighting`` (already parsed); ``LightingFileError`` (nothing
    kept by the caller's rollback) listing every problem, by section and index."""
    valid: dict[str, dict[int, Any]] = {
        name: dict(enumerate(getattr(lighting, name))) for name in _SECTIONS
    }
    raw = {
        name: [spec.model_dump(mode="json") for spec in items.values()]
        for name, items in valid.items()
    }
    problems: list[FileProblem] = []
    _store(session, raw, valid, {}, site, problems)
    if problems:
        raise LightingFileError("<lighting>", problems)


def _at(lines: LineMap, reason: str, *path: Any) -> FileProblem:
    return FileProblem(line_for(path, lines), field_name(path), reason)


def _text(item: object, key: str) -> str | None:
    value = item.get(key) if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


def _store(
    session: Session,
    raw: dict[str, list[Any]],
    valid: dict[str, dict[int, Any]],
    lines: LineMap,
    site: Site,
    problems: list[FileProblem],
) -> None:
    """Names looked up on every item (valid or not: one pass shows them all), then the
    valid items stored in order (programs, calendars, assignments). A name the file
    itself defines counts as known: if that item is invalid, its own problem says so.
    Problems are added to ``problems`` (the file's so far: nothing more is stored once
    there is one, as a calendar may name a program that was not)."""
    for index, program in valid["programs"].items():
        try:
            save_program(session, program, site)
        except ProgramError as exc:
            problems.append(_problem("programs", index, exc, lines))
    in_file = {name: {_text(i, "id") for i in raw[name]} for name in ("programs", "calendars")}

    def program_known(program_id: str) -> bool:
        return program_id in in_file["programs"] or session.get(ProgramRow, program_id) is not None

    calendars_ok: set[int] = set()
    for index, item in enumerate(raw["calendars"]):
        named: list[tuple[tuple[Any, ...], str | None]] = [
            (("default_program_id",), _text(item, "default_program_id"))
        ]
        rules = item.get("rules") if isinstance(item, dict) else None
        for number, rule in enumerate(rules if isinstance(rules, list) else []):
            named.append((("rules", number, "program_id"), _text(rule, "program_id")))
        unknown = [
            _at(lines, f"no program {program_id!r}", "calendars", index, *where)
            for where, program_id in named
            if program_id is not None and not program_known(program_id)
        ]
        problems += unknown
        if not unknown:
            calendars_ok.add(index)
    if not problems:  # a calendar's programs are all stored only when nothing failed
        for index, calendar in valid["calendars"].items():
            if index in calendars_ok:
                save_calendar(session, calendar)
    for index, item in enumerate(raw["assignments"]):
        found = True
        calendar_id = _text(item, "calendar_id")
        known = calendar_id in in_file["calendars"] or (
            calendar_id is not None and session.get(CalendarRow, calendar_id) is not None
        )
        if calendar_id is not None and not known:
            problems.append(
                _at(lines, f"no calendar {calendar_id!r}", "assignments", index, "calendar_id")
            )
            found = False
        target_type, target_id = _text(item, "target_type"), _text(item, "target_id")
        if target_type in {t.value for t in TargetType} and target_id is not None:
            try:
                check_target(session, Target(TargetType(target_type), target_id))
            except ProgramError as exc:
                problems.append(_problem("assignments", index, exc, lines))
                found = False
        if found and not problems and index in valid["assignments"]:
            spec = valid["assignments"][index]
            assign(session, Target(spec.target_type, spec.target_id), spec.calendar_id)


def _problem(section: str, index: int, exc: ProgramError, lines: LineMap) -> FileProblem:
    parts = tuple(int(p) if p.isdigit() else p for p in exc.field.split("."))
    return _at(lines, exc.reason, section, index, *parts)
