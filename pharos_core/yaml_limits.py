"""Bounds on a YAML text people send (rule files, through the API too), checked before
anything builds it.

PyYAML's safe loader still expands aliases (a "billion laughs" file of 81 aliases is
10⁹ nodes to validate), recurses once per nesting level (100,000 ``[`` is a
``RecursionError``), turns a 5,000-digit number into a ``ValueError`` (Python's limit
on integer digits) and keeps the last of two equal keys without a word.
``yaml_limit_problems`` walks the parser's events only (no recursion, no
construction, linear in the text) and names each such problem with its line and
field: too large, too deep, too many expanded nodes, a tag other than YAML's plain
ones (``!!python/object``), an over-long number, a key given twice. Syntax errors are
left to the loader, which reports them with their line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

MAX_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_NODES = 200_000  # after alias expansion; the whole Cần Thơ rule set is ~2,000
MAX_NUMBER_DIGITS = 100
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
) | {"!"}
_NUMBER = re.compile(r"[-+]?(0[xob])?[0-9_.eE+-]+")


@dataclass(frozen=True, slots=True)
class YamlProblem:
    line: int | None
    field: str
    reason: str


@dataclass(slots=True)
class _Frame:
    is_mapping: bool
    anchor: str | None
    path: tuple[Any, ...]
    nodes: int = 1
    index: int = 0  # items seen (a mapping's keys and values both count)
    key: Any = None
    keys: set[str] = field(default_factory=set)


def _field(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "file"


def yaml_limit_problems(text: str) -> list[YamlProblem]:
    """What makes ``text`` unsafe to load (empty when it is within every bound)."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_BYTES:
        return [YamlProblem(None, "file", f"{size} bytes; at most {MAX_BYTES} are read")]
    problems: list[YamlProblem] = []
    anchors: dict[str, int] = {}
    stack: list[_Frame] = []
    total = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            line = event.start_mark.line + 1 if event.start_mark is not None else 1
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                path = _child_path(stack)
                _check_tag(event.tag, line, path, problems)
                _advance(stack, None)
                stack.append(_Frame(isinstance(event, yaml.MappingStartEvent), event.anchor, path))
                if len(stack) > MAX_DEPTH:
                    reason = f"nested deeper than {MAX_DEPTH} levels"
                    return [*problems, YamlProblem(line, _field(path), reason)]
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                done = stack.pop()
                if done.anchor is not None:
                    anchors[done.anchor] = done.nodes
                if stack:
                    stack[-1].nodes += done.nodes
                else:
                    total += done.nodes
            elif isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
                path = _child_path(stack)
                if isinstance(event, yaml.AliasEvent):
                    nodes = anchors.get(event.anchor or "", 1)
                else:
                    nodes = 1
                    _check_scalar(event, line, path, stack, problems)
                    if event.anchor is not None:
                        anchors[event.anchor] = 1
                if stack:
                    stack[-1].nodes += nodes
                else:
                    total += nodes
                _advance(stack, event.value if isinstance(event, yaml.ScalarEvent) else None)
            else:
                continue
            expanded = total + sum(frame.nodes for frame in stack)
            if expanded > MAX_NODES:
                reason = f"more than {MAX_NODES} values once its aliases are expanded"
                return [*problems, YamlProblem(line, _field(_child_path(stack)), reason)]
    except yaml.YAMLError:
        return problems  # the loader reports the syntax error at its line
    return problems


def _child_path(stack: list[_Frame]) -> tuple[Any, ...]:
    if not stack:
        return ()
    top = stack[-1]
    if top.is_mapping:
        return top.path if top.index % 2 == 0 else (*top.path, top.key)
    return (*top.path, top.index)


def _advance(stack: list[_Frame], scalar: str | None) -> None:
    if not stack:
        return
    top = stack[-1]
    if top.is_mapping and top.index % 2 == 0:
        top.key = scalar if scalar is not None else "?"
    top.index += 1


def _check_tag(tag: str | None, line: int, path: tuple[Any, ...], out: list[YamlProblem]) -> None:
    if tag is not None and tag not in _PLAIN_TAGS:
        out.append(YamlProblem(line, _field(path), f"tag {tag!r} is not allowed here"))


def _check_scalar(
    event: yaml.ScalarEvent,
    line: int,
    path: tuple[Any, ...],
    stack: list[_Frame],
    out: list[YamlProblem],
) -> None:
    _check_tag(event.tag, line, path, out)
    value = event.value
    plain = event.style is None
    if plain and len(value) > MAX_NUMBER_DIGITS and _NUMBER.fullmatch(value):
        reason = f"a number of {len(value)} characters; at most {MAX_NUMBER_DIGITS}"
        out.append(YamlProblem(line, _field(path), reason))
    top = stack[-1] if stack else None
    if top is not None and top.is_mapping and top.index % 2 == 0 and value != "<<":
        if value in top.keys:
            key_path = _field((*top.path, value))
            out.append(YamlProblem(line, key_path, f"key {value!r} appears twice"))
        top.keys.add(value)
