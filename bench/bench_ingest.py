"""Ingest benchmark: sustained readings/s from publish to stored in InfluxDB, with zero loss.

Everything runs on this machine, as in production on a small box: a Mosquitto from
the project's ``mosquitto/mosquitto.conf``, a temporary ``influxd`` (1.x), the
registry on SQLite, ``pharos ingest`` as a subprocess (one process), and a load
generator process publishing readings of ``--devices`` simulated device ids at a set
rate through one backend account (the ACL lets a backend account publish on every
device's topics; one connection per device would cost the broker the same per
message). Each reading carries ``ts`` = its publish time and a per-device ``seq``.

Phases:

1. the broker's own throughput with its C clients (``mosquitto_pub -l`` → ``mosquitto_sub``,
   the same message count and size), QoS 1 and QoS 0: the reference;
2. half load (``--half-rate``, QoS 1): the ingest's p99 lag (publish → stored);
3. rising rates at QoS 1, then QoS 0 (``--qos1-rates``, ``--qos0-rates``), each for
   ``--step-seconds``: a rate is *sustained* when every reading is in InfluxDB (count,
   and distinct ``seq`` per device) within 2 s of the last publish;
4. with ``--duration S``: S seconds at half load, ingest RSS sampled (memory flat?).

Per phase it reports CPU µs per message of each process (from /proc/<pid>/stat) and
the ingest's RSS. Figures are printed, then one JSON line. Never run by the tests.

Example: .venv/bin/python bench/bench_ingest.py --step-seconds 10 --duration 600
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select  # noqa: E402

from devices.broker import write_broker_files  # noqa: E402
from devices.registry.db import make_engine, make_session_factory, transaction  # noqa: E402
from devices.registry.models import Commissioning, Device  # noqa: E402
from devices.registry.schemas import DeviceCreate  # noqa: E402
from devices.registry.service import registry_session  # noqa: E402
from pharos.broker_process import MosquittoProcess, free_port  # noqa: E402
from pharos.database import upgrade  # noqa: E402
from telemetry.ingest.mqtt_codec import encode_connect, encode_varint  # noqa: E402

INGEST_USER = "bench-ingest"
LOAD_USER = "bench-load"
RAW_PUB, RAW_SUB = "bench-raw-pub", "bench-raw-sub"  # the broker's own clients
RAW_TOPIC = "pharos/v1/bench/raw"  # inside the backend accounts' ACL, outside ingest's filters
TICKS = os.sysconf("SC_CLK_TCK")
PAYLOAD = (
    b'{"ts": %.6f, "seq": %d, "metrics": {"pm25": %.1f, "pm10": 63.0, '
    b'"temperature_c": 29.4, "humidity_pct": 80.0, "noise_dba": 55.1}}'
)
KEEP_UP_S = 2.0  # stored within this of the last publish: the rate is sustained
PUBLISHED_SHARE = 0.97  # of the rate asked for, published, for the rate to count


# --- processes and their figures ------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


class RssSampler(threading.Thread):
    """Samples one process's RSS every ``interval`` seconds, with the time."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.samples.append((time.time(), rss_mb(self.pid)))

    def between(self, start: float, end: float) -> list[float]:
        return [mb for at, mb in self.samples if start <= at <= end]

    def stop(self) -> None:
        self._stop_event.set()


class Influxd:
    """A temporary ``influxd`` on free ports (like the test fixture, without pytest)."""

    CONFIG = """reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
"""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        root.mkdir(parents=True)
        (root / "influxdb.conf").write_text(
            self.CONFIG.format(root=root, rpc=free_port(), http=self.port)
        )
        binary = shutil.which("influxd") or "/usr/bin/influxd"
        with (root / "influxd.log").open("wb") as log:
            self.process = subprocess.Popen(
                [binary, "-config", str(root / "influxdb.conf")], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ping", timeout=1).status_code == 204:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("influxd did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, q: str, db: str | None = None) -> dict[str, Any]:
        params = {"q": q, "epoch": "ns", **({"db": db} if db else {})}
        response = httpx.post(f"{self.url}/query", data=params, timeout=60)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


