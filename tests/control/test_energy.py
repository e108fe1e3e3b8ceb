"""Projected energy, money and CO2 against a hand calculation; the CSV export."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from astral import Observer
from astral.sun import sunrise, sunset

from control.energy import EnergySettings, Lamp, project_group, to_csv, with_measured
from control.program import ProgramSpec, Site, default_program
from devices.wire.commands import ProgramStep

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
SITE = Site(latitude=10.0452, longitude=105.7469)
SETTINGS = EnergySettings()
FIXED = ProgramSpec(
    id="fixed",
    name="18-23 full, 23-05 half",
    steps=[
        ProgramStep(at="18:00", level=100),
        ProgramStep(at="23:00", level=50),
        ProgramStep(at="05:00", level=0),
    ],
)


def dark_hours(evening: date) -> float:
    observer = Observer(latitude=SITE.latitude, longitude=SITE.longitude)
    dusk = sunset(observer, evening, LOCAL)
    dawn = sunrise(observer, evening + timedelta(days=1), LOCAL)
    return (dawn - dusk).total_seconds() / 3600


def test_a_fixed_program_matches_the_hand_calculation() -> None:
    lamps = [Lamp("a", 100.0), Lamp("b", 150.0)]
    night = date(2026, 6, 21)
    result = project_group("street", lamps, night, night, SITE, SETTINGS, program=FIXED)
    # 250 W: 5 h at 100 % + 6 h at 50 % = 250 x 8 Wh = 2.0 kWh.
    assert result.projected.kwh == pytest.approx(2.0)
    baseline = 0.250 * dark_hours(night)  # ~2.83 kWh (11 h 17 min of dark)
    assert result.projected.baseline_kwh == pytest.approx(baseline, abs=1e-3)
    saved = baseline - 2.0
    assert result.projected.saved_kwh == pytest.approx(saved, abs=1e-3)
    assert result.projected.saved_vnd == pytest.approx(saved * 2226, abs=1)
    # 2026 has no published factor yet: the latest (2023, 0.6592 kg/kWh) applies.
    assert result.projected.saved_co2_kg == pytest.approx(saved * 0.6592, abs=1e-3)
    assert (result.lamps, result.rated_power_w) == (2, 250.0)


def test_the_default_program_over_three_nights() -> None:
    lamps = [Lamp("a", 100.0)]
    start = date(2026, 12, 20)
    result = project_group(
        "street", lamps, start, start + timedelta(days=2), SITE, SETTINGS, program=default_program()
    )
    kwh = baseline = 0.0
    observer = Observer(latitude=SITE.latitude, longitude=SITE.longitude)
    for n in range(3):
        evening = start + timedelta(days=n)
        dusk = sunset(observer, evening, LOCAL) - timedelta(minutes=10)
        dawn = sunrise(observer, evening + timedelta(days=1), LOCAL) + timedelta(minutes=10)
        ten = datetime.combine(evening, datetime.min.time(), LOCAL) + timedelta(hours=22)
        full_evening = (ten - dusk).total_seconds() / 3600
        full_morning = (dawn - (ten + timedelta(hours=6, minutes=30))).total_seconds() / 3600
        kwh += 0.1 * (full_evening + 2 * 0.7 + 4.5 * 0.5 + full_morning)
        baseline += 0.1 * dark_hours(evening)
    assert result.projected.kwh == pytest.approx(kwh, abs=1e-3)
    assert result.projected.baseline_kwh == pytest.approx(baseline, abs=1e-3)
    assert result.projected.saved_kwh > 0


def test_the_grid_factor_follows_the_year_of_each_night() -> None:
    assert SETTINGS.factor_for(2021) == 0.7221
    assert SETTINGS.factor_for(2030) == 0.6592
    assert SETTINGS.factor_for(2010) == 0.8458


async def test_measured_beside_projected_and_the_csv() -> None:
    lamps = [Lamp("a", 100.0)]
    night = date(2026, 6, 21)
    projected = project_group("street", lamps, night, night, SITE, SETTINGS, program=FIXED)
    asked: list[tuple[list[str], datetime, datetime]] = []

    async def measured(ids, start, end):  # type: ignore[no-untyped-def]
        asked.append((list(ids), start, end))
        return 0.75

    both = await with_measured(projected, lamps, SITE, SETTINGS, measured)
    assert asked == [
        (["a"], datetime(2026, 6, 21, 12, tzinfo=LOCAL), datetime(2026, 6, 22, 12, tzinfo=LOCAL))
    ]
    assert both.measured is not None and both.measured.kwh == 0.75
    assert both.measured.baseline_kwh == both.projected.baseline_kwh
    rows = list(csv.DictReader(io.StringIO(to_csv([both]))))
    assert rows[0]["group"] == "street" and float(rows[0]["projected_kwh"]) == 0.8
    assert float(rows[0]["measured_kwh"]) == 0.75


async def test_measured_compares_only_the_nights_that_were_measured() -> None:
    """Two nights, telemetry for the first only: the measured figures (and their
    baseline) are that night's, and the row says 1 of 2 nights was measured."""
    lamps = [Lamp("a", 100.0)]
    first, second = date(2026, 6, 21), date(2026, 6, 22)
    projected = project_group("street", lamps, first, second, SITE, SETTINGS, program=FIXED)
    one_night = project_group("street", lamps, first, first, SITE, SETTINGS, program=FIXED)

    async def measured(ids, start, end):  # type: ignore[no-untyped-def]
        return 0.75 if start.date() == first else None

    both = await with_measured(projected, lamps, SITE, SETTINGS, measured)
    assert (both.nights, both.measured_nights) == (2, 1)
    assert both.measured is not None
    assert both.measured.baseline_kwh == one_night.projected.baseline_kwh
    assert both.measured.baseline_kwh < both.projected.baseline_kwh
    assert both.measured.saved_kwh == round(one_night.projected.baseline_kwh - 0.75, 4)
    (row,) = list(csv.DictReader(io.StringIO(to_csv([both]))))
    assert (row["nights"], row["measured_nights"]) == ("2", "1")
