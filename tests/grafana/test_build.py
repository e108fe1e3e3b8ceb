"""The boards as code: committed JSON, the SDK's own models, units, thresholds, schema names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.models.dashboard import Dashboard

from grafana.boards import BOARDS, Board, board_by_uid
from grafana.build import DASHBOARDS_DIR, board_json, load, render, stale, write_all
from grafana.influxql import InfluxQLQuery
from grafana.settings import DEFAULT_DATASOURCE_UID, BoardOptions, FloodLines
from grafana.verify import panel_queries, schema_problems
from telemetry.derived import store_schema

AQI_COLOURS = ["#00e400", "#ffff00", "#ff7e00", "#ff0000", "#8f3f97", "#7e0023"]


def test_the_committed_json_is_what_the_code_builds() -> None:
    assert stale(DASHBOARDS_DIR, BoardOptions()) == [], "run `pharos grafana build`"
    assert sorted(p.name for p in DASHBOARDS_DIR.glob("*.json")) == sorted(
        b.file_name for b in BOARDS
    )


def test_a_changed_board_is_found_stale(tmp_path: Path) -> None:
    write_all(tmp_path, BoardOptions())
    assert stale(tmp_path, BoardOptions()) == []
    other = BoardOptions(flood_lines=FloodLines(bd1_m=3.0, bd2_m=3.5, bd3_m=4.0))  # Châu Đốc
    assert stale(tmp_path, other) == ["ioc-flood.json"]
    (tmp_path / "ioc-fleet.json").unlink()
    assert "ioc-fleet.json" in stale(tmp_path, BoardOptions())


@pytest.mark.parametrize("board", BOARDS, ids=lambda b: b.uid)
def test_boards_load_into_the_sdk_models_and_render_the_same(board: Board) -> None:
    text = render(board, BoardOptions())
    loaded = load(text)
    assert isinstance(loaded, Dashboard)
    assert loaded.uid == board.uid
    targets = [t for p in loaded.panels or [] for t in getattr(p, "targets", None) or []]
    assert targets and all(isinstance(t, InfluxQLQuery) for t in targets)
    again = json.dumps(loaded.to_json(), default=lambda o: o.to_json())
    assert json.loads(again) == json.loads(text)
    assert render(board, BoardOptions()) == text  # stable


@pytest.mark.parametrize("board", BOARDS, ids=lambda b: b.uid)
def test_every_panel_has_a_unit_thresholds_an_id_and_influxql(board: Board) -> None:
    document = board_json(board, BoardOptions())
    assert document["timezone"] == "Asia/Ho_Chi_Minh"
    ids = [panel["id"] for panel in document["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    for panel in document["panels"]:
        defaults = panel["fieldConfig"]["defaults"]
        assert "unit" in defaults, panel["title"]
        assert defaults["thresholds"]["steps"], panel["title"]
        assert panel["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["rawQuery"] is True and target["query"].startswith("SELECT")


@pytest.mark.parametrize("board", BOARDS, ids=lambda b: b.uid)
def test_queries_name_only_what_the_schema_has(board: Board) -> None:
    schema = store_schema()
    for query in panel_queries(board_json(board, BoardOptions())):
        assert schema_problems(query.query, schema) == [], (query.panel, query.query)


def test_template_variables_cover_district_group_and_device() -> None:
    names = {
        v["name"]
        for board in BOARDS
        for v in board_json(board, BoardOptions())["templating"]["list"]
    }
    assert {"datasource", "district", "group", "device", "kind"} <= names
    lighting = board_json(board_by_uid("ioc-lighting"), BoardOptions())
    district = next(v for v in lighting["templating"]["list"] if v["name"] == "district")
    assert district["query"] == 'SHOW TAG VALUES FROM "streetlight" WITH KEY = "district"'
    assert (district["multi"], district["includeAll"], district["allValue"]) == (True, True, ".*")


def test_aqi_panels_use_the_official_category_colours() -> None:
    environment = board_json(board_by_uid("ioc-environment"), BoardOptions())
    aqi_panels = [p for p in environment["panels"] if "AQI" in p["title"]]
    assert len(aqi_panels) >= 3
    for panel in aqi_panels:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["color"] for s in steps] == AQI_COLOURS
        assert [s.get("value") for s in steps] == [None, 51, 101, 151, 201, 301]


def test_flood_thresholds_are_the_station_lines() -> None:
    lines = FloodLines(bd1_m=3.0, bd2_m=3.3, bd3_m=3.6)
    flood = board_json(board_by_uid("ioc-flood"), BoardOptions(flood_lines=lines))
    level = next(p for p in flood["panels"] if p["title"].startswith("River level"))
    steps = level["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s.get("value") for s in steps] == [None, 3.0, 3.3, 3.6]
    assert level["fieldConfig"]["defaults"]["unit"] == "lengthm"


def test_geomaps_place_devices_by_position() -> None:
    maps = [
        panel
        for board in BOARDS
        for panel in board_json(board, BoardOptions())["panels"]
        if panel["type"] == "geomap"
    ]
    assert len(maps) == 2
    for panel in maps:
        layer = panel["options"]["layers"][0]
        assert layer["location"] == {
            "mode": "coords",
            "latitude": "latitude",
            "longitude": "longitude",
        }
        assert 'FROM "devices"' in panel["targets"][0]["query"]


def test_flood_lines_must_rise() -> None:
    with pytest.raises(ValueError, match="bd1_m < bd2_m < bd3_m"):
        FloodLines(bd1_m=2.0, bd2_m=1.9, bd3_m=2.1)


def test_an_unknown_board_is_named() -> None:
    with pytest.raises(KeyError, match="ioc-lighting"):
        board_by_uid("nope")


def test_provisioning_names_the_datasource_the_boards_use() -> None:
    root = Path(__file__).resolve().parents[2] / "grafana" / "provisioning"
    datasources = yaml.safe_load((root / "datasources" / "pharos.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["uid"] == BoardOptions().datasource_uid == DEFAULT_DATASOURCE_UID
    assert (source["type"], source["jsonData"]["version"]) == ("influxdb", "InfluxQL")
    assert source["url"] == "$PHAROS_INFLUX_URL"  # from Grafana's environment
    assert source["jsonData"]["dbName"] == "$PHAROS_INFLUX_DATABASE"
    assert source["secureJsonData"]["password"] == "$PHAROS_INFLUX_PASSWORD"
    dashboards = yaml.safe_load((root / "dashboards" / "pharos.yaml").read_text())
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "$PHAROS_GRAFANA_DASHBOARDS"
