"""Lighting and energy: what the energy manager watches.

Lamps on and their levels by district, power by district, today's kWh against the
baseline, savings in kWh, VND and CO2 (``energy``, written by control), and lamps
failing (lit, drawing nothing) or lit by hour, where lit hours in daylight are
lamps burning by day.
"""

# ruff: noqa: S608  (InfluxQL built from constants when the board is built; no input)

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, dashboard, stat, timeseries
from grafana_foundation_sdk.models import units

from grafana.influxql import InfluxQL
from grafana.panels import district_group_device, new_board, styled, thresholds, where
from grafana.settings import BoardOptions

UID = "ioc-lighting"
LAMPS = '"streetlight", "smart_pole"'
HOURLY_LAMPS = '"hourly"."streetlight", "hourly"."smart_pole"'  # the rollup's retention policy
LAMP_KINDS = "(\"kind\" = 'streetlight' OR \"kind\" = 'smart_pole')"
ENERGY_WHERE = '$timeFilter AND "district" =~ /^$district$/ AND "group" =~ /^$group$/'


def _lamps_on_now() -> stat.Panel:
    return styled(
        stat.Panel(),
        "Lamps on now",
        'SELECT sum("lamps_on") FROM (SELECT last("lamps_on") AS "lamps_on" FROM "fleet" '
        f'WHERE {where()} AND {LAMP_KINDS} GROUP BY "kind", "district")',
        unit=units.NoUnit,
        steps=thresholds((None, "text")),
        description="Lamps whose last reading says lit (fleet statistics, every minute).",
        span=4,
        height=5,
    )


def _saved(field: str, title: str, unit: str, description: str) -> stat.Panel:
    return styled(
        stat.Panel().time_from("now/d"),
        title,
        f'SELECT sum("{field}") FROM (SELECT last("{field}") AS "{field}" FROM "energy" '
        f'WHERE {ENERGY_WHERE} GROUP BY "group", "district")',
        unit=unit,
        steps=thresholds((None, "red"), (0, "green")),
        description=description,
        span=4,
        height=5,
    )


def _lamps_on_by_district() -> timeseries.Panel:
    return styled(
        timeseries.Panel(),
        "Lamps on by district",
        'SELECT sum("lamps_on") FROM (SELECT last("lamps_on") AS "lamps_on" FROM "fleet" '
        f'WHERE {where()} AND {LAMP_KINDS} GROUP BY time($__interval), "kind", "district") '
        'WHERE $timeFilter GROUP BY time($__interval), "district" fill(none)',
        unit=units.NoUnit,
        steps=thresholds((None, "green")),
        description="Lamps lit per district (fleet statistics).",
    )


def _levels_by_district() -> timeseries.Panel:
    return styled(
        timeseries.Panel().min(0).max(100),
        "Light level by district",
        f'SELECT mean("dim_level") FROM {LAMPS} '
        f"WHERE {where(group=True, device=True)} "
        'GROUP BY time($__interval), "district" fill(none)',
        unit=units.Percent,
        steps=thresholds((None, "blue"), (40, "green"), (90, "yellow")),
        description="Mean light level the lamps report (0 = off, 100 = full).",
    )


def _power_by_district() -> timeseries.Panel:
    # The hourly rollup holds one mean per lamp and hour, so their sum per hour is the
    # district's power without a per-lamp subquery (which costs tens of times a scan
    # of the day at city scale).
    return styled(
        timeseries.Panel().min(0),
        "Lighting power by district (hourly)",
        f'SELECT sum("mean_power_w") FROM {HOURLY_LAMPS} '
        f"WHERE {where(group=True, device=True)} "
        'GROUP BY time(1h), "district" fill(none)',
        unit=units.Watt,
        steps=thresholds((None, "green")),
        description="Sum of the lamps' hourly mean power per district (the hourly "
        "rollup: the current hour appears once it ends).",
    )


def _kwh_today() -> bargauge.Panel:
    return styled(
        bargauge.Panel().time_from("now/d").min(0),
        "kWh today against the baseline",
        [
            InfluxQL(
                'SELECT last("kwh") AS "measured", last("baseline_kwh") AS "baseline" '
                f'FROM "energy" WHERE {ENERGY_WHERE} GROUP BY "group"'
            ).alias("$tag_group $col")
        ],
        unit=units.KiloWattHour,
        steps=thresholds((None, "green")),
        description="Per group, today so far: measured and the baseline (rated power "
        "from dusk to dawn), from control's energy projection.",
        span=12,
    )


def _faults_by_hour() -> timeseries.Panel:
    lit = f'{where(group=True, device=True)} AND "mean_dim_level" > 0'
    return styled(
        timeseries.Panel().min(0),
        "Lamps failing, and lamps lit, by hour",
        [
            InfluxQL(
                f'SELECT count("mean_power_w") FROM {HOURLY_LAMPS} '
                f'WHERE {lit} AND "mean_power_w" < 2 GROUP BY time(1h) fill(0)'
            ).alias("failing (lit, no power)"),
            InfluxQL(
                f'SELECT count("mean_power_w") FROM {HOURLY_LAMPS} WHERE {lit} '
                "GROUP BY time(1h) fill(0)"
            ).alias("lit (in daylight: burning by day)"),
        ],
        unit=units.NoUnit,
        steps=thresholds((None, "green"), (1, "red")),
        description="From the hourly rollup, one row per lamp and hour: lamps lit "
        "(mean level above 0) but drawing under 2 W on average (TALQ lampFailure), and "
        "lamps lit: any lit in daylight hours burn by day (lampUnexpectedOn).",
    )


def board(options: BoardOptions) -> dashboard.Dashboard:
    built = new_board(
        UID,
        "IOC · Lighting and energy",
        "Street lighting by district: lamps on, levels, power, today's energy against "
        "the baseline, savings, failing lamps.",
        options,
    )
    for variable in district_group_device("streetlight"):
        built = built.with_variable(variable)
    return (
        built.with_panel(_lamps_on_now())
        .with_panel(
            _saved("saved_kwh", "Saved today", units.KiloWattHour, "kWh saved against the baseline")
        )
        .with_panel(_saved("saved_vnd", "Saved today (VND)", units.VietnameseDong, "at the tariff"))
        .with_panel(_lamps_on_by_district())
        .with_panel(_levels_by_district())
        .with_panel(_power_by_district())
        .with_panel(_kwh_today())
        .with_panel(
            _saved(
                "saved_co2_kg", "CO2 avoided today", units.Kilogram, "at the grid emission factor"
            )
        )
        .with_panel(_faults_by_hour())
    )
