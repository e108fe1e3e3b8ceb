"""Wire faults: how a faulty device talks, as opposed to what it measures.

``WireFaults`` turns the wire part of a ``FaultConfig`` into decisions the MQTT
front-end follows: when the device's link should be up (``LinkPlan``: going offline
cleanly or abruptly, flapping), which telemetry messages come out malformed (bad
JSON, a wrong type such as ``"pm25": "high"``, an unknown metric), and how far its
clock is off. Every decision comes from the ``random.Random`` it is given, seeded per
device, so the same seed gives the same faults on the wire.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from firmware_sim.faults import Fault, FaultConfig

# The fault-free configuration, shared (it is immutable) by the thousands of devices
# that have none.
NO_FAULTS = FaultConfig()
WIRE_FAULTS = frozenset(
    {Fault.OFFLINE_CLEAN, Fault.OFFLINE_ABRUPT, Fault.FLAPPING, Fault.MALFORMED, Fault.CLOCK_SKEW}
)
_RANDOM_FAULTS = frozenset({Fault.OFFLINE_CLEAN, Fault.OFFLINE_ABRUPT, Fault.MALFORMED})
# Values a broken firmware sends where a number or a boolean belongs.
WRONG_NUMBER = "high"
WRONG_BOOLEAN = "yes"
# A metric no kind has: the backend must keep the reading's good metrics and say why
# this one was refused.
UNKNOWN_METRIC = "sensor_raw_adc"


class DropStyle(StrEnum):
    """How a device leaves the broker."""

    CLEAN = "clean"  # publishes `offline`, then DISCONNECT: no Last Will
    ABRUPT = "abrupt"  # the socket closes without DISCONNECT: the broker sends the Last Will


class Malformation(StrEnum):
    """What is wrong with a malformed telemetry message."""

    BAD_JSON = "bad_json"  # the JSON text is cut short
    WRONG_TYPE = "wrong_type"  # one metric has a text value
    UNKNOWN_METRIC = "unknown_metric"  # an extra metric the kind does not have


@dataclass(frozen=True, slots=True)
class LinkPlan:
    """When a device wants its broker link, counted from the moment it first starts.

    No fault: always. ``offline_clean`` / ``offline_abrupt``: up until ``offline_at``,
    then down for good. ``flapping``: up for ``period``, down for ``period``, and so on;
    each drop is abrupt (a lost link, so the broker sends the Last Will).
    """

    start: datetime
    drop: DropStyle = DropStyle.ABRUPT
    offline_at: datetime | None = None
    flap_period: timedelta | None = None

    def wants_link(self, now: datetime) -> bool:
        if self.offline_at is not None:
            return now < self.offline_at
        if self.flap_period is not None:
            return self._flap_index(now) % 2 == 0
        return True

    def next_change(self, now: datetime) -> datetime | None:
        """The first moment after ``now`` at which ``wants_link`` changes, if any."""
        if self.offline_at is not None:
            return self.offline_at if now < self.offline_at else None
        if self.flap_period is not None:
            return self.start + self.flap_period * (self._flap_index(now) + 1)
        return None

    def _flap_index(self, now: datetime) -> int:
        assert self.flap_period is not None
        return max(0, int((now - self.start) / self.flap_period))


class WireFaults:
    """The wire faults of one device, with their seeded decisions.

    ``rng`` may be ``None`` when no fault needs chance (``needs_random``): the
    thousands of fault-free devices then keep no random state at all.
    """

    def __init__(self, config: FaultConfig, rng: random.Random | None) -> None:
        if rng is None and self.needs_random(config):
            raise ValueError(
                f"faults {sorted(config.faults & _RANDOM_FAULTS)} need a random stream"
            )
        self.config = config
        self._rng = rng
        # Drawn first and once, so the moment a device goes offline does not depend on
        # how many messages it sent before.
        self._offline_share = 0.5 + rng.random() if rng is not None else 1.0

    @staticmethod
    def needs_random(config: FaultConfig) -> bool:
        return bool(config.faults & _RANDOM_FAULTS)

    @property
    def active(self) -> frozenset[Fault]:
        """The wire faults this device has (physics faults are the model's business)."""
        return self.config.faults & WIRE_FAULTS

    def link_plan(self, start: datetime) -> LinkPlan:
        """When the link is wanted, for a device that first starts at ``start``.

        A device with an ``offline_*`` fault goes away after between 0.5 and 1.5 times
        ``flap_period_s`` (seeded), so a share of the fleet leaves over a spread of time.
        """
        config = self.config
        period = timedelta(seconds=config.flap_period_s)
        if config.has(Fault.OFFLINE_CLEAN) or config.has(Fault.OFFLINE_ABRUPT):
            drop = DropStyle.ABRUPT if config.has(Fault.OFFLINE_ABRUPT) else DropStyle.CLEAN
            return LinkPlan(start, drop, offline_at=start + period * self._offline_share)
        if config.has(Fault.FLAPPING):
            return LinkPlan(start, DropStyle.ABRUPT, flap_period=period)
        return LinkPlan(start)

    def device_time(self, now: datetime) -> datetime:
        """What the device's own clock says when the true time is ``now``."""
        if self.config.has(Fault.CLOCK_SKEW):
            return now + timedelta(seconds=self.config.skew_s)
        return now

    def next_malformation(self) -> Malformation | None:
        """Whether the next telemetry message is malformed, and how.

        Exactly one draw per message when the fault is on (two when it hits), so the
        sequence of malformed messages depends only on the seed and the message count.
        """
        if not self.config.has(Fault.MALFORMED) or self._rng is None:
            return None
        if self._rng.random() >= self.config.malformed_probability:
            return None
        return self._rng.choice(list(Malformation))

    def malform_metrics(
        self, metrics: dict[str, Any], malformation: Malformation
    ) -> dict[str, Any]:
        """The metrics as the broken firmware encodes them (a new dict)."""
        broken = dict(metrics)
        if self._rng is None:
            raise RuntimeError("malforming needs the random stream of a malformed fault")
        if malformation is Malformation.UNKNOWN_METRIC:
            broken[UNKNOWN_METRIC] = round(self._rng.uniform(0, 4095))
        elif malformation is Malformation.WRONG_TYPE and broken:
            name = self._rng.choice(sorted(broken))
            broken[name] = WRONG_BOOLEAN if isinstance(broken[name], bool) else WRONG_NUMBER
        return broken

    @staticmethod
    def malform_payload(payload: bytes, malformation: Malformation) -> bytes:
        """The bytes on the wire: cut in half for bad JSON (never valid: unbalanced)."""
        if malformation is Malformation.BAD_JSON:
            return payload[: max(1, len(payload) // 2)]
        return payload
