"""``pharos sim run`` composition: the registry provisions the fleet, the ACL broker lets it in.

Everything is real: SQLite registry, the Mosquitto the registry writes accounts for
(reloaded by SIGHUP), the fleet's devices and Modbus servers. The backend is a probe
logged in with a service account the registry created.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from devices.registry.models import BrokerAccountRow, Device
from devices.wire import Channel, DeviceKind, WordOrder, parse_device_topic, parse_reading
from devices.wire.topics import subscription
from firmware_sim.fleet import FleetCounters, ModbusEndpoint
from firmware_sim.mqtt.hub import BrokerAddress
from firmware_sim.scenario import expand, load_scenario
from pharos.broker_process import MosquittoProcess
from pharos.database import upgrade
from pharos.runtime import Runtime, build_runtime
from pharos.settings import BrokerSettings, DatabaseSettings, Settings
from pharos.simulate import provision_scenario, run_simulation, wait_for_broker_accepts
from tests.fixtures.broker import MqttProbe, connect_refused

pytestmark = pytest.mark.broker

BACKEND = "sim-backend"


@pytest.fixture
def settings(tmp_path: Path, mosquitto: MosquittoProcess) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'pharos.db'}"),
        broker=BrokerSettings(
            host=mosquitto.host,
            port=mosquitto.port,
            password_file=mosquitto.password_file,
            acl_file=mosquitto.acl_file,
            pid_file=mosquitto.pid_file,
        ),
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = build_runtime(settings)
    upgrade(runtime.engine)
    yield runtime
    runtime.close()


def backend_secret(runtime: Runtime, broker: MosquittoProcess) -> str:
    before = broker.reloads_seen()
    with runtime.registry("test") as registry:
        secret = registry.ensure_service_account(BACKEND).secret
    broker.wait_for_reload(before)
    return secret


def test_provisioned_devices_are_registered_and_let_in_by_the_acl_broker(
    runtime: Runtime, mosquitto: MosquittoProcess
) -> None:
    specs = expand(load_scenario("ci-small"))
    modbus = {
        s.device_id: ModbusEndpoint("127.0.0.1", 15020 + n, 1, WordOrder.CDAB)
        for n, s in enumerate(s for s in specs if s.is_modbus)
    }
    before = mosquitto.reloads_seen()
    secrets = provision_scenario(runtime, specs, modbus_endpoints=modbus)
    mosquitto.wait_for_reload(before)

    mqtt_ids = {s.device_id for s in specs if not s.is_modbus}
    assert set(secrets) == mqtt_ids
    with runtime.sessions() as session:
        devices = {d.id: d for d in session.scalars(select(Device))}
        accounts = {a.username for a in session.scalars(select(BrokerAccountRow))}
    assert set(devices) == {s.device_id for s in specs}
    assert accounts == mqtt_ids  # Modbus devices have no broker account
    for spec in specs:
        device = devices[spec.device_id]
        assert (device.kind, device.district, device.street) == (
            spec.kind.value, spec.district, spec.street,
        )  # fmt: skip
        assert device.rated_power_w == spec.rated_power_w
        assert device.cabinet_id == spec.cabinet_id
    meter = devices["em-nk-00001"]
    assert (meter.modbus_host, meter.modbus_port, meter.register_map) == (
        "127.0.0.1", modbus["em-nk-00001"].port, "sdm630",
    )  # fmt: skip
    assert devices["cab-nk-00001"].register_map == "lighting_cabinet"
    assert meter.modbus_word_order == WordOrder.CDAB and meter.poll_interval_s == 60
    for device_id in sorted(mqtt_ids)[:5]:
        assert not connect_refused(
            mosquitto.port, device_id, secrets[device_id], client_id=device_id
        )


def test_provisioning_again_rotates_every_secret(
    runtime: Runtime, mosquitto: MosquittoProcess
) -> None:
    specs = [s for s in expand(load_scenario("ci-small")) if s.street == "Đường Trần Hưng Đạo"]
    first = provision_scenario(runtime, specs)
    before = mosquitto.reloads_seen()
    second = provision_scenario(runtime, specs)
    mosquitto.wait_for_reload(before)

    assert set(first) == set(second) and all(first[i] != second[i] for i in first)
    device_id = specs[0].device_id
    assert connect_refused(mosquitto.port, device_id, first[device_id], client_id=device_id)
    address = BrokerAddress(mosquitto.host, mosquitto.port)
    assert wait_for_broker_accepts(address, device_id, second[device_id], timeout=5)


def test_modbus_devices_need_their_endpoint(runtime: Runtime) -> None:
    specs = [s for s in expand(load_scenario("ci-small")) if s.kind is DeviceKind.ENERGY_METER]
    with pytest.raises(ValueError, match="no Modbus endpoint for em-nk-00001"):
        provision_scenario(runtime, specs)


async def test_ci_small_runs_against_the_acl_broker_and_the_backend_receives_it(
    settings: Settings, runtime: Runtime, mosquitto: MosquittoProcess
) -> None:
    secret = await asyncio.to_thread(backend_secret, runtime, mosquitto)
    backend = MqttProbe(mosquitto.port, BACKEND, secret, client_id=BACKEND)
    try:
        assert not backend.connect().is_failure
        backend.subscribe(subscription(Channel.TELEMETRY))
        seen: list[FleetCounters] = []

        counters = await run_simulation(
            settings, "ci-small", devices=None, accelerate=None, seed=None,
            progress=seen.append, stop=None, duration=timedelta(minutes=10),
        )  # fmt: skip
        received = await asyncio.to_thread(
            backend.wait_for, lambda: len(backend.messages) >= counters.readings_sent, 10
        )
    finally:
        backend.close()

    assert received and len(backend.messages) == counters.readings_sent
    senders = {parse_device_topic(m.topic).device_id for m in backend.messages}  # type: ignore[union-attr]
    specs = expand(load_scenario("ci-small"))
    assert senders == {s.device_id for s in specs if not s.is_modbus}
    assert counters.connected == len(senders) and counters.modbus_devices == 2
    assert counters.readings_sent >= 10 * len(senders)  # a reading a minute each
    assert counters.faults_active >= 3 and seen[-1] == counters
    assert counters.sim_time == load_scenario("ci-small").start + timedelta(minutes=10)
    readable = 0
    for message in backend.messages:
        try:
            parse_reading(message.payload, parse_device_topic(message.topic).device_id)  # type: ignore[union-attr]
            readable += 1
        except ValueError:
            pass  # the scenario's malformed monitor
    assert readable >= counters.readings_sent - 10
    with runtime.sessions() as session:
        meter = session.get(Device, "em-nk-00001")
        assert meter is not None and meter.modbus_host == "127.0.0.1" and meter.modbus_port


async def test_stop_ends_a_real_time_run_early_and_devices_leave_cleanly(
    settings: Settings, mosquitto: MosquittoProcess
) -> None:
    stop = asyncio.Event()

    def stop_once_connected(counters: FleetCounters) -> None:
        if counters.connected == counters.mqtt_devices:
            stop.set()

    counters = await asyncio.wait_for(
        run_simulation(
            settings, "ci-small", devices=6, accelerate=1.0, progress=stop_once_connected,
            stop=stop,
        ),
        timeout=60,
    )  # fmt: skip
    assert counters.mqtt_devices + counters.modbus_devices == 6
    assert counters.sim_time < load_scenario("ci-small").end
    assert f"Client {sorted_first_mqtt()} disconnected." in mosquitto.log_tail(400)


def sorted_first_mqtt() -> str:
    from firmware_sim.scenario import limit_devices

    specs = limit_devices(expand(load_scenario("ci-small")), 6)
    return next(s.device_id for s in specs if not s.is_modbus)
