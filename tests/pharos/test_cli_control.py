"""``pharos control``: a lighting file loaded (or refused with every problem named),
drift and the energy projection, against a real SQLite database."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from devices.registry.db import make_engine, make_session_factory, transaction
from devices.registry.schemas import GroupCreate
from devices.registry.service import Registry
from pharos.cli import app

LIGHTING = """
programs:
  - id: default
    name: Default dimming
    steps:
      - {event: sunset, offset_minutes: -10, level: 100}
      - {at: "22:00", level: 70}
      - {at: "00:00", level: 50}
      - {at: "04:30", level: 100}
      - {event: sunrise, offset_minutes: 10, level: 0}
calendars:
  - {id: city, name: City, default_program_id: default}
assignments:
  - {target_type: group, target_id: hoa-binh, calendar_id: city}
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PHAROS_") and name != "PHAROS_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("PHAROS_DATABASE__URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("PHAROS_BROKER__PASSWORD_FILE", str(tmp_path / "broker" / "passwd"))
    monkeypatch.setenv("PHAROS_BROKER__ACL_FILE", str(tmp_path / "broker" / "acl"))
    monkeypatch.setenv("PHAROS_BROKER__PID_FILE", str(tmp_path / "broker" / "no.pid"))
    monkeypatch.setenv("PHAROS_DATA_DIR", str(tmp_path / "var"))


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), prog_name="pharos")


def with_street(tmp_path: Path) -> None:
    assert run("db", "upgrade").exit_code == 0
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with transaction(make_session_factory(engine)) as session:
        Registry(session, "test").create_group(GroupCreate(id="hoa-binh", name="Hòa Bình"))
    engine.dispose()
    for n in (1, 2):
        added = run(
            "devices", "add", f"sl-{n}", "--kind", "streetlight", "--name", f"Đèn {n}",
            "--rated-power", "100", "--group", "hoa-binh",
        )  # fmt: skip
        assert added.exit_code == 0, added.output


@pytest.mark.usefixtures("env")
def test_a_lighting_file_is_loaded_and_projected(tmp_path: Path) -> None:
    with_street(tmp_path)
    path = tmp_path / "lighting.yaml"
    path.write_text(LIGHTING, encoding="utf-8")
    loaded = run("control", "load", str(path))
    assert loaded.exit_code == 0, loaded.output
    assert "1 programs, 1 calendars, 1 assignments stored" in loaded.output
    projected = run(
        "control", "energy", "--group", "hoa-binh", "--start", "2026-06-21",
        "--end", "2026-06-21", "--csv",
    )  # fmt: skip
    assert projected.exit_code == 0, projected.output
    (row,) = list(csv.DictReader(io.StringIO(projected.output)))
    assert row["lamps"] == "2" and 0 < float(row["projected_kwh"]) < float(row["baseline_kwh"])
    assert run("control", "drift").exit_code == 0


@pytest.mark.usefixtures("env")
def test_a_bad_lighting_file_names_every_problem_and_stores_nothing(tmp_path: Path) -> None:
    with_street(tmp_path)
    bad = LIGHTING.replace("level: 70", "level: 170").replace("target_id: hoa-binh", "target_id: x")
    path = tmp_path / "bad.yaml"
    path.write_text(bad, encoding="utf-8")
    refused = run("control", "load", str(path))
    assert refused.exit_code == 1
    assert "bad.yaml:7: programs[0].steps[1].level: Input should be less" in refused.output
    assert "bad.yaml:14: assignments[0].target_id: unknown group 'x'" in refused.output
    fixed = path.write_text(LIGHTING.replace("target_id: hoa-binh", "target_id: x"))
    assert fixed
    refused = run("control", "load", str(path))
    assert refused.exit_code == 1
    assert "assignments[0].target_id: unknown group 'x'" in refused.output
    projected = run(
        "control", "energy", "--group", "hoa-binh", "--start", "2026-06-21",
        "--end", "2026-06-21", "--program", "default",
    )  # fmt: skip
    assert projected.exit_code == 1 and "no program 'default'" in projected.output


@pytest.mark.usefixtures("env")
def test_every_problem_of_a_lighting_file_in_one_run(tmp_path: Path) -> None:
    """An impossible calendar date, a level out of range, unknown programs, calendar and
    group: all reported at their lines in one run (none hidden behind another), no
    traceback, exit 1, nothing stored."""
    with_street(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(
        LIGHTING.replace("level: 70", "level: 170").replace(
            "  - {id: city, name: City, default_program_id: default}",
            "  - id: city\n    name: City\n    default_program_id: default\n    rules:\n"
            "      - {program_id: tet, dates: [2027-02-30]}\n"
            "      - {program_id: holiday, dates: [2027-09-02]}",
        )
        + "  - {target_type: group, target_id: nowhere, calendar_id: nocal}\n",
        encoding="utf-8",
    )
    refused = run("control", "load", str(path))
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.exception is None or isinstance(refused.exception, SystemExit)
    lines = [line.removeprefix(f"{path}:") for line in refused.stderr.splitlines()[1:]]
    assert lines == [
        "7: programs[0].steps[1].level: Input should be less than or equal to 100",
        "16: calendars[0].rules[0].dates[0]: Input should be a valid date or datetime, "
        "day value is outside expected range",
        "16: calendars[0].rules[0].program_id: no program 'tet'",
        "17: calendars[0].rules[1].program_id: no program 'holiday'",
        "20: assignments[1].calendar_id: no calendar 'nocal'",
        "20: assignments[1].target_id: unknown group 'nowhere'",
    ]
    assert refused.stderr.splitlines()[0] == f"{path}: 6 problems, nothing was stored:"


@pytest.mark.usefixtures("env")
def test_energy_for_an_unknown_group_is_an_error_naming_it(tmp_path: Path) -> None:
    with_street(tmp_path)
    refused = run(
        "control", "energy", "--group", "hoa-binh", "--group", "nowhere", "--group", "nope",
        "--start", "2026-06-21", "--end", "2026-06-22",
    )  # fmt: skip
    assert refused.exit_code == 1, refused.output
    assert "--group: unknown groups 'nowhere', 'nope'" in refused.stderr
    assert refused.stdout == ""  # no table of zeros
    bad_date = run("control", "energy", "--group", "hoa-binh", "--start", "2027-02-30",
                   "--end", "2027-03-01")  # fmt: skip
    assert bad_date.exit_code == 1 and "--start/--end:" in bad_date.stderr
    assert "Traceback" not in bad_date.output
