"""Simulator benchmark: devices one process keeps connected, messages/s, CPU and RSS per device.

Against a Mosquitto started from the project's config (accounts for every device, as
the registry writes them), this measures in one run:

1. the limit: the broker's own C clients (``mosquitto_pub -l`` → broker →
   ``mosquitto_sub -C``), QoS 1, representative readings, timed;
2. connect: N simulated devices (streetlights, own credentials each) connecting with
   the fleet's staggered, bounded connects; RSS per connected device;
3. steady: the fleet at ``--accelerate`` × real time for ``--duration`` seconds:
   messages/s sustained against the rate asked for, CPU per message and per device;
4. max: the same devices on a stepped clock "as fast as possible" for ``--duration``
   seconds: the simulator's ceiling, as a share of the C clients' throughput.

A ``mosquitto_sub`` stands in for the ingest (the broker delivers every message to a
subscriber, as in production). Prints the figures and one JSON line. Never run by the
tests: ``.venv/bin/python bench/bench_sim.py --devices 5000 --duration 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devices.broker import BrokerAccessWriter, BrokerAccount, hash_password, new_secret
from devices.wire import DeviceKind
from firmware_sim.fleet import Fleet
from firmware_sim.mqtt.hub import BrokerAddress
from firmware_sim.scenario import (
    DeviceSpec,
    DistrictSpec,
    LatLon,
    Scenario,
    StreetSpec,
    expand,
)
from pharos.broker_process import MosquittoProcess
from pharos_core.clock import Clock, HeldClock, SteppedClock

PUBLISHER, SUBSCRIBER = "bench-pub", "bench-sub"
MAX_PUBLISHERS = 8
TELEMETRY = "pharos/v1/dev/+/telemetry"
START = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)  # 18:00 in Cần Thơ: lamps lit
SAMPLE_READING = (
    '{"ts":"2026-11-22T18:05:00+07:00","seq":1042,"metrics":{"power_w":118.731,'
    '"energy_kwh":1234.567,"voltage_v":229.412,"current_a":0.541,"power_factor":0.952,'
    '"dim_level":100.0,"lamp_on":true,"operating_hours":10234.5}}'
)


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_s_of(pid: int) -> float:
    """User + system CPU seconds of another process (the broker)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def city(devices: int, interval_s: float) -> list[DeviceSpec]:
    """``devices`` streetlights along one long road, one account each."""
    street = StreetSpec(
        name="Quốc lộ 91",
        start=LatLon(lat=10.09, lon=105.67),
        end=LatLon(lat=10.29, lon=105.51),
        streetlights=devices,
        spacing_m=35,
    )
    district = DistrictSpec(name="Ô Môn", code="om", centre=LatLon(lat=10.11, lon=105.63),
                            streets=[street])  # fmt: skip
    scenario = Scenario(
        name="bench", seed=1, start=START, duration=timedelta(hours=1),
        intervals_s={DeviceKind.STREETLIGHT: interval_s}, districts=[district],
    )  # fmt: skip
    return expand(scenario)


@dataclass
class Broker:
    process: MosquittoProcess
    secrets: dict[str, str]

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress(self.process.host, self.process.port)

    def client_args(self, name: str) -> list[str]:
        return ["-h", self.process.host, "-p", str(self.process.port), "-u", name,
                "-P", self.secrets[name], "-i", name]  # fmt: skip


@contextmanager
def broker_with_accounts(specs: list[DeviceSpec], workdir: Path) -> Iterator[Broker]:
    process = MosquittoProcess(workdir / "broker")
    process.start()
    try:
        names = [s.device_id for s in specs]
        services = [SUBSCRIBER, *(f"{PUBLISHER}-{n}" for n in range(MAX_PUBLISHERS))]
        secrets = {name: new_secret() for name in [*names, *services]}
        writer = BrokerAccessWriter(process.password_file, process.acl_file, process.pid_file)
        before = process.reloads_seen()
        writer.sync(
            BrokerAccount(name, hash_password(secret), "service" if name in services else "device")
            for name, secret in secrets.items()
        )
        process.wait_for_reload(before, timeout=60)
        yield Broker(process, secrets)
    finally:
        process.stop()


