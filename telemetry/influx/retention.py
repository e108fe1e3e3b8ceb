"""Retention on InfluxDB 1.x: raw points, hourly means, and the query that makes them.

``setup_retention`` makes (or brings up to date) in the database:

- retention policy ``raw`` (the default, so the writer's points land there) keeping
  ``raw_retention`` (``TelemetrySettings.raw_retention``, 30d by default);
- retention policy ``hourly`` keeping ``hourly_retention`` (730d by default);
- continuous query ``pharos_hourly_means``: every hour, the mean of every numeric
  field per series over the hour, from ``raw`` into ``hourly`` under the same
  measurement (fields named ``mean_<metric>``, tags kept). ``RESAMPLE FOR 2h``
  recomputes the previous hour as well, so points that arrive late (a spool
  replayed after a short outage) still count. After a longer outage,
  ``backfill_hourly`` recomputes any range.

Running it again changes nothing; changed durations are applied with ``ALTER``.

InfluxDB 2.x and later (documented, not automated): create two buckets, ``pharos``
(retention 30d, the writer's ``influx.database``) and ``pharos_hourly`` (730d); add
the downsampling task below (``influx task create``); and map both for InfluxQL
(``influx v1 dbrp create --db pharos --rp raw --bucket-id <pharos> --default`` and
``--rp hourly --bucket-id <pharos_hourly>``), so the same InfluxQL queries and
Grafana panels read ``"pharos"."hourly"`` on every version::

    import "types"
    option task = {name: "pharos_hourly_means", every: 1h, offset: 5m}
    from(bucket: "pharos")
        |> range(start: -2h)
        |> filter(fn: (r) => types.isNumeric(v: r._value))
        |> aggregateWindow(every: 1h, fn: mean, createEmpty: false)
        |> map(fn: (r) => ({r with _field: "mean_" + r._field}))
        |> to(bucket: "pharos_hourly")
"""

# ruff: noqa: S608  (names go through _ident, durations and times are validated)

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from telemetry.influx.client import InfluxConfigurationError, InfluxUnavailableError

