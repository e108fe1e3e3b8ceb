"""Problems in files people write (rule, lighting, scenario and settings files).

Every problem reads ``file:line: field: reason`` (``rules.yaml:12: rules[3].when.above:
Input should be a valid number``), and a file's problems are reported together, so one
run of the command shows everything to fix. ``yaml_with_lines`` parses YAML and keeps
the line of every key and item (a pydantic error's ``loc`` then finds its line);
``validation_problems`` turns a pydantic ``ValidationError`` into ``FileProblem``\\ s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

Path_ = tuple[Any, ...]  # keys and indexes from the document's root
LineMap = dict[Path_, int]
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


@dataclass(frozen=True, slots=True)
class FileProblem:
    line: int | None  # 1-based; None when the problem has no place in the file
    field: str  # ``rules[3].when.above``, or ``file`` / ``yaml`` for the whole file
    reason: str
    source: str | None = None  # the file, when an error gathers several files

    def text(self, source: str) -> str:
        where = f":{self.line}" if self.line is not None else ""
        return f"{self.source or source}{where}: {self.field}: {self.reason}"


class FileError(ValueError):
    """A file that cannot be used; ``problems`` has every problem found, in file order."""

    def __init__(self, source: str, problems: Iterable[FileProblem]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p.source or source, p.line or 0))
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One ``file:line: field: reason`` per problem."""
        return [problem.text(self.source) for problem in self.problems]


class _Loader(yaml.SafeLoader):
    """Safe YAML that leaves dates and times as text: the models parse them, so an
    impossible date (2027-02-30) is a problem at its line, not a crash in the parser."""

    yaml_implicit_resolvers = {  # noqa: RUF012 (PyYAML's own class attribute)
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def yaml_with_lines(text: str, source: str) -> tuple[Any, LineMap]:
    """The document (safe YAML, dates as text) and the line of each key and item;
    ``FileError`` when the text is not YAML (naming the line where the parser stopped)."""
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FileError(source, [FileProblem(line, "yaml", f"not valid YAML: {problem}")]) from None
    lines: LineMap = {}
    if node is not None:
        _lines_of(node, (), lines)
    return data, lines


def _lines_of(node: yaml.Node, path: Path_, out: LineMap) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value
            _lines_of(value, (*path, name), out)
            out[(*path, name)] = key.start_mark.line + 1  # a key's line, not its value's
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines_of(item, (*path, index), out)


def line_for(path: Path_, lines: LineMap) -> int | None:
    """The line of ``path``, else of its nearest ancestor in the file."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def field_name(path: Path_) -> str:
    """``("rules", 3, "when")`` → ``rules[3].when``; the empty path is ``file``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "file"


def reason_of(message: str) -> str:
    """A pydantic message without the prefix it adds to a validator's own words."""
    for prefix in _PYDANTIC_PREFIXES:
        message = message.removeprefix(prefix)
    return message


def validation_problems(
    exc: ValidationError,
    lines: LineMap,
    *,
    data_path: Callable[[Path_], Path_] = lambda loc: loc,
    prefix: Path_ = (),
) -> list[FileProblem]:
    """Each error of ``exc`` at its line. ``data_path`` maps pydantic's ``loc`` to the
    document's path (dropping union tags); ``prefix`` is where the model sat in it."""
    problems = []
    for error in exc.errors():
        path = (*prefix, *data_path(tuple(error["loc"])))
        problems.append(
            FileProblem(line_for(path, lines), field_name(path), reason_of(error["msg"]))
        )
    return problems


__all__ = [
    "FileError",
    "FileProblem",
    "LineMap",
    "field_name",
    "line_for",
    "reason_of",
    "validation_problems",
    "yaml_with_lines",
]