@contextmanager
def ingest(
    broker: Broker, count: int | None = None, timeout_s: float = 120
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``mosquitto_sub`` receiving all telemetry (QoS 1) as the backend would."""
    args = ["mosquitto_sub", *broker.client_args(SUBSCRIBER), "-q", "1", "-t", TELEMETRY]
    if count is not None:
        args += ["-C", str(count), "-W", str(int(timeout_s))]
    with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as sub:
        # mosquitto_sub has no "subscribed" signal; half a second is ample on localhost.
        time.sleep(0.5)
        try:
            yield sub
        finally:
            if sub.poll() is None:
                sub.terminate()


def c_client_limit(broker: Broker, messages: int, publishers: int) -> dict[str, float]:
    """The broker's own C clients: QoS 1 readings in, through the broker, out.

    ``publishers`` ``mosquitto_pub -l`` run side by side, each with its own account
    (one mosquitto_pub fed 100 000 lines at once was seen to lose messages at EOF).
    """
    share = messages // publishers
    lines = ((SAMPLE_READING + "\n") * share).encode()
    broker_cpu = cpu_s_of(broker.process.pid or 0)
    with ingest(broker, count=share * publishers) as sub:
        started = time.perf_counter()
        pubs = [
            subprocess.Popen(
                [
                    "mosquitto_pub",
                    *broker.client_args(f"{PUBLISHER}-{n}"),
                    "-q",
                    "1",
                    "-l",
                    "-t",
                    f"pharos/v1/dev/bench-c{n}/telemetry",
                ],
                stdin=subprocess.PIPE,
            )
            for n in range(publishers)
        ]
        for pub in pubs:
            assert pub.stdin is not None
            pub.stdin.write(lines)
            pub.stdin.close()
        for pub in pubs:
            pub.wait(timeout=300)
        sub.wait(timeout=300)
        elapsed = time.perf_counter() - started
    if sub.returncode != 0:
        raise RuntimeError(f"mosquitto_sub did not receive {share * publishers} messages")
    return {
        "messages": share * publishers,
        "publishers": publishers,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(share * publishers / elapsed),
        "broker_cpu_s": round(cpu_s_of(broker.process.pid or 0) - broker_cpu, 2),
    }


@dataclass(frozen=True)
class PhaseJob:
    """What a phase's own process needs (each phase runs alone, so its RSS is its own)."""

    host: str
    port: int
    broker_pid: int
    secrets: dict[str, str]
    devices: int
    interval_s: float
    duration_s: float
    accelerate: float | None  # None: "as fast as possible" on a stepped clock


def run_phase(job: PhaseJob) -> dict[str, Any]:
    gc.collect()
    rss_before = rss_kb()  # before the specs: they are part of what a device costs
    specs = city(job.devices, job.interval_s)
    clock: Clock = (
        SteppedClock(START) if job.accelerate is None else HeldClock(START, job.accelerate)
    )
    return asyncio.run(connect_and_run(job, specs, clock, rss_before))


async def connect_and_run(
    job: PhaseJob, specs: list[DeviceSpec], clock: Clock, rss_before: int
) -> dict[str, Any]:
    """Connect every device, then run ``job.duration_s`` of wall time; the figures."""
    broker = BrokerAddress(job.host, job.port)
    seconds = job.duration_s
    fleet = Fleet(specs, broker=broker, clock=clock, seed=1, connect_concurrency=64)
    async with fleet:
        started = time.perf_counter()
        cpu_started = time.process_time()
        fleet.start_mqtt(job.secrets)
        while fleet.hub.counters.connected < len(specs):
            if time.perf_counter() - started > 120:
                raise RuntimeError(f"only {fleet.hub.counters.connected} connected in 120 s")
            await asyncio.sleep(0.05)  # polling the counter for the benchmark's clock
        connect_s = time.perf_counter() - started
        connect_cpu_s = time.process_time() - cpu_started
        gc.collect()
        rss_connected = rss_kb()
        stop = asyncio.Event()
        sent_before = fleet.hub.counters.messages_sent
        readings_before = fleet.hub.counters.readings_sent
        skipped_before = fleet.hub.counters.readings_skipped
        sim_before = clock.now()
        broker_cpu = cpu_s_of(job.broker_pid)
        cpu_before = time.process_time()
        wall_before = time.perf_counter()
        runner = asyncio.create_task(fleet.run_until(START + timedelta(days=365), stop=stop))
        await asyncio.sleep(seconds)  # the measured span (wall time), not a synchronisation
        stop.set()
        await runner
        wall = time.perf_counter() - wall_before
        cpu = time.process_time() - cpu_before
        counters = fleet.hub.counters
        sent = counters.messages_sent - sent_before
        readings = counters.readings_sent - readings_before
        figures = {
            "devices": len(specs),
            "connected": counters.connected,
            "connect_s": round(connect_s, 2),
            "connect_cpu_ms_per_device": round(1000 * connect_cpu_s / len(specs), 3),
            "rss_per_device_kb": round((rss_connected - rss_before) / len(specs), 2),
            "rss_mb": round(rss_connected / 1024, 1),
            "messages_per_s": round(sent / wall),
            "readings_per_s": round(readings / wall),
            "simulated_s_per_s": round((clock.now() - sim_before).total_seconds() / wall, 1),
            "cpu_share": round(cpu / wall, 3),
            "cpu_us_per_message": round(1e6 * cpu / sent, 1) if sent else None,
            "broker_cpu_share": round((cpu_s_of(job.broker_pid) - broker_cpu) / wall, 3),
            "links_lost": counters.links_lost,
            "readings_skipped_per_s": round((counters.readings_skipped - skipped_before) / wall),
        }
        stop_started = time.perf_counter()
    figures["stop_s"] = round(time.perf_counter() - stop_started, 2)
    return figures


def phase_in_own_process(job: PhaseJob, workdir: Path) -> dict[str, Any]:
    job_file = workdir / "phase.json"
    job_file.write_text(json.dumps(asdict(job)), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, __file__, "--phase-job", str(job_file)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench(args: argparse.Namespace) -> dict[str, Any]:
    specs = city(args.devices, args.interval)
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.devices + 200:
        raise SystemExit(f"ulimit -n is {soft}: raise it above {args.devices + 200}")
    with (
        tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp,
        broker_with_accounts(specs, Path(tmp)) as broker,
    ):
        limit = c_client_limit(broker, args.c_messages, args.c_publishers)
        job = PhaseJob(
            host=broker.process.host,
            port=broker.process.port,
            broker_pid=broker.process.pid or 0,
            secrets={s.device_id: broker.secrets[s.device_id] for s in specs},
            devices=args.devices,
            interval_s=args.interval,
            duration_s=args.duration,
            accelerate=args.accelerate,
        )
        with ingest(broker):
            steady = phase_in_own_process(job, Path(tmp))
        with ingest(broker):
            fastest = phase_in_own_process(replace(job, accelerate=None), Path(tmp))
    target = args.devices / args.interval * args.accelerate
    return {
        "benchmark": "bench_sim",
        "devices": args.devices,
        "interval_s": args.interval,
        "accelerate": args.accelerate,
        "c_clients": limit,
        "steady": {**steady, "target_readings_per_s": round(target)},
        "max": {
            **fastest,
            "share_of_c_clients": round(fastest["messages_per_s"] / limit["messages_per_s"], 3),
        },
    }


def report(result: dict[str, Any]) -> None:
    limit, steady, fastest = result["c_clients"], result["steady"], result["max"]
    print(
        f"broker C clients (mosquitto_pub -l → mosquitto_sub, QoS 1): "
        f"{limit['messages_per_s']} msg/s ({limit['messages']} in {limit['seconds']} s)"
    )
    for name, run in (("steady", steady), ("max", fastest)):
        print(f"{name:>6}: {run['connected']}/{run['devices']} connected in {run['connect_s']} s, "
              f"{run['rss_per_device_kb']} KB RSS per device ({run['rss_mb']} MB), "
              f"{run['messages_per_s']} msg/s ({run['readings_per_s']} readings/s), "
              f"CPU {100 * run['cpu_share']:.0f} % ({run['cpu_us_per_message']} µs/msg), "
              f"broker CPU {100 * run['broker_cpu_share']:.0f} %, "
              f"{run['simulated_s_per_s']} simulated s per s")  # fmt: skip
    print(
        f"steady target {steady['target_readings_per_s']} readings/s; "
        f"max = {100 * fastest['share_of_c_clients']:.0f} % of the C clients' throughput"
    )
    print(json.dumps(result, ensure_ascii=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=5000, help="simulated devices (5000)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase (20)")
    parser.add_argument("--interval", type=float, default=60.0, help="reporting interval, s (60)")
    parser.add_argument("--accelerate", type=float, default=60.0, help="steady phase ×N (60)")
    parser.add_argument("--c-messages", type=int, default=100_000, help="C-client messages")
    parser.add_argument("--c-publishers", type=int, default=4, choices=range(1, MAX_PUBLISHERS + 1),
                        help="mosquitto_pub processes side by side (4)")  # fmt: skip
    parser.add_argument("--phase-job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase_job is not None:
        job = PhaseJob(**json.loads(args.phase_job.read_text(encoding="utf-8")))
        print(json.dumps(run_phase(job)))
        return
    report(bench(args))


if __name__ == "__main__":
    main()
