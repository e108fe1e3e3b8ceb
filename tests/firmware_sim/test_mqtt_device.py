"""One simulated device on a real Mosquitto: announcements, readings, commands, sessions.

The backend side is ``MqttProbe`` logged in with a service account; devices log in
with accounts of their own written the way the registry writes them. Time is a
``SteppedClock`` moved by ``drive_stepped_clock``, which waits for every PUBACK before
time moves, so what reaches the probe does not depend on the machine's speed. Waits
on the probe run in a worker thread (its condition variable), never as sleeps.

The helpers here (``Accounts``, ``FakeLamp``, ``running``, ``wait_for``) are shared
with the other simulator tests.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devices.broker import BrokerAccessWriter, BrokerAccount, hash_password, new_secret
from devices.wire import (
    Channel,
    Command,
    CommandAck,
    DeviceKind,
    DeviceState,
    DeviceStatus,
    device_topic,
    parse_reading,
    validate_metrics,
)
from firmware_sim.faults import FaultConfig
from firmware_sim.fleet import drive_stepped_clock
from firmware_sim.model import Ack, MetricValue
from firmware_sim.mqtt.device import MqttDevice
from firmware_sim.mqtt.encoding import encode_plain, encode_senml
from firmware_sim.mqtt.hub import BrokerAddress, MqttHub
from firmware_sim.mqtt.link import LinkState, WireOptions
from pharos.broker_process import MosquittoProcess
from pharos_core.clock import SteppedClock
from tests.fixtures.broker import MqttProbe, Received

pytestmark = pytest.mark.broker

BACKEND = "sim-test-backend"
START = datetime(2026, 3, 20, 10, 0, tzinfo=UTC)  # 17:00 in Cần Thơ
PLUS7 = timedelta(hours=7)
WAIT_S = 10.0


class FakeLamp:
    """A tiny deterministic lamp: power follows the level; enough to exercise the wire."""

    kind = DeviceKind.STREETLIGHT

    def __init__(self, device_id: str, interval_s: float = 60.0) -> None:
        self.device_id = device_id
        self._interval_s = interval_s
        self.level = 100.0
        self.handled: list[tuple[str, dict[str, Any]]] = []

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def sample(self, now: datetime) -> dict[str, MetricValue]:
        return {
            "power_w": 1.2 * self.level,
            "dim_level": self.level,
            "lamp_on": self.level > 0,
            "voltage_v": 230.0,
        }

    def state(self, now: datetime) -> dict[str, Any]:
        return {"power": "on" if self.level > 0 else "off", "dim_level": self.level}

    def handle(self, action: str, params: dict[str, Any], now: datetime) -> Ack:
        self.handled.append((action, params))
        if action == "set_dim":
            self.level = float(params["level"])
        elif action == "switch":
            self.level = 100.0 if params["on"] else 0.0
        return Ack("ok", f"{action} done")


@dataclass
class Accounts:
    """Device and backend accounts in a running broker, written as the registry does."""

    broker: MosquittoProcess
    secrets: dict[str, str] = field(default_factory=dict)
    probes: list[MqttProbe] = field(default_factory=list)
    services: set[str] = field(default_factory=lambda: {BACKEND})

    def add(self, device_ids: Sequence[str], services: Sequence[str] = ()) -> None:
        """Write accounts for ``device_ids`` and ``services`` (with every earlier one)."""
        self.services.update(services)
        for name in [*device_ids, *self.services]:
            self.secrets.setdefault(name, new_secret())
        writer = BrokerAccessWriter(
            self.broker.password_file, self.broker.acl_file, self.broker.pid_file
        )
        before = self.broker.reloads_seen()
        writer.sync(
            BrokerAccount(
                name, hash_password(secret), "service" if name in self.services else "device"
            )
            for name, secret in self.secrets.items()
        )
        self.broker.wait_for_reload(before)

    def backend(self, topic: str = "pharos/v1/dev/#") -> MqttProbe:
        """A connected backend session subscribed to ``topic``."""
        probe = MqttProbe(self.broker.port, BACKEND, self.secrets[BACKEND], client_id=BACKEND)
        self.probes.append(probe)
        assert not probe.connect().is_failure
        assert not probe.subscribe(topic)[0].is_failure
        return probe

    def close(self) -> None:
        for probe in self.probes:
            probe.close()

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress(self.broker.host, self.broker.port)


def open_accounts(mosquitto: MosquittoProcess) -> Iterator[Accounts]:
    """The body of each test module's ``accounts`` fixture (fixtures do not import)."""
    accounts = Accounts(mosquitto)
    accounts.add([])  # the backend's account first: tests log it in before any device
    yield accounts
    accounts.close()


