"""``make bench``: every benchmark of ``bench/`` with short defaults, one Markdown + JSON report.

Each benchmark runs as its own process (as a user runs it) and ends with one JSON line;
this collects those, and writes ``bench/report/latest.json`` (everything) and
``bench/report/latest.md`` (one table: each figure, the limit measured in the same run,
their ratio, and the goal), with the machine (CPUs, CPU model, memory), the load
average before and after (the machine may be shared), and the date.

    .venv/bin/python bench/report.py            # all, about 15 minutes
    .venv/bin/python bench/report.py --only ingest,energy
    .venv/bin/python bench/report.py --city      # + ingest with 50,000 devices

Never run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "report"
README = BENCH.parent / "README.md"
MARKERS = ("<!-- bench-report -->", "<!-- /bench-report -->")  # the README's copy of the table

# name → arguments (short defaults: the whole run within ~15 minutes on 2 cores)
RUNS: dict[str, list[str]] = {
    "sim": ["bench_sim.py", "--devices", "1000", "--duration", "10"],
    "ingest": [
        "bench_ingest.py",
        "--devices",
        "1000",
        "--step-seconds",
        "10",
        "--qos1-rates",
        "10000,15000,20000,25000,30000",
        "--qos0-rates",
        "15000,20000,25000,30000,35000",
    ],
    "ingest_2_workers": [
        "bench_ingest.py",
        "--devices",
        "1000",
        "--step-seconds",
        "10",
        "--workers",
        "2",
        "--qos1-rates",
        "15000,20000,25000,30000",
        "--qos0-rates",
        "20000,25000,30000,35000",
    ],
    "commands": ["bench_commands.py", "--lamps", "1000"],
    "rules": ["bench_rules.py", "--devices", "5000", "--seconds", "5"],
    "grafana": ["bench_grafana.py", "--devices", "500", "--hours", "24", "--repeat", "1"],
    "energy": ["bench_energy.py", "--lamps", "50000", "--repeat", "3"],
}
CITY: dict[str, list[str]] = {
    "ingest_50k_devices": [
        "bench_ingest.py",
        "--devices",
        "50000",
        "--step-seconds",
        "10",
        "--qos1-rates",
        "5000,10000,15000,20000",
        "--qos0-rates",
        "10000,15000,20000",
        "--raw-messages",
        "50000",
    ],
}


@dataclass(frozen=True)
class Row:
    bench: str
    figure: str
    value: float | None
    unit: str
    limit: str
    limit_value: float | None
    goal: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.limit_value:
            return None
        return self.value / self.limit_value


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    meminfo = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "memory_gb": round(int(meminfo.group(1)) / 1024 / 1024, 1) if meminfo else None,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def run(name: str, arguments: list[str]) -> dict[str, Any]:
    print(f"== {name}: {' '.join(arguments)}", flush=True)
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    process = subprocess.run(
        [sys.executable, str(BENCH / arguments[0]), *arguments[1:]],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    sys.stdout.write(process.stdout)
    result: dict[str, Any] = {}
    for line in reversed(process.stdout.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            break
    return {
        "name": name,
        "command": " ".join([".venv/bin/python", f"bench/{arguments[0]}", *arguments[1:]]),
        "seconds": round(time.monotonic() - began, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "ok": process.returncode == 0 and bool(result),
        "stderr_tail": process.stderr[-2000:] if process.returncode else "",
        "result": result,
    }


# -- figures of each benchmark ------------------------------------------------------------


def _ingest(run: dict[str, Any]) -> list[Row]:
    r = run["result"]
    name, rows = run["name"], []
    raw = {b["qos"]: b["per_s"] for b in r.get("broker_raw", [])}
    for qos in (1, 0):
        steps = r.get(f"qos{qos}", [])
        best = max((s for s in steps if s["sustained"]), key=lambda s: s["rate"], default=None)
        rows.append(
            Row(
                name,
                f"zero-loss rate, QoS {qos}, {r['devices']:,} devices, "
                f"{r.get('workers', 1)} worker(s)",
                r.get(f"qos{qos}_sustained_per_s"),
                "readings/s",
                f"broker alone (C clients), QoS {qos}",
                raw.get(qos),
                "≥ 20,000/s" if qos == 1 else "",
            )
        )
        if best is not None:
            cpu = best["cpu_us_per_msg"]
            ingest = cpu.get("ingest_all", cpu.get("ingest"))
            rows.append(
                Row(
                    name,
                    f"CPU per reading at {best['rate']:,.0f}/s QoS {qos}: ingest "
                    f"(broker {cpu['mosquitto']:.1f}, influxd {cpu['influxd']:.1f})",
                    ingest,
                    "µs",
                    "broker alone, per message",
                    _raw_cpu(r, qos),
                )
            )
    half = r.get("half_load", {})
    if half.get("lag_p99_s") is not None:
        rows.append(
            Row(name, f"lag p99 at {half['rate']:,.0f}/s", half["lag_p99_s"], "s", "", None)
        )
    return rows


def _raw_cpu(r: dict[str, Any], qos: int) -> float | None:
    found = [b["broker_cpu_us_per_msg"] for b in r.get("broker_raw", []) if b["qos"] == qos]
    return found[0] if found else None


def _sim(run: dict[str, Any]) -> list[Row]:
    r = run["result"]
    limit = r.get("c_clients", {}).get("messages_per_s")
    rows = []
    for phase in ("steady", "max"):
        p = r.get(phase, {})
        rows.append(
            Row(
                "sim",
                f"{phase}: {p.get('connected')}/{p.get('devices')} devices, messages/s",
                p.get("messages_per_s"),
                "msg/s",
                "broker C clients, QoS 1",
                limit,
            )
        )
    return rows


def _commands(run: dict[str, Any]) -> list[Row]:
    r = run["result"]
    c = r.get("command", {})
    return [
        Row(
            "commands",
            f"set_dim to {c.get('lamps')} lamps, all acknowledged",
            c.get("all_acknowledged_s"),
            "s",
            "C clients' round trip, same count",
            r.get("round_trip_limit_s"),
            "≤ 10 s for 5,000",
        )
    ]


def _rules(run: dict[str, Any]) -> list[Row]:
    r = run["result"]
    e = r.get("engine", {})
    rows = [
        Row(
            "rules",
            f"engine evaluations/s ({e.get('devices'):,} devices)",
            e.get("evaluations_per_s"),
            "/s",
            "bare comparison loop",
            e.get("bare_comparisons_per_s"),
            "≥ 100,000/s",
        )
    ]
    for level in r.get("latency", []):
        rows.append(
            Row(
                "rules",
                f"trigger → command p99 at {level['rate']:,.0f} readings/s",
                level.get("p99_ms"),
                "ms",
                "broker round trip p99",
                level.get("broker_rtt_p99_ms"),
                "< 50 ms",
            )
        )
    return rows


def _grafana(run: dict[str, Any]) -> list[Row]:
    r = run["result"]
    return [
        Row(
            "grafana",
            f"board {uid} ({r.get('devices')} devices, {r.get('hours')} h)",
            b["seconds"],
            "s",
            "InfluxDB scanning every reading once",
            r.get("scan_s"),
        )
        for uid, b in r.get("boards", {}).items()
    ]


def _energy(run: dict[str, Any]) -> list[Row]:
    r = run["result"]
    return [
        Row(
            "energy",
            f"{name} ({r.get('lamps'):,} lamps)",
            f["seconds"],
            "s",
            "InfluxDB scanning every lamp reading once",
            r.get("scan_s"),
            "≤ 1 s",
        )
        for name, f in r.get("figures", {}).items()
    ]


FIGURES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "sim": _sim,
    "ingest": _ingest,
    "ingest_2_workers": _ingest,
    "ingest_50k_devices": _ingest,
    "commands": _commands,
    "rules": _rules,
    "grafana": _grafana,
    "energy": _energy,
}


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def markdown(report: dict[str, Any], rows: list[Row]) -> str:
    m = report["machine"]
    lines = [
        "# Benchmark report",
        "",
        f"{report['date']} · {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB · "
        f"Python {m['python']} · `make bench` ({report['seconds']:.0f} s). The machine may be "
        "shared: each benchmark's load average before/after is in the last table, and every "
        "figure stands beside a limit measured in the same run.",
        "",
        "| benchmark | figure | value | limit (same run) | limit value | ratio | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "—" if row.ratio is None else f"{row.ratio:.3g}"
        lines.append(
            f"| {row.bench} | {row.figure} | {_fmt(row.value)} {row.unit} | {row.limit or '—'} "
            f"| {_fmt(row.limit_value)} | {ratio} | {row.goal} |"
        )
    lines += [
        "",
        "| benchmark | command | seconds | load before / after | ok |",
        "|---|---|---|---|---|",
    ]
    for item in report["runs"]:
        lines.append(
            f"| {item['name']} | `{item['command']}` | {item['seconds']} | "
            f"{item['load_before']} / {item['load_after']} | {'yes' if item['ok'] else 'FAILED'} |"
        )
    lines += ["", "Reproduce: `make bench` (or `.venv/bin/python bench/report.py --help`).", ""]
    return "\n".join(lines)


def update_readme(text: str) -> bool:
    """Put the report (without its title) between the README's markers; False if absent."""
    readme = README.read_text(encoding="utf-8")
    start, end = readme.find(MARKERS[0]), readme.find(MARKERS[1])
    if start < 0 or end < start:
        return False
    body = text.split("\n", 2)[2].strip()  # drop "# Benchmark report"
    README.write_text(
        readme[: start + len(MARKERS[0])] + "\n" + body + "\n" + readme[end:], encoding="utf-8"
    )
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated names: " + ",".join([*RUNS, *CITY]))
    parser.add_argument("--city", action="store_true", help="also ingest with 50,000 devices")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-readme", action="store_true", help="leave README.md as it is")
    parser.add_argument(
        "--update", action="store_true", help="with --only: replace those runs in the last report"
    )
    args = parser.parse_args()
    chosen = {**RUNS, **CITY} if args.city else dict(RUNS)
    if args.only:
        names = args.only.split(",")
        unknown = [n for n in names if n not in {**RUNS, **CITY}]
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
        chosen = {n: {**RUNS, **CITY}[n] for n in names}
    runs = [run(name, arguments) for name, arguments in chosen.items()]
    if args.update and (args.out / "latest.json").exists():
        kept = json.loads((args.out / "latest.json").read_text())["runs"]
        fresh = {item["name"]: item for item in runs}
        runs = [fresh.pop(item["name"], item) for item in kept] + list(fresh.values())
    rows = [row for item in runs if item["ok"] for row in FIGURES[item["name"]](item)]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "seconds": round(sum(item["seconds"] for item in runs), 1),  # with --update: all runs
        "rows": [asdict(row) | {"ratio": row.ratio} for row in rows],
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    text = markdown(report, rows)
    (args.out / "latest.md").write_text(text, encoding="utf-8")
    print(f"wrote {args.out / 'latest.md'} and latest.json")
    if not args.no_readme and (args.update or not args.only) and update_readme(text):
        print(f"updated the table in {README}")
    failed = [item["name"] for item in runs if not item["ok"]]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
