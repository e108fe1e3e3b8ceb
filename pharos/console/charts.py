"""Charts and maps as inline SVG, drawn on the server (no JavaScript, no tile server).

Each function returns SVG markup sized by ``viewBox`` so it scales to a phone or a
desk screen. Every text that reaches the SVG is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 240
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 72, 24, 30, 30


def _x(at: datetime, start: datetime, end: datetime) -> float:
    span = (end - start).total_seconds() or 1.0
    share = (at - start).total_seconds() / span
    return PAD_LEFT + max(0.0, min(1.0, share)) * (WIDTH - PAD_LEFT - PAD_RIGHT)


def _y(value: float, low: float, high: float) -> float:
    span = (high - low) or 1.0
    share = (value - low) / span
    return HEIGHT - PAD_BOTTOM - max(0.0, min(1.0, share)) * (HEIGHT - PAD_TOP - PAD_BOTTOM)


def _svg(body: list[str], label: str) -> Markup:
    # Safe: every text in ``body`` went through ``escape``; numbers are formatted floats.
    return Markup(  # noqa: S704
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(body)
        + "</svg>"
    )


def _time_axis(
    start: datetime, end: datetime, ticks: Sequence[datetime], label: Callable[[datetime], str]
) -> list[str]:
    parts = [
        f'<line class="axis" x1="{PAD_LEFT}" y1="{HEIGHT - PAD_BOTTOM}" '
        f'x2="{WIDTH - PAD_RIGHT}" y2="{HEIGHT - PAD_BOTTOM}"/>'
    ]
    for tick in ticks:
        x = _x(tick, start, end)
        parts.append(
            f'<line class="grid" x1="{x:.1f}" y1="{PAD_TOP}" x2="{x:.1f}" '
            f'y2="{HEIGHT - PAD_BOTTOM}"/><text class="tick" x="{x:.1f}" '
            f'y="{HEIGHT - PAD_BOTTOM + 16}" text-anchor="middle">{escape(label(tick))}</text>'
        )
    return parts


def _value_axis(low: float, high: float, steps: int, label: Callable[[float], str]) -> list[str]:
    parts = []
    for n in range(steps + 1):
        value = low + (high - low) * n / steps
        y = _y(value, low, high)
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" y1="{y:.1f}" x2="{WIDTH - PAD_RIGHT}" '
            f'y2="{y:.1f}"/><text class="tick" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{escape(label(value))}</text>'
        )
    return parts


@dataclass(frozen=True, slots=True)
class Marker:
    at: datetime
    label: str


def level_chart(
    series: Sequence[tuple[str, Sequence[tuple[datetime, float]]]],
    start: datetime,
    end: datetime,
    ticks: Sequence[datetime],
    tick_label: Callable[[datetime], str],
    markers: Sequence[Marker] = (),
    label: str = "level",
) -> Markup:
    """Step lines of light level (0-100 %) from ``start`` to ``end``: each series is a
    CSS class name and its (time, level) changes; a level holds until the next."""
    body = _value_axis(0, 100, 4, lambda v: f"{v:.0f}%")
    body += _time_axis(start, end, ticks, tick_label)
    for marker in markers:
        x = _x(marker.at, start, end)
        body.append(
            f'<line class="marker" x1="{x:.1f}" y1="{PAD_TOP}" x2="{x:.1f}" '
            f'y2="{HEIGHT - PAD_BOTTOM}"/><text class="marker-label" x="{x + 3:.1f}" '
            f'y="{PAD_TOP - 6}">{escape(marker.label)}</text>'
        )
    for css, changes in series:
        if not changes:
            continue
        points: list[str] = []
        level = changes[0][1]
        x, y = _x(start, start, end), _y(level, 0, 100)
        points.append(f"{x:.1f},{y:.1f}")
        for at, next_level in changes:
            x = _x(at, start, end)
            points.append(f"{x:.1f},{_y(level, 0, 100):.1f}")
            level = next_level
            points.append(f"{x:.1f},{_y(level, 0, 100):.1f}")
        points.append(f"{_x(end, start, end):.1f},{_y(level, 0, 100):.1f}")
        body.append(f'<polyline class="series {escape(css)}" points="{" ".join(points)}"/>')
    return _svg(body, label)


def line_chart(
    points: Sequence[tuple[datetime, float]],
    ticks: Sequence[datetime],
    tick_label: Callable[[datetime], str],
    value_label: Callable[[float], str],
    label: str,
) -> Markup:
    """One series of readings over time (empty: an empty frame)."""
    if not points:
        return _svg([], label)
    start, end = points[0][0], points[-1][0]
    if start == end:
        end = start + timedelta(seconds=1)
    values = [v for _, v in points]
    low, high = min(values), max(values)
    if low == high:
        low, high = low - 1, high + 1
    margin = (high - low) * 0.05
    low, high = low - margin, high + margin
    body = _value_axis(low, high, 4, value_label)
    inside = [t for t in ticks if start <= t <= end]
    if len(inside) < 2:  # a short history: four evenly spaced times instead
        inside = [start + (end - start) * n / 4 for n in range(5)]
    body += _time_axis(start, end, inside, tick_label)
    coords = " ".join(f"{_x(t, start, end):.1f},{_y(v, low, high):.1f}" for t, v in points)
    body.append(f'<polyline class="series reading" points="{coords}"/>')
    return _svg(body, label)


def bar_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    value_label: Callable[[float], str],
    label: str,
) -> Markup:
    """Grouped bars: per label, one bar per series (CSS class, legend text, values)."""
    values = [v for _, _, vs in series for v in vs if v is not None]
    high = max([*values, 0.0]) or 1.0
    body = _value_axis(0, high, 4, value_label)
    slot = (WIDTH - PAD_LEFT - PAD_RIGHT) / max(1, len(labels))
    bar = slot * 0.8 / max(1, len(series))
    for index, text in enumerate(labels):
        x0 = PAD_LEFT + index * slot + slot * 0.1
        for number, (css, _legend, vs) in enumerate(series):
            value = vs[index] if index < len(vs) else None
            if value is None:
                continue
            y = _y(max(value, 0.0), 0, high)
            body.append(
                f'<rect class="bar {escape(css)}" x="{x0 + number * bar:.1f}" y="{y:.1f}" '
                f'width="{bar - 2:.1f}" height="{HEIGHT - PAD_BOTTOM - y:.1f}">'
                f"<title>{escape(value_label(value))}</title></rect>"
            )
        body.append(
            f'<text class="tick" x="{x0 + slot * 0.4:.1f}" y="{HEIGHT - PAD_BOTTOM + 16}" '
            f'text-anchor="middle">{escape(text)}</text>'
        )
    for number, (css, legend, _vs) in enumerate(series):
        x = PAD_LEFT + 8 + number * 150
        body.append(
            f'<rect class="bar {escape(css)}" x="{x}" y="4" width="10" height="10"/>'
            f'<text class="legend" x="{x + 14}" y="14">{escape(legend)}</text>'
        )
    return _svg(body, label)


# --- the map ---------------------------------------------------------------------------

MAP_WIDTH, MAP_HEIGHT = 640, 420


@dataclass(frozen=True, slots=True)
class MapPoint:
    device_id: str
    latitude: float
    longitude: float
    css: str  # e.g. "online", "offline", "selected"
    href: str | None = None


@dataclass(frozen=True, slots=True)
class Bounds:
    south: float
    west: float
    north: float
    east: float

    @classmethod
    def around(cls, points: Sequence[MapPoint], centre: tuple[float, float]) -> Bounds:
        """The points' box with a margin, or ~2 km around ``centre`` when there are none."""
        if not points:
            lat, lon = centre
            return cls(lat - 0.02, lon - 0.02, lat + 0.02, lon + 0.02)
        lats = [p.latitude for p in points]
        lons = [p.longitude for p in points]
        margin = max(max(lats) - min(lats), max(lons) - min(lons), 0.004) * 0.1
        return cls(min(lats) - margin, min(lons) - margin, max(lats) + margin, max(lons) + margin)


