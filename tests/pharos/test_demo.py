"""The README's demo command works as a new user would run it: broker, fleet, ingest, API."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from pharos.broker_process import free_port

DEADLINE_S = 60.0


def test_demo_serves_the_sample_inventory(tmp_path: Path) -> None:
    api_port = free_port()
    env = {
        **os.environ,
        "PHAROS_DATA_DIR": str(tmp_path / "var"),
        "PHAROS_DATABASE__URL": f"sqlite:///{tmp_path / 'var' / 'pharos.db'}",
        "PHAROS_API__PORT": str(api_port),
    }
    command = [sys.executable, "-c", "from pharos.cli import main; main()", "demo",
               "--duration", "90", "--devices", "220"]  # fmt: skip
    with subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        _check_demo(process, api_port)
    passwd = tmp_path / "var" / "demo" / "broker" / "passwd"
    assert "pharos-backend:$7$" in passwd.read_text()


def _check_demo(process: subprocess.Popen[str], api_port: int) -> None:
    assert process.stdout is not None
    output: list[str] = []
    try:
        deadline = time.monotonic() + DEADLINE_S
        key = None
        while time.monotonic() < deadline:  # the banner, up to its last line
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if match := re.search(r"API key\s+(phk_\S+)", line):
                key = match.group(1)
            if line.startswith("Stop with Ctrl-C"):
                break
        assert key is not None, "".join(output)
        text = "".join(output)
        assert re.search(r"inventory: \d+ created", text)
        assert "fleet      220 simulated devices of can-tho-demo" in text
        base = f"http://127.0.0.1:{api_port}/api/v1"
        devices = _get_when_up(f"{base}/devices?limit=500", key, deadline)
        assert devices["total"] >= 14 + 220  # the inventory and the simulated fleet
        kinds = {d["kind"] for d in devices["items"]}
        assert {"streetlight", "lighting_cabinet", "flood_gauge", "energy_meter"} <= kinds
        # Readings flow: the simulated devices' values reach the store through ingest,
        # and the Modbus poller reads the simulated meters.
        stored = _kinds_with_latest(base, key, deadline)
        assert {"streetlight", "env_monitor", "flood_gauge", "energy_meter"} <= stored
        # Control runs: at start every district's lamps get their program and level.
        commands = _get_when_up(f"{base}/commands", key, deadline)
        assert commands["total"] >= 9
        assert {"set_program", "set_dim"} & {c["action"] for c in commands["items"]}
        assert re.search(r"lighting: calendar 'can-tho' on [1-9] district groups", text)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, "".join(output) + process.stdout.read()


def _kinds_with_latest(base: str, key: str, deadline: float) -> set[str]:
    """The kinds with a latest value in the store, once every expected kind has one."""
    wanted = {"streetlight", "env_monitor", "flood_gauge", "energy_meter"}
    while True:
        kinds = {
            kind
            for kind in wanted
            if _get_when_up(f"{base}/telemetry/latest?kind={kind}", key, deadline)["items"]
        }
        if kinds == wanted or time.monotonic() > deadline:
            return kinds
        time.sleep(0.2)  # polling a condition with a deadline: readings arriving


def _get_when_up(url: str, key: str, deadline: float) -> dict:  # type: ignore[type-arg]
    while True:
        try:
            response = httpx.get(url, headers={"X-API-Key": key}, timeout=5)
            response.raise_for_status()
            return response.json()  # type: ignore[no-any-return]
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling a condition with a deadline: the server is starting
