"""Physics of the MQTT device kinds, and the pieces the models share.

The models live in ``lamp`` (streetlight, smart pole), ``environment`` (env monitor) and
``flood`` (flood gauge); ``factory.build_model`` builds one by kind. This module holds
what they share: smooth seeded noise stepped by elapsed time, local time of day, and
the reading faults (a stuck sensor, spikes) applied to what a model measures.
"""

from __future__ import annotations

import math
import random
from datetime import datetime
from zoneinfo import ZoneInfo

from devices.wire import DeviceKind, kind_spec
from firmware_sim.faults import Fault, FaultConfig
from firmware_sim.model import MetricValue

# A spike is this many times the metric's valid maximum: far enough out that
# validation refuses it (pm25 5000 µg/m³, power_w 5000 W).
SPIKE_FACTOR = 5.0


class SmoothNoise:
    """AR(1) noise (a sampled Ornstein–Uhlenbeck process) stepped by elapsed time.

    Its stationary standard deviation is ``sigma`` and it forgets its past with time
    constant ``tau_s``, so readings taken every 10 s or every 15 min see the same process.
    """

    __slots__ = ("_rng", "sigma", "tau_s", "value")

    def __init__(self, rng: random.Random, sigma: float, tau_s: float) -> None:
        if tau_s <= 0:
            raise ValueError("tau_s must be positive")
        self._rng = rng
        self.sigma = sigma
        self.tau_s = tau_s
        self.value = rng.gauss(0.0, sigma)

    def step(self, elapsed_s: float) -> float:
        """Advance by ``elapsed_s`` seconds and return the new value."""
        if elapsed_s <= 0:
            return self.value
        keep = math.exp(-elapsed_s / self.tau_s)
        fresh = self.sigma * math.sqrt(1.0 - keep * keep)
        self.value = self.value * keep + self._rng.gauss(0.0, fresh)
        return self.value


def local_hour(when: datetime, tz: ZoneInfo) -> float:
    """Hour of the local day as a fraction (07:30 → 7.5)."""
    local = when.astimezone(tz)
    return local.hour + local.minute / 60 + (local.second + local.microsecond / 1e6) / 3600


def seconds_between(start: datetime, end: datetime) -> float:
    """Elapsed seconds from ``start`` to ``end``; never negative (time only moves forward)."""
    return max(0.0, (end - start).total_seconds())


def bell(hour: float, centre: float, width_h: float) -> float:
    """A Gaussian bump over the 24-hour circle, 1 at ``centre``."""
    distance = (hour - centre + 12.0) % 24.0 - 12.0
    return math.exp(-0.5 * (distance / width_h) ** 2)


class ReadingFaults:
    """Applies the reading faults of a ``FaultConfig`` to a model's metrics.

    ``stuck_sensor`` freezes one metric (``stuck_metric``, else the kind's first) at its
    first value; ``spikes`` makes one numeric metric of a reading jump to
    ``SPIKE_FACTOR`` × its valid maximum with probability ``spike_probability``.
    """

    __slots__ = ("_faults", "_kind", "_rng", "_stuck_metric", "_stuck_value")

    def __init__(
        self, kind: DeviceKind, faults: FaultConfig, rng: random.Random, published: list[str]
    ) -> None:
        self._kind = kind
        self._faults = faults
        self._rng = rng
        self._stuck_metric: str | None = None
        self._stuck_value: MetricValue | None = None
        if faults.has(Fault.STUCK_SENSOR):
            metric = faults.stuck_metric or published[0]
            if metric not in published:
                names = ", ".join(published)
                raise ValueError(f"stuck_metric {metric!r} is not a metric of {kind}: {names}")
            self._stuck_metric = metric

    def apply(self, metrics: dict[str, MetricValue]) -> dict[str, MetricValue]:
        """The metrics as the faulty sensor reports them (changed in place and returned)."""
        if self._stuck_metric is not None:
            if self._stuck_value is None:
                self._stuck_value = metrics[self._stuck_metric]
            metrics[self._stuck_metric] = self._stuck_value
        if self._faults.has(Fault.SPIKES) and self._rng.random() < self._faults.spike_probability:
            self._spike(metrics)
        return metrics

    def _spike(self, metrics: dict[str, MetricValue]) -> None:
        spec = kind_spec(self._kind)
        candidates = []
        for name, value in metrics.items():
            metric = spec.metric(name)
            if metric is None or metric.boolean or isinstance(value, bool):
                continue
            if metric.maximum is not None and metric.maximum > 0:
                candidates.append((name, metric.maximum))
        if candidates:
            name, maximum = self._rng.choice(candidates)
            metrics[name] = maximum * SPIKE_FACTOR
