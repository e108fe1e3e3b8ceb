"""Telemetry queries as the API sees them: parameters, their checks, and the answers.

The checks are plain functions raising ``ParamError`` with the parameter's name, so
the API turns them into a 422 that names the field, and other callers (CLI, rules)
get the same reasons.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from devices.wire import DeviceKind, kind_spec
from telemetry.points import SEQ_FIELD
from telemetry.store.base import Aggregate, Bucket, LatestValue

MAX_BUCKETS = 10_000
DEFAULT_WINDOW = timedelta(hours=24)
DEFAULT_INTERVAL = "1h"
_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"([0-9]{1,9})([smhdw]?)")


class ParamError(ValueError):
    """A query parameter that is wrong; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class HistoryWindow(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime
    interval: timedelta
    aggregate: Aggregate


class BucketPublic(BaseModel):
    model_config = ConfigDict(frozen=True)

    time: datetime = Field(description="start of the interval (aligned to the Unix epoch)")
    value: float


class HistoryPublic(BaseModel):
    """A metric's history: one value per interval that has points (empty ones omitted)."""

    model_config = ConfigDict(frozen=True)

    device_id: str
    metric: str
    aggregate: Aggregate
    interval_s: int
    start: datetime
    end: datetime
    buckets: list[BucketPublic]


class LatestValuePublic(BaseModel):
    model_config = ConfigDict(frozen=True)

    device_id: str
    metric: str
    value: float | bool
    time: datetime


class LatestPublic(BaseModel):
    """The newest value of each metric of each selected device."""

    model_config = ConfigDict(frozen=True)

    items: list[LatestValuePublic]


def parse_interval(text: str) -> timedelta:
    """``30s``, ``5m``, ``1h``, ``1d``, ``1w`` or plain seconds; at least one second."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ParamError("interval", f"expected a duration like 30s, 5m, 1h, 1d, 1w; got {text!r}")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds < 1:
        raise ParamError("interval", "must be at least 1s")
    return timedelta(seconds=seconds)


def history_window(
    *,
    start: datetime | None,
    end: datetime | None,
    interval: str,
    aggregate: Aggregate,
    now: datetime,
) -> HistoryWindow:
    """The checked window: ``end`` defaults to now, ``start`` to a day before ``end``."""
    step = parse_interval(interval)
    end = end if end is not None else now
    start = start if start is not None else end - DEFAULT_WINDOW
    if end <= start:
        raise ParamError("end", f"must be after start ({start.isoformat()})")
    buckets = (end - start) / step
    if buckets > MAX_BUCKETS:
        raise ParamError(
            "interval",
            f"{interval} over {end - start} makes {buckets:.0f} intervals; at most "
            f"{MAX_BUCKETS}: choose a longer interval or a shorter range",
        )
    return HistoryWindow(start=start, end=end, interval=step, aggregate=aggregate)


def check_metric(metric: str, kind: str | None, *, field: str = "metric") -> None:
    """``metric`` must be in ``kind``'s catalogue (any kind's when ``kind`` is None)."""
    if metric == SEQ_FIELD:
        return
    kinds = [kind] if kind is not None else list(DeviceKind)
    if not any(kind_spec(k).metric(metric) is not None for k in kinds):
        where = f"kind {kind}" if kind is not None else "any kind"
        raise ParamError(field, f"unknown metric {metric!r} for {where}")


def history_public(
    device_id: str, metric: str, window: HistoryWindow, buckets: list[Bucket]
) -> HistoryPublic:
    return HistoryPublic(
        device_id=device_id,
        metric=metric,
        aggregate=window.aggregate,
        interval_s=int(window.interval.total_seconds()),
        start=window.start,
        end=window.end,
        buckets=[BucketPublic(time=b.start, value=b.value) for b in buckets],
    )


def latest_public(values: list[LatestValue]) -> LatestPublic:
    return LatestPublic(
        items=[
            LatestValuePublic(device_id=v.device_id, metric=v.metric, value=v.value, time=v.time)
            for v in values
        ]
    )
