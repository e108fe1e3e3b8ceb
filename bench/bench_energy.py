"""City-scale energy benchmark: the energy report, IOC summary and lighting board for N lamps.

A temporary ``influxd`` (1.x) gets the last 24 hours of readings of ``--lamps``
streetlights every ``--every-min`` minutes (cumulative ``energy_kwh``, ``power_w``,
``dim_level``, ``lamp_on``), written straight as line protocol, plus control's
``energy`` points per group; the retention policies and the hourly rollup are set up
and backfilled as ``pharos`` does. The registry (SQLite) holds the lamps in groups of
``--group-size`` over five districts. Then, through the real API (``create_app`` on a
``build_runtime`` runtime, with an API key, as a client calls it):

1. ``GET /api/v1/energy/report`` for every group, the night that began in that day
   (projected and measured);
2. ``GET /api/v1/ioc/summary`` (its ``energy_today`` over every lamp);
3. every panel query of the ``ioc-lighting`` board, variables on "All", over the 24 hours.

The limit, measured in the same run: InfluxDB scanning every stored lamp reading once
(``SELECT count(*)`` over the 24 hours). Each figure is the median of ``--repeat`` runs, given
in seconds, over the scan, and against the 1 s goal. Prints the figures, then one
JSON line. Never run by the tests.

Example: .venv/bin/python bench/bench_energy.py --lamps 50000
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
from zoneinfo import ZoneInfo

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devices.registry.db import transaction  # noqa: E402
from devices.registry.models import Device, Group, device_groups  # noqa: E402
from grafana.boards import board_by_uid  # noqa: E402
from grafana.build import board_json  # noqa: E402
from grafana.settings import BoardOptions  # noqa: E402
from grafana.verify import board_variables, interpolate, panel_queries  # noqa: E402
from pharos.api import create_app  # noqa: E402
from pharos.apikeys import Role, create_api_key  # noqa: E402
from pharos.database import upgrade  # noqa: E402
from pharos.runtime import build_runtime  # noqa: E402
from pharos.settings import DatabaseSettings, InfluxSettings, Settings  # noqa: E402
from telemetry.influx.retention import backfill_hourly, setup_retention  # noqa: E402
from tests.fixtures.influx import InfluxDB  # noqa: E402

DATABASE = "pharos"
DISTRICTS = ("Ninh Kiều", "Cái Răng", "Bình Thủy", "Ô Môn", "Thốt Nốt")
RATED_W = 120.0
BATCH = 20_000
TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def _escape(text: str) -> str:
    return text.replace(" ", "\\ ").replace(",", "\\,").replace("=", "\\=")


def register(settings: Settings, lamps: int, group_size: int) -> list[str]:
    """The lamps and their groups, inserted in bulk (a registry of this size, quickly)."""
    runtime = build_runtime(settings)
    upgrade(runtime.engine)
    groups = [f"g-{n:04d}" for n in range((lamps + group_size - 1) // group_size)]
    with transaction(runtime.sessions) as session:
        session.execute(
            insert(Group),
            [
                {"id": g, "name": g, "type": "street", "district": DISTRICTS[n % len(DISTRICTS)]}
                for n, g in enumerate(groups)
            ],
        )
        session.execute(
            insert(Device),
            [
                {
                    "id": f"sl-{n:05d}",
                    "kind": "streetlight",
                    "name": f"lamp {n}",
                    "district": DISTRICTS[(n // group_size) % len(DISTRICTS)],
                    "rated_power_w": RATED_W,
                    "state": "in_service",
                }
                for n in range(lamps)
            ],
        )
        session.execute(
            insert(device_groups),
            [
                {"device_id": f"sl-{n:05d}", "group_id": groups[n // group_size]}
                for n in range(lamps)
            ],
        )
    runtime.engine.dispose()
    return groups


def fill(
    server: InfluxDB, lamps: int, group_size: int, start: datetime, end: datetime, every: timedelta
) -> int:
    """Lamp readings of today so far, and control's ``energy`` points (one per group)."""
    lines: list[str] = []
    written = 0

    def flush() -> None:
        nonlocal written
        if lines:
            response = httpx.post(
                f"{server.url}/write",
                params={"db": DATABASE, "precision": "s"},
                content="\n".join(lines).encode(),
                timeout=120,
            )
            response.raise_for_status()
            written += len(lines)
            lines.clear()

    steps = int((end - start) / every)
    for n in range(lamps):
        district = _escape(DISTRICTS[(n // group_size) % len(DISTRICTS)])
        key = f"streetlight,device_id=sl-{n:05d},district={district},group=g-{n // group_size:04d}"
        kwh = 100.0 + n % 97
        for step in range(steps):
            at = start + step * every
            hour = at.astimezone(TZ).hour
            lit = hour < 6 or hour >= 18
            level = 70.0 if lit else 0.0
            power = RATED_W * level / 100 if lit and n % 500 else 0.0  # 1 in 500 lit, no power
            kwh += power * every.total_seconds() / 3600 / 1000
            lines.append(
                f"{key} energy_kwh={kwh:.5f},power_w={power},dim_level={level},"
                f"lamp_on={'true' if lit else 'false'} {int(at.timestamp())}"
            )
            if len(lines) >= BATCH:
                flush()
    midnight = int(start.timestamp())
    for g in range((lamps + group_size - 1) // group_size):
        district = _escape(DISTRICTS[g % len(DISTRICTS)])
        lines.append(
            f"energy,group=g-{g:04d},district={district} kwh=10.0,baseline_kwh=14.0,"
            f"saved_kwh=4.0,saved_vnd=8904.0,saved_co2_kg=2.6 {midnight}"
        )
    flush()
    return written


def median_s(run: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def influx_query(server: InfluxDB, query: str) -> None:
    response = httpx.post(f"{server.url}/query", data={"q": query, "db": DATABASE}, timeout=300)
    response.raise_for_status()
    result = response.json()["results"][0]
    if "error" in result:
        raise RuntimeError(f"{query}: {result['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lamps", type=int, default=50_000)
    parser.add_argument("--group-size", type=int, default=100)
    parser.add_argument("--every-min", type=float, default=15.0, help="minutes between readings")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(hours=24)  # covers the night asked for (noon to noon) and today
    report: dict[str, Any] = {"bench": "energy", "lamps": args.lamps, "group_size": args.group_size}
    with tempfile.TemporaryDirectory() as root:
        server = InfluxDB(Path(root) / "influxdb")
        server.start()
        try:
            server.create_database(DATABASE)
            asyncio.run(
                setup_retention(server.url, DATABASE, raw_retention="30d", hourly_retention="730d")
            )
            began = time.perf_counter()
            points = fill(
                server, args.lamps, args.group_size, start, end, timedelta(minutes=args.every_min)
            )
            asyncio.run(backfill_hourly(server.url, DATABASE, start, end))
            report["points"] = points
            report["fill_s"] = round(time.perf_counter() - began, 1)
            settings = Settings(
                data_dir=Path(root) / "var",
                database=DatabaseSettings(url=f"sqlite:///{root}/pharos.db"),
                influx=InfluxSettings(url=server.url, database=DATABASE),
            )
            groups = register(settings, args.lamps, args.group_size)
            time_filter = f"time >= '{start.isoformat()}' AND time <= '{end.isoformat()}'"
            scan = f'SELECT count(*) FROM "streetlight" WHERE {time_filter}'  # noqa: S608
            scan_s = median_s(lambda: influx_query(server, scan), args.repeat)
            report["scan_s"] = round(scan_s, 4)
            runtime = build_runtime(settings)
            with transaction(runtime.sessions) as session:
                key = create_api_key(session, "bench@cantho", Role.VIEWER)
            figures: dict[str, float] = {}
            with TestClient(create_app(runtime)) as client:
                headers = {"X-API-Key": key}
                day = start.astimezone(TZ).date().isoformat()
                params = [("group", g) for g in groups] + [("start", day), ("end", day)]

                def energy_report() -> None:
                    response = client.get("/api/v1/energy/report", params=params, headers=headers)
                    response.raise_for_status()
                    rows = response.json()
                    assert len(rows) == len(groups) and all(r["measured"] for r in rows), rows[:2]

                def ioc_summary() -> None:
                    at = end.isoformat()
                    response = client.get("/api/v1/ioc/summary", params={"at": at}, headers=headers)
                    response.raise_for_status()
                    body = response.json()
                    assert body["energy_today"] is not None, body["missing"]

                figures["energy_report_all_groups"] = median_s(energy_report, args.repeat)
                figures["ioc_summary"] = median_s(ioc_summary, args.repeat)
            runtime.engine.dispose()
            document = board_json(board_by_uid("ioc-lighting"), BoardOptions())
            everything: dict[str, list[str] | None] = {
                v.name: None for v in board_variables(document)
            }
            interval = f"{max(int((end - start).total_seconds() / 1000), 1)}s"
            queries = [
                interpolate(q.query, everything, time_filter=time_filter, interval=interval)
                for q in panel_queries(document)
            ]
            figures["lighting_board"] = median_s(
                lambda: [influx_query(server, q) for q in queries], args.repeat
            )
        finally:
            server.stop()
    report["figures"] = {
        name: {"seconds": round(s, 4), "over_scan": round(s / scan_s, 2), "goal_1s_met": s <= 1.0}
        for name, s in figures.items()
    }
    print(f"{points:,} points ({args.lamps:,} lamps, every {args.every_min:g} min since "
          f"{start.isoformat()}) written and rolled up in {report['fill_s']} s")  # fmt: skip
    print(f"limit: InfluxDB scanning every lamp reading once: {scan_s * 1000:.1f} ms")
    for name, figure in report["figures"].items():
        print(f"{name:26} {figure['seconds'] * 1000:9.1f} ms = {figure['over_scan']:6.2f} × the "
              f"scan; goal 1 s {'met' if figure['goal_1s_met'] else 'NOT met'}")  # fmt: skip
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
