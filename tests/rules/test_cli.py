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
