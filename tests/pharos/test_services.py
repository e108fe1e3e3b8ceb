"""The composed telemetry services against a simulated fleet: every reading stored once.

A part of the ``ci-small`` scenario (every kind, plain and SenML payloads, MQTT 3.1.1
and 5) runs half an hour of simulated time against a real Mosquitto; the services
(``TelemetryServices``: InfluxDB writer and spool, twin, directory, ingest, Modbus
poller) store into a real InfluxDB 1.6.7. Each device's ``seq`` counts the readings it
took, so the store must hold exactly that many points per device, and for plain
readings exactly the seqs 1..n.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firmware_sim.faults import FaultConfig
from firmware_sim.fleet import Fleet
from firmware_sim.mqtt.hub import BrokerAddress
from firmware_sim.scenario import expand, load_scenario
from pharos.broker_process import MosquittoProcess
from pharos.cli.sim import scenario_path
from pharos.database import upgrade
from pharos.runtime import Runtime, build_runtime
from pharos.services import TelemetryOptions, TelemetryServices
from pharos.settings import BrokerSettings, InfluxSettings, Settings
from pharos.simulate import provision_scenario, wait_for_accounts
from pharos_core.clock import SteppedClock
from telemetry.ingest import MqttOptions
from tests.fixtures.influx import InfluxDB
from tests.telemetry.ingest.conftest import eventually

pytestmark = pytest.mark.broker

BACKEND = "pharos-backend"
SIMULATED = timedelta(minutes=30)


def _runtime(broker: MosquittoProcess, influxdb: InfluxDB, database: str, tmp: Path) -> Runtime:
    settings = Settings(
        data_dir=tmp / "var",
        database={"url": f"sqlite:///{tmp / 'pharos.db'}"},
        broker=BrokerSettings(
            host=broker.host,
            port=broker.port,
            password_file=broker.password_file,
            acl_file=broker.acl_file,
            pid_file=broker.pid_file,
        ),
        influx=InfluxSettings(url=influxdb.url, database=database),
    )
    runtime = build_runtime(settings)
    upgrade(runtime.engine)
    return runtime


def _points_per_device(influxdb: InfluxDB, database: str) -> tuple[Counter[str], dict[str, set]]:  # type: ignore[type-arg]
    """Points per device over every measurement, and the seqs of each device."""
    answer = influxdb.query("SELECT * FROM /.*/ GROUP BY device_id", database)
    counts: Counter[str] = Counter()
    seqs: dict[str, set] = {}  # type: ignore[type-arg]
    for series in answer["results"][0].get("series", []):
        device_id = series["tags"]["device_id"]
        column = series["columns"].index("seq") if "seq" in series["columns"] else None
        for row in series["values"]:
            counts[device_id] += 1
            if column is not None and row[column] is not None:
                seqs.setdefault(device_id, set()).add(int(row[column]))
    return counts, seqs


async def test_a_simulated_fleet_is_stored_reading_for_reading(
    mosquitto: MosquittoProcess, influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> None:
    runtime = await asyncio.to_thread(_runtime, mosquitto, influxdb, influx_db, tmp_path)
    specs = [
        replace(s, faults=FaultConfig()) for s in expand(load_scenario(scenario_path("ci-small")))
    ]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    clock = SteppedClock(start)
    address = BrokerAddress(mosquitto.host, mosquitto.port)
    fleet = Fleet(specs, broker=address, clock=clock, seed=7)
    try:
        async with fleet:
            secrets = await asyncio.to_thread(
                provision_scenario, runtime, specs, modbus_endpoints=fleet.modbus_endpoints
            )
            with runtime.registry("test") as registry:
                backend = registry.ensure_service_account(BACKEND)
            await wait_for_accounts(address, {BACKEND: backend.secret})
            mqtt = MqttOptions(mosquitto.host, mosquitto.port, BACKEND, backend.secret)
            options = TelemetryOptions(stats_interval_s=None)
            async with TelemetryServices(runtime, options, mqtt=mqtt) as services:
                ingest, poller = services.ingest, services.poller
                assert ingest is not None and poller is not None
                await ingest.wait_connected()
                devices = fleet.start_mqtt(secrets)
                await fleet.run_until(start + SIMULATED)
                taken = {device.device_id: device.seq for device in devices}
                meters = [m.device_id for m in poller.meters]
                for device_id in meters:
                    health = await poller.poll_now(device_id)
                    assert health.healthy, health
                total = sum(taken.values())
                assert await eventually(lambda: ingest.stats.points >= total, 30)
                assert ingest.stats.dead_letters == 0
    finally:
        await asyncio.to_thread(runtime.close)

    counts, seqs = _points_per_device(influxdb, influx_db)
    assert min(taken.values()) >= 25, "every device reported through the half hour"
    for device_id, readings in taken.items():
        assert counts[device_id] == readings, device_id
        if device_id in seqs:  # plain readings carry seq; SenML packs do not
            assert seqs[device_id] == set(range(1, readings + 1)), device_id
    assert len(seqs) >= len(taken) * 0.8
    kinds = {s.kind.value for s in specs if s.device_id in counts}
    assert {"energy_meter", "lighting_cabinet"} <= kinds, "the poller's readings are stored too"
    assert all(counts[m] >= 1 for m in meters)
