"""Writing to InfluxDB: line protocol, the HTTP client, the batching writer, retention.

The writer (``InfluxWriter``) is what ingest talks to; the durable spool it falls
back on lives in ``telemetry.spool``. Reading is ``telemetry.store.influx``'s job.
"""

from telemetry.influx.client import (
    InfluxClient,
    InfluxConfigurationError,
    InfluxError,
    InfluxUnavailableError,
    RejectedLine,
    RetryPolicy,
    WriteResult,
)
from telemetry.influx.line_protocol import LineProtocolError, encode_point, encode_points
from telemetry.influx.retention import backfill_hourly, setup_retention
from telemetry.influx.writer import InfluxWriter, WriterStats

__all__ = [
    "InfluxClient",
    "InfluxConfigurationError",
    "InfluxError",
    "InfluxUnavailableError",
    "InfluxWriter",
    "LineProtocolError",
    "RejectedLine",
    "RetryPolicy",
    "WriteResult",
    "WriterStats",
    "backfill_hourly",
    "encode_point",
    "encode_points",
    "setup_retention",
]
