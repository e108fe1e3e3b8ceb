"""Board load benchmark: every panel query of every IOC board, against InfluxDB's own scan.

A temporary ``influxd`` (1.x) gets a day of readings of ``--devices`` devices of the
``can-tho-demo`` scenario (MQTT kinds; readings sampled from the simulator's own
physics models at each device's interval, written as line protocol), plus the
``fleet`` and ``devices`` points of ``telemetry.fleet_stats`` (one snapshot per hour).
Rules' and control's measurements and the Modbus meters are not filled: their targets
answer empty, which costs InfluxDB little. Then, per board, every target is
run with every variable on "All" over the whole day (``$__interval`` as Grafana picks
it for ~1000 points), one after the other (Grafana runs them in parallel, so this is
the worst case).

The limit, measured in the same run: InfluxDB scanning every stored reading once
(``SELECT count(*)`` over the reading measurements and the same day). A board's figure
is its time over that scan. Figures are printed, then one JSON line. Never run by the
tests.

Example: .venv/bin/python bench/bench_grafana.py --devices 1000 --hours 24
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firmware_sim.fleet import build_mqtt_model  # noqa: E402
from firmware_sim.scenario import expand, limit_devices, load_scenario  # noqa: E402
from grafana.boards import BOARDS  # noqa: E402
from grafana.build import board_json  # noqa: E402
from grafana.settings import BoardOptions  # noqa: E402
from grafana.verify import board_variables, interpolate, panel_queries  # noqa: E402
from telemetry.fleet_stats import DeviceLiveness, FleetCount, FleetSnapshot, fleet_points  # noqa: E402
from telemetry.influx.line_protocol import encode_point  # noqa: E402
from telemetry.influx.retention import backfill_hourly, setup_retention  # noqa: E402
from telemetry.points import Point  # noqa: E402
from tests.fixtures.influx import InfluxDB  # noqa: E402

DATABASE = "bench"
READING_KINDS = ("streetlight", "smart_pole", "env_monitor", "flood_gauge")
BATCH = 5000


def fill(server: InfluxDB, devices: int, hours: float, end: datetime) -> int:
    scenario = load_scenario(ROOT / "firmware_sim" / "scenarios" / "can-tho-demo.yaml")
    specs = [s for s in limit_devices(expand(scenario), devices) if not s.is_modbus]
    start = end - timedelta(hours=hours)
    lines: list[str] = []
    written = 0

    def flush() -> None:
        nonlocal written
        if lines:
            response = httpx.post(
                f"{server.url}/write",
                params={"db": DATABASE, "precision": "ns"},
                content="\n".join(lines).encode(),
                timeout=60,
            )
            response.raise_for_status()
            written += len(lines)
            lines.clear()

    for spec in specs:
        model = build_mqtt_model(spec, scenario.seed, start)
        step = timedelta(seconds=model.interval_s)
        tags = {"device_id": spec.device_id, "district": spec.district}
        now = start
        while now < end:
            fields = {k: v for k, v in model.sample(now).items() if isinstance(v, int | float)}
            lines.append(encode_point(Point(spec.kind.value, tags, fields, now)))
            if len(lines) >= BATCH:
                flush()
            now += step
    for hour in range(int(hours)):
        at = start + timedelta(hours=hour + 1)
        snapshot = FleetSnapshot(at)
        for spec in specs:
            count = snapshot.counts.setdefault((spec.kind.value, spec.district), FleetCount())
            count.devices += 1
            count.online += 1
            snapshot.devices.append(
                DeviceLiveness(
                    spec.device_id,
                    spec.kind.value,
                    spec.district,
                    spec.latitude,
                    spec.longitude,
                    True,
                    False,
                    at,
                )
            )
        lines.extend(encode_point(p) for p in fleet_points(snapshot))
        flush()
    flush()
    return written


def timed_query(server: InfluxDB, query: str) -> tuple[float, bool]:
    began = time.perf_counter()
    response = httpx.post(f"{server.url}/query", data={"q": query, "db": DATABASE}, timeout=300)
    elapsed = time.perf_counter() - began
    response.raise_for_status()
    result = response.json()["results"][0]
    if "error" in result:
        raise RuntimeError(f"{query}: {result['error']}")
    return elapsed, bool(result.get("series"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    args = parser.parse_args()

    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(hours=args.hours)
    time_filter = f"time >= '{start.isoformat()}' AND time <= '{end.isoformat()}'"
    interval = f"{max(int(args.hours * 3600 / 1000), 1)}s"
    with tempfile.TemporaryDirectory() as root:
        server = InfluxDB(Path(root) / "influxdb")
        server.start()
        try:
            server.create_database(DATABASE)
            # Retention and the hourly rollup as `pharos` sets them up (the lighting board
            # reads the rollup), backfilled once the day is written.
            asyncio.run(setup_retention(server.url, DATABASE))
            began = time.perf_counter()
            points = fill(server, args.devices, args.hours, end)
            asyncio.run(backfill_hourly(server.url, DATABASE, start, end))
            fill_s = time.perf_counter() - began
            scan = "SELECT count(*) FROM " + ", ".join(f'"{k}"' for k in READING_KINDS)  # noqa: S608
            scan_s = statistics.median(
                timed_query(server, f"{scan} WHERE {time_filter}")[0] for _ in range(args.repeat)
            )
            boards: dict[str, Any] = {}
            for board in BOARDS:
                document = board_json(board, BoardOptions())
                everything = {v.name: None for v in board_variables(document)}
                queries = [
                    interpolate(q.query, everything, time_filter=time_filter, interval=interval)
                    for q in panel_queries(document)
                ]
                runs, empty = [], 0
                for _ in range(args.repeat):
                    results = [timed_query(server, q) for q in queries]
                    runs.append(sum(t for t, _ in results))
                    empty = sum(1 for _, has in results if not has)
                boards[board.uid] = {
                    "queries": len(queries),
                    "seconds": round(statistics.median(runs), 4),
                    "over_scan": round(statistics.median(runs) / scan_s, 2),
                    "empty_targets": empty,
                }
        finally:
            server.stop()
    print(f"{points} points ({args.devices} devices, {args.hours} h) written in {fill_s:.1f} s")
    print(f"limit: InfluxDB scanning every reading once: {scan_s * 1000:.1f} ms")
    for uid, figure in boards.items():
        print(
            f"{uid:16} {figure['queries']:2} queries {figure['seconds'] * 1000:8.1f} ms "
            f"= {figure['over_scan']:5.2f} × the scan ({figure['empty_targets']} targets empty: "
            "aqi, flood, alerts, energy and Modbus meters are not written here)"
        )
    print(
        json.dumps(
            {
                "bench": "grafana",
                "devices": args.devices,
                "hours": args.hours,
                "points": points,
                "scan_s": round(scan_s, 4),
                "boards": boards,
            }
        )
    )


if __name__ == "__main__":
    main()