# --- the load generator (its own process) -------------------------------------------------


class Publisher(asyncio.Protocol):
    """Publishes ``count`` readings at ``rate``/s, round robin over ``devices``.

    QoS 1 keeps at most the broker's Receive Maximum unacknowledged (Mosquitto
    disconnects a client that sends more).
    """

    def __init__(self, devices: list[str], rate: float, count: int, qos: int, seq0: int) -> None:
        self.topics = [f"pharos/v1/dev/{d}/telemetry".encode() for d in devices]
        self.rate, self.count, self.qos, self.seq0 = rate, count, qos, seq0
        self.sent = self.acked = 0
        self.window = 65_535
        self.inflight = 0
        self.mid = 0
        self.started = 0.0
        self.buffer = bytearray()
        self.connack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            length, start = self.buffer[1], 2
            if length & 0x80:  # only CONNACK can be that long here
                length = (length & 0x7F) | (self.buffer[2] << 7)
                start = 3
            if len(self.buffer) < start + length:
                break
            kind = self.buffer[0] >> 4
            body = bytes(self.buffer[start : start + length])
            del self.buffer[: start + length]
            if kind == 2:
                self._on_connack(body)
            elif kind == 4:
                self.acked += 1
                self.inflight -= 1
        self.pump()

    def _on_connack(self, body: bytes) -> None:
        if body[1] >= 0x80:
            self.connack.set_exception(RuntimeError(f"CONNACK refused: 0x{body[1]:02X}"))
            return
        index = body.find(b"\x21", 3)  # Receive Maximum, if the broker sent one
        if index > 0 and index + 2 < len(body):
            self.window = struct.unpack_from("!H", body, index + 1)[0]
        self.connack.set_result(None)

    def pump(self) -> None:
        if not self.started or self.transport is None:
            return
        due = min(self.count, int(self.rate * (time.time() - self.started)) + 1) - self.sent
        if self.qos:
            due = min(due, self.window - self.inflight)
        if due > 0:
            self.transport.write(b"".join(self._publish() for _ in range(due)))
        finished = self.acked >= self.count if self.qos else self.sent >= self.count
        if finished and not self.done.done():
            self.done.set_result(None)

    def _publish(self) -> bytes:
        index = self.sent
        self.sent += 1
        topic = self.topics[index % len(self.topics)]
        seq = self.seq0 + index // len(self.topics)
        payload = PAYLOAD % (time.time(), seq, 10 + seq % 40)
        header = struct.pack("!H", len(topic)) + topic
        if self.qos:
            self.mid = self.mid % 65_535 + 1
            self.inflight += 1
            header += struct.pack("!H", self.mid)
        body = header + b"\x00" + payload
        return bytes([0x30 | (self.qos << 1)]) + encode_varint(len(body)) + body


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    devices = [f"bench-{n:04d}" for n in range(args.devices)]
    publisher = Publisher(devices, args.rate, args.count, args.qos, args.seq0)
    transport, _ = await loop.create_connection(lambda: publisher, "127.0.0.1", args.port)
    transport.write(
        encode_connect(
            LOAD_USER, LOAD_USER, args.password, keepalive_s=60, clean_start=True,
            session_expiry_s=0, receive_maximum=100, maximum_packet_size=1 << 20,
        )
    )  # fmt: skip
    await publisher.connack
    publisher.started = time.time()
    while not publisher.done.done():
        publisher.pump()
        await asyncio.sleep(0.002)
    ended = time.time()
    transport.write(b"\xe0\x00")
    await asyncio.sleep(0.1)
    transport.close()
    return {"started": publisher.started, "ended": ended, "sent": publisher.sent}


