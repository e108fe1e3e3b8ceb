"""The ``energy`` derived points: the day so far per group, at the day's local midnight."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from astral import Observer
from astral.sun import sunrise, sunset
from sqlalchemy.orm import Session, sessionmaker

from control.energy import EnergySettings
from control.energy_report import EnergyReporter, dark_hours_so_far
from control.program import Site
from pharos_core.clock import SteppedClock
from pharos_core.points import Point
from tests.control.helpers import register_lamps

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
SITE = Site(latitude=10.0452, longitude=105.7469)


def test_dark_hours_so_far_count_the_morning_and_the_evening() -> None:
    observer = Observer(latitude=SITE.latitude, longitude=SITE.longitude)
    day = date(2026, 6, 21)
    dawn = sunrise(observer, day, LOCAL)
    morning = (dawn - datetime(2026, 6, 21, tzinfo=LOCAL)).total_seconds() / 3600
    at_noon = datetime(2026, 6, 21, 12, tzinfo=LOCAL)
    assert dark_hours_so_far(SITE, at_noon) == pytest.approx(morning, abs=1e-6)
    at_21 = datetime(2026, 6, 21, 21, tzinfo=LOCAL)
    evening = (at_21 - sunset(observer, day, LOCAL)).total_seconds() / 3600
    assert dark_hours_so_far(SITE, at_21) == pytest.approx(morning + evening, abs=1e-6)


async def test_the_reporter_writes_one_point_per_group_at_local_midnight(
    sessions: sessionmaker[Session],
) -> None:
    register_lamps(sessions, "hoa-binh", ["l-1", "l-2"], rated_power_w=100.0)
    now = datetime(2026, 6, 21, 21, 0, tzinfo=LOCAL)
    clock = SteppedClock(now)
    written: list[Point] = []
    asked: list[tuple[list[str], datetime, datetime]] = []

    async def measured(ids: Sequence[str], start: datetime, end: datetime) -> float | None:
        asked.append((list(ids), start, end))
        return 0.5

    async def submit(points: Sequence[Point]) -> None:
        written.extend(points)

    settings = EnergySettings()
    async with EnergyReporter(sessions, clock, SITE, settings, measured, submit) as reporter:
        async with asyncio.timeout(10):
            await reporter.wait_reports(1)  # the first report, at once
            (point,) = written
            await clock.run_until(now + timedelta(minutes=15))
            await reporter.wait_reports(2)
        assert len(written) == 2 and written[1].time == point.time
    midnight = datetime(2026, 6, 21, tzinfo=LOCAL)
    assert asked[0] == (["l-1", "l-2"], midnight, now)
    assert point.measurement == "energy" and point.time == midnight
    assert point.tags == {"group": "hoa-binh", "district": ""}
    baseline = 0.2 * dark_hours_so_far(SITE, now)
    assert point.fields["baseline_kwh"] == pytest.approx(baseline, abs=1e-3)
    assert point.fields["saved_kwh"] == pytest.approx(baseline - 0.5, abs=1e-3)
    assert point.fields["saved_vnd"] == pytest.approx((baseline - 0.5) * 2226, abs=1)
    assert point.fields["saved_co2_kg"] == pytest.approx((baseline - 0.5) * 0.6592, abs=1e-3)
