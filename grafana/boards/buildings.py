"""Buildings: power and kWh per day of each metered public building.

Energy meters (Modbus, ``energy_meter``) of hospitals, schools and offices; the
``group`` variable picks a kind of building (the registry's groups), ``device`` a
building. kWh per day is the spread of the meter's cumulative register over each
local day.
"""

# ruff: noqa: S608  (InfluxQL built from constants when the board is built; no input)

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart, dashboard, stat, timeseries
from grafana_foundation_sdk.models import units

from grafana.panels import district_group_device, new_board, styled, thresholds, where
from grafana.settings import BoardOptions

UID = "ioc-buildings"
METERS = where(group=True, device=True)


def _power() -> timeseries.Panel:
    return styled(
        timeseries.Panel().min(0),
        "Power per building",
        f'SELECT mean("power_w") FROM "energy_meter" WHERE {METERS} '
        'GROUP BY time($__interval), "device_id" fill(none)',
        unit=units.Watt,
        steps=thresholds((None, "green"), (200_000, "orange"), (400_000, "red")),
        description="Total active power of each building's meter.",
        span=16,
    )


def _power_now() -> stat.Panel:
    return styled(
        stat.Panel(),
        "Power now",
        f'SELECT last("power_w") FROM "energy_meter" WHERE {METERS} GROUP BY "device_id"',
        unit=units.Watt,
        steps=thresholds((None, "green"), (200_000, "orange"), (400_000, "red")),
        description="Latest power reading per building.",
        span=8,
    )


def _kwh_per_day(timezone: str) -> barchart.Panel:
    return styled(
        barchart.Panel().min(0),
        "kWh per day per building",
        f'SELECT spread("energy_kwh") FROM "energy_meter" WHERE {METERS} '
        f"GROUP BY time(1d), \"device_id\" fill(none) tz('{timezone}')",
        unit=units.KiloWattHour,
        steps=thresholds((None, "green"), (2_000, "orange"), (5_000, "red")),
        description="Energy per local day: the rise of each meter's kWh register.",
    )


def _kwh_today() -> stat.Panel:
    return styled(
        stat.Panel().time_from("now/d"),
        "kWh today",
        f'SELECT spread("energy_kwh") FROM "energy_meter" WHERE {METERS} GROUP BY "device_id"',
        unit=units.KiloWattHour,
        steps=thresholds((None, "green"), (2_000, "orange"), (5_000, "red")),
        description="Energy since local midnight per building.",
    )


def board(options: BoardOptions) -> dashboard.Dashboard:
    built = new_board(
        UID,
        "IOC · Buildings",
        "Public buildings (hospitals, schools, offices): power and kWh per day.",
        options,
    )
    for variable in district_group_device("energy_meter"):
        built = built.with_variable(variable)
    return (
        built.with_panel(_power())
        .with_panel(_power_now())
        .with_panel(_kwh_per_day(options.timezone))
        .with_panel(_kwh_today())
    )
