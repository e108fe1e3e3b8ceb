"""The embedded time-series store: SQLite in a file of its own, for a bare machine.

With no InfluxDB configured this store takes the points and answers the same queries
InfluxQL answers (``base.py`` fixes the semantics). One row per device, metric and
time, so a point written twice is one point, as in InfluxDB. A second table lists the
series (device, metric, kind) so the newest values are found through the primary key
instead of by scanning every point. Each call opens its own connection in a worker
thread (``asyncio.to_thread``): a connection never crosses threads, and there is
nothing to close.
"""

# ruff: noqa: S608  (SQL is assembled from fixed fragments; every value is a bound parameter)

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from devices.wire import DeviceKind
from telemetry.points import SEQ_FIELD, Point
from telemetry.store.base import (
    Aggregate,
    Bucket,
    GroupMembers,
    LatestValue,
    Selection,
    UnsupportedAggregateError,
    check_range,
    from_ns,
    interval_ns,
    resolve_selection,
    to_ns,
)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS points (
        measurement TEXT NOT NULL,
        device_id TEXT NOT NULL,
        district TEXT,
        grp TEXT,
        metric TEXT NOT NULL,
        time_ns INTEGER NOT NULL,
        value REAL NOT NULL,
        is_bool INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (device_id, metric, time_ns)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS points_by_kind ON points (measurement, metric, time_ns)",
    """CREATE TABLE IF NOT EXISTS derived_points (
        measurement TEXT NOT NULL,
        tags TEXT NOT NULL,
        field TEXT NOT NULL,
        time_ns INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (measurement, tags, field, time_ns)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS series (
        device_id TEXT NOT NULL,
        metric TEXT NOT NULL,
        measurement TEXT NOT NULL,
        PRIMARY KEY (device_id, metric, measurement)
    ) WITHOUT ROWID""",
)

_SQL_AGGREGATE: dict[Aggregate, str] = {
    "mean": "AVG",
    "min": "MIN",
    "max": "MAX",
    "sum": "SUM",
    "count": "COUNT",
}

_PointRow = tuple[str, str, str | None, str | None, str, int, float, int]
_DerivedRow = tuple[str, str, str, int, float]
_DEVICE_KINDS = frozenset(kind.value for kind in DeviceKind)


def boolean_aggregate_error(metric: str, aggregate: Aggregate) -> UnsupportedAggregateError:
    """The refusal both stores give: InfluxQL has no mean or sum of a boolean field."""
    return UnsupportedAggregateError(
        f"metric {metric!r} is boolean: {aggregate} does not apply (count, min, max do)"
    )


