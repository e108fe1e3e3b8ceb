"""The telemetry pipeline's own health figures, which ``/metrics`` exposes to Prometheus.

``TelemetryMetrics`` is a plain object the services share: ingest counts what it
received and dead-lettered, the writer what it wrote and spooled, the spool its depth.
It holds numbers only (no Prometheus types, no global registry): the API renders a
snapshot per scrape, and each process (or test) has its own instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MetricType = Literal["counter", "gauge"]


@dataclass(frozen=True, slots=True)
class Sample:
    name: str  # without the ``_total`` suffix Prometheus adds to counters
    type: MetricType
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()  # samples of one name differ by their labels


@dataclass(slots=True)
class TelemetryMetrics:
    """Counters only ever grow; gauges are set to the current value."""

    received: int = 0  # readings received (MQTT messages, Modbus polls)
    invalid: int = 0  # inputs dead-lettered (bad payload, unknown device, refused by InfluxDB)
    written: int = 0  # points stored in InfluxDB or the embedded store
    spooled: int = 0  # points put into the durable spool
    spool_depth_bytes: int = 0  # bytes waiting in the spool now
    spool_depth_points: int = 0  # points waiting in the spool now
    lag_seconds: float = 0.0  # receive → stored, of the newest batch written
    modbus_unhealthy: int = 0  # Modbus meters not answering now
    # Dead letters by reason class (a small fixed set: topic, unknown_device, payload,
    # metric, state, status, internal, rate_limited, ...); a letter counts under each
    # class it holds, those counted by the rate limit too.
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    dead_letters_suppressed: int = 0  # counted by the per-device rate limit, not stored
    dead_letters_pruned: int = 0  # deleted to keep the dead-letter table bounded

    def count_dead_letter(self, classes: str) -> None:
        """Count one letter under each of its comma-separated classes."""
        for reason in classes.split(","):
            self.dead_letters_by_reason[reason] = self.dead_letters_by_reason.get(reason, 0) + 1

    def samples(self) -> list[Sample]:
        by_reason = [
            Sample(
                "pharos_dead_letters",
                "counter",
                "Dead letters by reason class (rate-limited ones included).",
                n,
                (("reason", reason),),
            )
            for reason, n in sorted(self.dead_letters_by_reason.items())
        ]
        return [
            *by_reason,
            Sample(
                "pharos_dead_letters_suppressed",
                "counter",
                "Dead letters counted by the per-device rate limit instead of stored.",
                self.dead_letters_suppressed,
            ),
            Sample(
                "pharos_dead_letters_pruned",
                "counter",
                "Oldest dead letters deleted to keep the table bounded.",
                self.dead_letters_pruned,
            ),
            Sample("pharos_telemetry_received", "counter", "Readings received.", self.received),
            Sample("pharos_telemetry_invalid", "counter", "Inputs dead-lettered.", self.invalid),
            Sample("pharos_telemetry_written", "counter", "Points stored.", self.written),
            Sample("pharos_telemetry_spooled", "counter", "Points spooled to disk.", self.spooled),
            Sample(
                "pharos_telemetry_spool_depth_bytes",
                "gauge",
                "Bytes waiting in the spool.",
                self.spool_depth_bytes,
            ),
            Sample(
                "pharos_telemetry_spool_depth_points",
                "gauge",
                "Points waiting in the spool.",
                self.spool_depth_points,
            ),
            Sample(
                "pharos_telemetry_lag_seconds",
                "gauge",
                "Seconds from receipt to storage of the newest batch.",
                self.lag_seconds,
            ),
            Sample(
                "pharos_modbus_meters_unhealthy",
                "gauge",
                "Modbus meters that stopped answering.",
                self.modbus_unhealthy,
            ),
        ]
