"""Flood: each gauge's river level against its BĐ I / II / III lines, alert levels, rain.

Levels come from the gauges' own readings (``flood_gauge``); the lines and the alert
level from ``flood`` (written by rules on each reading, with the station's own lines
from settings). The panel thresholds show the default station's lines (Cần Thơ,
Decision 05/2020/QĐ-TTg) so a gauge without rules data still has a reference.
"""

# ruff: noqa: S608  (InfluxQL built from constants when the board is built; no input)

from __future__ import annotations

from grafana_foundation_sdk.builders import common, dashboard, stat, statetimeline, timeseries
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import units

from grafana.influxql import InfluxQL
from grafana.panels import (
    FLOOD_LEVEL_COLOURS,
    district_group_device,
    flood_level_mappings,
    new_board,
    styled,
    thresholds,
    where,
)
from grafana.settings import BoardOptions, FloodLines

UID = "ioc-flood"
GAUGES = where(device=True)


def _line_steps(lines: FloodLines) -> list[tuple[float | None, str]]:
    levels = (None, lines.bd1_m, lines.bd2_m, lines.bd3_m)
    return list(zip(levels, FLOOD_LEVEL_COLOURS, strict=True))


def _level_against_lines(lines: FloodLines) -> timeseries.Panel:
    return styled(
        timeseries.Panel().thresholds_style(
            common.GraphThresholdsStyleConfig().mode(common_model.GraphThresholdsStyleMode.DASHED)
        ),
        "River level against BĐ I / II / III",
        [
            InfluxQL(
                f'SELECT mean("water_level_m") AS "level" FROM "flood_gauge" WHERE {GAUGES} '
                'GROUP BY time($__interval), "device_id" fill(none)'
            ).alias("$tag_device_id"),
            InfluxQL(
                'SELECT last("bd1_m") AS "BĐ I", last("bd2_m") AS "BĐ II", '
                f'last("bd3_m") AS "BĐ III" FROM "flood" WHERE {GAUGES} '
                'GROUP BY time($__interval), "device_id" fill(previous)'
            ).alias("$tag_device_id $col"),
        ],
        unit=units.Meter,
        steps=thresholds(*_line_steps(lines)),
        description="Metres on the national datum; each station's own alert lines "
        "(from rules), the default station's as dashed thresholds.",
        span=16,
        height=10,
    )


def _level_now(lines: FloodLines) -> stat.Panel:
    return styled(
        stat.Panel(),
        "Level now",
        f'SELECT last("water_level_m") FROM "flood_gauge" WHERE {GAUGES} GROUP BY "device_id"',
        unit=units.Meter,
        steps=thresholds(*_line_steps(lines)),
        description="Each gauge's latest level, coloured by the default station's lines.",
        span=8,
        height=10,
    )


def _alert_levels() -> statetimeline.Panel:
    return styled(
        statetimeline.Panel().mappings(flood_level_mappings()),
        "Alert level per station",
        f'SELECT last("alert_level") FROM "flood" WHERE {GAUGES} '
        'GROUP BY time($__interval), "device_id" fill(previous)',
        unit=units.NoUnit,
        steps=thresholds(*zip((None, 1, 2, 3), FLOOD_LEVEL_COLOURS, strict=True)),
        description="0 none, 1 BĐ I, 2 BĐ II, 3 BĐ III (Decision 05/2020/QĐ-TTg).",
    )


def _rain() -> timeseries.Panel:
    return styled(
        timeseries.Panel().min(0),
        "Rain per hour",
        f'SELECT sum("rain_mm") FROM "flood_gauge" WHERE {GAUGES} '
        'GROUP BY time(1h), "device_id" fill(0)',
        unit=units.Millimeter,
        steps=thresholds((None, "green"), (10, "yellow"), (30, "orange"), (50, "red")),
        description="Rain gauged per hour (mm); 10, 30 and 50 mm/h mark heavy to very heavy rain.",
    )


def board(options: BoardOptions) -> dashboard.Dashboard:
    built = new_board(
        UID,
        "IOC · Flood",
        "River levels against the flood alert lines BĐ I / II / III, alert levels, rain.",
        options,
    )
    for variable in district_group_device("flood_gauge", group=False):
        built = built.with_variable(variable)
    lines = options.flood_lines
    return (
        built.with_panel(_level_against_lines(lines))
        .with_panel(_level_now(lines))
        .with_panel(_alert_levels())
        .with_panel(_rain())
    )
