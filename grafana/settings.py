"""Settings of the Grafana side: where Grafana is, how boards are pushed and embedded.

``GrafanaSettings`` is one section of pharos' settings tree (``PHAROS_GRAFANA__…``);
it lives here so that this package never imports ``pharos``. ``BoardOptions`` is what
the boards are built from: the committed JSON in ``grafana/dashboards/`` is built
from its defaults (Cần Thơ).
"""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, model_validator

DEFAULT_DATASOURCE_UID = "pharos-influxdb"


class FloodLines(BaseModel):
    """The BĐ I / II / III alert lines of a station, metres on the national datum."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bd1_m: float = Field(1.80, description="BĐ I (Cần Thơ station, Hậu river)")
    bd2_m: float = Field(1.90, description="BĐ II")
    bd3_m: float = Field(2.00, description="BĐ III")

    @model_validator(mode="after")
    def _ordered(self) -> FloodLines:
        if not self.bd1_m < self.bd2_m < self.bd3_m:
            raise ValueError("bd1_m < bd2_m < bd3_m must hold")
        return self


class BoardOptions(BaseModel):
    """What the boards are built from (defaults: Cần Thơ)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    datasource_uid: str = Field(
        DEFAULT_DATASOURCE_UID, description="uid of the provisioned InfluxDB datasource"
    )
    timezone: str = Field("Asia/Ho_Chi_Minh", description="the boards' time zone")
    centre_lat: float = Field(10.0452, ge=-90, le=90, description="map centre latitude")
    centre_lon: float = Field(105.7469, ge=-180, le=180, description="map centre longitude")
    map_zoom: int = Field(12, ge=1, le=20, description="map zoom level")
    flood_lines: FloodLines = Field(
        default_factory=FloodLines, description="lines drawn when a gauge has none of its own"
    )


class GrafanaSettings(BaseModel):
    """Where Grafana is and how Pharos talks to it (``PHAROS_GRAFANA__…``)."""

    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl | None = Field(None, description="Grafana's API base, for `push`")
    token: SecretStr | None = Field(None, description="service account token (Editor or Admin)")
    org_id: int = Field(1, ge=1, description="Grafana organisation the boards go into")
    public_url: AnyHttpUrl | None = Field(
        None, description="Grafana as the IOC screens' browsers reach it, for embed links"
    )
    timeout_s: float = Field(10.0, gt=0, description="HTTP timeout for pushes")
    boards: BoardOptions = Field(default_factory=BoardOptions)
