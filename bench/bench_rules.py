"""Rules benchmark: evaluations/s of the Cần Thơ rule set, and trigger → command latency.

Part 1 (pure engine, one core): the shipped Cần Thơ rule set over ``--devices``
simulated devices (lamps, smart poles, air monitors, gauges, meters in the city's
proportions), readings fed straight into ``RuleEngine``; one evaluation is one rule
against one reading of one device. The reference measured in the same run is a bare
Python loop doing one threshold comparison per evaluation (the interpreter's ceiling).

Part 2 (real Mosquitto, in-process ingest and rules): a load generator publishes
readings at 10 % and 50 % of the ingest benchmark's rate (``--ingest-rate``), while a
gauge crosses a threshold every ``--trigger-every`` seconds; the rule sends
``set_dim 100`` to a lamp (an MQTT client logged in as that lamp) through control's
command service, as ``pharos serve`` does (stored, then published). Latency is from the
crossing reading's publish to the command's arrival at the lamp, p50/p99. The
reference is the broker's own round trip under the same load (publish → a subscriber).

Figures are printed, then one JSON line. Never run by the tests.

Example: .venv/bin/python bench/bench_rules.py --devices 10000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from control.commands.link import LinkOptions  # noqa: E402
from control.commands.service import CommandService  # noqa: E402
from devices.broker import BrokerAccessWriter  # noqa: E402
from devices.registry.db import make_engine, make_session_factory  # noqa: E402
from devices.registry.schemas import DeviceCreate, GroupCreate  # noqa: E402
from devices.registry.service import registry_session  # noqa: E402
from devices.wire import Channel, device_topic  # noqa: E402
from pharos.broker_process import MosquittoProcess  # noqa: E402
from pharos.database import upgrade  # noqa: E402
from pharos.runtime import freeze_startup_heap  # noqa: E402
from pharos_core.clock import SystemClock  # noqa: E402
from rules.alerts import AlertStore  # noqa: E402
from rules.catalog import DeviceCatalog, StaticCatalog  # noqa: E402
from rules.control_port import ControlCommands  # noqa: E402
from rules.derived import Derivations, DeviceFacts, SunTimes  # noqa: E402
from rules.engine import RuleEngine  # noqa: E402
from rules.service import RulesService  # noqa: E402
from rules.settings import SHIPPED_RULES, RulesSettings  # noqa: E402
from rules.spec import load_rule_file, parse_rule_text  # noqa: E402
from telemetry.deadletters import DeadLetterStore  # noqa: E402
from telemetry.ingest import (  # noqa: E402
    DeviceDirectory,
    IngestOptions,
    IngestService,
    MqttOptions,
)
from telemetry.points import Point  # noqa: E402
from telemetry.twin import DeviceTwinStore  # noqa: E402

SUN = SunTimes(10.0452, 105.7469, "Asia/Ho_Chi_Minh")
MIX = (("streetlight", 0.6), ("smart_pole", 0.15), ("env_monitor", 0.1),
       ("flood_gauge", 0.05), ("energy_meter", 0.1))  # fmt: skip
DISTRICTS = ("Ninh Kiều", "Bình Thủy", "Cái Răng", "Ô Môn", "Thốt Nốt")


# -- part 1: the pure engine ------------------------------------------------------------------


def fleet(n: int) -> list[DeviceFacts]:
    devices: list[DeviceFacts] = []
    for kind, share in MIX:
        for i in range(int(n * share)):
            district = DISTRICTS[i % len(DISTRICTS)]
            rated = 100.0 if kind in ("streetlight", "smart_pole") else None
            devices.append(DeviceFacts(f"{kind[:2]}-{i:05d}", kind, district, frozenset(), rated))
    return devices


def reading(device: DeviceFacts, when: datetime, rng: random.Random) -> Point:
    kind = device.kind
    if kind in ("streetlight", "smart_pole"):
        level = 70.0
        fields: dict[str, float | bool] = {
            "power_w": 70.0 * rng.uniform(0.95, 1.05), "dim_level": level, "lamp_on": True,
            "voltage_v": 230.0, "current_a": 0.3, "energy_kwh": 1.0,
        }  # fmt: skip
        if kind == "smart_pole":
            fields |= {"pm25": rng.uniform(10, 80), "pm10": rng.uniform(20, 120)}
    elif kind == "env_monitor":
        fields = {"pm25": rng.uniform(10, 80), "pm10": rng.uniform(20, 120),
                  "no2": rng.uniform(20, 150), "temperature_c": 30.0}  # fmt: skip
    elif kind == "flood_gauge":
        fields = {"water_level_m": rng.uniform(1.5, 2.1), "rain_mm": 0.0, "battery_v": 3.7}
    else:
        fields = {"power_w": rng.uniform(1e5, 2e5), "power_factor": rng.uniform(0.75, 0.95),
                  "frequency_hz": 50.0, "voltage_v": 230.0}  # fmt: skip
    return Point(kind, device.tags(), dict(fields), when)


def bench_engine(devices: int, rounds: int) -> dict[str, float]:
    facts = fleet(devices)
    rules = load_rule_file(SHIPPED_RULES).rules
    engine = RuleEngine(rules, Derivations(RulesSettings(), SUN), StaticCatalog(facts).get)
    rng = random.Random(7)
    start = datetime(2026, 10, 22, 13, 0, tzinfo=UTC)  # 20:00 local: lamps lit
    batches = [
        [reading(d, start + timedelta(minutes=r), rng) for d in facts] for r in range(rounds)
    ]
    began = time.perf_counter()
    for batch in batches:
        engine.on_points(batch)
    elapsed = time.perf_counter() - began
    evaluations = engine.stats.evaluations
    # The reference: one comparison per evaluation in a bare loop.
    values = [rng.random() for _ in range(evaluations)]
    began = time.perf_counter()
    hits = 0
    for value in values:
        if value > 0.5:
            hits += 1
    bare = time.perf_counter() - began
    return {
        "devices": len(facts),
        "readings": devices * rounds,
        "evaluations": evaluations,
        "seconds": elapsed,
        "evaluations_per_s": evaluations / elapsed,
        "readings_per_s": len(facts) * rounds / elapsed,
        "bare_comparisons_per_s": evaluations / bare,
    }


# -- part 2: trigger → command through the broker ---------------------------------------------

LAMP, GAUGE, LOAD, COMMANDS_USER, INGEST_USER, PROBE = (
    "bench-lamp", "bench-gauge", "bench-load", "bench-commands", "bench-ingest", "bench-probe",
)  # fmt: skip
TRIGGER_RULE = """\
rules:
  - id: bench-trigger
    name: bench trigger
    scope: {device: bench-gauge}
    when: {value: water_level_m, above: 1.9}
    actions:
      - {command: set_dim, params: {level: 100}, target: group, group: bench-lamps}
