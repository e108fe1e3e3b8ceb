"""Streetlight and smart-pole physics: power follows the level, commands, faults, energy."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from devices.wire import DeviceState
from firmware_sim.faults import Fault, FaultConfig
from firmware_sim.physics.lamp import (
    STANDBY_W,
    LampModel,
    SmartPoleModel,
    lamp_power_factor,
    lamp_power_w,
)
from firmware_sim.program import ProgramRunner

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
LAT, LON = 10.0452, 105.7469
RATED_W = 90.0
DAY = date(2026, 3, 20)  # sunset 18:07, next sunrise ~06:01


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), TZ)


def lamp(*faults: Fault, seed: int = 3) -> LampModel:
    config = FaultConfig(faults=frozenset(faults))
    return LampModel("sl-0001", RATED_W, LAT, LON, random.Random(seed), config)


def night_samples(
    model: LampModel, start: datetime, hours: float, step: timedelta = timedelta(minutes=1)
) -> list[tuple[datetime, dict[str, Any]]]:
    samples = []
    now = start
    while now <= start + timedelta(hours=hours):
        samples.append((now, model.sample(now)))
        now += step
    return samples


def test_power_and_power_factor_curves() -> None:
    assert lamp_power_w(RATED_W, 100) == pytest.approx(RATED_W)
    assert 0.5 * RATED_W < lamp_power_w(RATED_W, 50) < 0.56 * RATED_W
    assert lamp_power_w(RATED_W, 0) == STANDBY_W
    assert lamp_power_factor(100) == pytest.approx(0.95)
    assert lamp_power_factor(30) == pytest.approx(0.80)
    assert lamp_power_factor(0) < 0.5
    levels = [1, 10, 30, 50, 70, 100]
    factors = [lamp_power_factor(level) for level in levels]
    assert factors == sorted(factors)


def test_readings_are_electrically_consistent() -> None:
    model = lamp()
    for _, metrics in night_samples(model, local(DAY, 17), 14, timedelta(minutes=10)):
        power, volts, pf = metrics["power_w"], metrics["voltage_v"], metrics["power_factor"]
        assert 215 <= volts <= 245
        assert metrics["current_a"] == pytest.approx(power / (volts * pf), rel=0.01, abs=0.002)
        assert metrics["lamp_on"] is (metrics["dim_level"] > 0)


def test_the_default_program_drives_the_lamp_through_a_night() -> None:
    model = lamp()
    runner = ProgramRunner(model.program, LAT, LON)
    for now, metrics in night_samples(model, local(DAY, 17), 15):
        level = runner.level_at(now)
        assert metrics["dim_level"] == level
        expected = lamp_power_w(RATED_W, level)
        assert metrics["power_w"] == pytest.approx(expected, rel=0.03, abs=0.1)


def test_a_lamp_given_a_program_follows_it_with_no_further_commands() -> None:
    model = lamp()
    start = local(DAY, 12)
    program = {
        "id": "night-saver",
        "steps": [
            {"event": "sunset", "level": 100},
            {"at": "21:00", "level": 50},
            {"at": "23:30", "level": 30},
            {"event": "sunrise", "offset_minutes": -15, "level": 0},
        ],
    }
    ack = model.handle("set_program", {"program": program}, start)
    assert ack.status == "ok"
    assert model.state(start)["program_id"] == "night-saver"
    by_time = dict(night_samples(model, start, 20))
    assert by_time[local(DAY, 17, 50)]["power_w"] < 1  # before sunset: standby
    assert by_time[local(DAY, 18, 15)]["power_w"] == pytest.approx(RATED_W, rel=0.03)
    assert by_time[local(DAY, 21, 30)]["power_w"] == pytest.approx(0.53 * RATED_W, rel=0.03)
    assert by_time[local(DAY, 23, 45)]["power_w"] == pytest.approx(0.34 * RATED_W, rel=0.05)
    next_day = DAY + timedelta(days=1)
    assert by_time[local(next_day, 3)]["dim_level"] == 30.0  # yesterday's step holds
    assert by_time[local(next_day, 5, 50)]["lamp_on"] is False
    assert by_time[local(next_day, 5, 50)]["power_w"] == pytest.approx(STANDBY_W, abs=0.1)


def test_energy_and_operating_hours_integrate_the_power_drawn() -> None:
    model = lamp()
    samples = night_samples(model, local(DAY, 12), 24)
    integral_kwh = sum(
        metrics["power_w"] / 1000 / 60 for _, metrics in samples[:-1]
    )  # rectangles of one minute
    lit_hours = sum(1 / 60 for _, metrics in samples[:-1] if metrics["lamp_on"])
    final = samples[-1][1]
    assert final["energy_kwh"] == pytest.approx(integral_kwh, rel=0.01)
    assert final["operating_hours"] == pytest.approx(lit_hours, abs=0.05)
    assert 11.5 < final["operating_hours"] < 12.5  # dusk − 10 min to dawn + 10 min
    energies = [metrics["energy_kwh"] for _, metrics in samples]
    assert energies == sorted(energies)


def test_energy_does_not_depend_on_how_often_readings_are_taken() -> None:
    often, rarely = lamp(seed=1), lamp(seed=2)
    start = local(DAY, 12)
    end = start + timedelta(hours=30)
    night_samples(often, start, 30, timedelta(minutes=1))
    rarely.sample(start)
    final = rarely.sample(end)
    assert often.energy_kwh == pytest.approx(final["energy_kwh"], abs=1e-4)
    assert often.operating_hours == pytest.approx(final["operating_hours"], abs=1e-3)


def test_set_dim_holds_until_the_next_program_step() -> None:
    model = lamp()
    ack = model.handle("set_dim", {"level": 40}, local(DAY, 20))
    assert ack.status == "ok"
    assert "22:00" in ack.detail
    assert model.sample(local(DAY, 21, 59))["dim_level"] == 40.0
    assert model.sample(local(DAY, 22))["dim_level"] == 70.0
    assert model.state(local(DAY, 22))["dim_level"] == 70.0


def test_switch_off_and_on() -> None:
    model = lamp()
    model.handle("set_dim", {"level": 80}, local(DAY, 19))
    assert model.handle("switch", {"on": False}, local(DAY, 19, 10)).status == "ok"
    off = model.sample(local(DAY, 19, 11))
    assert off["lamp_on"] is False
    assert model.state(local(DAY, 19, 11))["power"] == "off"
    model.handle("switch", {"on": True}, local(DAY, 19, 20))
    assert model.sample(local(DAY, 19, 21))["dim_level"] == 80.0  # the last level it had


def test_level_150_is_rejected_naming_params_level() -> None:
    model = lamp()
    ack = model.handle("set_dim", {"level": 150}, local(DAY, 20))
    assert ack.status == "rejected"
    assert ack.detail == "params.level: Input should be less than or equal to 100"
    assert model.sample(local(DAY, 20, 1))["dim_level"] == 100.0  # unchanged


def test_an_unknown_action_is_rejected_naming_it() -> None:
    ack = lamp().handle("reboot", {}, local(DAY, 20))
    assert ack.status == "rejected"
    assert "'reboot'" in ack.detail
    assert ack.detail.startswith("action:")


def test_a_program_with_a_bad_step_is_rejected_naming_the_step() -> None:
    model = lamp()
    program = {"id": "bad", "steps": [{"at": "18:00", "level": 100}, {"level": 0}]}
    ack = model.handle("set_program", {"program": program}, local(DAY, 12))
    assert ack.status == "rejected"
    assert ack.detail.startswith("params.program.steps.1:")
    assert model.state(local(DAY, 12))["program_id"] == "default"


def test_override_expires_by_itself_and_falls_back_to_the_program() -> None:
    model = lamp()
    start = local(DAY, 23)
    ack = model.handle("override", {"level": 100, "minutes": 90}, start)
    assert ack.status == "ok"
    state = DeviceState.model_validate(model.state(start))
    assert state.override_until == start + timedelta(minutes=90)
    assert model.sample(local(DAY + timedelta(days=1), 0, 29))["dim_level"] == 100.0
    after = local(DAY + timedelta(days=1), 0, 30)
    assert model.sample(after)["dim_level"] == 50.0  # the program's 00:00 step
    assert model.state(after)["override_until"] is None


def test_after_an_override_a_running_manual_level_resumes() -> None:
    model = lamp()
    model.handle("set_dim", {"level": 20}, local(DAY, 19))
    model.handle("override", {"level": 90, "minutes": 30}, local(DAY, 19, 30))
    assert model.sample(local(DAY, 19, 45))["dim_level"] == 90.0
    assert model.sample(local(DAY, 20, 1))["dim_level"] == 20.0
    assert model.sample(local(DAY, 22, 1))["dim_level"] == 70.0


def test_set_dim_clears_a_running_override() -> None:
    model = lamp()
    model.handle("override", {"level": 100, "minutes": 120}, local(DAY, 20))
    model.handle("set_dim", {"level": 30}, local(DAY, 20, 30))
    assert model.sample(local(DAY, 20, 31))["dim_level"] == 30.0
    assert model.state(local(DAY, 20, 31))["override_until"] is None


def test_self_test_reports_the_power_at_each_step() -> None:
    ack = lamp().handle("self_test", {}, local(DAY, 12))
    assert ack.status == "ok"
    parts = dict(part.split(": ") for part in ack.detail.split(", "))
    assert list(parts) == ["0%", "50%", "100%"]
    watts = [float(value.removesuffix(" W")) for value in parts.values()]
    assert watts[0] == pytest.approx(STANDBY_W, abs=0.1)
    assert watts[1] == pytest.approx(lamp_power_w(RATED_W, 50), rel=0.03)
    assert watts[2] == pytest.approx(RATED_W, rel=0.03)


def test_self_test_fails_on_a_failed_lamp() -> None:
    ack = lamp(Fault.LAMP_FAILURE).handle("self_test", {}, local(DAY, 12))
    assert ack.status == "failed"
    assert "lamp draws 0.5 W at 50 %" in ack.detail
    assert "100%: 0.5 W" in ack.detail


def test_a_failed_lamp_is_commanded_on_but_draws_nothing() -> None:
    model = lamp(Fault.LAMP_FAILURE)
    samples = night_samples(model, local(DAY, 20), 2, timedelta(minutes=10))
    for _, metrics in samples:
        assert metrics["lamp_on"] is True
        assert metrics["dim_level"] == 100.0 or metrics["dim_level"] == 70.0
        assert metrics["power_w"] < 1.0
        assert metrics["current_a"] < 0.02
    assert samples[-1][1]["operating_hours"] == 0.0
    assert model.state(local(DAY, 21))["power"] == "on"


def test_a_day_burning_lamp_is_lit_at_full_in_daylight() -> None:
    model = lamp(Fault.DAY_BURNING)
    noon = model.sample(local(DAY, 12))
    assert noon["lamp_on"] is True
    assert noon["dim_level"] == 100.0
    assert noon["power_w"] == pytest.approx(RATED_W, rel=0.03)
    night = model.sample(local(DAY + timedelta(days=1), 1))
    assert night["dim_level"] == 50.0  # at night it follows its program
    # Burning from noon to sunset, then the program: ~18 lit hours by 06:00.
    assert model.sample(local(DAY + timedelta(days=1), 6))["operating_hours"] > 17.5


def test_the_smart_pole_adds_its_sensors() -> None:
    pole = SmartPoleModel("sp-0001", 120.0, LAT, LON, random.Random(5))
    metrics = pole.sample(local(DAY, 19))
    assert metrics["power_w"] == pytest.approx(120.0, rel=0.03)
    for name in ("pm25", "pm10", "temperature_c", "humidity_pct", "noise_dba"):
        assert isinstance(metrics[name], float)
    assert isinstance(metrics["camera_online"], bool)
    assert isinstance(metrics["wifi_clients"], int)
    assert pole.handle("override", {"level": 10, "minutes": 5}, local(DAY, 19)).status == "ok"
    assert pole.sample(local(DAY, 19, 1))["dim_level"] == 10.0


def test_wifi_clients_gather_in_the_evening() -> None:
    pole = SmartPoleModel("sp-0002", 120.0, LAT, LON, random.Random(9))
    evening, small_hours = [], []
    for days in range(3):
        day = DAY + timedelta(days=days)
        for minute in range(0, 24 * 60, 10):
            now = local(day, 0) + timedelta(minutes=minute)
            clients = int(pole.sample(now)["wifi_clients"])
            if 19 <= now.hour < 22:
                evening.append(clients)
            elif 1 <= now.hour < 4:
                small_hours.append(clients)
    assert sum(evening) / len(evening) > 3 * sum(small_hours) / len(small_hours)