@pytest.fixture
def accounts(mosquitto: MosquittoProcess) -> Iterator[Accounts]:
    yield from open_accounts(mosquitto)


@asynccontextmanager
async def running(
    accounts: Accounts,
    models: Sequence[Any],
    clock: SteppedClock,
    *,
    faults: dict[str, FaultConfig] | None = None,
    options: WireOptions | None = None,
    seed: int = 7,
) -> AsyncIterator[tuple[MqttHub, list[MqttDevice]]]:
    """A hub running one device per model (accounts written first); stops them on exit."""
    accounts.add([m.device_id for m in models])
    options = options or WireOptions(stagger_readings=False)
    async with MqttHub(accounts.address, max_unacked=0) as hub:
        devices = [
            hub.start(
                MqttDevice(
                    model,
                    accounts.secrets[model.device_id],
                    hub=hub,
                    clock=clock,
                    faults=(faults or {}).get(model.device_id),
                    seed=seed,
                    options=options,
                )
            )
            for model in models
        ]
        yield hub, devices


async def wait_for(probe: MqttProbe, predicate: Callable[[], bool]) -> bool:
    """Wait on the probe's own condition in a worker thread, so the loop keeps running."""
    return await asyncio.to_thread(probe.wait_for, predicate, WAIT_S)


def on(probe: MqttProbe, device_id: str, channel: Channel) -> list[Received]:
    topic = device_topic(device_id, channel)
    return [m for m in probe.messages if m.topic == topic]


async def drive(hub: MqttHub, clock: SteppedClock, seconds: float) -> None:
    await drive_stepped_clock(clock, hub, clock.now() + timedelta(seconds=seconds))


def command(action: str, params: dict[str, Any], expires_at: datetime) -> Command:
    return Command(id=uuid.uuid4(), action=action, params=params, expires_at=expires_at)


async def send(probe: MqttProbe, device_id: str, payload: bytes) -> None:
    await asyncio.to_thread(probe.publish, device_topic(device_id, Channel.CMD), payload)


def acks(probe: MqttProbe, device_id: str) -> list[CommandAck]:
    return [CommandAck.parse(m.payload) for m in on(probe, device_id, Channel.CMD_ACK)]


# --- announcements and readings -----------------------------------------------------------


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_device_announces_and_reports_on_the_wire(accounts: Accounts, protocol: str) -> None:
    clock = SteppedClock(START)
    backend = accounts.backend()
    lamp = FakeLamp("sl-test-00001")
    options = WireOptions(protocol=protocol, stagger_readings=False)  # type: ignore[arg-type]

    async with running(accounts, [lamp], clock, options=options) as (hub, [device]):
        await drive(hub, clock, 180)
        assert device.link is LinkState.UP
        assert await wait_for(
            backend, lambda: len(on(backend, lamp.device_id, Channel.TELEMETRY)) == 4
        )

    status = [DeviceStatus.parse(m.payload) for m in on(backend, lamp.device_id, Channel.STATUS)]
    assert status[0] is DeviceStatus.ONLINE
    state = DeviceState.parse(on(backend, lamp.device_id, Channel.STATE)[0].payload)
    assert state.power == "on" and state.dim_level == 100 and state.fw == "sim-1.0.0"
    assert state.ts is not None and state.ts.utcoffset() == PLUS7
    readings = [
        parse_reading(m.payload, lamp.device_id)[0]
        for m in on(backend, lamp.device_id, Channel.TELEMETRY)
    ]
    assert [r.seq for r in readings] == [1, 2, 3, 4]
    assert [r.ts for r in readings] == [START + timedelta(seconds=s) for s in (0, 60, 120, 180)]
    assert all(r.ts is not None and r.ts.utcoffset() == PLUS7 for r in readings)
    for reading in readings:
        good, errors = validate_metrics(DeviceKind.STREETLIGHT, reading.metrics)
        assert errors == [] and good["power_w"] == 120.0
    assert all(m.qos == 1 for m in backend.messages)


