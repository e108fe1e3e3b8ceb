"""The rules engine's own settings: flood levels per station, rule files, lamp tolerances.

``pharos.settings`` includes ``RulesSettings`` as one field (``rules``); rules never
imports pharos. Flood alert levels belong here, per station, not in code (DOMAIN.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

SHIPPED_RULES = Path(__file__).parent / "sets" / "can_tho.yaml"


class FloodLevels(BaseModel):
    """BĐ I, II and III of one station, metres on the national datum."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bd1_m: float = Field(description="alert level I (BĐ I)")
    bd2_m: float = Field(description="alert level II (BĐ II)")
    bd3_m: float = Field(description="alert level III (BĐ III)")

    @model_validator(mode="after")
    def _ordered(self) -> FloodLevels:
        if not self.bd1_m < self.bd2_m < self.bd3_m:
            raise ValueError("levels must rise: bd1_m < bd2_m < bd3_m")
        return self

    def level_of(self, water_level_m: float) -> int:
        """0 (below BĐ I), 1, 2 or 3."""
        if water_level_m >= self.bd3_m:
            return 3
        if water_level_m >= self.bd2_m:
            return 2
        if water_level_m >= self.bd1_m:
            return 1
        return 0


def _can_tho_levels() -> FloodLevels:
    # Hậu river at Cần Thơ, Decision 05/2020/QĐ-TTg (press reports, check).
    return FloodLevels(bd1_m=1.80, bd2_m=1.90, bd3_m=2.00)


class RulesSettings(BaseModel):
    """``PHAROS_RULES__…``: where rules come from and the values they compare against."""

    model_config = ConfigDict(extra="forbid")

    files: list[Path] = Field(
        default_factory=lambda: [SHIPPED_RULES],
        description="rule files (YAML), loaded at start; reloaded by `POST /rules/reload`",
    )
    default_flood_levels: FloodLevels = Field(
        default_factory=_can_tho_levels,
        description="flood levels of a gauge with no station entry (the Hậu at Cần Thơ)",
    )
    stations: dict[str, FloodLevels] = Field(
        default_factory=dict,
        description="flood levels per gauge device id (or per district name)",
    )
    lamp_failure_ratio: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.3, description="lit but drawing under this share of its expected power: failed"
    )
    day_burning_w: Annotated[float, Field(ge=0)] = Field(
        5.0, description="drawing more than this between sunrise and sunset: day burning"
    )
    day_margin_min: Annotated[float, Field(ge=0, le=180)] = Field(
        30.0,
        description="without control's expected level, day burning counts only from "
        "sunrise + this to sunset − this (programs light lamps a little before sunset)",
    )
    power_tolerance: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.25, description="power too low / too high outside expected × (1 ± this)"
    )
    driver_overhead: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.06, description="the driver's fixed losses as a share of rated power"
    )
    silence_clear_readings: Annotated[int, Field(ge=1)] = Field(
        2, description="fresh readings in a row that clear a silence alert (hysteresis)"
    )
    queue_size: Annotated[int, Field(ge=1)] = Field(
        10_000, description="parsed batches waiting for evaluation; beyond it they are counted"
    )
    escalation_check_s: Annotated[float, Field(gt=0)] = Field(
        30.0, description="how often unacknowledged alerts are checked for escalation"
    )
    silence_check_s: Annotated[float, Field(gt=0)] = Field(
        30.0, description="how often silent devices are looked for"
    )
    webhook_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        4, description="tries of a webhook before it is dead-lettered"
    )
    webhook_backoff_s: Annotated[float, Field(ge=0)] = Field(
        0.5, description="first wait between webhook tries (doubling)"
    )
    broker_username: str = Field(
        "pharos-rules", description="rules' own broker account (alerts, commands)"
    )
    broker_password: SecretStr | None = Field(
        None, description="its secret (`pharos broker service-account pharos-rules`)"
    )

    def flood_levels(self, device_id: str, district: str | None) -> FloodLevels:
        found = self.stations.get(device_id)
        if found is None and district is not None:
            found = self.stations.get(district)
        return found or self.default_flood_levels
