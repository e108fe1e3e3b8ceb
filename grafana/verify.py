"""Checks on built boards without a Grafana: their queries, variables and schema names.

- ``panel_queries`` and ``board_variables`` read a board's JSON the way Grafana does.
- ``interpolate`` substitutes variables as Grafana's InfluxDB datasource does for
  regex filters (one value escaped, several as ``(a|b)``, "All" as ``.*``), plus
  ``$timeFilter``, ``$__interval`` and ``$datasource``.
- ``schema_problems`` names every measurement, tag or field a query uses that the
  store's schema (``telemetry.derived.store_schema``) does not have. Identifiers
  must be double-quoted in the boards' queries, so they can be checked here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from telemetry.derived import Measurement

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
# A source is "measurement" or "retention policy"."measurement".
_SOURCE = r'"[^"]+"(?:\."[^"]+")?'
_FROM = re.compile(rf"\bFROM\s+((?:{_SOURCE}\s*,\s*)*{_SOURCE})", re.IGNORECASE)
ROLLUP_PREFIX = "mean_"  # the hourly rollup's fields: mean_<metric>
_ALIAS = re.compile(r'\bAS\s+"([^"]+)"', re.IGNORECASE)
_REGEX_SPECIAL = re.compile(r"([\\^$.|?*+()\[\]{}/])")
BUILTIN = {"timeFilter", "__interval", "datasource", "col", "tag_group"}


@dataclass(frozen=True, slots=True)
class PanelQuery:
    panel: str
    ref_id: str
    query: str


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    query: str | None  # None for non-query variables (datasource)
    all_value: str | None


def _panels(board: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep theirs inside


def panel_queries(board: Mapping[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(panel["title"], target["refId"], target["query"])
        for panel in _panels(board)
        for target in panel.get("targets", [])
    ]


def board_variables(board: Mapping[str, Any]) -> list[Variable]:
    found = []
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query") if variable.get("type") == "query" else None
        found.append(Variable(variable["name"], query, variable.get("allValue")))
    return found


def used_variables(query: str) -> set[str]:
    return {a or b for a, b in _VARIABLE.findall(query)} - BUILTIN


def regex_value(values: Sequence[str] | None) -> str:
    """How Grafana puts a variable's selection into a regex: None means "All" (``.*``)."""
    if values is None:
        return ".*"
    escaped = [_REGEX_SPECIAL.sub(r"\\\1", value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(
    query: str,
    selection: Mapping[str, Sequence[str] | None],
    *,
    time_filter: str,
    interval: str,
    datasource: str = "pharos-influxdb",
) -> str:
    """``query`` with every variable replaced; an unknown variable raises ``KeyError``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name == "timeFilter":
            return time_filter
        if name == "__interval":
            return interval
        if name == "datasource":
            return datasource
        if name not in selection:
            raise KeyError(f"variable ${name} has no value")
        return regex_value(selection[name])

    return _VARIABLE.sub(replace, query)


def _names(query: str) -> tuple[list[str], set[str], set[str]]:
    """Measurements named after FROM, aliases defined with AS, every quoted identifier."""
    sources = [_QUOTED.findall(item) for c in _FROM.findall(query) for item in c.split(",")]
    measurements = [names[-1] for names in sources if names]
    policies = {name for names in sources for name in names[:-1]}
    aliases = set(_ALIAS.findall(query))
    return measurements, aliases, set(_QUOTED.findall(query)) - policies


def _is_field(measurement: Measurement, name: str) -> bool:
    """A field of the measurement, or its hourly mean in the rollup."""
    fields = measurement.field_names()
    return name in fields or (
        name.startswith(ROLLUP_PREFIX) and name[len(ROLLUP_PREFIX) :] in fields
    )


def schema_problems(query: str, schema: Mapping[str, Measurement]) -> list[str]:
    """What in ``query`` the schema lacks (empty when it names only real things)."""
    measurements, aliases, identifiers = _names(query)
    if not measurements:
        return [f"no measurement named (quote it after FROM): {query}"]
    problems = [f"unknown measurement {m!r}" for m in measurements if m not in schema]
    known = [schema[m] for m in measurements if m in schema]
    for name in sorted(identifiers - set(measurements) - aliases):
        if not known:
            break
        if not all(name in m.tags or _is_field(m, name) for m in known):
            where = ", ".join(m.name for m in known)
            problems.append(f"{name!r} is neither a tag nor a field of {where}")
    return problems
