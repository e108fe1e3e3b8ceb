"""Rules test bed: the simulator's devices on a real Mosquitto, real ingest, the rules service.

``Bed`` registers a scenario's MQTT devices in the registry, which writes the broker's
accounts (the modules using it run on SQLite; the alert store is tested on both
databases in ``test_alerts``). ``pipeline`` runs the device catalog, ingest (into the
embedded store, with the rules service as its observer), the alert store, rules' own
broker session publishing alerts, and control's command service sending rules'
commands. ``Pipeline.run`` steps the fleet's clock in slices and waits after each until
ingest has every reading, the rules are idle and every command sent has been answered
by its device, so what the lamps do follows from the rules deterministically. An
``AlertWatcher`` listens on ``pharos/v1/alerts`` as the IOC.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from control.commands.link import LinkOptions
from control.commands.service import CommandService
from devices.broker import BrokerAccessWriter
from devices.registry.schemas import DeviceCreate
from devices.registry.service import registry_session
from devices.wire import ALERTS_TOPIC
from firmware_sim.fleet import Fleet
from firmware_sim.mqtt.hub import BrokerAddress
from firmware_sim.scenario import DeviceSpec
from pharos.broker_process import MosquittoProcess
from pharos_core.clock import SteppedClock
from pharos_core.mqtt import MqttAccount, MqttSession
from rules.actions import RegistryMaintenance
from rules.alerts import AlertStore
from rules.catalog import DeviceCatalog
from rules.control_port import ControlCommands
from rules.derived import SunTimes
from rules.service import RulesService
from rules.settings import RulesSettings
from rules.spec import Rule
from telemetry.deadletters import DeadLetterStore
from telemetry.ingest import DeviceDirectory, IngestOptions, IngestService, MqttOptions
from telemetry.ingest.parsing import TimestampPolicy
from telemetry.store import EmbeddedStore
from telemetry.twin import DeviceTwinStore
from tests.fixtures.broker import MqttProbe

INGEST = "pharos-ingest"
RULES = "pharos-rules"
COMMANDS = "pharos-commands"
IOC = "pharos-ioc"
SITE_SUN = SunTimes(10.0452, 105.7469, "Asia/Ho_Chi_Minh")
# Scenario times lie in the past or future of the wall clock: keep the device's ts.
ANY_TIME = TimestampPolicy(max_future_s=10 * 365 * 86_400.0, max_past_s=10 * 365 * 86_400.0)


def device_create(spec: DeviceSpec) -> DeviceCreate:
    return DeviceCreate(
        id=spec.device_id,
        kind=spec.kind,
        name=spec.name,
        latitude=spec.latitude,
        longitude=spec.longitude,
        district=spec.district,
        street=spec.street,
        pole=spec.pole,
        rated_power_w=spec.rated_power_w,
    )


@dataclass
class Bed:
    broker: MosquittoProcess
    sessions: sessionmaker[Session]
    tmp_path: Path
    secrets: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._writer = BrokerAccessWriter(
            self.broker.password_file, self.broker.acl_file, self.broker.pid_file
        )

    def register(self, specs: Sequence[DeviceSpec]) -> None:
        before = self.broker.reloads_seen()
        with registry_session(self.sessions, "test", broker_sync=self._writer.sync) as registry:
            for spec in specs:
                _, credentials = registry.create_device(device_create(spec))
                assert credentials is not None
                self.secrets[spec.device_id] = credentials.secret
            for name in (INGEST, RULES, IOC, COMMANDS):
                self.secrets[name] = registry.ensure_service_account(name).secret
        self.broker.wait_for_reload(before)

    def account(self, name: str) -> MqttAccount:
        return MqttAccount(self.broker.host, self.broker.port, name, self.secrets[name])

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress(self.broker.host, self.broker.port)


@pytest.fixture
def bed(mosquitto: MosquittoProcess, sessions: sessionmaker[Session], tmp_path: Path) -> Bed:
    return Bed(mosquitto, sessions, tmp_path)


class AlertWatcher:
    """The IOC's view: every event on ``pharos/v1/alerts``."""

    def __init__(self, bed: Bed) -> None:
        self.probe = MqttProbe(bed.broker.port, IOC, bed.secrets[IOC], client_id=IOC)
        assert not self.probe.connect().is_failure
        assert not self.probe.subscribe(ALERTS_TOPIC)[0].is_failure

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.probe.payloads(ALERTS_TOPIC)]

    def close(self) -> None:
        self.probe.close()