"""


def client(port: int, username: str, secret: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username,
                    protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
    c.username_pw_set(username, secret)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    connected = threading.Event()
    c.on_connect = lambda *_: connected.set()
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"{username} could not connect")
    return c


def provision(
    workdir: Path, broker: MosquittoProcess, load_devices: int
) -> tuple[Any, dict[str, str]]:
    engine = make_engine(f"sqlite:///{workdir / 'bench.db'}")
    upgrade(engine)
    sessions = make_session_factory(engine)
    writer = BrokerAccessWriter(broker.password_file, broker.acl_file, broker.pid_file)
    secrets: dict[str, str] = {}
    before = broker.reloads_seen()
    with registry_session(sessions, "bench", broker_sync=writer.sync) as registry:
        registry.create_group(GroupCreate(id="bench-lamps", name="bench lamps"))
        devices = [
            {"id": LAMP, "kind": "streetlight", "rated_power_w": 100.0, "groups": ["bench-lamps"]},
            {"id": GAUGE, "kind": "flood_gauge"},
            *({"id": f"bench-{i:04d}", "kind": "env_monitor"} for i in range(load_devices)),
        ]
        for data in devices:
            _, credentials = registry.create_device(
                DeviceCreate.model_validate({"name": data["id"], **data})
            )
            if data["id"] in (LAMP, GAUGE) and credentials is not None:
                secrets[data["id"]] = credentials.secret
        for name in (LOAD, COMMANDS_USER, INGEST_USER, PROBE, PROBE + "-gauge"):
            secrets[name] = registry.ensure_service_account(name).secret
    broker.wait_for_reload(before)
    return sessions, secrets


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


class Triggers(threading.Thread):
    """Every ``every`` seconds the gauge crosses the threshold, then falls back (clears)."""

    def __init__(self, c: mqtt.Client, seconds: float, every: float) -> None:
        super().__init__(daemon=True)
        self.c, self.seconds, self.every = c, seconds, every
        self.stamps: list[float] = []

    def run(self) -> None:
        began = time.perf_counter()
        seq = 0
        while time.perf_counter() - began < self.seconds:
            for level in (2.0, 1.0):
                seq += 1
                body = json.dumps({"seq": seq, "metrics": {"water_level_m": level}})
                if level > 1.9:
                    self.stamps.append(time.perf_counter())
                self.c.publish(device_topic(GAUGE, Channel.TELEMETRY), body, qos=1)
            time.sleep(self.every)  # pacing the triggers


def load_process(
    port: int, secret: str, rate: float, seconds: float, devices: int
) -> subprocess.Popen[bytes]:
    """bench_ingest's load generator (raw MQTT, a process of its own) at ``rate``/s."""
    count = int(rate * seconds)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bench_ingest.py"), "loadgen", "--port", str(port),
         "--devices", str(devices), "--count", str(count), "--qos", "1", "--seq0", "0",
         "--rate", str(rate), "--password", secret],
        stdout=subprocess.PIPE,
    )  # fmt: skip


