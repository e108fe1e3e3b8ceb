"""Pieces every board shares: the datasource, template variables, filters, thresholds, colours.

Panels name the InfluxDB datasource through the ``$datasource`` variable (current
value: the provisioned ``pharos-influxdb``), so one board works in any Grafana.
Filters match tags by regular expression, as Grafana's InfluxDB datasource expects
for multi-value variables; "All" is ``.*``, which also matches points without the
tag (a device in no group).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import common, geomap
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import geomap as geomap_model

from grafana.influxql import DATASOURCE_TYPE, InfluxQL
from grafana.settings import BoardOptions

DATASOURCE = model.DataSourceRef(type_val=DATASOURCE_TYPE, uid="${datasource}")
ALL = ".*"
REFRESH = "1m"

# VN_AQI categories, Decision 1459/QĐ-TCMT (DOMAIN.md): lower bound, colour, label.
AQI_CATEGORIES: tuple[tuple[float | None, str, str], ...] = (
    (None, "#00e400", "Good"),
    (51, "#ffff00", "Moderate"),
    (101, "#ff7e00", "Poor"),
    (151, "#ff0000", "Bad"),
    (201, "#8f3f97", "Very bad"),
    (301, "#7e0023", "Hazardous"),
)
FLOOD_LEVEL_NAMES = ("none", "BĐ I", "BĐ II", "BĐ III")
FLOOD_LEVEL_COLOURS = ("green", "yellow", "orange", "red")


class Styled(Protocol):
    """What every SDK panel builder offers (each panel type is its own class)."""

    def build(self) -> model.Panel: ...
    def title(self, title: str) -> Self: ...
    def description(self, description: str) -> Self: ...
    def datasource(self, datasource: model.DataSourceRef) -> Self: ...
    def with_target(self, target: cogbuilder.Builder[cogvariants.Dataquery]) -> Self: ...
    def unit(self, unit: str) -> Self: ...
    def thresholds(self, thresholds: cogbuilder.Builder[model.ThresholdsConfig]) -> Self: ...
    def span(self, w: int) -> Self: ...
    def height(self, h: int) -> Self: ...


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (from minus infinity)."""
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=colour) for value, colour in steps])
    )


def aqi_thresholds() -> dash.ThresholdsConfig:
    return thresholds(*((low, colour) for low, colour, _ in AQI_CATEGORIES))


def aqi_mappings() -> list[model.ValueMapping]:
    """AQI ranges shown with their category name (the value stays beside it)."""
    bounds = [low or 0 for low, _, _ in AQI_CATEGORIES] + [501]
    return [
        model.RangeMap(
            options=model.DashboardRangeMapOptions(
                from_val=bounds[i],
                to=bounds[i + 1] - 1,
                result=model.ValueMappingResult(text=f"{label}", color=colour, index=i),
            )
        )
        for i, (_, colour, label) in enumerate(AQI_CATEGORIES)
    ]


def flood_level_mappings() -> list[model.ValueMapping]:
    return [
        model.ValueMap(
            options={
                str(level): model.ValueMappingResult(text=name, color=colour, index=level)
                for level, (name, colour) in enumerate(
                    zip(FLOOD_LEVEL_NAMES, FLOOD_LEVEL_COLOURS, strict=True)
                )
            }
        )
    ]


P = TypeVar("P", bound=Styled)


def styled(
    panel: P,
    title: str,
    query: str | Sequence[InfluxQL],
    *,
    unit: str,
    steps: dash.ThresholdsConfig,
    description: str,
    span: int = 12,
    height: int = 8,
) -> P:
    """A panel with its title, InfluxQL target(s), unit, thresholds and size set."""
    targets = [InfluxQL(query)] if isinstance(query, str) else list(query)
    panel = (
        panel.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .thresholds(steps)
        .span(span)
        .height(height)
    )
    for n, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + n)).datasource(DATASOURCE))
    return panel


