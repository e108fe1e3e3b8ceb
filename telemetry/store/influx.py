"""Queries on InfluxDB: InfluxQL over HTTP ``/query``, which 1.x, 2.x (v1 API) and 3.x answer.

Writing is the writer's job (batching, spool, status handling); this store only reads,
and ``write`` is refused. Responses are requested chunked so a large answer (the
``seq`` of a long run) streams instead of hitting a row limit. Each call opens its own
HTTP client unless one is injected: a store built outside the event loop that serves
it (the API's runtime) never holds a client bound to another loop.
"""

# ruff: noqa: S608  (every name and value goes through quote_ident / quote_string)

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx

from telemetry.points import SEQ_FIELD, Point
from telemetry.store.base import (
    Aggregate,
    Bucket,
    GroupMembers,
    LatestValue,
    QueryError,
    Selection,
    StoreUnavailableError,
    check_range,
    from_ns,
    interval_ns,
    resolve_selection,
    to_ns,
)
from telemetry.store.embedded import boolean_aggregate_error

CHUNK_SIZE = 10_000
ALL_MEASUREMENTS = "/.*/"


def quote_ident(name: str) -> str:
    """An InfluxQL identifier: double quotes, with ``\\`` and ``"`` escaped."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal: single quotes, with ``\\`` and ``'`` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class Series:
    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]] = field(default_factory=list)


class InfluxStore:
    """A read-only ``TimeSeriesStore`` on InfluxDB's InfluxQL endpoint."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        api: Literal["v1", "v2"] = "v1",
        credentials: str | None = None,
        group_members: GroupMembers | None = None,
        timeout_s: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """``credentials``: 1.x ``user:password``; with ``api="v2"`` a token."""
        self.url = url.rstrip("/")
        self.database = database
        self._group_members = group_members
        self._timeout = httpx.Timeout(timeout_s)
        self._client = client
        self._auth: tuple[str, str] | None = None
        self._headers: dict[str, str] = {}
        if credentials and api == "v2":
            self._headers["Authorization"] = f"Token {credentials}"
        elif credentials:
            user, _, password = credentials.partition(":")
            self._auth = (user, password)

    # -- the protocol -------------------------------------------------------------------

    async def write(self, points: Sequence[Point]) -> None:
        raise NotImplementedError("InfluxStore only reads: points reach InfluxDB via the writer")

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
        if selection.is_empty:
            return []
        names = sorted(set(metrics)) if metrics is not None else await self._field_keys(kind)
        if not names:
            return []
        # ``time < until + 1 ns``: at or before ``until``
        end = to_ns(until) + 1 if until is not None else None
        where = _where(selection, end=end)
        tail = f" FROM {_source(selection)}{where} GROUP BY {quote_ident('device_id')}"
        # One statement per metric: with several selectors in one statement InfluxQL
        # answers time 0, and the time of each value is part of the answer.
        statements = [f"SELECT last({quote_ident(name)}){tail}" for name in names]
        results = await self.query(*statements)
        newest: dict[tuple[str, str], LatestValue] = {}
        for name, series_list in zip(names, results, strict=True):
            for series in series_list:
                device = series.tags.get("device_id", "")
                for time_ns, value in series.values:
                    if value is None:
                        continue
                    found = LatestValue(device, name, _number(value), from_ns(int(time_ns)))
                    known = newest.get((device, name))
                    if known is None or found.time > known.time:  # a device in two kinds
                        newest[(device, name)] = found
        return [newest[key] for key in sorted(newest)]

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
        if aggregate in ("mean", "sum") and await self._is_boolean(kind, metric):
            raise boolean_aggregate_error(metric, aggregate)
        where = _where(selection, start=to_ns(start), end=to_ns(end))
        statement = (
            f"SELECT {aggregate}({quote_ident(metric)}) FROM {_source(selection)}{where} "
            f"GROUP BY time({step}ns) fill(none)"
        )
        (series_list,) = await self.query(statement)
        return [
            Bucket(from_ns(int(t)), float(_number(v)))
            for series in series_list
            for t, v in series.values
            if v is not None
        ]

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
        where = _where(
            selection, start=to_ns(start) if start else None, end=to_ns(end) if end else None
        )
        if metric is not None:
            (series_list,) = await self.query(
                f"SELECT count({quote_ident(metric)}) FROM {_source(selection)}{where}"
            )
            return sum(int(v) for s in series_list for _t, v in s.values if v is not None)
        # InfluxQL counts per field, not per point, and a point may carry any subset of
        # its kind's fields: the exact number of points is the number of rows.
        (series_list,) = await self.query(f"SELECT * FROM {_source(selection)}{where}")
        return sum(len(s.values) for s in series_list)

    async def seqs(self, device_id: str) -> list[int]:
        selection = Selection(device_ids=(device_id,))
        (series_list,) = await self.query(
            f"SELECT {quote_ident(SEQ_FIELD)} FROM {_source(selection)}{_where(selection)}"
        )
        rows = sorted((int(t), int(v)) for s in series_list for t, v in s.values if v is not None)
        return [seq for _t, seq in rows]

    async def spread_by_device(
        self, *, kind: str, metric: str, start: datetime, end: datetime
    ) -> dict[str, float]:
        check_range(start, end)
        where = _where(Selection(kind=kind), start=to_ns(start), end=to_ns(end))
        (series_list,) = await self.query(
            f"SELECT spread({quote_ident(metric)}) FROM {quote_ident(kind)}{where} "
            f"GROUP BY {quote_ident('device_id')}"
        )
        return {
            series.tags.get("device_id", ""): float(_number(value))
            for series in series_list
            for _t, value in series.values
            if value is not None
        }

    # -- InfluxQL over HTTP -------------------------------------------------------------

    async def query(self, *statements: str) -> list[list[Series]]:
        """Run ``statements`` in one request; the series of each, in statement order.

        Raises ``QueryError`` with InfluxDB's own message when a statement fails, and
        ``StoreUnavailableError`` when InfluxDB cannot be reached.
        """
        params = {
            "db": self.database,
            "epoch": "ns",
            "chunked": "true",
            "chunk_size": str(CHUNK_SIZE),
        }
        results: dict[int, dict[tuple[str, tuple[tuple[str, str], ...]], Series]] = {}
        try:
            async with (
                self._http() as client,
                client.stream(
                    "POST", f"{self.url}/query", params=params, data={"q": "; ".join(statements)}
                ) as response,
            ):
                if response.status_code >= 400:
                    await response.aread()
                    raise QueryError(
                        f"InfluxDB answered {response.status_code}: {_error_of(response)}"
                    )
                async for line in response.aiter_lines():
                    if line.strip():
                        _merge_chunk(results, json.loads(line))
        except httpx.TransportError as exc:
            raise StoreUnavailableError(f"InfluxDB at {self.url} unreachable: {exc!r}") from exc
        return [list(results.get(i, {}).values()) for i in range(len(statements))]

    @asynccontextmanager
    async def _http(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._client is not None:
            yield self._client
            return
        async with httpx.AsyncClient(
            timeout=self._timeout, auth=self._auth, headers=self._headers
        ) as client:
            yield client

    async def _field_keys(self, kind: str | None) -> list[str]:
        source = quote_ident(kind) if kind is not None else ALL_MEASUREMENTS
        (series_list,) = await self.query(f"SHOW FIELD KEYS FROM {source}")
        return sorted({str(row[0]) for s in series_list for row in s.values})

    async def _is_boolean(self, kind: str, metric: str) -> bool:
        (series_list,) = await self.query(f"SHOW FIELD KEYS FROM {quote_ident(kind)}")
        return any(
            row[0] == metric and row[1] == "boolean" for s in series_list for row in s.values
        )

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


def _source(selection: Selection) -> str:
    return quote_ident(selection.kind) if selection.kind is not None else ALL_MEASUREMENTS


def _where(selection: Selection, *, start: int | None = None, end: int | None = None) -> str:
    conditions: list[str] = []
    if selection.device_ids is not None:
        ids = " OR ".join(
            f"{quote_ident('device_id')} = {quote_string(i)}" for i in selection.device_ids
        )
        conditions.append(f"({ids})" if len(selection.device_ids) > 1 else ids)
    if selection.district is not None:
        conditions.append(f"{quote_ident('district')} = {quote_string(selection.district)}")
    # An integer compared with time is nanoseconds since the epoch in InfluxQL.
    if start is not None:
        conditions.append(f"time >= {start}")
    if end is not None:
        conditions.append(f"time < {end}")
    return " WHERE " + " AND ".join(conditions) if conditions else ""


def _number(value: Any) -> float | bool:
    """InfluxDB's JSON value as Pharos reports it: bools stay bools, numbers are floats."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    raise QueryError(f"unexpected value {value!r} from InfluxDB (a string field?)")


def _error_of(response: httpx.Response) -> str:
    try:
        document = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(document, dict) and "error" in document:
        return str(document["error"])
    return response.text[:500]


def _merge_chunk(
    results: dict[int, dict[tuple[str, tuple[tuple[str, str], ...]], Series]],
    chunk: dict[str, Any],
) -> None:
    """Add one chunk of a chunked answer; a series split over chunks is joined again."""
    if "error" in chunk:
        raise QueryError(f"InfluxDB: {chunk['error']}")
    for result in chunk.get("results", []):
        if "error" in result:
            raise QueryError(f"InfluxDB: {result['error']}")
        statement = results.setdefault(int(result.get("statement_id", 0)), {})
        for raw in result.get("series", []):
            tags = {str(k): str(v) for k, v in (raw.get("tags") or {}).items()}
            key = (str(raw.get("name", "")), tuple(sorted(tags.items())))
            series = statement.get(key)
            if series is None:
                series = statement[key] = Series(key[0], tags, list(raw["columns"]))
            series.values.extend(raw.get("values", []))
