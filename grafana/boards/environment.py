"""Environment: air quality by district in the VN_AQI colours, PM trends, a map of monitors.

VN_AQI and its category come from ``aqi`` (written by rules each hour per monitor);
PM2.5 and PM10 from the monitors' and smart poles' own readings. Colours and
thresholds are Decision 1459/QĐ-TCMT's categories (DOMAIN.md); PM thresholds are the
concentrations at the category bounds of the AQI breakpoint table.
"""

# ruff: noqa: S608  (InfluxQL built from constants when the board is built; no input)

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, dashboard, geomap, stat, timeseries
from grafana_foundation_sdk.models import units

from grafana.influxql import InfluxQL
from grafana.panels import (
    AQI_CATEGORIES,
    aqi_mappings,
    aqi_thresholds,
    device_map,
    district_group_device,
    new_board,
    styled,
    thresholds,
    where,
)
from grafana.settings import BoardOptions

UID = "ioc-environment"
MONITORS = '"env_monitor", "smart_pole"'
MONITOR_KINDS = "(\"kind\" = 'env_monitor' OR \"kind\" = 'smart_pole')"
# Concentrations at AQI 51, 101, 151, 201, 301 (breakpoint table, DOMAIN.md).
PM25_BOUNDS = (25, 50, 80, 150, 250)
PM10_BOUNDS = (50, 150, 250, 350, 420)


def _pm_thresholds(bounds: tuple[int, ...]) -> list[tuple[float | None, str]]:
    colours = [colour for _, colour, _ in AQI_CATEGORIES]
    return [(None, colours[0]), *zip(bounds, colours[1:], strict=True)]


def _aqi_by_district_now() -> bargauge.Panel:
    return styled(
        bargauge.Panel().min(0).max(500),
        "VN_AQI by district (now)",
        'SELECT max("vn_aqi") FROM (SELECT last("vn_aqi") AS "vn_aqi" FROM "aqi" '
        f'WHERE {where(device=True)} GROUP BY "device_id", "district") '
        'GROUP BY "district"',
        unit=units.NoUnit,
        steps=aqi_thresholds(),
        description="The worst monitor's latest hourly VN_AQI per district, in the "
        "official category colours.",
        span=8,
    )


def _worst_category() -> stat.Panel:
    return styled(
        stat.Panel().mappings(aqi_mappings()),
        "Air quality category (worst monitor)",
        f'SELECT max("vn_aqi") FROM (SELECT last("vn_aqi") AS "vn_aqi" FROM "aqi" '
        f'WHERE {where(device=True)} GROUP BY "device_id")',
        unit=units.NoUnit,
        steps=aqi_thresholds(),
        description="Good, moderate, poor, bad, very bad or hazardous (Decision 1459).",
        span=4,
    )


def _aqi_trend() -> timeseries.Panel:
    return styled(
        timeseries.Panel().min(0),
        "VN_AQI by district",
        'SELECT max("vn_aqi") FROM "aqi" '
        f'WHERE {where(device=True)} GROUP BY time($__interval), "district" fill(none)',
        unit=units.NoUnit,
        steps=aqi_thresholds(),
        description="Hourly VN_AQI, the worst monitor of each district.",
    )


def _pm_trend(field: str, title: str, bounds: tuple[int, ...]) -> timeseries.Panel:
    return styled(
        timeseries.Panel().min(0),
        title,
        f'SELECT mean("{field}") FROM {MONITORS} WHERE {where(device=True)} '
        'GROUP BY time($__interval), "district" fill(none)',
        unit=units.MicrogramPerCubicMeter,
        steps=thresholds(*_pm_thresholds(bounds)),
        description="Mean concentration of the district's monitors and smart poles; "
        "thresholds at the AQI category bounds.",
    )


def _map(options: BoardOptions) -> geomap.Panel:
    return device_map(
        "Monitors coloured by VN_AQI",
        [
            InfluxQL(
                'SELECT last("latitude") AS "latitude", last("longitude") AS "longitude" '
                f'FROM "devices" WHERE {where(device=True)} AND {MONITOR_KINDS} '
                'GROUP BY "device_id"'
            ),
            InfluxQL(
                f'SELECT last("vn_aqi") AS "vn_aqi" FROM "aqi" WHERE {where(device=True)} '
                'GROUP BY "device_id"'
            ),
        ],
        colour_field="vn_aqi",
        unit=units.NoUnit,
        steps=aqi_thresholds(),
        description="Each monitor at its position, coloured by its latest VN_AQI.",
        options=options,
    )


def board(options: BoardOptions) -> dashboard.Dashboard:
    built = new_board(
        UID,
        "IOC · Environment",
        "Air quality: VN_AQI by district in the official colours, PM2.5 and PM10, "
        "monitors on a map.",
        options,
    )
    for variable in district_group_device("env_monitor", group=False):
        built = built.with_variable(variable)
    return (
        built.with_panel(_aqi_by_district_now())
        .with_panel(_worst_category())
        .with_panel(_map(options))
        .with_panel(_aqi_trend())
        .with_panel(_pm_trend("pm25", "PM2.5", PM25_BOUNDS))
        .with_panel(_pm_trend("pm10", "PM10", PM10_BOUNDS))
    )
