"""The simulated energy meter: consistent electrical quantities, energy, determinism."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from devices.wire import DeviceKind, DeviceState, validate_metrics
from firmware_sim.modbus.loads import BuildingLoad, BuildingType
from firmware_sim.modbus.meter import EnergyMeterModel, GridEnergy, building_meter

START = datetime(2026, 3, 18, 0, 0, tzinfo=UTC)  # 07:00 in Cần Thơ, a Wednesday
PHASES = (
    ("voltage_v", "current_a", "power_l1_w"),
    ("voltage_l2_v", "current_l2_a", "power_l2_w"),
    ("voltage_l3_v", "current_l3_a", "power_l3_w"),
)


def test_three_phase_quantities_are_consistent() -> None:
    meter = building_meter("meter-1", BuildingType.HOSPITAL, 7, START)
    for hours in range(0, 24, 3):
        now = START + timedelta(hours=hours)
        v = meter.measurements(now)
        assert v["power_w"] == pytest.approx(meter.load.power_w(now))
        assert v["power_w"] == pytest.approx(sum(v[p] for _, _, p in PHASES))
        apparent = [v[volt] * v[amp] for volt, amp, _ in PHASES]
        assert v["va_total"] == pytest.approx(sum(apparent))
        reactive = sum(
            math.sqrt(s**2 - v[p] ** 2) for s, (_, _, p) in zip(apparent, PHASES, strict=True)
        )
        assert v["var_total"] == pytest.approx(reactive)
        assert v["power_factor"] == pytest.approx(v["power_w"] / v["va_total"])
        assert 0.85 < v["power_factor"] < 0.98
        for volt, amp, power in PHASES:
            assert 210 < v[volt] < 230
            phase_pf = v[power] / (v[volt] * v[amp])
            assert 0.85 < phase_pf < 0.98
        assert 49.95 <= v["frequency_hz"] <= 50.05
        assert 0.5 < v["voltage_thd_pct"] < 5
        assert v["energy_kwh"] == v["import_kwh"] + v["export_kwh"]


def test_single_phase_meter_puts_everything_on_l1() -> None:
    rng = random.Random("sdm120")
    load = BuildingLoad(BuildingType.OFFICE, rng, scale=0.05)
    meter = EnergyMeterModel("meter-2", load, rng, START, phases=1)
    v = meter.measurements(START + timedelta(hours=3))
    assert v["power_w"] == v["power_l1_w"] > 0
    assert v["voltage_l2_v"] == v["current_l3_a"] == v["power_l2_w"] == 0
    assert v["va_total"] == pytest.approx(v["voltage_v"] * v["current_a"])


def test_import_energy_integrates_the_load_whatever_the_polling() -> None:
    polled_often = building_meter("meter-3", BuildingType.SCHOOL, 7, START)
    polled_once = building_meter("meter-3", BuildingType.SCHOOL, 7, START)
    opening = polled_often.measurements(START)["import_kwh"]
    readings = [
        polled_often.measurements(START + timedelta(seconds=s))["import_kwh"]
        for s in range(0, 24 * 3600, 97)
    ]
    assert readings == sorted(readings)  # a meter never runs backwards
    end = START + timedelta(hours=24)
    day_kwh = polled_often.measurements(end)["import_kwh"] - opening
    assert polled_once.measurements(end)["import_kwh"] - opening == pytest.approx(day_kwh, 1e-12)
    # Against a fine independent integration of the same load curve:
    load = polled_often.load
    fine = sum(load.power_w(START + timedelta(seconds=s)) * 10 for s in range(0, 86_400, 10))
    assert day_kwh == pytest.approx(fine / 3_600_000, rel=0.005)
    assert 300 < day_kwh < 2_000  # a school: a few hundred kWh on a weekday


def test_grid_energy_never_goes_back_and_starts_from_its_opening() -> None:
    energy = GridEnergy(lambda _: 3_600_000.0, START, initial_kwh=10.0, step_s=60)
    assert energy.kwh_at(START) == 10.0
    assert energy.kwh_at(START + timedelta(seconds=90)) == pytest.approx(10.0 + 90.0)
    assert energy.kwh_at(START + timedelta(seconds=30)) == pytest.approx(70.0)  # the grid point


def test_same_seed_same_readings() -> None:
    moments = [START + timedelta(minutes=m) for m in range(0, 600, 37)]
    first = building_meter("meter-4", BuildingType.OFFICE, 99, START)
    again = building_meter("meter-4", BuildingType.OFFICE, 99, START)
    other = building_meter("meter-5", BuildingType.OFFICE, 99, START)
    assert [first.measurements(t) for t in moments] == [again.measurements(t) for t in moments]
    assert [first.measurements(t) for t in moments] != [other.measurements(t) for t in moments]


def test_readings_and_state_validate_against_the_wire_contract() -> None:
    meter = building_meter("meter-6", BuildingType.HOSPITAL, 1, START)
    metrics = meter.sample(START + timedelta(hours=5))
    good, errors = validate_metrics(DeviceKind.ENERGY_METER, dict(metrics))
    assert errors == []
    assert set(good) == {
        "voltage_v",
        "current_a",
        "power_w",
        "energy_kwh",
        "power_factor",
        "frequency_hz",
    }
    DeviceState.model_validate(meter.state(START))


def test_a_meter_takes_no_commands() -> None:
    meter = building_meter("meter-7", BuildingType.HOSPITAL, 1, START)
    ack = meter.handle("switch", {"on": True}, START)
    assert ack.status == "rejected"
    assert "energy_meter does not take 'switch'" in ack.detail
    with pytest.raises(ValueError, match="no coil"):
        meter.write_coil(0, True, START)
