"""The SVG charts and map: shapes where they belong, hostile text escaped, tiles only
when configured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pharos.console.charts import Bounds, MapPoint, Marker, bar_chart, device_map, level_chart

START = datetime(2026, 12, 4, 10, tzinfo=UTC)
END = START + timedelta(hours=14)


def test_a_level_chart_steps_through_the_night() -> None:
    changes = [
        (START, 0.0),
        (START + timedelta(hours=1), 100.0),
        (START + timedelta(hours=7), 50.0),
    ]
    svg = level_chart(
        [("edited", changes)],
        START,
        END,
        [START],
        lambda t: "<x>",
        [Marker(START + timedelta(hours=1), "sunset <17:34>")],
    )
    assert svg.count("<polyline") == 1
    assert "&lt;x&gt;" in svg and "sunset &lt;17:34&gt;" in svg and "<x>" not in svg
    # 100 % is drawn at the top of the plot area, 50 % half-way down.
    points = svg.split('points="')[1].split('"')[0].split()
    levels = sorted({float(p.split(",")[1]) for p in points})
    assert len(levels) == 3


def test_bars_skip_missing_values() -> None:
    svg = bar_chart(
        ["a", "b"],
        [("projected", "P", [1.0, 2.0]), ("measured", "M", [None, 1.5])],
        lambda v: f"{v}",
        "x",
    )
    assert svg.count('class="bar projected"') == 3  # two bars and the legend
    assert svg.count('class="bar measured"') == 2


def test_the_map_draws_tiles_only_when_configured() -> None:
    points = [
        MapPoint("lamp-<1>", 10.03, 105.78, "online", "/devices/lamp-1"),
        MapPoint("lamp-2", 10.04, 105.79, "offline"),
    ]
    bounds = Bounds.around(points, (10.0, 105.7))
    assert bounds.south < 10.03 and bounds.north > 10.04
    plain = device_map(points, bounds)
    assert plain.count("<circle") == 2 and "<image" not in plain and "lamp-&lt;1&gt;" in plain
    tiled = device_map(points, bounds, "http://tiles.ioc/{z}/{x}/{y}.png")
    assert "<image" in tiled and "http://tiles.ioc/" in tiled
    assert tiled.count("<image") <= 64
    assert Bounds.around([], (10.0, 105.7)).north == 10.02
