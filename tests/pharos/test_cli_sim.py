"""``pharos sim run`` as a field engineer types it: scenario by name, the real broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from pharos.broker_process import MosquittoProcess
from pharos.cli.sim import parse_acceleration, scenario_path

pytestmark = pytest.mark.broker


def test_runs_a_shipped_scenario_and_stops_cleanly(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    env = {
        **os.environ,
        "PHAROS_DATA_DIR": str(tmp_path / "var"),
        "PHAROS_DATABASE__URL": f"sqlite:///{tmp_path / 'pharos.db'}",
        "PHAROS_BROKER__PORT": str(mosquitto.port),
        "PHAROS_BROKER__PASSWORD_FILE": str(mosquitto.password_file),
        "PHAROS_BROKER__ACL_FILE": str(mosquitto.acl_file),
        "PHAROS_BROKER__PID_FILE": str(mosquitto.pid_file),
    }
    command = [sys.executable, "-c", "from pharos.cli import main; main()", "sim", "run",
               "ci-small", "--minutes", "10", "--accelerate", "max", "--seed", "7"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    final = re.search(
        r"stopped: .* \| (\d+)/(\d+) MQTT connected.*\| (\d+) messages sent", done.stdout
    )
    assert final is not None, done.stdout
    connected, mqtt_devices, sent = (int(g) for g in final.groups())
    assert mqtt_devices >= 20 and connected >= mqtt_devices - 3  # a few have offline faults
    assert sent > mqtt_devices  # ten simulated minutes: every device reported at least once
    assert "sl-" in mosquitto.password_file.read_text()


def test_scenario_names_and_acceleration(tmp_path: Path) -> None:
    assert scenario_path("ci-small").name == "ci-small.yaml"
    assert scenario_path("flood-evening.yaml").is_file()
    with pytest.raises(typer.BadParameter, match=r"shipped scenarios: .*ci-small"):
        scenario_path("atlantis")
    assert parse_acceleration("max") == "max"
    assert parse_acceleration("60") == 60.0
    with pytest.raises(typer.BadParameter, match="positive"):
        parse_acceleration("0")
    with pytest.raises(typer.BadParameter, match="factor"):
        parse_acceleration("fast")