def matched(stamps: Sequence[float], arrivals: Sequence[float]) -> list[float]:
    """Each command's latency from the newest crossing published before it (ms)."""
    latencies = []
    for arrival in arrivals:
        before = [s for s in stamps if s <= arrival]
        if before:
            latencies.append((arrival - before[-1]) * 1000)
    return latencies


async def bench_latency(
    rate: float, seconds: float, trigger_every: float, load_devices: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker = MosquittoProcess(workdir / "broker")
        broker.start()
        try:
            sessions, secrets = await asyncio.to_thread(provision, workdir, broker, load_devices)
            return await _measure(
                broker, sessions, secrets, rate, seconds, trigger_every, load_devices
            )
        finally:
            broker.stop()


async def _measure(
    broker: MosquittoProcess,
    sessions: Any,
    secrets: dict[str, str],
    rate: float,
    seconds: float,
    trigger_every: float,
    load_devices: int,
) -> dict[str, float]:
    arrivals: list[float] = []
    seen: set[str] = set()
    lamp = client(broker.port, LAMP, secrets[LAMP])

    def answer(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        # The lamp answers as a real one does (else the command service resends), and
        # only a command's first arrival is timed.
        arrived = time.perf_counter()
        command_id = json.loads(message.payload)["id"]
        if command_id not in seen:
            seen.add(command_id)
            arrivals.append(arrived)
        ack = json.dumps({"id": command_id, "status": "ok", "detail": "bench"})
        lamp.publish(device_topic(LAMP, Channel.CMD_ACK), ack, qos=1)

    lamp.on_message = answer
    lamp.subscribe(device_topic(LAMP, Channel.CMD), qos=1)
    probe_times: list[float] = []
    probe = client(broker.port, PROBE, secrets[PROBE])
    probe.on_message = lambda _c, _u, m: probe_times.append(time.perf_counter() - float(m.payload))
    probe.subscribe("pharos/v1/bench/#", qos=1)
    gauge = client(broker.port, PROBE + "-gauge", secrets[PROBE + "-gauge"])
    clock = SystemClock()
    settings = RulesSettings(files=[])
    rules = parse_rule_text(TRIGGER_RULE).rules + load_rule_file(SHIPPED_RULES).rules
    commands_link = LinkOptions(broker.host, broker.port, COMMANDS_USER, secrets[COMMANDS_USER])
    async with (
        DeviceCatalog(sessions) as catalog,
        CommandService(sessions, clock, commands_link) as commands,
        RulesService(settings=settings, catalog=catalog, alerts=AlertStore(sessions), clock=clock,
                     sun=SUN, rules=rules,
                     control=ControlCommands(commands, sessions, clock)) as service,
        DeviceTwinStore(sessions) as twin,
        DeviceDirectory(sessions) as directory,
        IngestService(
            MqttOptions(broker.host, broker.port, INGEST_USER, secrets[INGEST_USER]),
            submit=_discard, dead_letters=DeadLetterStore(sessions), twin=twin,
            directory=directory, options=IngestOptions(stats_interval_s=None), observers=[service],
        ) as ingest,
    ):  # fmt: skip
        await ingest.wait_connected()
        freeze_startup_heap()  # as `pharos serve` and `pharos ingest` do once started
        load = load_process(broker.port, secrets[LOAD], rate, seconds, load_devices)
        triggers = Triggers(gauge, seconds, trigger_every)
        triggers.start()
        while triggers.is_alive():
            probe.publish("pharos/v1/bench/rtt", str(time.perf_counter()), qos=1)
            await asyncio.sleep(0.05)  # a broker round-trip sample every 50 ms
        sent = json.loads((await asyncio.to_thread(load.communicate))[0] or b"{}").get("sent", 0)
        await asyncio.sleep(1.0)  # the last commands in flight
        stats = service.stats
    for c in (lamp, probe, gauge):
        c.disconnect()
        c.loop_stop()
    latencies = matched(triggers.stamps, arrivals)
    return {
        "rate": rate,
        "readings_sent": sent,
        "triggers": len(triggers.stamps),
        "commands": len(arrivals),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "broker_rtt_p50_ms": percentile(probe_times, 0.50) * 1000,
        "broker_rtt_p99_ms": percentile(probe_times, 0.99) * 1000,
        "dropped_batches": stats.dropped_batches,
        "evaluations": stats.evaluations,
    }


async def _discard(points: Sequence[Point]) -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="readings per device (part 1)")
    parser.add_argument("--ingest-rate", type=float, default=10_000.0,
                        help="the ingest benchmark's sustained readings/s")  # fmt: skip
    # ~600 triggers per level: with ~100, "p99" is just the single worst sample.
    parser.add_argument("--seconds", type=float, default=30.0, help="per load level (part 2)")
    parser.add_argument("--trigger-every", type=float, default=0.05)
    parser.add_argument("--load-devices", type=int, default=500)
    args = parser.parse_args()

    engine = bench_engine(args.devices, args.rounds)
    print(f"engine: {engine['evaluations']:,} evaluations of the Cần Thơ set over "
          f"{engine['devices']:,} devices in {engine['seconds']:.2f} s: "
          f"{engine['evaluations_per_s']:,.0f} evaluations/s on one core "
          f"({engine['readings_per_s']:,.0f} readings/s; a bare comparison loop does "
          f"{engine['bare_comparisons_per_s']:,.0f}/s, ratio "
          f"{engine['evaluations_per_s'] / engine['bare_comparisons_per_s']:.3f}); "
          f"goal 100,000/s")  # fmt: skip
    levels = []
    for share in (0.10, 0.50):
        result = asyncio.run(
            bench_latency(
                args.ingest_rate * share, args.seconds, args.trigger_every, args.load_devices
            )
        )
        result["share"] = share
        levels.append(result)
        print(f"trigger→command at {share:.0%} of ingest ({result['rate']:,.0f} readings/s, "
              f"{result['readings_sent']:,} sent): {result['commands']}/{result['triggers']} "
              f"commands, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms "
              f"(broker round trip p50 {result['broker_rtt_p50_ms']:.1f} ms, p99 "
              f"{result['broker_rtt_p99_ms']:.1f} ms; goal p99 < 50 ms); "
              f"batches not evaluated: {result['dropped_batches']}")  # fmt: skip
    print(json.dumps({"bench": "rules", "engine": engine, "latency": levels}))


if __name__ == "__main__":
    main()