def _mercator_y(latitude: float) -> float:
    phi = math.radians(max(-85.0, min(85.0, latitude)))
    return math.log(math.tan(math.pi / 4 + phi / 2))


def _tile_xy(latitude: float, longitude: float, zoom: int) -> tuple[float, float]:
    n = 2**zoom
    x = (longitude + 180.0) / 360.0 * n
    y = (1.0 - _mercator_y(latitude) / math.pi) / 2.0 * n
    return x, y


def device_map(
    points: Sequence[MapPoint],
    bounds: Bounds,
    tile_url: str | None = None,
    label: str = "map",
) -> Markup:
    """Devices as dots over the site's bounds (Web Mercator, so it lines up with map
    tiles); with ``tile_url`` (``…/{z}/{x}/{y}.png``, a tile server on the IOC network)
    the tiles are drawn underneath, otherwise a plain grid of latitude and longitude."""
    # Fit the bounds into the frame, keeping Mercator's aspect.
    top, bottom = _mercator_y(bounds.north), _mercator_y(bounds.south)
    lon_span = math.radians(bounds.east - bounds.west) or 1e-6
    lat_span = (top - bottom) or 1e-6
    scale = min(MAP_WIDTH / lon_span, MAP_HEIGHT / lat_span)
    x_off = (MAP_WIDTH - lon_span * scale) / 2
    y_off = (MAP_HEIGHT - lat_span * scale) / 2

    def project(latitude: float, longitude: float) -> tuple[float, float]:
        x = x_off + math.radians(longitude - bounds.west) * scale
        y = y_off + (top - _mercator_y(latitude)) * scale
        return x, y

    body: list[str] = [f'<rect class="map-bg" width="{MAP_WIDTH}" height="{MAP_HEIGHT}"/>']
    if tile_url:
        body += _tiles(tile_url, bounds, project)
    else:
        step = _grid_step(bounds.north - bounds.south)
        lat = math.ceil(bounds.south / step) * step
        while lat < bounds.north:
            _, y = project(lat, bounds.west)
            body.append(
                f'<line class="grid" x1="0" y1="{y:.1f}" x2="{MAP_WIDTH}" y2="{y:.1f}"/>'
                f'<text class="tick" x="4" y="{y - 2:.1f}">{lat:.3f}°N</text>'
            )
            lat += step
        lon = math.ceil(bounds.west / step) * step
        while lon < bounds.east:
            x, _ = project(bounds.south, lon)
            body.append(
                f'<line class="grid" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{MAP_HEIGHT}"/>'
                f'<text class="tick" x="{x + 2:.1f}" y="{MAP_HEIGHT - 4}">{lon:.3f}°E</text>'
            )
            lon += step
    for point in sorted(points, key=lambda p: p.css == "selected"):
        x, y = project(point.latitude, point.longitude)
        radius = 9 if point.css == "selected" else 5
        dot = (
            f'<circle class="dot {escape(point.css)}" cx="{x:.1f}" cy="{y:.1f}" r="{radius}">'
            f"<title>{escape(point.device_id)}</title></circle>"
        )
        if point.href:
            dot = f'<a href="{escape(point.href)}">{dot}</a>'
        body.append(dot)
    return Markup(  # noqa: S704 - ids, hrefs and labels are escaped above
        f'<svg class="map" viewBox="0 0 {MAP_WIDTH} {MAP_HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(body)
        + "</svg>"
    )