@dataclass
class Pipeline:
    bed: Bed
    clock: SteppedClock
    rules: RulesService
    ingest: IngestService
    control: ControlCommands
    commands: CommandService
    store: EmbeddedStore
    derived: EmbeddedStore
    alerts: AlertStore
    catalog: DeviceCatalog
    fleet: Fleet | None = None

    async def caught_up(self, within: float = 30.0) -> None:
        """Until ingest has every reading sent (or, when a device cut its link with a
        reading in flight, nothing more arrives for half a second), the rules are idle
        and every command sent has been answered (or ignored as expired)."""
        assert self.fleet is not None
        deadline = time.monotonic() + within
        last, still_since = -1, time.monotonic()
        while True:
            counters = self.fleet.counters()
            stats = self.ingest.stats
            if stats.readings != last:
                last, still_since = stats.readings, time.monotonic()
            settled = stats.readings >= counters.readings_sent or (
                time.monotonic() - still_since > 0.5
            )
            done = (
                settled
                and stats.in_flight == 0
                and stats.queued == 0
                and self.rules.stats.queued == 0
                and counters.commands_acknowledged + counters.commands_ignored
                >= self.commands.published
            )
            if done:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await self.rules.wait_idle()
                if self.rules.stats.queued == 0:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"not caught up: {counters} {stats} {self.rules.stats}")
            await asyncio.sleep(0.02)  # polling a condition with a deadline

    async def run(
        self,
        end: datetime,
        step: timedelta = timedelta(minutes=15),
        after_step: Callable[[datetime], None] | None = None,
    ) -> None:
        assert self.fleet is not None
        when = self.clock.now()
        while when < end:
            when = min(end, when + step)
            await self.fleet.run_until(when)
            await self.caught_up()
            if after_step is not None:
                after_step(when)


@asynccontextmanager
async def pipeline(
    bed: Bed,
    specs: Sequence[DeviceSpec],
    *,
    start: datetime,
    seed: int,
    rules: Sequence[Rule],
    events: Sequence[Any] = (),
    settings: RulesSettings | None = None,
) -> AsyncIterator[Pipeline]:
    mqtt_specs = [s for s in specs if not s.is_modbus]
    bed.register(mqtt_specs)
    clock = SteppedClock(start)
    store = EmbeddedStore(bed.tmp_path / "timeseries.db")
    derived = store  # derived points (aqi, flood, alerts) share the store, as in production
    settings = settings or RulesSettings(silence_check_s=60, escalation_check_s=60)
    alerts = AlertStore(bed.sessions)
    letters = DeadLetterStore(bed.sessions)
    async with AsyncExitStack() as stack:
        catalog = await stack.enter_async_context(DeviceCatalog(bed.sessions))
        publisher = await stack.enter_async_context(MqttSession(bed.account(RULES), name="rules"))
        link = LinkOptions(bed.broker.host, bed.broker.port, COMMANDS, bed.secrets[COMMANDS])
        commands = await stack.enter_async_context(CommandService(bed.sessions, clock, link))
        control = ControlCommands(commands, bed.sessions, clock)
        service = RulesService(
            settings=settings,
            catalog=catalog,
            alerts=alerts,
            clock=clock,
            sun=SITE_SUN,
            rules=rules,
            publisher=publisher,
            control=control,
            maintenance=RegistryMaintenance(bed.sessions),
            submit=store.write,
        )
        await stack.enter_async_context(service)
        twin = await stack.enter_async_context(DeviceTwinStore(bed.sessions, flush_interval_s=0.2))
        directory = await stack.enter_async_context(DeviceDirectory(bed.sessions))
        ingest = await stack.enter_async_context(
            IngestService(
                MqttOptions(bed.broker.host, bed.broker.port, INGEST, bed.secrets[INGEST]),
                submit=store.write,
                dead_letters=letters,
                twin=twin,
                directory=directory,
                options=IngestOptions(stats_interval_s=None, timestamps=ANY_TIME),
                observers=[service],
            )
        )
        async with asyncio.timeout(10):
            await ingest.wait_connected()
        bed_pipeline = Pipeline(
            bed, clock, service, ingest, control, commands, store, derived, alerts, catalog
        )
        fleet = Fleet(mqtt_specs, broker=bed.address, clock=clock, seed=seed, events=events)
        await stack.enter_async_context(fleet)
        fleet.start_mqtt({s.device_id: bed.secrets[s.device_id] for s in mqtt_specs})
        bed_pipeline.fleet = fleet
        yield bed_pipeline
