"""Hostile rule files: every one is a ``file:line: field: reason``, never a crash or a hang.

Alias bombs, deep nesting, huge files, ``!!python`` tags, over-long numbers, duplicate
keys, bytes that are not UTF-8. Each case must be refused quickly (the whole module
runs in well under a second; a hang would be the test timing out in CI).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pharos_core.yaml_limits import MAX_BYTES, MAX_DEPTH
from rules.spec import RuleFileError, load_rule_file, parse_rule_text

GOOD = """rules:
  - id: pm25-high
    name: PM2.5 high
    scope: {kind: env_monitor}
    when: {value: pm25, above: 55}
"""

BILLION_LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)),
        "rules: *i",
    ]
)


def _refused(text: str) -> list[str]:
    started = time.perf_counter()
    with pytest.raises(RuleFileError) as caught:
        parse_rule_text(text, "hostile.yaml")
    assert time.perf_counter() - started < 2, "refused, but slowly"
    return caught.value.lines()


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    [line] = _refused(BILLION_LAUGHS)
    assert line.startswith("hostile.yaml:")
    assert "values once its aliases are expanded" in line


def test_deep_nesting_is_refused_naming_its_line() -> None:
    [line] = _refused("rules: " + "[" * 100_000 + "]" * 100_000)
    assert line.startswith("hostile.yaml:1: rules")
    assert f"deeper than {MAX_DEPTH}" in line


def test_a_python_tag_is_refused_naming_its_field() -> None:
    text = GOOD + "  - id: x\n    when: !!python/object/apply:os.system [echo owned]\n"
    lines = _refused(text)
    assert (
        "hostile.yaml:7: rules[1].when: tag 'tag:yaml.org,2002:python/object/apply:os.system'"
        in (lines[0])
    )


def test_a_huge_number_is_refused_not_a_value_error() -> None:
    text = GOOD.replace("above: 55", "above: " + "9" * 5000)
    [line] = _refused(text)
    assert line.startswith("hostile.yaml:5: rules[0].when.above: a number of 5000 characters")


def test_a_key_given_twice_is_refused_at_the_second() -> None:
    text = GOOD.replace("above: 55}", "above: 55, above: 5}")
    [line] = _refused(text)
    assert line == "hostile.yaml:5: rules[0].when.above: key 'above' appears twice"


def test_a_huge_text_or_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    huge = "#" * (MAX_BYTES + 1)
    [line] = _refused(huge)
    assert line.startswith("hostile.yaml: file:") and "at most" in line
    path = tmp_path / "huge.yaml"
    path.write_text(huge, encoding="utf-8")
    with pytest.raises(RuleFileError) as caught:
        load_rule_file(path)
    assert "at most" in str(caught.value)


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.replace("pm25-high", "bụi").encode("utf-16"))
    with pytest.raises(RuleFileError) as caught:
        load_rule_file(path)
    assert f"{path}: file: not UTF-8" in str(caught.value)


def test_a_few_anchors_for_shared_settings_are_still_fine() -> None:
    text = """rules:
  - id: pm25-high
    name: PM2.5 high
    scope: &monitors {kind: env_monitor}
    when: {value: pm25, above: 55}
  - id: pm10-high
    name: PM10 high
    scope: *monitors
    when: {value: pm10, above: 150}
"""
    parsed = parse_rule_text(text, "ok.yaml")
    assert [r.id for r in parsed.rules] == ["pm25-high", "pm10-high"]
