"""Every panel's queries return data from a real InfluxDB filled by a simulator run.

For each board: each template variable's query runs (others on "All") and must list
values. With every variable on "All", every target of every panel must return at
least one non-null value; with each single value of each variable in turn, every
panel must (a panel counting faults may rightly have one target empty for a healthy
device, as long as the panel shows something). A panel that names a measurement,
tag or field the schema lacks fails before any of that.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from grafana.boards import BOARDS, Board, board_by_uid
from grafana.build import board_json
from grafana.settings import BoardOptions
from grafana.verify import (
    board_variables,
    interpolate,
    panel_queries,
    schema_problems,
    used_variables,
)
from telemetry.derived import store_schema
from tests.grafana.scenario import City

pytestmark = pytest.mark.broker
INTERVAL = "10m"


def run(city: City, query: str) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{city.influx_url}/query", data={"q": query, "db": city.database}, timeout=30
    )
    response.raise_for_status()
    result = response.json()["results"][0]
    assert "error" not in result, f"{query}: {result.get('error')}"
    series: list[dict[str, Any]] = result.get("series", [])
    return series


def has_values(series: list[dict[str, Any]]) -> bool:
    return any(v is not None for s in series for row in s["values"] for v in row[1:])


def variable_values(city: City, board: dict[str, Any]) -> dict[str, list[str]]:
    everything: dict[str, list[str] | None] = {v.name: None for v in board_variables(board)}
    found = {}
    for variable in board_variables(board):
        if variable.query is None:
            continue
        query = interpolate(
            variable.query, everything, time_filter=city.time_filter(), interval=INTERVAL
        )
        found[variable.name] = sorted(
            str(row[1]) for series in run(city, query) for row in series["values"]
        )
    return found


def problems(city: City, document: dict[str, Any]) -> list[str]:
    """Every way a board fails the checks of the module docstring (empty: it passes)."""
    schema = store_schema()
    queries = panel_queries(document)
    if not queries:
        return ["a board without queries"]
    found = [
        f"{query.panel} [{query.ref_id}]: {problem}"
        for query in queries
        for problem in schema_problems(query.query, schema)
    ]
    if found:
        return found
    values = variable_values(city, document)
    found += [f"variable ${name} lists no values" for name, listed in values.items() if not listed]
    everything: dict[str, list[str] | None] = {v.name: None for v in board_variables(document)}
    selections = [everything] + [
        everything | {name: [value]} for name, listed in values.items() for value in listed
    ]
    for selection in selections:
        chosen = {k: v for k, v in selection.items() if v is not None}
        shown: dict[str, bool] = {}
        for query in queries:
            if chosen and not (used_variables(query.query) & set(chosen)):
                continue  # this selection does not change the query
            text = interpolate(
                query.query, selection, time_filter=city.time_filter(), interval=INTERVAL
            )
            data = has_values(run(city, text))
            shown[query.panel] = shown.get(query.panel, False) or data
            if not chosen and not data:
                found.append(f"{query.panel} [{query.ref_id}] returns nothing with All")
        found += [
            f"{panel} returns nothing with {chosen}"
            for panel, ok in shown.items()
            if chosen and not ok
        ]
    return found


@pytest.mark.parametrize("board", BOARDS, ids=lambda b: b.uid)
def test_every_panel_returns_data_for_every_variable_value(city: City, board: Board) -> None:
    assert problems(city, board_json(board, BoardOptions())) == []


def test_a_panel_without_data_or_with_a_wrong_field_is_caught(city: City) -> None:
    flood = board_json(board_by_uid("ioc-flood"), BoardOptions())
    rain = next(p for p in flood["panels"] if p["title"] == "Rain per hour")
    original = rain["targets"][0]["query"]
    rain["targets"][0]["query"] = original.replace('"rain_mm"', '"rainfall_mm"')
    assert problems(city, flood) == [
        "Rain per hour [A]: 'rainfall_mm' is neither a tag nor a field of flood_gauge"
    ]
    rain["targets"][0]["query"] = original.replace(
        "$timeFilter", '$timeFilter AND "battery_v" > 100'
    )
    found = problems(city, flood)
    assert "Rain per hour [A] returns nothing with All" in found
    assert "Rain per hour returns nothing with {'district': ['Ninh Kiều']}" in found


def test_the_variables_list_what_the_simulator_sent(city: City) -> None:
    lighting = board_json(BOARDS[0], BoardOptions())
    values = variable_values(city, lighting)
    assert values["district"] == ["Cái Răng", "Ninh Kiều"]
    lamps = sorted(s.device_id for s in city.specs if s.kind.value == "streetlight")
    assert values["device"] == lamps
    assert values["group"] == [
        "cr-duong-quang-trung",
        "nk-dai-lo-hoa-binh",
        "nk-duong-tran-hung-dao",
    ]


def test_the_derived_measurements_come_from_the_projects_writers(city: City) -> None:
    assert city.derived_from == {
        "aqi": "rules.service.RulesService",
        "flood": "rules.service.RulesService",
        "alerts": "rules.service.RulesService",
        "energy": "control.energy_report.EnergyReporter",
        "fleet": "telemetry.fleet_stats.FleetStatsWriter",
        "devices": "telemetry.fleet_stats.FleetStatsWriter",
    }
