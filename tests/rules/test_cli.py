"""``pharos rules check`` and ``pharos rules backtest`` against a real SQLite and store."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pharos.cli import app
from rules.settings import SHIPPED_RULES
from telemetry.points import Point
from telemetry.store import EmbeddedStore

T0 = datetime(2026, 10, 22, 10, 0, tzinfo=UTC)
RULE = (
    "rules:\n  - {id: high, name: River high, scope: {kind: flood_gauge},"
    " when: {value: water_level_m, above: 1.8}}\n"
)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("PHAROS_") and name != "PHAROS_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("PHAROS_DATABASE__URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("PHAROS_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("PHAROS_BROKER__PASSWORD_FILE", str(tmp_path / "passwd"))
    monkeypatch.setenv("PHAROS_BROKER__ACL_FILE", str(tmp_path / "acl"))
    monkeypatch.setenv("PHAROS_BROKER__PID_FILE", str(tmp_path / "no.pid"))
    return tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), prog_name="pharos")


def test_check_names_file_line_and_reason(env: Path) -> None:
    good = run("rules", "check", str(SHIPPED_RULES))
    assert good.exit_code == 0 and good.stdout.startswith("ok: 17 rule(s) in 1 file(s)")
    bad = env / "bad.yaml"
    bad.write_text(RULE.replace("above: 1.8", "above: [1]"))
    refused = run("rules", "check", str(bad))
    assert refused.exit_code == 1
    assert f"{bad}:2: rules[0].when.above: " in refused.stderr
    assert "Traceback" not in refused.output


def test_check_reports_every_problem_of_a_file_in_one_run(env: Path) -> None:
    """A bad field, an unknown metric and a duplicate id: all at once, each at its line
    (the duplicate once hid behind the others until a second run)."""
    bad = env / "bad.yaml"
    bad.write_text(
        "rules:\n"
        "  - {id: r1, name: One, severity: huge, when: {value: pm25, above: 1}}\n"
        "  - {id: r2, name: Two, when: {all: [{value: nosuch, above: 1}]}}\n"
        "  - {id: r1, name: Again, when: {value: pm25, above: 1}}\n"
    )
    refused = run("rules", "check", str(bad))
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.stderr.splitlines() == [
        f"{bad}:2: rules[0].severity: Input should be 'info', 'minor', 'major' or 'critical'",
        f"{bad}:3: rules[1].when.all[0]: value: unknown metric or derived value 'nosuch' "
        "for any kind",
        f"{bad}:4: rules[2].id: rule id 'r1' appears twice (first as rules[0])",
    ]


def test_check_refuses_groups_devices_and_districts_nobody_has(env: Path) -> None:
    rules = env / "names.yaml"
    rules.write_text(
        "rules:\n"
        "  - id: g1\n"
        "    name: G\n"
        "    scope: {kind: streetlight, group: nowhere, district: Atlantis}\n"
        "    when: {value: power_w, above: 10}\n"
        "    actions:\n"
        "      - {command: set_dim, params: {level: 10}, target: group, group: hoa-binh}\n"
    )
    unchecked = run("rules", "check", str(rules))  # no database yet: districts only
    assert unchecked.exit_code == 1
    assert unchecked.stderr.splitlines() == [
        f"{rules}:4: rules[0].scope.district: unknown district 'Atlantis'"
    ]
    assert run("db", "upgrade").exit_code == 0
    assert run("groups", "create", "hoa-binh", "--name", "HB").exit_code == 0
    refused = run("rules", "check", str(rules))
    assert refused.exit_code == 1
    assert refused.stderr.splitlines() == [
        f"{rules}:4: rules[0].scope.group: unknown group 'nowhere'",
        f"{rules}:4: rules[0].scope.district: unknown district 'Atlantis'",
    ]
    rules.write_text(
        rules.read_text().replace("group: nowhere, district: Atlantis", "group: hoa-binh")
    )
    accepted = run("rules", "check", str(rules))
    assert accepted.exit_code == 0 and accepted.stdout == "ok: 1 rule(s) in 1 file(s)\n"


def test_backtest_lists_the_alerts_of_stored_history(env: Path) -> None:
    assert run("db", "upgrade").exit_code == 0
    store = EmbeddedStore(env / "var" / "timeseries.db")
    levels = [1.7, 1.81, 1.85, 1.7]
    asyncio.run(
        store.write(
            [
                Point(
                    "flood_gauge",
                    {"device_id": "fg-1"},
                    {"water_level_m": v},
                    T0 + timedelta(minutes=i),
                )
                for i, v in enumerate(levels)
            ]
        )
    )
    rules = env / "rules.yaml"
    rules.write_text(RULE)
    window = ["--start", T0.isoformat(), "--end", (T0 + timedelta(hours=1)).isoformat()]
    result = run("rules", "backtest", *window, "--rules", str(rules))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "4 readings of 1 device(s), 4 evaluations: 1 alert(s)"
    assert lines[1].startswith("2026-10-22T10:01:00+00:00  2026-10-22T10:03:00+00:00  minor")
    assert "fg-1" in lines[1]
    naive = run("rules", "backtest", "--start", "2026-10-22T10:00", "--end", "2026-10-22T11:00")
    assert naive.exit_code == 2 and "UTC offset" in naive.stderr