def loadgen_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_ingest.py loadgen")
    for name in ("port", "devices", "count", "qos", "seq0"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--password", required=True)
    print(json.dumps(asyncio.run(_load(parser.parse_args(argv)))))


# --- the bench --------------------------------------------------------------------------


@dataclass
class Step:
    phase: str
    qos: int
    rate: float
    readings: int
    published_per_s: float = 0.0
    stored_per_s: float = 0.0  # readings / (last stored − first published)
    drain_s: float = 0.0  # last stored − last published
    stored: int = 0
    complete_seqs: bool = False
    sustained: bool = False
    cpu_us_per_msg: dict[str, float] = field(default_factory=dict)
    ingest_rss_mb: tuple[float, float] = (0.0, 0.0)
    lag_p50_s: float | None = None
    lag_p99_s: float | None = None


class Bench:
    def __init__(
        self, workdir: Path, devices: int, profile: Path | None = None, workers: int = 1
    ) -> None:
        self.workdir, self.devices, self.profile, self.workers = workdir, devices, profile, workers
        self.profiler: subprocess.Popen[bytes] | None = None
        self.ingests: list[subprocess.Popen[bytes]] = []
        # One worker logs in as INGEST_USER; worker N of several as INGEST_USER-N.
        self.ingest_users = (
            [INGEST_USER] if workers == 1 else [f"{INGEST_USER}-{n}" for n in range(1, workers + 1)]
        )
        self.database = "bench"
        self.seq = 0
        self.ingest: subprocess.Popen[bytes] | None = None
        self.sampler: RssSampler | None = None
        self.broker = MosquittoProcess(workdir / "mosquitto")
        self.broker.start()
        self.influx = Influxd(workdir / "influxdb")
        self.influx.query(f"CREATE DATABASE {self.database}")
        self.db_url = f"sqlite:///{workdir / 'pharos.db'}"
        self.secrets = self._register()

    def _register(self) -> dict[str, str]:
        engine = make_engine(self.db_url)
        upgrade(engine)
        sessions = make_session_factory(engine)
        secrets: dict[str, str] = {}
        ids = [f"bench-{n:04d}" for n in range(self.devices)]
        with transaction(sessions) as session:
            # In bulk, with their commissioning rows, as registry.create_device makes them
            # (one by one it takes minutes for 50,000).
            DeviceCreate.model_validate({"id": ids[0], "kind": "env_monitor", "name": "check"})
            session.execute(
                insert(Device),
                [{"id": i, "kind": "env_monitor", "name": f"bench {i}"} for i in ids],
            )
            session.execute(insert(Commissioning), [{"device_id": i} for i in ids])
        with registry_session(sessions, "bench") as registry:
            for name in (*self.ingest_users, LOAD_USER, RAW_PUB, RAW_SUB):
                secrets[name] = registry.ensure_service_account(name).secret
            accounts = registry.broker_accounts()
        write_broker_files(accounts, self.broker.password_file, self.broker.acl_file)
        self.broker.reload()
        engine.dispose()
        return secrets

    # -- the reference: the broker's own C clients -----------------------------------

    def broker_raw(self, count: int, qos: int) -> dict[str, float]:
        sample = PAYLOAD % (time.time(), 123456, 41.0)
        lines = (sample + b"\n") * count
        common = ["-p", str(self.broker.port), "-q", str(qos), "-V", "mqttv5"]
        sub = subprocess.Popen(
            ["mosquitto_sub", *common, "-u", RAW_SUB, "-P", self.secrets[RAW_SUB],
             "-t", RAW_TOPIC, "-C", str(count), "-W", "120"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)  # the subscription is in place (mosquitto_sub prints nothing)
        broker_cpu = cpu_seconds(self.broker.pid)
        started = time.time()
        pub = subprocess.Popen(
            ["mosquitto_pub", *common, "-u", RAW_PUB, "-P", self.secrets[RAW_PUB],
             "-t", RAW_TOPIC, "-l", "-M", "100"],
            stdin=subprocess.PIPE,
        )  # fmt: skip
        assert pub.stdin is not None
        pub.stdin.write(lines)
        pub.stdin.flush()
        sub.wait(180)
        elapsed = time.time() - started
        # mosquitto_pub -l drops what it has not sent when stdin closes: close it last.
        pub.stdin.close()
        pub.wait(30)
        return {
            "qos": qos,
            "messages": count,
            "per_s": count / elapsed,
            "broker_cpu_us_per_msg": (cpu_seconds(self.broker.pid) - broker_cpu) / count * 1e6,
            "ok": sub.returncode == 0,
        }

    # -- ingest ---------------------------------------------------------------------------

    def start_ingest(self) -> None:
        """``pharos ingest`` as a user starts it: one process, or N workers sharing the load."""
        for n, user in enumerate(self.ingest_users, start=1):
            env = {
                **os.environ,
                "PHAROS_DATABASE__URL": self.db_url,
                "PHAROS_DATA_DIR": str(self.workdir / "var"),
                "PHAROS_BROKER__PORT": str(self.broker.port),
                "PHAROS_BROKER__USERNAME": INGEST_USER,
                "PHAROS_BROKER__PASSWORD": self.secrets[user],
                "PHAROS_INFLUX__URL": self.influx.url,
                "PHAROS_INFLUX__DATABASE": self.database,
            }
            command = [
                str(Path(sys.executable).with_name("pharos")),
                "ingest",
                "--stats-interval",
                "1",
            ]
            if self.workers > 1:
                env["PHAROS_TELEMETRY__SHARE_GROUP"] = "bench-share-7f3a"
                command += ["--worker-id", str(n)]
            log_path = self.workdir / f"ingest-{n}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
            self.ingests.append(process)
            deadline = time.monotonic() + 30
            while "mqtt: connected" not in log_path.read_text(errors="replace"):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("ingest did not start:\n" + log_path.read_text())
                time.sleep(0.1)
        self.ingest = self.ingests[0]
        self.ingest_log = self.workdir / "ingest-1.log"
        self.sampler = RssSampler(self.ingest.pid)
        self.sampler.start()
        if self.profile is not None:  # py-spy samples the (first) ingest under this load
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            self.profiler = subprocess.Popen(
                [py_spy, "record", "-r", "250", "-f", "raw", "-o", str(self.profile),
                 "--pid", str(self.ingest.pid)],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip

    def warm_up(self) -> float:
        """One reading per device, then until every first reading is ticked (seconds).

        A running city's devices are commissioned already: their first reading (a
        commissioning tick each, once in a device's life) is not the load measured.
        """
        started = time.monotonic()
        self.step("warm-up", 1, 5000.0, self.devices / 5000.0)
        engine = make_engine(self.db_url)
        query = select(func.count()).where(Commissioning.first_telemetry_at.is_not(None))
        try:
            while True:
                with engine.connect() as connection:
                    ticked = connection.execute(query.select_from(Commissioning)).scalar_one()
                if ticked >= self.devices:
                    return time.monotonic() - started
                if time.monotonic() - started > 600:
                    raise RuntimeError(f"warm-up: {ticked}/{self.devices} first readings ticked")
                time.sleep(0.5)
        finally:
            engine.dispose()

    def ingest_stats(self) -> dict[str, Any]:
        lines = re.findall(r"ingest stats (\{.*\})", self.ingest_log.read_text(errors="replace"))
        return json.loads(lines[-1]) if lines else {}

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.profiler is not None:
            self.profiler.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
            self.profiler.wait(60)
        for process in self.ingests:
            if process.poll() is None:
                process.terminate()
                process.wait(60)
        self.influx.stop()
        self.broker.stop()

    # -- one load step --------------------------------------------------------------------

    def pids(self) -> dict[str, int | None]:
        return {
            "mosquitto": self.broker.pid,
            "influxd": self.influx.process.pid,
        } | {f"ingest-{n}" if n > 1 else "ingest": p.pid for n, p in enumerate(self.ingests, 1)}

    def step(self, phase: str, qos: int, rate: float, seconds: float) -> Step:
        per_device = max(1, int(rate * seconds) // self.devices)
        count = per_device * self.devices
        result = Step(phase, qos, rate, count)
        since_ns = int(time.time() * 1e9) - 1
        before = {name: cpu_seconds(pid) for name, pid in self.pids().items()}
        load = subprocess.Popen(
            [sys.executable, __file__, "loadgen", "--port", str(self.broker.port),
             "--devices", str(self.devices), "--count", str(count), "--qos", str(qos),
             "--seq0", str(self.seq), "--rate", str(rate),
             "--password", self.secrets[LOAD_USER]],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        load_cpu = 0.0
        while load.poll() is None:
            load_cpu = max(load_cpu, cpu_seconds(load.pid))
            time.sleep(0.2)
        assert load.stdout is not None
        published = json.loads(load.stdout.read())
        stored_at = self._wait_stored(since_ns, count, published["ended"])
        after = {name: cpu_seconds(pid) for name, pid in self.pids().items()}
        result.stored = self._count(since_ns)
        result.complete_seqs = self._seqs_complete(since_ns, self.seq, per_device)
        self.seq += per_device
        result.published_per_s = count / max(1e-9, published["ended"] - published["started"])
        if stored_at is not None:
            result.stored_per_s = count / (stored_at - published["started"])
            result.drain_s = max(0.0, stored_at - published["ended"])
        result.sustained = (
            # The publisher kept the rate (on a busy machine it may not: then the rate
            # was not tried, and is not claimed).
            result.published_per_s >= PUBLISHED_SHARE * rate
            and stored_at is not None
            and result.stored == count
            and result.complete_seqs
            and result.drain_s <= KEEP_UP_S
        )
        result.cpu_us_per_msg = {
            name: (after[name] - before[name]) / count * 1e6 for name in after
        } | {"loadgen": load_cpu / count * 1e6}
        if len(self.ingests) > 1:
            workers = [
                us for name, us in result.cpu_us_per_msg.items() if name.startswith("ingest")
            ]
            result.cpu_us_per_msg["ingest_all"] = sum(workers)
        if self.sampler is not None:
            window = self.sampler.between(published["started"], time.time()) or [0.0]
            result.ingest_rss_mb = (min(window), max(window))
        return result

    def _count(self, since_ns: int) -> int:
        q = f'SELECT count("seq") FROM env_monitor WHERE time >= {since_ns:d}'  # noqa: S608
        series = self.influx.query(q, self.database)["results"][0].get("series", [])
        return int(series[0]["values"][0][1]) if series else 0

    def _wait_stored(self, since_ns: int, count: int, published_end: float) -> float | None:
        """When the last reading was in InfluxDB (polled every 0.2 s), or None on a stall."""
        last, last_change = -1, time.time()
        while True:
            stored = self._count(since_ns)
            now = time.time()
            if stored >= count:
                return now
            if stored != last:
                last, last_change = stored, now
            if now - last_change > 15 and now > published_end + 15:
                return None
            time.sleep(0.2)

    def _seqs_complete(self, since_ns: int, seq0: int, per_device: int) -> bool:
        fields = 'count(distinct("seq")), min("seq"), max("seq")'
        q = f"SELECT {fields} FROM env_monitor WHERE time >= {since_ns:d} GROUP BY device_id"  # noqa: S608
        series = self.influx.query(q, self.database)["results"][0].get("series", [])
        expected = [per_device, seq0, seq0 + per_device - 1]
        return len(series) == self.devices and all(
            [int(v) for v in s["values"][0][1:]] == expected for s in series
        )


def _show(step: Step) -> None:
    cpu = ", ".join(f"{name} {us:.1f}" for name, us in step.cpu_us_per_msg.items())
    lag = (
        f"; lag p50 {step.lag_p50_s:.2f} s, p99 {step.lag_p99_s:.2f} s"
        if step.lag_p99_s is not None
        else ""
    )
    print(
        f"  {step.phase:<8} QoS {step.qos} target {step.rate:>8,.0f}/s: published "
        f"{step.published_per_s:>8,.0f}/s, stored {step.stored_per_s:>8,.0f}/s, "
        f"drain {step.drain_s:4.1f} s, {step.stored}/{step.readings} stored, seqs "
        f"{'complete' if step.complete_seqs else 'INCOMPLETE'} → "
        f"{'SUSTAINED' if step.sustained else 'not sustained'}{lag}\n"
        f"           CPU µs/msg: {cpu}; ingest RSS {step.ingest_rss_mb[0]:.0f}–"
        f"{step.ingest_rss_mb[1]:.0f} MB",
        flush=True,
    )


def _ramp(bench: Bench, qos: int, rates: list[float], seconds: float) -> list[Step]:
    steps = []
    for rate in rates:
        step = bench.step("ramp", qos, rate, seconds)
        _show(step)
        steps.append(step)
        if not step.sustained:
            break
    return steps


def _memory_run(bench: Bench, rate: float, seconds: float) -> dict[str, Any]:
    assert bench.sampler is not None
    started = time.time()
    step = bench.step("memory", 1, rate, seconds)
    _show(step)
    samples = [(at - started, mb) for at, mb in bench.sampler.samples if at >= started]
    minute = [mb for at, mb in samples if at <= 60] or [0.0]
    last = [mb for at, mb in samples if at >= samples[-1][0] - 60] if samples else [0.0]
    return {
        "seconds": seconds,
        "rate": rate,
        "sustained": step.sustained,
        "rss_first_minute_mb": sum(minute) / len(minute),
        "rss_last_minute_mb": sum(last) / len(last),
        "rss_max_mb": max(mb for _, mb in samples) if samples else 0.0,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "loadgen":
        loadgen_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--half-rate", type=float, default=5000.0)
    parser.add_argument("--qos1-rates", default="10000,12500,15000,17500,20000")
    parser.add_argument("--qos0-rates", default="15000,20000,25000,30000")
    parser.add_argument("--raw-messages", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=0.0, help="memory run (seconds)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--profile", type=Path, help="py-spy profile of ingest (collapsed stacks)")
    parser.add_argument(
        "--workers", type=int, default=1, help="ingest workers (shared subscription)"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    bench = Bench(workdir, args.devices, args.profile, args.workers)
    report: dict[str, Any] = {
        "bench": "ingest", "cpus": os.cpu_count(), "devices": args.devices, "workers": args.workers,
    }  # fmt: skip
    try:
        print(f"broker raw throughput (mosquitto_pub → mosquitto_sub, {args.raw_messages:,}):")
        report["broker_raw"] = [bench.broker_raw(args.raw_messages, qos) for qos in (1, 0)]
        for raw in report["broker_raw"]:
            print(f"  QoS {raw['qos']}: {raw['per_s']:>9,.0f}/s (broker "
                  f"{raw['broker_cpu_us_per_msg']:.1f} µs/msg)")  # fmt: skip
        bench.start_ingest()
        print("ingest (one process):" if args.workers == 1 else f"ingest ({args.workers} workers):")
        warm = bench.warm_up()
        print(f"  warm-up: one reading per device, commissioning ticked in {warm:.1f} s")
        report["warm_up_s"] = warm
        half = bench.step("half", 1, args.half_rate, max(args.step_seconds, 15))
        stats = bench.ingest_stats()
        half.lag_p50_s, half.lag_p99_s = stats.get("lag_p50_s"), stats.get("lag_p99_s")
        _show(half)
        qos1 = _ramp(bench, 1, [float(r) for r in args.qos1_rates.split(",")], args.step_seconds)
        qos0 = _ramp(bench, 0, [float(r) for r in args.qos0_rates.split(",")], args.step_seconds)
        report["half_load"] = asdict(half)
        report["qos1"] = [asdict(s) for s in qos1]
        report["qos0"] = [asdict(s) for s in qos0]
        for name, steps, raw in (("qos1", qos1, 0), ("qos0", qos0, 1)):
            best = max((s.rate for s in steps if s.sustained), default=0.0)
            report[f"{name}_sustained_per_s"] = best
            report[f"{name}_vs_broker_raw"] = best / report["broker_raw"][raw]["per_s"]
        if args.duration:
            report["memory"] = _memory_run(bench, args.half_rate, args.duration)
            print(f"memory: {report['memory']}")
        print(
            f"sustained with zero loss: QoS 1 {report['qos1_sustained_per_s']:,.0f}/s "
            f"({report['qos1_vs_broker_raw']:.0%} of the broker's raw), QoS 0 "
            f"{report['qos0_sustained_per_s']:,.0f}/s ({report['qos0_vs_broker_raw']:.0%}); "
            f"p99 lag at {args.half_rate:,.0f}/s: {half.lag_p99_s:.2f} s"
        )
    finally:
        bench.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