class EmbeddedStore:
    """A ``TimeSeriesStore`` in an SQLite file (WAL; a separate file from the registry)."""

    def __init__(self, path: Path, *, group_members: GroupMembers | None = None) -> None:
        self.path = path
        self._group_members = group_members
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    # -- the protocol -------------------------------------------------------------------

    async def write(self, points: Sequence[Point]) -> None:
        if points:
            readings = [p for p in points if p.measurement in _DEVICE_KINDS]
            derived = [p for p in points if p.measurement not in _DEVICE_KINDS]
            await asyncio.to_thread(self._write, _rows(readings), _derived_rows(derived))

    async def derived(self, measurement: str) -> list[tuple[dict[str, str], str, datetime, float]]:
        """Every stored point of a derived measurement: tags, field, time, value."""
        return await asyncio.to_thread(self._derived, measurement)

    async def latest(
        self,
        *,
        device_ids: Sequence[str] | None = None,
        kind: str | None = None,
        district: str | None = None,
        group: str | None = None,
        metrics: Sequence[str] | None = None,
        until: datetime | None = None,
    ) -> list[LatestValue]:
        selection = await self._select(kind, device_ids, district, group)
        if selection.is_empty or (metrics is not None and not metrics):
            return []
        until_ns = to_ns(until) if until is not None else None
        return await asyncio.to_thread(self._latest, selection, metrics, until_ns)

    async def history(
        self,
        *,
        kind: str,
        metric: str,
        start: datetime,
        end: datetime,
        interval: timedelta,
        aggregate: Aggregate,
        device_id: str | None = None,
        district: str | None = None,
        group: str | None = None,
    ) -> list[Bucket]:
        check_range(start, end)
        step = interval_ns(interval)
        ids = [device_id] if device_id is not None else None
        selection = await self._select(kind, ids, district, group)
        if selection.is_empty:
            return []
        span = (to_ns(start), to_ns(end))
        return await asyncio.to_thread(self._history, selection, metric, span, step, aggregate)

    async def count(
        self,
        kind: str,
        device_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        metric: str | None = None,
    ) -> int:
        selection = Selection(kind=kind, device_ids=(device_id,) if device_id else None)
        span = (to_ns(start) if start else None, to_ns(end) if end else None)
        return await asyncio.to_thread(self._count, selection, span, metric)

    async def seqs(self, device_id: str) -> list[int]:
        return await asyncio.to_thread(self._seqs, device_id)

    async def spread_by_device(
        self, *, kind: str, metric: str, start: datetime, end: datetime
    ) -> dict[str, float]:
        check_range(start, end)
        return await asyncio.to_thread(self._spread, kind, metric, (to_ns(start), to_ns(end)))

    # -- worker-thread side -------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self._ensure_schema()
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as conn:
            # FULL: a write that returned is on disk, because ingest acknowledges after it.
            conn.execute("PRAGMA synchronous=FULL")
            yield conn

    def _ensure_schema(self) -> None:
        with self._schema_lock:
            if self._schema_ready:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block writes
                for statement in SCHEMA:
                    conn.execute(statement)
            self._schema_ready = True

    def _write(self, rows: list[_PointRow], derived: list[_DerivedRow]) -> None:
        series = {(r[1], r[4], r[0]) for r in rows}
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO points (measurement, device_id, district, grp, "
                    "metric, time_ns, value, is_bool) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO series (device_id, metric, measurement) "
                    "VALUES (?, ?, ?)",
                    sorted(series),
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO derived_points (measurement, tags, field, "
                    "time_ns, value) VALUES (?, ?, ?, ?, ?)",
                    derived,
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _latest(
        self, selection: Selection, metrics: Sequence[str] | None, until_ns: int | None
    ) -> list[LatestValue]:
        # The newest point per series, found by walking the primary key backwards; the
        # kind and district filters apply to the points, as InfluxQL's WHERE does.
        series_where, series_args = _filters(selection, table="s", with_district=False)
        if metrics is not None:
            series_where.append("s.metric IN (SELECT value FROM json_each(?))")
            series_args.append(json.dumps(list(metrics)))
        point_where, point_args = _filters(
            Selection(kind=selection.kind, district=selection.district), table="p"
        )
        if until_ns is not None:
            point_where.append("p.time_ns <= ?")
            point_args.append(until_ns)
        newest = (
            "SELECT time_ns FROM points p WHERE p.device_id = s.device_id "
            "AND p.metric = s.metric" + "".join(f" AND {c}" for c in point_where) + " "
            "ORDER BY time_ns DESC LIMIT 1"
        )
        query = (
            "SELECT x.device_id, x.metric, q.value, q.is_bool, q.time_ns FROM ("
            f"SELECT DISTINCT s.device_id, s.metric, ({newest}) AS t FROM series s"
            + _where_clause(series_where)
            + ") x JOIN points q ON q.device_id = x.device_id AND q.metric = x.metric "
            "AND q.time_ns = x.t ORDER BY x.device_id, x.metric"
        )
        with self._connect() as conn:
            rows = conn.execute(query, [*point_args, *series_args]).fetchall()
        return [
            LatestValue(device, metric, bool(value) if is_bool else float(value), from_ns(t))
            for device, metric, value, is_bool, t in rows
        ]

    def _history(
        self,
        selection: Selection,
        metric: str,
        span: tuple[int, int],
        step: int,
        aggregate: Aggregate,
    ) -> list[Bucket]:
        where, args = _filters(selection, table="points")
        where += ["metric = ?", "time_ns >= ?", "time_ns < ?"]
        args += [metric, *span]
        condition = _where_clause(where)
        with self._connect() as conn:
            if aggregate in ("mean", "sum"):
                probe = f"SELECT 1 FROM points{condition} AND is_bool = 1 LIMIT 1"
                if conn.execute(probe, args).fetchone() is not None:
                    raise boolean_aggregate_error(metric, aggregate)
            # Floor division that stays right before 1970 too: epoch-aligned buckets.
            bucket = f"(time_ns - (((time_ns % {step}) + {step}) % {step}))"
            query = (
                f"SELECT {bucket} AS b, {_SQL_AGGREGATE[aggregate]}(value) FROM points"
                f"{condition} GROUP BY b ORDER BY b"
            )
            rows = conn.execute(query, args).fetchall()
        return [Bucket(from_ns(b), float(v)) for b, v in rows]

    def _count(
        self, selection: Selection, span: tuple[int | None, int | None], metric: str | None
    ) -> int:
        where, args = _filters(selection, table="points")
        if span[0] is not None:
            where.append("time_ns >= ?")
            args.append(span[0])
        if span[1] is not None:
            where.append("time_ns < ?")
            args.append(span[1])
        if metric is not None:
            where.append("metric = ?")
            args.append(metric)
            query = "SELECT COUNT(*) FROM points" + _where_clause(where)
        else:  # a point is a device and a time, whatever metrics it carries
            query = (
                "SELECT COUNT(*) FROM (SELECT DISTINCT device_id, time_ns FROM points"
                + _where_clause(where)
                + ")"
            )
        with self._connect() as conn:
            (total,) = conn.execute(query, args).fetchone()
        return int(total)

    def _derived(self, measurement: str) -> list[tuple[dict[str, str], str, datetime, float]]:
        query = (
            "SELECT tags, field, time_ns, value FROM derived_points WHERE measurement = ? "
            "ORDER BY time_ns, tags, field"
        )
        with self._connect() as conn:
            rows = conn.execute(query, (measurement,)).fetchall()
        return [(json.loads(tags), field, from_ns(t), float(v)) for tags, field, t, v in rows]

    def _spread(self, kind: str, metric: str, span: tuple[int, int]) -> dict[str, float]:
        query = (
            "SELECT device_id, MAX(value) - MIN(value) FROM points WHERE measurement = ? "
            "AND metric = ? AND time_ns >= ? AND time_ns < ? GROUP BY device_id"
        )
        with self._connect() as conn:
            rows = conn.execute(query, (kind, metric, *span)).fetchall()
        return {device_id: float(spread) for device_id, spread in rows}

    def _seqs(self, device_id: str) -> list[int]:
        query = "SELECT value FROM points WHERE device_id = ? AND metric = ? ORDER BY time_ns"
        with self._connect() as conn:
            rows = conn.execute(query, (device_id, SEQ_FIELD)).fetchall()
        return [int(value) for (value,) in rows]

    async def _select(
        self,
        kind: str | None,
        device_ids: Sequence[str] | None,
        district: str | None,
        group: str | None,
    ) -> Selection:
        return await resolve_selection(
            kind=kind,
            device_ids=device_ids,
            district=district,
            group=group,
            group_members=self._group_members,
        )


def _rows(points: Sequence[Point]) -> list[_PointRow]:
    """One row per field; refuses the batch before writing if a value is not finite."""
    rows: list[_PointRow] = []
    for point in points:
        time_ns = to_ns(point.time)
        district, group = point.tags.get("district"), point.tags.get("group")
        for name, raw in point.fields.items():
            value = float(raw)
            if not math.isfinite(value):
                # Ingest validates every metric, so this is a bug upstream, said loudly.
                raise ValueError(f"{point.device_id}.{name}: not a finite number: {raw!r}")
            flag = 1 if isinstance(raw, bool) else 0
            rows.append(
                (point.measurement, point.device_id, district, group, name, time_ns, value, flag)
            )
    return rows


def _derived_rows(points: Sequence[Point]) -> list[_DerivedRow]:
    """One row per field of a derived point, its tag set as canonical JSON."""
    rows: list[_DerivedRow] = []
    for point in points:
        tags = json.dumps(point.tags, sort_keys=True, ensure_ascii=False)
        time_ns = to_ns(point.time)
        for name, raw in point.fields.items():
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(f"{point.measurement}.{name}: not a finite number: {raw!r}")
            rows.append((point.measurement, tags, name, time_ns, value))
    return rows


def _filters(
    selection: Selection, *, table: str, with_district: bool = True
) -> tuple[list[str], list[object]]:
    where: list[str] = []
    args: list[object] = []
    if selection.kind is not None:
        where.append(f"{table}.measurement = ?")
        args.append(selection.kind)
    if selection.device_ids is not None:
        # json_each: any number of ids in one parameter (no host-variable limit).
        where.append(f"{table}.device_id IN (SELECT value FROM json_each(?))")
        args.append(json.dumps(list(selection.device_ids)))
    if with_district and selection.district is not None:
        where.append(f"{table}.district = ?")
        args.append(selection.district)
    return where, args


def _where_clause(conditions: list[str]) -> str:
    return " WHERE " + " AND ".join(conditions) if conditions else ""
