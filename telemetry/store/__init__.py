"""Time-series stores: InfluxDB (InfluxQL queries) and the embedded SQLite store.

``open_store`` picks one from plain settings values: InfluxDB when a URL is given,
else the embedded store in its own file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from sqlalchemy.orm import Session, sessionmaker

from telemetry.store.base import (
    AGGREGATES,
    Aggregate,
    Bucket,
    GroupMembers,
    LatestValue,
    QueryError,
    StoreUnavailableError,
    TimeSeriesStore,
    UnsupportedAggregateError,
)
from telemetry.store.embedded import EmbeddedStore
from telemetry.store.groups import registry_group_members
from telemetry.store.influx import InfluxStore


def open_store(
    *,
    influx_url: str | None,
    database: str,
    embedded_path: Path,
    sessions: sessionmaker[Session],
    api: Literal["v1", "v2"] = "v1",
    credentials: str | None = None,
) -> TimeSeriesStore:
    """``InfluxStore`` if ``influx_url`` is set, else ``EmbeddedStore(embedded_path)``.

    Nothing is opened here: both stores connect per call.
    """
    members = registry_group_members(sessions)
    if influx_url:
        return InfluxStore(
            influx_url, database, api=api, credentials=credentials, group_members=members
        )
    return EmbeddedStore(embedded_path, group_members=members)


__all__ = [
    "AGGREGATES",
    "Aggregate",
    "Bucket",
    "EmbeddedStore",
    "GroupMembers",
    "InfluxStore",
    "LatestValue",
    "QueryError",
    "StoreUnavailableError",
    "TimeSeriesStore",
    "UnsupportedAggregateError",
    "open_store",
    "registry_group_members",
]
