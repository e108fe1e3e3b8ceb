"""``pharos grafana build|panels|embed|push`` as an operator runs them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from grafana.boards import BOARDS
from grafana.build import DASHBOARDS_DIR
from pharos.broker_process import free_port
from pharos.cli.root import app
from tests.grafana.fake_grafana import TOKEN, FakeGrafana


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PHAROS_"):
            monkeypatch.delenv(name)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), prog_name="pharos")


def test_build_writes_every_board_and_check_finds_changes(tmp_path: Path) -> None:
    result = run("grafana", "build", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(b.file_name for b in BOARDS)
    assert run("grafana", "build", "--out", str(tmp_path), "--check").exit_code == 0
    board = tmp_path / "ioc-flood.json"
    document = json.loads(board.read_text())
    document["title"] = "edited in the UI"
    board.write_text(json.dumps(document))
    result = run("grafana", "build", "--out", str(tmp_path), "--check")
    assert result.exit_code == 1
    assert "ioc-flood.json" in result.stderr and "pharos grafana build" in result.stderr


def test_the_committed_boards_pass_the_check() -> None:
    result = run("grafana", "build", "--check")
    assert result.exit_code == 0, result.output
    assert str(DASHBOARDS_DIR) in result.stdout


def test_build_follows_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHAROS_GRAFANA__BOARDS__FLOOD_LINES__BD1_M", "3.0")
    monkeypatch.setenv("PHAROS_GRAFANA__BOARDS__FLOOD_LINES__BD2_M", "3.5")
    monkeypatch.setenv("PHAROS_GRAFANA__BOARDS__FLOOD_LINES__BD3_M", "4.0")
    assert run("grafana", "build", "--out", str(tmp_path)).exit_code == 0
    flood = json.loads((tmp_path / "ioc-flood.json").read_text())
    steps = flood["panels"][0]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s.get("value") for s in steps] == [None, 3.0, 3.5, 4.0]


def test_panels_and_embed() -> None:
    listing = run("grafana", "panels", "ioc-environment")
    assert listing.exit_code == 0 and "VN_AQI by district (now)" in listing.stdout
    result = run(
        "grafana",
        "embed",
        "ioc-environment",
        "1",
        "--from",
        "now-6h",
        "--var",
        "district=Cái Răng",
        "--public-url",
        "https://ioc.example/grafana",
    )
    assert result.exit_code == 0, result.output
    url = result.stdout.strip()
    assert url.startswith("https://ioc.example/grafana/d-solo/ioc-environment/ioc-environment?")
    assert "panelId=1" in url and "from=now-6h" in url and "kiosk=" in url
    assert "var-district=C%C3%A1i+R%C4%83ng" in url


def test_embed_errors_are_one_line_with_exit_2() -> None:
    no_url = run("grafana", "embed", "ioc-flood", "1")
    assert no_url.exit_code == 2 and "PHAROS_GRAFANA__PUBLIC_URL" in no_url.stderr
    bad = run("grafana", "embed", "ioc-flood", "Nope", "--public-url", "https://g.example")
    assert bad.exit_code == 2 and "panel: no panel 'Nope'" in bad.stderr
    assert "Traceback" not in bad.output


def test_push_into_the_recording_server(grafana: tuple[FakeGrafana, str]) -> None:
    state, url = grafana
    result = run("grafana", "push", "--url", url, "--token", TOKEN)
    assert result.exit_code == 0, result.output
    assert sorted(state.dashboards) == sorted(b.uid for b in BOARDS)
    assert result.stdout.count("saved ") == len(BOARDS)


def test_push_errors_are_one_line(grafana: tuple[FakeGrafana, str]) -> None:
    _, url = grafana
    refused = run("grafana", "push", "--url", url, "--token", "nope")
    assert refused.exit_code == 1 and "401 Unauthorized" in refused.stderr
    away = run("grafana", "push", "--url", f"http://127.0.0.1:{free_port()}", "--token", "x")
    assert away.exit_code == 1 and "is unreachable" in away.stderr
    assert "Traceback" not in refused.output + away.output
    missing = run("grafana", "push", "--url", url)
    assert missing.exit_code == 2 and "PHAROS_GRAFANA__TOKEN" in missing.stderr
