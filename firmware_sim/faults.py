"""Faults a simulated device can be given, per device or as a share of the fleet.

Physics faults change what a model measures (stuck sensor, spikes, lamp failure, day
burning); wire faults change how the front-end talks (offline, flapping, malformed
payloads, clock skew, a Modbus meter that times out or answers with exception codes).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Fault(StrEnum):
    OFFLINE_CLEAN = "offline_clean"  # disconnects after publishing `offline`
    OFFLINE_ABRUPT = "offline_abrupt"  # socket dropped: the broker sends the Last Will
    FLAPPING = "flapping"  # connects and drops every `flap_period_s`
    STUCK_SENSOR = "stuck_sensor"  # one metric repeats its first value forever
    SPIKES = "spikes"  # occasional values far out of the valid range
    MALFORMED = "malformed"  # bad JSON, wrong types, unknown metrics now and then
    LAMP_FAILURE = "lamp_failure"  # commanded on, draws nothing
    DAY_BURNING = "day_burning"  # lit in daylight whatever it is told
    MODBUS_TIMEOUT = "modbus_timeout"  # a meter that never answers
    MODBUS_EXCEPTION = "modbus_exception"  # a meter that answers with exception codes
    CLOCK_SKEW = "clock_skew"  # the device's clock is off by `skew_s`


class FaultConfig(BaseModel):
    """The faults one device has and their knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    faults: frozenset[Fault] = Field(default_factory=frozenset)
    stuck_metric: str | None = Field(None, description="for stuck_sensor; default: first")
    spike_probability: float = Field(0.05, ge=0, le=1, description="per reading, for spikes")
    malformed_probability: float = Field(0.2, ge=0, le=1, description="per message")
    flap_period_s: float = Field(120, gt=0, description="simulated seconds up, then down")
    skew_s: float = Field(3600, description="clock offset for clock_skew (may be negative)")
    modbus_exception_code: int = Field(4, ge=1, le=11, description="for modbus_exception")

    def has(self, fault: Fault) -> bool:
        return fault in self.faults
