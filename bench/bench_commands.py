"""Command benchmark: one dim command to a group of N simulated lamps, through a real
Mosquitto, tracked per lamp by the command service.

Measured in one run:

1. the limit: the broker's own C clients (``mosquitto_pub -l`` -> broker ->
   ``mosquitto_sub -C``) moving N QoS 1 messages; a command and its acknowledgement are
   two such trips, so the round-trip limit is twice that time;
2. the command: N lamps (``firmware_sim`` models, own accounts, in a child process so
   they do not share the service's CPU) in one group; ``set_dim`` to the group; time
   until every lamp's acknowledgement is tracked (and written to the database), and
   p50 / p99 of send-to-acknowledgement per lamp.

Goal: all 5,000 acknowledged within 10 s on this machine. Prints the figures and one
JSON line; never run by the tests:
``.venv/bin/python bench/bench_commands.py --lamps 5000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_sim import MAX_PUBLISHERS, PUBLISHER, SUBSCRIBER, Broker, c_client_limit, city

from control.commands.link import LinkOptions
from control.commands.model import CommandRequest
from control.commands.service import CommandOptions, CommandService
from control.plan import TargetType
from devices.broker import BrokerAccessWriter, BrokerAccount, hash_password, new_secret
from devices.registry.db import make_engine, make_session_factory, transaction
from devices.registry.schemas import DeviceCreate, GroupCreate
from devices.registry.service import Registry
from pharos.broker_process import MosquittoProcess
from pharos.database import upgrade
from pharos_core.clock import SystemClock

SERVICE = "pharos-commands"
GROUP = "bench-street"
START = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)  # 20:00 in Cần Thơ


def fleet_main(host: str, port: int, secrets_file: str) -> None:
    """Child process: run the lamps until stdin closes."""
    from firmware_sim.mqtt.device import MqttDevice
    from firmware_sim.mqtt.hub import BrokerAddress, MqttHub
    from firmware_sim.mqtt.link import WireOptions
    from firmware_sim.physics.factory import build_model
    from pharos_core.clock import SteppedClock

    secrets: dict[str, str] = json.loads(Path(secrets_file).read_text())
    specs = [s for s in city(len(secrets), 3600) if s.device_id in secrets]

    async def run() -> None:
        clock = SteppedClock(START)  # never moved: no readings, commands only
        async with MqttHub(BrokerAddress(host, port), connect_concurrency=64) as hub:
            for spec in specs:
                model = build_model(
                    spec.kind, spec.device_id, seed=1, latitude=spec.latitude,
                    longitude=spec.longitude, rated_power_w=spec.rated_power_w,
                    interval_s=3600,
                )  # fmt: skip
                hub.start(
                    MqttDevice(model, secrets[spec.device_id], hub=hub, clock=clock, seed=1,
                               options=WireOptions(stagger_readings=False))
                )  # fmt: skip
            await asyncio.to_thread(sys.stdin.read)
            hub.stop_all()

    asyncio.run(run())


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def command_phase(
    broker: Broker, lamps: list[str], workdir: Path, rate: float
) -> dict[str, Any]:
    engine = make_engine(f"sqlite:///{workdir / 'pharos.db'}")
    upgrade(engine)
    sessions = make_session_factory(engine)
    specs = [s for s in city(len(lamps), 3600)]
    with transaction(sessions) as session:
        registry = Registry(session, "bench")
        registry.create_group(GroupCreate(id=GROUP, name="Quốc lộ 91"))
        registry.upsert_devices(
            DeviceCreate(id=s.device_id, kind=s.kind, name=s.name, latitude=s.latitude,
                         longitude=s.longitude, rated_power_w=s.rated_power_w, groups=[GROUP])
            for s in specs
        )  # fmt: skip
    secrets_file = workdir / "secrets.json"
    secrets_file.write_text(json.dumps({i: broker.secrets[i] for i in lamps}))
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--fleet", broker.process.host, str(broker.process.port),
        str(secrets_file), stdin=asyncio.subprocess.PIPE,
    )  # fmt: skip
    link = LinkOptions(broker.process.host, broker.process.port, SERVICE, broker.secrets[SERVICE])
    options = CommandOptions(rate_per_s=rate, burst=500)
    try:
        async with CommandService(sessions, SystemClock(), link, options=options) as service:
            connect_started = time.perf_counter()
            while len(service.reported) < len(lamps):  # every lamp announced its state
                if time.perf_counter() - connect_started > 300:
                    raise RuntimeError(f"only {len(service.reported)} lamps connected")
                await asyncio.sleep(0.2)
            connect_s = time.perf_counter() - connect_started
            request = CommandRequest(
                action="set_dim", params={"level": 40}, target_type=TargetType.GROUP,
                target_id=GROUP,
            )  # fmt: skip
            started = time.perf_counter()
            created = await service.submit(request, "bench")
            await service.wait_settled(created.id)
            elapsed = time.perf_counter() - started
            latencies = service.latencies(created.id)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        async with asyncio.timeout(120):
            await child.wait()
        engine.dispose()
    return {
        "lamps": len(lamps),
        "connect_s": round(connect_s, 2),
        "all_acknowledged_s": round(elapsed, 3),
        "acknowledged": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "rate_limit_per_s": rate,
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    lamps = [s.device_id for s in city(args.lamps, 3600)]
    with tempfile.TemporaryDirectory(prefix="pharos-bench-cmd-") as tmp:
        workdir = Path(tmp)
        process = MosquittoProcess(workdir / "broker")
        process.start()
        try:
            services = [SERVICE, SUBSCRIBER, *(f"{PUBLISHER}-{n}" for n in range(MAX_PUBLISHERS))]
            secrets = {name: new_secret() for name in [*lamps, *services]}
            writer = BrokerAccessWriter(process.password_file, process.acl_file, process.pid_file)
            before = process.reloads_seen()
            writer.sync(
                BrokerAccount(n, hash_password(s), "service" if n in services else "device")
                for n, s in secrets.items()
            )
            process.wait_for_reload(before, timeout=60)
            broker = Broker(process, secrets)
            limit = c_client_limit(broker, args.lamps, min(MAX_PUBLISHERS, 4))
            command = asyncio.run(command_phase(broker, lamps, workdir, args.rate))
        finally:
            process.stop()
    round_trip_limit_s = 2 * limit["seconds"]
    return {
        "bench": "commands",
        "limit_c_clients": limit,
        "round_trip_limit_s": round(round_trip_limit_s, 3),
        "command": command,
        "ratio_to_limit": round(command["all_acknowledged_s"] / round_trip_limit_s, 2),
        "goal_10s_met": command["all_acknowledged_s"] <= 10
        and command["acknowledged"] == args.lamps,
    }


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--fleet":
        fleet_main(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lamps", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=2000.0, help="commands/s to the broker")
    args = parser.parse_args()
    result = bench(args)
    limit, command = result["limit_c_clients"], result["command"]
    print(f"limit: C clients moved {limit['messages']} QoS 1 messages in {limit['seconds']} s "
          f"({limit['messages_per_s']}/s); a command round trip is two: "
          f"{result['round_trip_limit_s']} s")  # fmt: skip
    print(f"{command['lamps']} lamps connected in {command['connect_s']} s")
    print(f"set_dim to the group: {command['acknowledged']}/{command['lamps']} acknowledged in "
          f"{command['all_acknowledged_s']} s (rate limit {command['rate_limit_per_s']}/s), "
          f"p50 {command['p50_ms']} ms, p99 {command['p99_ms']} ms send->ack; "
          f"{result['ratio_to_limit']}x the C clients' round trip; goal 10 s "
          f"{'met' if result['goal_10s_met'] else 'NOT met'}")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