def where(*, district: bool = True, group: bool = False, device: bool = False) -> str:
    """``$timeFilter`` and the tag filters of the board's variables."""
    parts = ["$timeFilter"]
    if district:
        parts.append('"district" =~ /^$district$/')
    if group:
        parts.append('"group" =~ /^$group$/')
    if device:
        parts.append('"device_id" =~ /^$device$/')
    return " AND ".join(parts)


def datasource_variable(options: BoardOptions) -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable("datasource")
        .label("Data source")
        .type(DATASOURCE_TYPE)
        .current(
            model.VariableOption(
                selected=True, text=options.datasource_uid, value=options.datasource_uid
            )
        )
    )


def tag_variable(
    name: str, label: str, measurement: str, key: str, *, where_clause: str = ""
) -> dash.QueryVariable:
    """A multi-value variable over a tag's values in ``measurement`` ("All" = ``.*``)."""
    query = f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "{key}"'
    if where_clause:
        query += f" WHERE {where_clause}"
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .multi(True)
        .include_all(True)
        .all_value(ALL)
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
    )


def district_group_device(
    measurement: str, *, group: bool = True, device: bool = True
) -> list[dash.QueryVariable]:
    """District, then group and device narrowed by the choices before them."""
    found = [tag_variable("district", "District", measurement, "district")]
    narrowing = '"district" =~ /^$district$/'
    if group:
        found.append(tag_variable("group", "Group", measurement, "group", where_clause=narrowing))
        narrowing += ' AND "group" =~ /^$group$/'
    if device:
        found.append(
            tag_variable("device", "Device", measurement, "device_id", where_clause=narrowing)
        )
    return found


def new_board(uid: str, title: str, description: str, options: BoardOptions) -> dash.Dashboard:
    """A board with the project's defaults: time zone, refresh, tags, read-only in the UI."""
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["pharos", "ioc"])
        .timezone(options.timezone)
        .refresh(REFRESH)
        .time("now-24h", "now")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .readonly()
        .with_variable(datasource_variable(options))
    )


def device_map(
    title: str,
    queries: Sequence[InfluxQL],
    *,
    colour_field: str,
    unit: str,
    steps: dash.ThresholdsConfig,
    description: str,
    options: BoardOptions,
    span: int = 12,
    height: int = 10,
) -> geomap.Panel:
    """Markers at each device's position (the ``devices`` measurement), coloured by a field.

    The queries are tables with a ``device_id`` column; they are joined on it, so the
    first one should carry ``latitude`` and ``longitude``.
    """
    markers = (
        common.MapLayerOptions()
        .type("markers")
        .name("devices")
        .location(
            common.FrameGeometrySource()
            .mode(common_model.FrameGeometrySourceMode.COORDS)
            .latitude("latitude")
            .longitude("longitude")
        )
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": {"field": colour_field, "fixed": "dark-green"},
                    "opacity": 0.8,
                    "size": {"fixed": 8},
                    "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                    "text": {"field": "device_id", "mode": "field"},
                },
            }
        )
        .tooltip(True)
    )
    panel = (
        geomap.Panel()
        .view(
            geomap.MapViewConfig()
            .id("coords")
            .lat(options.centre_lat)  # type: ignore[arg-type]  # the SDK says int; JSON takes any number
            .lon(options.centre_lon)  # type: ignore[arg-type]
            .zoom(options.map_zoom)
        )
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(False))
        .tooltip(geomap.TooltipOptions().mode(geomap_model.TooltipMode.DETAILS))
        .basemap(common.MapLayerOptions().type("default").name("Basemap"))
        .layers([markers])
        .with_transformation(
            model.DataTransformerConfig(
                id_val="joinByField", options={"byField": "device_id", "mode": "outer"}
            )
        )
    )
    tables = [query.table() for query in queries]
    return styled(
        panel,
        title,
        tables,
        unit=unit,
        steps=steps,
        description=description,
        span=span,
        height=height,
    )
