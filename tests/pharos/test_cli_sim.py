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


def test_a_bad_scenario_file_lists_every_problem_at_its_line(tmp_path: Path) -> None:
    """As a user types it (subprocess, the real CLI): no traceback, exit 1, each problem
    ``file:line: field: reason``, all of them at once."""
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(
        "name: bad\nseed: x\nduration: 1h\nstart: '2027-02-30T17:00:00+07:00'\n"
        "districts:\n  - {name: Ninh Kiều, code: nk, centre: [10.03, 105.78], colour: red}\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHAROS_")}
    env["PHAROS_DATABASE__URL"] = f"sqlite:///{tmp_path / 'pharos.db'}"
    command = [sys.executable, "-c", "from pharos.cli import main; main()", "sim", "run",
               str(scenario)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"{scenario}: 3 problems, nothing was run:",
        f"{scenario}:2: seed: Input should be a valid integer, unable to parse string as an "
        "integer",
        f"{scenario}:4: start: Input should be a valid datetime or date, day value is outside "
        "expected range",
        f"{scenario}:6: districts[0].colour: Extra inputs are not permitted",
    ]
