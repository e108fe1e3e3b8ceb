"""Names a rule file uses that must exist: a rule scoped to a group, device or district
that nobody has, or a command sent to an unknown group, would match nothing and stay
silent for ever; ``unknown_names`` makes each of them a problem at its line instead.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from pharos_core.source_file import FileProblem, LineMap, field_name, line_for
from rules.spec import CommandActionSpec, RuleFile


@dataclass(frozen=True, slots=True)
class KnownNames:
    """What exists; ``None`` for what could not be looked up (it is not checked)."""

    groups: Collection[str] | None = None
    devices: Collection[str] | None = None
    districts: Collection[str] | None = None


def unknown_names(rule_file: RuleFile, known: KnownNames, lines: LineMap) -> list[FileProblem]:
    """Every scope group, device and district and every command target group of
    ``rule_file`` not in ``known``, at its line (``lines`` of the file's YAML)."""
    problems: list[FileProblem] = []

    def check(value: str | None, names: Collection[str] | None, what: str, *path: object) -> None:
        if value is not None and names is not None and value not in names:
            full = ("rules", *path)
            problems.append(
                FileProblem(line_for(full, lines), field_name(full), f"unknown {what} {value!r}")
            )

    for index, rule in enumerate(rule_file.rules):
        check(rule.scope.group, known.groups, "group", index, "scope", "group")
        check(rule.scope.device, known.devices, "device", index, "scope", "device")
        check(rule.scope.district, known.districts, "district", index, "scope", "district")
        for number, action in enumerate(rule.actions):
            if isinstance(action, CommandActionSpec):
                check(action.group, known.groups, "group", index, "actions", number, "group")
    return problems
