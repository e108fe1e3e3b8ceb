"""Control's settings section (``PHAROS_CONTROL__…``), included by ``pharos.settings``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from control.energy import EnergySettings


class ControlSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    broker_username: str = Field(
        "pharos-commands", description="the command service's own broker account"
    )
    broker_password: SecretStr | None = Field(
        None, description="its secret (`pharos broker service-account pharos-commands`)"
    )
    rate_per_s: Annotated[float, Field(gt=0, le=100_000)] = Field(
        2000.0, description="commands per second onto the broker (a district stays polite)"
    )
    command_ttl_s: Annotated[int, Field(ge=10, le=86_400)] = Field(
        600, description="scheduled commands expire this long after they are sent"
    )
    retry_initial_s: Annotated[float, Field(gt=0)] = Field(
        15.0, description="first resend of an unanswered command; doubles each time"
    )
    retry_max_s: Annotated[float, Field(gt=0)] = Field(120.0, description="longest back-off")
    drift_grace_s: Annotated[float, Field(ge=0)] = Field(
        120.0, description="a lamp off its desired state this long is brought back"
    )
    max_corrections: Annotated[int, Field(ge=0, le=100)] = Field(
        3, description="corrections per drift episode, then the drift is left for people"
    )
    energy: EnergySettings = Field(default_factory=EnergySettings)
