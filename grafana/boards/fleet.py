"""Fleet health: devices online, last seen, commissioning, open alerts, dead letters.

``fleet`` (per kind and district, every minute) and ``devices`` (per device, with its
position and the age of its newest reading) are written by
``telemetry.fleet_stats``; ``alerts`` (open alerts per severity and district) by rules.
"""

# ruff: noqa: S608  (InfluxQL built from constants when the board is built; no input)

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, dashboard, geomap, table, timeseries
from grafana_foundation_sdk.models import units

from grafana.influxql import InfluxQL
from grafana.panels import (
    device_map,
    new_board,
    styled,
    tag_variable,
    thresholds,
    where,
)
from grafana.settings import BoardOptions

UID = "ioc-fleet"
KIND = '"kind" =~ /^$kind$/'
FLEET = f"{where()} AND {KIND}"
DEVICES = f"{where(device=True)} AND {KIND}"


def _online_share() -> bargauge.Panel:
    return styled(
        bargauge.Panel().min(0).max(100),
        "Devices online by kind",
        'SELECT sum("online") / sum("devices") * 100 FROM (SELECT last("online") AS "online", '
        f'last("devices") AS "devices" FROM "fleet" WHERE {FLEET} GROUP BY "kind", "district") '
        'GROUP BY "kind"',
        unit=units.Percent,
        steps=thresholds((None, "red"), (80, "orange"), (95, "green")),
        description="Share of each kind's devices whose last status is online.",
        span=8,
    )


def _commissioning() -> bargauge.Panel:
    return styled(
        bargauge.Panel().min(0).max(100),
        "Commissioning progress by kind",
        'SELECT sum("commissioned") / sum("devices") * 100 FROM (SELECT last("commissioned") '
        f'AS "commissioned", last("devices") AS "devices" FROM "fleet" WHERE {FLEET} '
        'GROUP BY "kind", "district") GROUP BY "kind"',
        unit=units.Percent,
        steps=thresholds((None, "red"), (50, "orange"), (90, "green")),
        description="Share of each kind's devices commissioned or in service.",
        span=8,
    )


def _open_alerts() -> bargauge.Panel:
    return styled(
        bargauge.Panel().min(0),
        "Open alerts by severity",
        'SELECT sum("open") FROM (SELECT last("open") AS "open" FROM "alerts" '
        f'WHERE {where()} GROUP BY "severity", "district") GROUP BY "severity"',
        unit=units.NoUnit,
        steps=thresholds((None, "green"), (1, "orange"), (10, "red")),
        description="Alerts raised and not yet cleared (rules), per severity.",
        span=8,
    )


def _online_trend() -> timeseries.Panel:
    return styled(
        timeseries.Panel().min(0),
        "Devices online",
        'SELECT sum("online") FROM (SELECT last("online") AS "online" FROM "fleet" '
        f'WHERE {FLEET} GROUP BY time($__interval), "kind", "district") '
        'WHERE $timeFilter GROUP BY time($__interval), "kind" fill(none)',
        unit=units.NoUnit,
        steps=thresholds((None, "green")),
        description="Devices online per kind over time.",
    )


def _dead_letters() -> timeseries.Panel:
    return styled(
        timeseries.Panel().min(0),
        "Dead-lettered payloads",
        'SELECT sum("dead_letters") FROM (SELECT last("dead_letters") AS "dead_letters" '
        f'FROM "fleet" WHERE $timeFilter AND {KIND} GROUP BY time($__interval), "kind", '
        '"district") WHERE $timeFilter GROUP BY time($__interval), "kind" fill(none)',
        unit=units.NoUnit,
        steps=thresholds((None, "green"), (1, "orange"), (100, "red")),
        description="Inputs kept with their reason instead of stored, per kind "
        "(kind 'unregistered' for unknown devices); a rise means new bad input.",
    )


def _last_seen() -> table.Panel:
    return styled(
        table.Panel(),
        "Last seen",
        [
            InfluxQL(
                'SELECT last("last_seen_age_s") AS "last seen", last("online") AS "online" '
                f'FROM "devices" WHERE {DEVICES} GROUP BY "device_id", "kind", "district"'
            ).table()
        ],
        unit=units.DurationSeconds,
        steps=thresholds((None, "green"), (300, "orange"), (900, "red")),
        description="Time since each device's newest reading (orange after 5 min, red "
        "after 15 min); online 1/0.",
        span=12,
        height=10,
    )


def _map(options: BoardOptions) -> geomap.Panel:
    return device_map(
        "Devices by position",
        [
            InfluxQL(
                'SELECT last("latitude") AS "latitude", last("longitude") AS "longitude", '
                f'last("online") AS "online" FROM "devices" WHERE {DEVICES} '
                'GROUP BY "device_id", "kind"'
            )
        ],
        colour_field="online",
        unit=units.NoUnit,
        steps=thresholds((None, "red"), (1, "green")),
        description="Every device with a position: green online, red offline.",
        options=options,
    )


def board(options: BoardOptions) -> dashboard.Dashboard:
    built = new_board(
        UID,
        "IOC · Fleet health",
        "Devices online, last seen, commissioning progress, open alerts, dead letters.",
        options,
    )
    return (
        built.with_variable(tag_variable("district", "District", "fleet", "district"))
        .with_variable(tag_variable("kind", "Kind", "fleet", "kind"))
        .with_variable(
            tag_variable(
                "device",
                "Device",
                "devices",
                "device_id",
                where_clause=f'"district" =~ /^$district$/ AND {KIND}',
            )
        )
        .with_panel(_online_share())
        .with_panel(_commissioning())
        .with_panel(_open_alerts())
        .with_panel(_online_trend())
        .with_panel(_dead_letters())
        .with_panel(_last_seen())
        .with_panel(_map(options))
    )
