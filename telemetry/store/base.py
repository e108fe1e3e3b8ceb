"""What every time-series store answers: the ``TimeSeriesStore`` protocol and its values.

InfluxDB (``InfluxStore``) and the embedded SQLite store (``EmbeddedStore``) give the
same answers to the same calls; the tests hold them to it. History buckets follow
InfluxQL's ``GROUP BY time(interval) fill(none)``: aligned to the Unix epoch, a bucket
is labelled by its start, and buckets without points are left out. Time ranges are
half-open: ``start <= time < end``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol, get_args

from telemetry.points import Point

Aggregate = Literal["mean", "min", "max", "sum", "count"]
AGGREGATES: tuple[Aggregate, ...] = get_args(Aggregate)

# Resolves a registry group to the ids of its member devices (see ``groups.py``).
GroupMembers = Callable[[str], Awaitable[Sequence[str]]]

NS_PER_S = 1_000_000_000


class QueryError(Exception):
    """A query the store refused or could not answer; the message says why."""


class UnsupportedAggregateError(QueryError):
    """An aggregate that does not apply to the metric (the mean of a boolean)."""


class StoreUnavailableError(QueryError):
    """The store could not be reached (InfluxDB down, timed out)."""


@dataclass(frozen=True, slots=True)
class LatestValue:
    """The newest value of one metric of one device."""

    device_id: str
    metric: str
    value: float | bool
    time: datetime


@dataclass(frozen=True, slots=True)
class Bucket:
    """One interval of a history: its start (epoch-aligned) and the aggregated value."""

    start: datetime
    value: float


@dataclass(frozen=True, slots=True)
class Selection:
    """Which points a query covers; ``None`` means no filter on that dimension."""

    kind: str | None = None
    device_ids: tuple[str, ...] | None = None
    district: str | None = None

    @property
    def is_empty(self) -> bool:
        """True when the device filter matches nothing, so no query is needed."""
        return self.device_ids is not None and not self.device_ids


class TimeSeriesStore(Protocol):
    async def write(self, points: Sequence[Point]) -> None:
        """Store ``points``; the same device, metric and time written twice is one value."""
        ...

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
        """The newest value per device and metric (at or before ``until`` when given),
        sorted by device id then metric."""
        ...

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
        """``aggregate`` of ``metric`` per ``interval`` over all selected devices."""
        ...

    async def count(
        self,
        kind: str,
        device_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        metric: str | None = None,
    ) -> int:
        """Points of ``kind`` (with ``metric``: values of that metric) in the range."""
        ...

    async def seqs(self, device_id: str) -> list[int]:
        """The ``seq`` field of the device's points, in time order."""
        ...

    async def spread_by_device(
        self, *, kind: str, metric: str, start: datetime, end: datetime
    ) -> dict[str, float]:
        """Per device of ``kind`` with values in the range: highest minus lowest ``metric``.

        One query for the whole fleet: a cumulative counter's increase (``energy_kwh``)
        per lamp for the energy report and the IOC summary, summed per group by the caller.
        """
        ...


def to_ns(when: datetime) -> int:
    """Nanoseconds since the epoch; exact (no float rounding) for microsecond datetimes."""
    if when.tzinfo is None:
        raise ValueError("naive datetime: times must carry a UTC offset")
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1_000


def from_ns(ns: int) -> datetime:
    """The UTC datetime of ``ns`` (to the microsecond, like every datetime)."""
    seconds, rest = divmod(ns, NS_PER_S)
    return datetime.fromtimestamp(seconds, tz=UTC) + timedelta(microseconds=rest // 1_000)


def interval_ns(interval: timedelta) -> int:
    """The interval in nanoseconds; at least one second (what InfluxQL buckets sensibly)."""
    ns = to_ns(datetime(1970, 1, 1, tzinfo=UTC) + interval)
    if ns < NS_PER_S:
        raise ValueError(f"interval must be at least 1 s, got {interval}")
    return ns


def check_range(start: datetime, end: datetime) -> None:
    if end <= start:
        raise ValueError(f"end {end.isoformat()} must be after start {start.isoformat()}")


async def resolve_selection(
    *,
    kind: str | None,
    device_ids: Sequence[str] | None,
    district: str | None,
    group: str | None,
    group_members: GroupMembers | None,
) -> Selection:
    """A ``Selection`` with the group turned into device ids (intersected with ``device_ids``).

    Groups are resolved through the registry rather than the points' ``group`` tag: a
    device may belong to several groups, and the tag can hold only one.
    """
    ids = tuple(device_ids) if device_ids is not None else None
    if group is not None:
        if group_members is None:
            raise QueryError("this store has no group resolver, so it cannot filter by group")
        members = frozenset(await group_members(group))
        ids = tuple(members) if ids is None else tuple(i for i in ids if i in members)
    if ids is not None:
        ids = tuple(sorted(set(ids)))
    return Selection(kind=kind, device_ids=ids, district=district)