async def test_senml_device_sends_valid_packs(accounts: Accounts) -> None:
    clock = SteppedClock(START)
    backend = accounts.backend()
    lamp = FakeLamp("sl-test-senml")
    options = WireOptions(payload_format="senml", stagger_readings=False)

    async with running(accounts, [lamp], clock, options=options) as (hub, _):
        await drive(hub, clock, 60)
        assert await wait_for(
            backend, lambda: len(on(backend, lamp.device_id, Channel.TELEMETRY)) == 2
        )

    for message in on(backend, lamp.device_id, Channel.TELEMETRY):
        [reading] = parse_reading(message.payload, lamp.device_id)
        assert validate_metrics(DeviceKind.STREETLIGHT, reading.metrics)[1] == []
        assert json.loads(message.payload)[0]["bn"] == "urn:dev:pharos:sl-test-senml:"
    first = parse_reading(on(backend, lamp.device_id, Channel.TELEMETRY)[0].payload, lamp.device_id)
    assert first[0].ts == START


def test_encoders_keep_types_and_round_floats() -> None:
    plain = json.loads(encode_plain({"pm25": 41.23456, "lamp_on": True}, "t", 3))
    assert plain == {"ts": "t", "seq": 3, "metrics": {"pm25": 41.235, "lamp_on": True}}
    pack = json.loads(
        encode_senml("env-1", {"pm25": "ug/m3"}, {"pm25": 1.0, "x": True, "y": "s"}, START)
    )
    assert pack[0] == {
        "bn": "urn:dev:pharos:env-1:",
        "bt": START.timestamp(),
        "n": "pm25",
        "u": "ug/m3",
        "v": 1.0,
    }
    assert pack[1:] == [{"n": "x", "vb": True}, {"n": "y", "vs": "s"}]


# --- commands -----------------------------------------------------------------------------


async def test_commands_are_acknowledged_ok_or_rejected_with_a_reason(accounts: Accounts) -> None:
    clock = SteppedClock(START)
    backend = accounts.backend()
    lamp = FakeLamp("sl-test-cmd")
    later = START + timedelta(minutes=5)
    ok = command("set_dim", {"level": 40}, later)
    too_bright = command("set_dim", {"level": 150}, later)
    unknown = command("set_interval", {"seconds": 60}, later)  # a gauge's command, not a lamp's
    broken_id = uuid.uuid4()
    broken = b'{"id": "' + str(broken_id).encode() + b'", "action": "set_dim", "params": {'

    async with running(accounts, [lamp], clock) as (hub, _):
        await drive(hub, clock, 1)
        for payload in (ok.to_payload(), too_bright.to_payload(), unknown.to_payload(), broken):
            await send(backend, lamp.device_id, payload)
        await send(backend, lamp.device_id, b"not json, no id")
        assert await wait_for(
            backend, lambda: len(on(backend, lamp.device_id, Channel.CMD_ACK)) == 4
        )
        await drive(hub, clock, 1)
        counters = hub.counters

    by_id = {ack.id: ack for ack in acks(backend, lamp.device_id)}
    assert by_id[ok.id].status == "ok"
    assert by_id[too_bright.id].status == "rejected"
    assert "params.level" in by_id[too_bright.id].detail
    assert by_id[unknown.id].status == "rejected"
    assert "set_interval" in by_id[unknown.id].detail
    assert by_id[broken_id].status == "rejected"
    assert "not valid JSON" in by_id[broken_id].detail
    assert lamp.handled == [("set_dim", {"level": 40})]  # rejected ones never reach the model
    assert counters.commands_unreadable == 1
    states = [DeviceState.parse(m.payload) for m in on(backend, lamp.device_id, Channel.STATE)]
    assert [s.dim_level for s in states] == [100, 40]  # the new state follows the ok ack
    assert all(m.retain is False for m in on(backend, lamp.device_id, Channel.CMD_ACK))


