"""Every MQTT kind built by the factory: its readings validate, seeds reproduce, faults show."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devices.wire import DeviceKind, DeviceState, kind_spec, validate_metrics
from firmware_sim.faults import Fault, FaultConfig
from firmware_sim.model import DeviceModel, MetricValue
from firmware_sim.physics.factory import build_model

MQTT_KINDS = [
    DeviceKind.STREETLIGHT,
    DeviceKind.SMART_POLE,
    DeviceKind.ENV_MONITOR,
    DeviceKind.FLOOD_GAUGE,
]
START = datetime(2026, 3, 20, 5, 0, tzinfo=UTC)  # 12:00 in Cần Thơ


def build(kind: DeviceKind, seed: int = 7, **options: Any) -> DeviceModel:
    return build_model(kind, "dev-0001", seed=seed, latitude=10.0452, longitude=105.7469, **options)


def simulated_day(
    model: DeviceModel, step: timedelta = timedelta(minutes=5)
) -> Iterator[dict[str, MetricValue]]:
    now = START
    while now < START + timedelta(days=1):
        yield model.sample(now)
        now += step


@pytest.mark.parametrize("kind", MQTT_KINDS)
def test_every_reading_of_a_day_validates_against_the_catalogue(kind: DeviceKind) -> None:
    model = build(kind)
    readings = list(simulated_day(model))
    assert len(readings) == 288
    for metrics in readings:
        assert set(metrics) == set(kind_spec(kind).metric_names())
        _, errors = validate_metrics(kind, metrics)
        assert errors == [], errors


@pytest.mark.parametrize("kind", MQTT_KINDS)
def test_reported_state_validates_as_device_state(kind: DeviceKind) -> None:
    model = build(kind)
    model.sample(START)
    state = DeviceState.model_validate(model.state(START))
    assert state.fw


@pytest.mark.parametrize("kind", MQTT_KINDS)
def test_with_spikes_validation_refuses_some_values(kind: DeviceKind) -> None:
    faults = FaultConfig(faults=frozenset({Fault.SPIKES}), spike_probability=0.2)
    model = build(kind, faults=faults)
    refused = [e for m in simulated_day(model) for e in validate_metrics(kind, m)[1]]
    assert 20 <= len(refused) <= 100  # ~0.2 × 288, one metric per spiked reading
    assert all("above the maximum" in e.reason for e in refused)


@pytest.mark.parametrize("kind", MQTT_KINDS)
def test_same_seed_same_readings_different_seed_different(kind: DeviceKind) -> None:
    first = list(simulated_day(build(kind, seed=1)))
    again = list(simulated_day(build(kind, seed=1)))
    other = list(simulated_day(build(kind, seed=2)))
    assert first == again
    assert first != other


def test_readings_depend_on_the_device_id_too() -> None:
    one = build_model("env_monitor", "env-0001", seed=1, latitude=10.0, longitude=105.7)
    two = build_model("env_monitor", "env-0002", seed=1, latitude=10.0, longitude=105.7)
    assert one.sample(START) != two.sample(START)


@pytest.mark.parametrize(
    ("kind", "metric"),
    [
        (DeviceKind.STREETLIGHT, "power_w"),
        (DeviceKind.SMART_POLE, "power_w"),
        (DeviceKind.ENV_MONITOR, "pm25"),
        (DeviceKind.FLOOD_GAUGE, "water_level_m"),
    ],
)
def test_a_stuck_sensor_repeats_its_first_value(kind: DeviceKind, metric: str) -> None:
    model = build(kind, faults=FaultConfig(faults=frozenset({Fault.STUCK_SENSOR})))
    values = {m[metric] for m in simulated_day(model)}
    healthy = {m[metric] for m in simulated_day(build(kind))}
    assert len(values) == 1
    assert len(healthy) > 10


def test_a_named_stuck_metric_freezes_that_metric_only() -> None:
    faults = FaultConfig(faults=frozenset({Fault.STUCK_SENSOR}), stuck_metric="humidity_pct")
    readings = list(simulated_day(build(DeviceKind.SMART_POLE, faults=faults)))
    assert len({m["humidity_pct"] for m in readings}) == 1
    assert len({m["temperature_c"] for m in readings}) > 10


def test_a_stuck_metric_the_kind_does_not_have_is_refused() -> None:
    faults = FaultConfig(faults=frozenset({Fault.STUCK_SENSOR}), stuck_metric="pm25")
    with pytest.raises(ValueError, match="'pm25' is not a metric of flood_gauge"):
        build(DeviceKind.FLOOD_GAUGE, faults=faults)


@pytest.mark.parametrize("kind", ["energy_meter", "lighting_cabinet"])
def test_modbus_kinds_are_built_elsewhere(kind: str) -> None:
    with pytest.raises(ValueError, match=r"Modbus TCP device: it is built by firmware_sim\.modbus"):
        build_model(kind, "m-1", seed=1, latitude=10.0, longitude=105.7)


def test_unknown_kind_and_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown device kind"):
        build_model("toaster", "t-1", seed=1, latitude=10.0, longitude=105.7)
    with pytest.raises(ValueError, match=r"unknown option.*colour.*for streetlight"):
        build(DeviceKind.STREETLIGHT, colour="warm")
    with pytest.raises(ValueError, match="rated_power_w applies to lamps only"):
        build(DeviceKind.ENV_MONITOR, rated_power_w=60.0)


def test_kind_options_reach_the_model() -> None:
    lamp = build(DeviceKind.STREETLIGHT, rated_power_w=150.0, interval_s=30, fw="9.9.9")
    gauge = build(DeviceKind.FLOOD_GAUGE, base_m=2.5, tide_amplitude_m=0.0)
    assert lamp.interval_s == 30
    assert lamp.state(START)["fw"] == "9.9.9"
    assert build(DeviceKind.FLOOD_GAUGE).interval_s == 300
    assert 2.4 < float(gauge.sample(START)["water_level_m"]) < 2.6