RAW_POLICY = "raw"
HOURLY_POLICY = "hourly"
CQ_NAME = "pharos_hourly_means"
RESAMPLE_FOR = "2h"
_DURATION = re.compile(r"^(?:INF|(?:\d+(?:ns|u|µ|ms|s|m|h|d|w))+)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What ``setup_retention`` did (for logs and the CLI)."""

    created: list[str]  # "retention policy raw", "continuous query pharos_hourly_means", ...
    updated: list[str]


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _duration(setting: str, value: str) -> str:
    if not _DURATION.match(value):
        raise ValueError(f"{setting}: {value!r} is not an InfluxQL duration (e.g. 30d, 52w, INF)")
    return value


def cq_select(database: str, *, where: str = "") -> str:
    """The statement behind the continuous query (``where`` for a backfill)."""
    db = _ident(database)
    return (
        f"SELECT mean(*) INTO {db}.{_ident(HOURLY_POLICY)}.:MEASUREMENT "
        f"FROM {db}.{_ident(RAW_POLICY)}./.*/{where} GROUP BY time(1h), *"
    )


async def setup_retention(
    url: str,
    database: str,
    *,
    raw_retention: str = "30d",
    hourly_retention: str = "730d",
    credentials: str | None = None,
    timeout_s: float = 30.0,
) -> RetentionReport:
    """Create or update the database, both retention policies and the continuous query."""
    raw = _duration("raw_retention", raw_retention)
    hourly = _duration("hourly_retention", hourly_retention)
    report = RetentionReport([], [])
    async with _InfluxQL(url, credentials, timeout_s) as influxql:
        await influxql.run(f"CREATE DATABASE {_ident(database)}")
        policies = await influxql.retention_policies(database)
        for name, duration, default in ((RAW_POLICY, raw, True), (HOURLY_POLICY, hourly, False)):
            verb = "ALTER" if name in policies else "CREATE"
            replication = "" if name in policies else " REPLICATION 1"
            await influxql.run(
                f"{verb} RETENTION POLICY {_ident(name)} ON {_ident(database)} "
                f"DURATION {duration}{replication}{' DEFAULT' if default else ''}"
            )
            (report.updated if name in policies else report.created).append(
                f"retention policy {name}"
            )
        await _continuous_query(influxql, database, report)
    return report


async def backfill_hourly(
    url: str,
    database: str,
    start: datetime,
    end: datetime,
    *,
    credentials: str | None = None,
    timeout_s: float = 300.0,
) -> int:
    """Recompute the hourly means of [start, end) (whole hours); the points written."""
    where = f" WHERE time >= '{_rfc3339(start)}' AND time < '{_rfc3339(end)}'"
    async with _InfluxQL(url, credentials, timeout_s) as influxql:
        results = await influxql.run(cq_select(database, where=where))
    written = 0
    for series in results[0].get("series", []):
        for row in series.get("values", []):
            written += int(row[1])
    return written


async def _continuous_query(influxql: _InfluxQL, database: str, report: RetentionReport) -> None:
    wanted = (
        f"CREATE CONTINUOUS QUERY {_ident(CQ_NAME)} ON {_ident(database)} "
        f"RESAMPLE FOR {RESAMPLE_FOR} BEGIN {cq_select(database)} END"
    )
    existing = await influxql.continuous_queries(database)
    if CQ_NAME in existing:
        if _normalise(existing[CQ_NAME]) == _normalise(wanted):
            return
        # A CQ cannot be altered; it holds no data, so dropping and recreating is safe.
        await influxql.run(f"DROP CONTINUOUS QUERY {_ident(CQ_NAME)} ON {_ident(database)}")
        report.updated.append(f"continuous query {CQ_NAME}")
    else:
        report.created.append(f"continuous query {CQ_NAME}")
    await influxql.run(wanted)


def _normalise(statement: str) -> str:
    """Compare CQ texts the way InfluxDB prints them back (quotes may be dropped)."""
    return re.sub(r"\s+", " ", statement.replace('"', "")).strip().lower()


def _rfc3339(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("backfill times must carry a UTC offset")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _InfluxQL:
    """InfluxQL statements over ``/query``, with errors turned into the writer's errors."""

    def __init__(self, url: str, credentials: str | None, timeout_s: float) -> None:
        auth = None
        if credentials:
            user, _, password = credentials.partition(":")
            auth = httpx.BasicAuth(user, password)
        self._url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self._url, auth=auth, timeout=timeout_s)

    async def __aenter__(self) -> _InfluxQL:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.aclose()

    async def run(self, statement: str) -> list[dict[str, Any]]:
        try:
            response = await self._http.post("/query", data={"q": statement})
        except httpx.TransportError as exc:
            raise InfluxUnavailableError(f"InfluxDB at {self._url} is unreachable: {exc}") from exc
        if response.status_code in (401, 403):
            raise InfluxConfigurationError(
                f"InfluxDB at {self._url} refused the credentials ({response.status_code}): "
                "check influx.token ('user:password', an admin for retention setup)"
            )
        try:
            document: dict[str, Any] = response.json()
        except ValueError:
            document = {"error": response.text[:500]}
        error = document.get("error") or next(
            (r["error"] for r in document.get("results", []) if "error" in r), None
        )
        if error or response.status_code >= 400:
            raise InfluxConfigurationError(
                f"InfluxDB at {self._url} refused {statement!r}: {error or response.status_code}"
            )
        results: list[dict[str, Any]] = document.get("results", [])
        return results

    async def retention_policies(self, database: str) -> set[str]:
        results = await self.run(f"SHOW RETENTION POLICIES ON {_ident(database)}")
        return {row[0] for series in results[0].get("series", []) for row in series["values"]}

    async def continuous_queries(self, database: str) -> dict[str, str]:
        results = await self.run("SHOW CONTINUOUS QUERIES")
        for series in results[0].get("series", []):
            if series.get("name") == database:
                return {row[0]: row[1] for row in series.get("values", [])}
        return {}
