"""File problems: YAML line numbers, pydantic errors at their lines, the one format."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from pharos_core.source_file import (
    FileError,
    FileProblem,
    validation_problems,
    yaml_with_lines,
)


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: int


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Item]


def test_each_pydantic_error_is_at_its_own_line_and_all_are_kept() -> None:
    text = "items:\n  - level: 1\n  - level: high\n  - {level: 2, colour: red}\n"
    data, lines = yaml_with_lines(text, "f.yaml")
    with pytest.raises(ValidationError) as caught:
        Doc.model_validate(data)
    error = FileError("f.yaml", validation_problems(caught.value, lines))
    assert error.lines() == [
        "f.yaml:3: items[1].level: Input should be a valid integer, unable to parse string as "
        "an integer",
        "f.yaml:4: items[2].colour: Extra inputs are not permitted",
    ]


def test_dates_stay_text_so_an_impossible_one_is_not_a_parser_crash() -> None:
    data, _ = yaml_with_lines("when: 2027-02-30\nat: 2026-01-01 10:00:00\n", "f.yaml")
    assert data == {"when": "2027-02-30", "at": "2026-01-01 10:00:00"}


def test_broken_yaml_names_the_line_where_the_parser_stopped() -> None:
    with pytest.raises(FileError) as caught:
        yaml_with_lines("a: 1\nb: [1,\n", "f.yaml")
    (line,) = caught.value.lines()
    assert line.startswith("f.yaml:3: yaml: not valid YAML: ")


def test_a_problem_without_a_line_has_no_line_number() -> None:
    assert FileProblem(None, "file", "cannot read").text("f.yaml") == "f.yaml: file: cannot read"
