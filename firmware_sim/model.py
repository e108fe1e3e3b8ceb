"""What a simulated device is, independent of how it talks: a model stepped in time.

A model knows its physics (``sample``), its reported state, and how it answers
commands; the MQTT and Modbus front-ends in this package carry that onto the wire.
Models are deterministic: all randomness comes from the ``random.Random`` they are
given, seeded per device from the scenario seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from devices.wire import DeviceKind

MetricValue = float | bool


@dataclass(frozen=True, slots=True)
class Ack:
    """A model's answer to a command; the front-end wraps it in a ``CommandAck``."""

    status: Literal["ok", "rejected", "failed"]
    detail: str = ""


class DeviceModel(Protocol):
    kind: DeviceKind
    device_id: str

    def sample(self, now: datetime) -> dict[str, MetricValue]:
        """Advance the physics to ``now`` and return the metrics a reading reports."""
        ...

    def state(self, now: datetime) -> dict[str, Any]:
        """The reported state (keys of ``devices.wire.DeviceState``), without ``ts``."""
        ...

    def handle(self, action: str, params: dict[str, Any], now: datetime) -> Ack:
        """Carry out a command; ``rejected`` with a reason for bad parameters."""
        ...

    @property
    def interval_s(self) -> float:
        """How often the device reports, in simulated seconds."""
        ...
