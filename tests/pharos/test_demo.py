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
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pharos.broker_process import free_port

DEADLINE_S = 60.0
BROKER_HOST = "127.0.0.1"


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
        _check_demo(process, api_port, tmp_path)
    passwd = tmp_path / "var" / "demo" / "broker" / "passwd"
    assert "pharos-backend:$7$" in passwd.read_text()


def _check_demo(process: subprocess.Popen[str], api_port: int, workdir: Path) -> None:
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
        _check_cli_beside_the_demo(text, workdir)
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


def _check_cli_beside_the_demo(banner: str, workdir: Path) -> None:
    """The printed way to run the CLI on the demo works as printed, from a shell with no
    PHAROS_* variables: a device added there can log in to the demo's broker at once."""
    broker = re.search(r"broker\s+mqtt://127\.0\.0\.1:(\d+)", banner)
    cli = re.search(r"CLI\s+pharos (--config \S+) devices list", banner)
    assert broker is not None and cli is not None, banner
    config = workdir / cli.group(1).removeprefix("--config ")
    assert config.stat().st_mode & 0o077 == 0  # it holds the services' secrets
    shell_env = {k: v for k, v in os.environ.items() if not k.startswith("PHAROS_")}

    def pharos(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", "from pharos.cli import main; main()",
             "--config", str(config), *args],
            env=shell_env, cwd=workdir, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert "env-nk-0001" in pharos("devices", "list", "--kind", "env_monitor")
    added = pharos("devices", "add", "env-cli-0001", "--kind", "env_monitor", "--name", "CLI")
    secret = re.search(r"^env-cli-0001\s+(\S+)$", added, re.MULTILINE)
    assert secret is not None, added
    assert _connects(int(broker.group(1)), "env-cli-0001", secret.group(1)), added


def _connects(port: int, username: str, secret: str, within_s: float = 15.0) -> bool:
    """Whether the broker accepts ``username`` within ``within_s`` (its reload is async)."""
    deadline = time.monotonic() + within_s
    while True:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5)
        client.username_pw_set(username, secret)
        try:
            accepted = client.connect(BROKER_HOST, port, keepalive=10) == 0 and _connack(client)
        finally:
            client.disconnect()
        if accepted:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)  # polling a condition with a deadline: the broker reloading


def _connack(client: mqtt.Client) -> bool:
    """Run the client's loop until the CONNACK; True when it accepted the login."""
    answer: list[bool] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: answer.append(not reason.is_failure)
    deadline = time.monotonic() + 5
    while not answer and time.monotonic() < deadline:
        if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
            return False
    return bool(answer and answer[0])