def _grid_step(span: float) -> float:
    for step in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0):
        if span / step <= 6:
            return step
    return 2.0


def _tiles(
    tile_url: str, bounds: Bounds, project: Callable[[float, float], tuple[float, float]]
) -> list[str]:
    """The tiles covering the bounds at the zoom where they are about 256 px each."""
    west_x, _ = project(bounds.north, bounds.west)
    east_x, _ = project(bounds.north, bounds.east)
    pixels_per_degree = (east_x - west_x) / ((bounds.east - bounds.west) or 1e-6)
    zoom = max(0, min(19, round(math.log2(pixels_per_degree * 360 / 256))))
    x0, y0 = _tile_xy(bounds.north, bounds.west, zoom)
    x1, y1 = _tile_xy(bounds.south, bounds.east, zoom)
    n = 2**zoom
    parts = []
    for tx in range(int(x0), min(int(x1) + 1, int(x0) + 8)):
        for ty in range(int(y0), min(int(y1) + 1, int(y0) + 8)):
            lon_w = tx / n * 360 - 180
            lon_e = (tx + 1) / n * 360 - 180
            lat_n = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * ty / n))))
            lat_s = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * (ty + 1) / n))))
            left, top = project(lat_n, lon_w)
            right, bottom = project(lat_s, lon_e)
            href = tile_url.format(z=zoom, x=tx, y=ty)
            parts.append(
                f'<image href="{escape(href)}" x="{left:.1f}" y="{top:.1f}" '
                f'width="{right - left:.1f}" height="{bottom - top:.1f}"/>'
            )
    return parts
