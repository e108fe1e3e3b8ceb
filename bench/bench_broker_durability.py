"""Broker durability benchmark: what each Mosquitto persistence setting costs, and saves.

For each setting (``autosave_interval`` 60 — the old shipped value, the baseline — 10,
1, and ``autosave_on_changes true`` with a change count), a real Mosquitto from the
project's ``mosquitto/mosquitto.conf`` with only the autosave lines changed:

1. **rate**: a publisher sends ``--messages`` QoS 1 messages as fast as the broker
   acknowledges them (100 in flight), to a subscriber on a persistent session that
   acknowledges every ``--ack-every-ms`` (as ingest acks once a batch is stored);
   the figure is PUBACKs per second, and its ratio to the baseline's in the same run;
2. **SIGKILL**: the same stream, the broker SIGKILLed ``--kills`` times at random
   moments, restarted on the same data directory; both clients reconnect (persistent
   sessions, the publisher re-sends what was not acknowledged). ``lost`` = messages
   the broker acknowledged to the publisher that the subscriber never received;
   ``duplicated`` = copies received more than once.

The figures are printed, then one JSON line. Never run by the tests.

Example: .venv/bin/python bench/bench_broker_durability.py --messages 20000 --kills 3
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pharos.broker_process import MosquittoProcess  # noqa: E402

SETTINGS: dict[str, list[str]] = {
    "autosave_interval 60 (baseline)": ["autosave_interval 60"],
    "autosave_interval 10": ["autosave_interval 10"],
    "autosave_interval 1": ["autosave_interval 1"],
    "autosave_on_changes, every 100 changes": ["autosave_on_changes true", "autosave_interval 100"],
    "autosave_on_changes, every change": ["autosave_on_changes true", "autosave_interval 1"],
}
USER, SECRET = "bench", "bench-secret"
TOPIC = "bench/readings"


def variant_conf(lines: list[str], directory: Path) -> Path:
    """mosquitto/mosquitto.conf with its autosave lines replaced by ``lines``."""
    base = (ROOT / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
    kept = [line for line in base if not line.strip().startswith("autosave_")]
    path = directory / "variant.conf"
    path.write_text("\n".join([*kept, *lines]) + "\n", encoding="utf-8")
    return path


def give_access(broker: MosquittoProcess) -> None:
    subprocess.run(
        ["mosquitto_passwd", "-b", str(broker.password_file), USER, SECRET],
        check=True,
        capture_output=True,
    )
    broker.acl_file.write_text(f"user {USER}\ntopic readwrite bench/#\n", encoding="utf-8")


def client(broker: MosquittoProcess, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    c.username_pw_set(USER, SECRET)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.reconnect_delay_set(0.05, 0.5)
    return c


def connect(c: mqtt.Client, broker: MosquittoProcess) -> None:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect(broker.host, broker.port, keepalive=10, clean_start=False, properties=props)
    c.loop_start()


class Subscriber:
    """Receives on a persistent session, acknowledging in batches like ingest."""

    def __init__(self, broker: MosquittoProcess, ack_every_s: float) -> None:
        self.received: list[int] = []
        self.last_at = time.monotonic()
        self._pending: list[int] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self.client = client(broker, "bench-sub", manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        connect(self.client, broker)
        if not self._subscribed.wait(10):
            raise RuntimeError("subscriber did not subscribe")
        self._acker = threading.Thread(target=self._ack_loop, args=(ack_every_s,), daemon=True)
        self._acker.start()

    def _on_connect(self, c: mqtt.Client, *_: object) -> None:
        with self._lock:
            self._pending.clear()  # mids of the old connection mean nothing now
        c.subscribe(TOPIC, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append(int(msg.payload.split(b",", 1)[0]))
            self._pending.append(msg.mid)
            self.last_at = time.monotonic()

    def _ack_loop(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            with self._lock:
                pending, self._pending = self._pending, []
            for mid in pending:
                self.client.ack(mid, 1)

    def idle_for(self, seconds: float, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if time.monotonic() - self.last_at >= seconds:
                return
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._acker.join()
        self.client.disconnect()
        self.client.loop_stop()


class Publisher:
    def __init__(self, broker: MosquittoProcess) -> None:
        self.acked: set[int] = set()
        self._by_mid: dict[int, int] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = client(broker, "bench-pub")
        self.client.on_connect = lambda *_: self._connected.set()
        self.client.on_publish = self._on_publish
        connect(self.client, broker)
        if not self._connected.wait(10):
            raise RuntimeError("publisher did not connect")

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, *_: object) -> None:
        with self._lock:  # never held across a paho call (paho calls this under its lock)
            seq = self._by_mid.pop(mid, None)
            if seq is not None:
                self.acked.add(seq)
            else:
                self._early.add(mid)  # acknowledged before publish() returned its mid

    def publish(self, seqs: range, filler: bytes) -> None:
        """Publish, at most ~1,000 ahead of the acknowledgements (bounded memory)."""
        for seq in seqs:
            while len(self._by_mid) > 1000:
                time.sleep(0.0005)
            info = self.client.publish(TOPIC, b"%d,%s" % (seq, filler), qos=1)
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self.acked.add(seq)
                else:
                    self._by_mid[info.mid] = seq

    def wait_acked(self, count: int, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if len(self.acked) >= count:
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Result:
    setting: str
    rate_per_s: float
    ratio_to_baseline: float
    published: int
    lost: int
    duplicated: int
    never_acknowledged: int
    kills: int


def run_setting(name: str, lines: list[str], args: argparse.Namespace) -> Result:
    filler = b"x" * 150  # a reading is ~100-400 bytes
    with tempfile.TemporaryDirectory(prefix="pharos-durability-") as tmp:
        workdir = Path(tmp)
        broker = MosquittoProcess(workdir / "broker", base_conf=variant_conf(lines, workdir))
        (workdir / "broker").mkdir()
        broker.start()
        give_access(broker)
        broker.reload()
        subscriber = Subscriber(broker, args.ack_every_ms / 1000)
        publisher = Publisher(broker)
        try:
            n = args.messages
            started = time.monotonic()
            publisher.publish(range(n), filler)
            if not publisher.wait_acked(n, 120):
                raise RuntimeError(f"{name}: rate phase did not finish")
            rate = n / (time.monotonic() - started)
            subscriber.idle_for(1.0, 60)

            # SIGKILL phase: the same stream, killed at random moments.
            rng = random.Random(args.seed)
            seqs = range(n, 2 * n)
            kill_points = sorted(rng.sample(range(n // 10, n - n // 10), args.kills))
            pusher = threading.Thread(target=publisher.publish, args=(seqs, filler))
            pusher.start()
            for point in kill_points:
                while len(publisher.acked) < n + point:
                    time.sleep(0.002)
                pid = broker.pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                broker.stop()  # reaps it
                broker.start()
            pusher.join()
            # One the broker never acknowledged is not lost: the publisher still has it
            # (a device keeps it in its buffer); counted apart.
            publisher.wait_acked(2 * n, 60)
            subscriber.idle_for(2.0, 120)
        finally:
            publisher.close()
            subscriber.close()
            broker.stop()
        got = [seq for seq in subscriber.received if seq >= n]
        acked = {seq for seq in publisher.acked if seq >= n}
        lost = len(acked - set(got))
        never = n - len(acked)
        return Result(name, rate, 0.0, n, lost, len(got) - len(set(got)), never, args.kills)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=20_000, help="per phase")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--ack-every-ms", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--only", action="append", help="run only settings containing this")
    args = parser.parse_args()
    faulthandler.dump_traceback_later(900, exit=True)  # a hung phase shows where
    results = []
    for name, lines in SETTINGS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        result = run_setting(name, lines, args)
        results.append(result)
        print(
            f"{name:42s} {result.rate_per_s:8.0f} msg/s  lost {result.lost:6d}  "
            f"duplicated {result.duplicated:6d}  never acked {result.never_acknowledged:5d}  "
            f"(of {result.published}, {result.kills} SIGKILLs)",
            flush=True,
        )
    baseline = results[0].rate_per_s  # the first one run (the baseline unless --only)
    for result in results:
        result.ratio_to_baseline = result.rate_per_s / baseline
    print()
    for result in results:
        print(f"{result.setting:42s} rate / baseline = {result.ratio_to_baseline:.2f}")
    print(json.dumps({"bench": "broker_durability", "results": [asdict(r) for r in results]}))


if __name__ == "__main__":
    main()
