"""The simulated lighting cabinet: contactors, lamp levels, its meter, the door."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devices.wire import DeviceKind, DeviceState, validate_metrics
from firmware_sim.modbus.cabinet import (
    DEFAULT_CIRCUITS,
    CabinetModel,
    CircuitSpec,
    lamp_power_factor,
    lamp_power_w,
)

DUSK = datetime(2026, 3, 18, 11, 0, tzinfo=UTC)  # 18:00 in Cần Thơ


def _cabinet(**kwargs: Any) -> CabinetModel:
    return CabinetModel("cab-1", random.Random("cab-1"), DUSK, **kwargs)


def test_power_follows_the_lamps_on_closed_circuits() -> None:
    cabinet = _cabinet()
    dark = cabinet.measurements(DUSK)
    assert dark["power_w"] == 0 and dark["current_a"] == 0 and dark["power_factor"] == 1.0
    assert 210 < dark["voltage_v"] < 230  # the supply is there, the contactors are open

    assert cabinet.handle("switch_circuit", {"circuit": 1, "on": True}, DUSK).status == "ok"
    assert cabinet.measurements(DUSK)["power_w"] == pytest.approx(20 * 90)
    for number in range(2, 5):
        cabinet.switch_circuit(number, True, DUSK)
    everything = sum(spec.lamps * spec.lamp_power_w for spec in DEFAULT_CIRCUITS)
    lit = cabinet.measurements(DUSK)
    assert lit["power_w"] == pytest.approx(everything)
    # Circuits 1 and 4 share L1, 2 is on L2, 3 on L3.
    assert lit["power_l1_w"] == pytest.approx(20 * 90 + 30 * 40)
    assert lit["power_l2_w"] == pytest.approx(16 * 120)
    assert lit["power_l3_w"] == pytest.approx(24 * 60)
    assert lit["va_total"] == pytest.approx(
        sum(
            lit[v] * lit[a]
            for v, a in [
                ("voltage_v", "current_a"),
                ("voltage_l2_v", "current_l2_a"),
                ("voltage_l3_v", "current_l3_a"),
            ]
        )
    )


def test_dimming_lowers_power_and_power_factor() -> None:
    cabinet = _cabinet(closed=True)
    full = cabinet.measurements(DUSK)
    cabinet.set_lamp_level(1, 50, DUSK)
    half = cabinet.measurements(DUSK)
    assert half["power_w"] == pytest.approx(full["power_w"] - 20 * 90 + 20 * lamp_power_w(90, 50))
    assert cabinet.circuit_power_w(1) == pytest.approx(20 * 90 * 0.525)
    assert half["power_factor"] < full["power_factor"]
    assert lamp_power_factor(30) < lamp_power_factor(100) <= 0.96
    cabinet.set_lamp_level(1, 0, DUSK)
    assert cabinet.circuit_power_w(1) == pytest.approx(20 * 0.5)  # drivers on standby
    with pytest.raises(ValueError, match="level 120"):
        cabinet.set_lamp_level(1, 120, DUSK)


def test_energy_books_every_change_exactly() -> None:
    cabinet = _cabinet(initial_import_kwh=100.0)
    cabinet.switch_circuit(1, True, DUSK)  # 1800 W
    cabinet.set_lamp_level(1, 50, DUSK + timedelta(hours=2))  # 3.6 kWh so far
    cabinet.switch_circuit(1, False, DUSK + timedelta(hours=4))  # + 2 h at 945 W
    later = cabinet.measurements(DUSK + timedelta(hours=10))
    assert later["import_kwh"] == pytest.approx(100.0 + 3.6 + 2 * 0.945)
    assert later["energy_kwh"] == later["import_kwh"]
    # Asking about the past does not undo booked energy.
    assert cabinet.measurements(DUSK)["import_kwh"] == later["import_kwh"]


def test_switch_circuit_is_validated_and_acknowledged() -> None:
    cabinet = _cabinet()
    ok = cabinet.handle("switch_circuit", {"circuit": 2, "on": True}, DUSK)
    assert (ok.status, ok.detail) == ("ok", "circuit 2 on")
    assert cabinet.is_closed(2)
    too_far = cabinet.handle("switch_circuit", {"circuit": 5, "on": True}, DUSK)
    assert too_far.status == "rejected" and "4 circuits" in too_far.detail
    out_of_range = cabinet.handle("switch_circuit", {"circuit": 17, "on": True}, DUSK)
    assert out_of_range.status == "rejected" and out_of_range.detail.startswith("params.circuit")
    missing = cabinet.handle("switch_circuit", {"circuit": 1}, DUSK)
    assert missing.status == "rejected" and "params.on" in missing.detail
    unknown = cabinet.handle("set_dim", {"level": 50}, DUSK)
    assert unknown.status == "rejected" and "does not take 'set_dim'" in unknown.detail
    assert cabinet.coil_states(DUSK) == [False, True, False, False]


def test_door_and_coils_show_in_readings_and_state() -> None:
    cabinet = _cabinet()
    cabinet.write_coil(2, True, DUSK)  # coil 2 is circuit 3
    cabinet.open_door()
    metrics = cabinet.sample(DUSK)
    good, errors = validate_metrics(DeviceKind.LIGHTING_CABINET, dict(metrics))
    assert errors == []
    assert good["door_open"] is True
    assert [good[f"circuit_{n}_on"] for n in range(1, 5)] == [False, False, True, False]
    assert cabinet.discrete_input_states(DUSK) == [True]
    state = DeviceState.model_validate(cabinet.state(DUSK))
    assert state.circuits == {"1": False, "2": False, "3": True, "4": False}
    assert state.door_open is True
    cabinet.close_door()
    assert cabinet.sample(DUSK)["door_open"] is False


def test_circuit_count_and_phases_are_configurable() -> None:
    cabinet = _cabinet(circuits=[CircuitSpec(10, 100.0, phase=2)] * 6, closed=True)
    assert cabinet.circuit_count == 6
    values = cabinet.measurements(DUSK)
    assert values["power_l3_w"] == pytest.approx(6000) and values["power_l1_w"] == 0
    with pytest.raises(ValueError, match=r"1\.\.16 circuits"):
        _cabinet(circuits=[])
