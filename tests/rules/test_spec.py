"""Rule files: the shipped set loads; bad files are refused with file, line and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.settings import SHIPPED_RULES
from rules.spec import (
    RuleFileError,
    ValueCondition,
    load_rule_file,
    load_rule_files,
    parse_duration,
    parse_rule_text,
)


def test_the_shipped_can_tho_set_loads() -> None:
    loaded = load_rule_file(SHIPPED_RULES)
    ids = {rule.id for rule in loaded.rules}
    assert {"flood-bd1", "flood-bd2", "flood-bd3", "aqi-poor", "lamp-failure"} <= ids
    assert {"day-burning", "gauge-silent", "building-power-factor-low"} <= ids


def test_durations() -> None:
    assert parse_duration("10m") == 600
    assert parse_duration("1h") == 3600
    assert parse_duration("1.5h") == 5400
    assert parse_duration(45) == 45
    with pytest.raises(ValueError, match="duration"):
        parse_duration("ten minutes")


BAD = """\
rules:
  - id: ok
    name: fine
    scope: {kind: flood_gauge}
    when: {value: water_level_m, above: 1.8, for: 10m}
  - id: typo
    name: a misspelt metric
    scope: {kind: flood_gauge}
    when:
      any:
        - {value: water_levl_m, above: 2}
        - {rate: water_level_m, above: 0.1, window: 1x}
    actions:
      - {webhook: ftp://example}
      - {command: override, params: {level: 150, minutes: 10}, target: district}
"""


def test_a_bad_file_names_every_problem_with_its_line_and_field() -> None:
    with pytest.raises(RuleFileError) as caught:
        parse_rule_text(BAD, "city.yaml")
    lines = caught.value.lines()
    assert len(lines) == 4
    assert lines[0].startswith("city.yaml:11: rules[1].when.any[0]: ")
    assert "unknown metric or derived value 'water_levl_m'" in lines[0]
    assert lines[1].startswith("city.yaml:12: rules[1].when.any[1].window: ")
    assert "expected a duration" in lines[1]
    assert lines[2].startswith("city.yaml:14: rules[1].actions[0]: ")
    assert "http" in lines[2]
    assert lines[3].startswith("city.yaml:15: rules[1].actions[1]: ")
    assert "params.level" in lines[3]


def test_a_metric_of_another_kind_is_refused_for_a_scoped_rule() -> None:
    text = (
        "rules:\n  - id: x\n    name: x\n    scope: {kind: flood_gauge}\n"
        "    when: {value: pm25, above: 1}\n"
    )
    with pytest.raises(
        RuleFileError, match=r"x\.yaml:2: rules\[0\]: .*'pm25' for kind flood_gauge"
    ):
        parse_rule_text(text, "x.yaml")


def test_yaml_syntax_errors_and_duplicates() -> None:
    with pytest.raises(RuleFileError, match=r"y\.yaml:3: yaml: "):
        parse_rule_text("rules:\n  - id: a\n  name: [unclosed\n", "y.yaml")
    dup = "rules:\n" + "  - {id: a, name: a, when: {silent: 1m}}\n" * 2
    with pytest.raises(RuleFileError, match="appears twice"):
        parse_rule_text(dup, "d.yaml")


def test_ids_must_be_unique_across_files(tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    two = tmp_path / "two.yaml"
    one.write_text("rules:\n  - {id: a, name: a, when: {silent: 1m}}\n")
    two.write_text("rules:\n  - {id: a, name: again, when: {silent: 2m}}\n")
    with pytest.raises(RuleFileError, match="also in"):
        load_rule_files([one, two])
    missing = tmp_path / "missing.yaml"
    with pytest.raises(RuleFileError, match=r"missing\.yaml"):
        load_rule_files([missing])


def test_conditions_parse_to_their_types() -> None:
    text = "rules:\n  - {id: a, name: a, when: {value: vn_aqi, between: [101, 150], for: 5m}}\n"
    rule = parse_rule_text(text).rules[0]
    assert isinstance(rule.when, ValueCondition)
    assert rule.when.for_ == 300
    assert rule.when.test(120) and not rule.when.test(151)
