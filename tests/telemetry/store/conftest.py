"""Store test helpers: points written to the real InfluxDB (``tests/fixtures/influx.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from telemetry.influx.line_protocol import encode_points
from telemetry.points import Point
from tests.fixtures.influx import InfluxDB

INFLUX_HINT = "InfluxDB 1.x is needed: apt-get install -y influxdb (the Debian package, 1.6.7)"
_START_TIMEOUT_S = 30.0


# -- writing points to InfluxDB as the writer does ------------------------------------


def write_influx(server: InfluxDB, db: str, points: Sequence[Point]) -> None:
    """The points in the writer's own line protocol, straight to ``/write``."""
    batch = encode_points(points)
    assert not batch.refused, batch.refused
    response = httpx.post(
        f"{server.url}/write",
        params={"db": db, "precision": "ns"},
        content="\n".join(batch.lines),
        timeout=30,
    )
    assert response.status_code == 204, response.text