async def test_expired_command_is_ignored_and_a_later_one_still_acked(accounts: Accounts) -> None:
    clock = SteppedClock(START)
    backend = accounts.backend()
    lamp = FakeLamp("sl-test-expired")
    expired = command("set_dim", {"level": 10}, START - timedelta(seconds=1))
    exactly_now = command("set_dim", {"level": 20}, START)  # expires_at <= now: expired
    valid = command("set_dim", {"level": 30}, START + timedelta(minutes=1))

    async with running(accounts, [lamp], clock) as (hub, _):
        await drive(hub, clock, 0)
        for cmd in (expired, exactly_now, valid):
            await send(backend, lamp.device_id, cmd.to_payload())
        # Acks come in command order: once the valid one is in, the others would be too.
        assert await wait_for(
            backend, lambda: len(on(backend, lamp.device_id, Channel.CMD_ACK)) >= 1
        )
        assert hub.counters.commands_ignored == 2

    assert [(a.id, a.status) for a in acks(backend, lamp.device_id)] == [(valid.id, "ok")]
    assert lamp.level == 30


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_command_sent_while_briefly_away_arrives_after_reconnect(
    accounts: Accounts, protocol: str
) -> None:
    clock = SteppedClock(START)
    backend = accounts.backend()
    lamp = FakeLamp("sl-test-session")
    options = WireOptions(protocol=protocol, stagger_readings=False)  # type: ignore[arg-type]
    sent_while_away = command("set_dim", {"level": 55}, START + timedelta(hours=1))

    async with running(accounts, [lamp], clock, options=options) as (hub, [device]):
        await drive(hub, clock, 1)
        device.drop_link()
        status_topic = device_topic(lamp.device_id, Channel.STATUS)

        def offline_seen() -> bool:
            return b"offline" in backend.payloads(status_topic)

        assert await wait_for(backend, offline_seen), "no Last Will after the link broke"
        away = device.link
        await send(backend, lamp.device_id, sent_while_away.to_payload())
        await drive(hub, clock, 600)  # past the back-off: it reconnects
        assert await wait_for(backend, lambda: bool(on(backend, lamp.device_id, Channel.CMD_ACK)))
        assert (away, device.link) == (LinkState.DOWN, LinkState.UP)

    assert acks(backend, lamp.device_id)[0].id == sent_while_away.id
    assert lamp.level == 55
    assert await wait_for(backend, lambda: len(on(backend, lamp.device_id, Channel.STATUS)) == 4)
    status = [m.payload for m in on(backend, lamp.device_id, Channel.STATUS)]
    assert status == [b"online", b"offline", b"online", b"offline"]  # ..., clean stop
    assert hub.counters.links_lost == 1


# --- leaving --------------------------------------------------------------------------------


async def test_clean_stop_leaves_retained_offline(accounts: Accounts) -> None:
    clock = SteppedClock(START)
    lamp = FakeLamp("sl-test-stop")

    async with running(accounts, [lamp], clock) as (hub, [device]):
        await drive(hub, clock, 1)
        assert hub.counters.connected == 1
    assert device.link is LinkState.DOWN
    assert hub.counters.connected == 0

    late = accounts.backend(device_topic(lamp.device_id, Channel.STATUS))  # after the fact
    assert await wait_for(late, lambda: bool(late.messages))
    assert late.messages[0].payload == b"offline" and late.messages[0].retain
    log = accounts.broker.log_tail(200)
    assert f"Client {lamp.device_id} disconnected." in log  # DISCONNECT sent: no Last Will


async def test_abrupt_drop_makes_the_broker_send_the_last_will(accounts: Accounts) -> None:
    clock = SteppedClock(START)
    lamp = FakeLamp("sl-test-lwt")

    async with running(accounts, [lamp], clock) as (hub, [device]):
        await drive(hub, clock, 1)
        retained_online = accounts.backend(device_topic(lamp.device_id, Channel.STATUS))
        assert await wait_for(retained_online, lambda: bool(retained_online.messages))
        assert (
            retained_online.messages[0].payload == b"online" and retained_online.messages[0].retain
        )
        device.drop_link()
        assert await wait_for(retained_online, lambda: len(retained_online.messages) == 2)
        assert retained_online.messages[1].payload == b"offline"
        hub.stop_all()  # before it reconnects: the retained status stays the Last Will's

    late = accounts.backend(device_topic(lamp.device_id, Channel.STATUS))
    assert await wait_for(late, lambda: bool(late.messages))
    assert late.messages[0].payload == b"offline" and late.messages[0].retain
    assert f"Client {lamp.device_id} closed its connection." in accounts.broker.log_tail(200)


async def test_refused_device_backs_off_and_time_still_moves(accounts: Accounts) -> None:
    clock = SteppedClock(START)
    lamp = FakeLamp("sl-test-refused")
    async with MqttHub(accounts.address, max_unacked=0) as hub:
        device = hub.start(MqttDevice(lamp, "wrong", hub=hub, clock=clock))
        await drive(hub, clock, 120)
        assert device.link is LinkState.DOWN
        failures = hub.counters.connect_failures
    # Back-off doubles from 1 s (sim) with jitter: in 120 s about 7 attempts, not 120.
    assert 3 <= failures <= 9
    assert clock.now() == START + timedelta(seconds=120)
