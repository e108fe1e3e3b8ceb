"""Backtest: run a rule set over stored history and list the alerts it would have raised.

Reads each selected device's numeric metrics over ``[start, end)`` through the
telemetry query layer (``TimeSeriesStore.history`` per device and metric, one bucket
per ``resolution``, so InfluxDB and the embedded store answer alike), rebuilds the
readings in time order, and feeds them to a fresh ``RuleEngine`` with a silence tick
every ``tick_s``. Nothing is written: the result is the list of alerts with when they
were raised and cleared, so thresholds can be tuned before they page anyone. Status
messages (Last Will) are not stored, so silence is judged from gaps in the readings.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from devices.wire import DeviceKind, kind_spec
from rules.catalog import Catalog
from rules.derived import Derivations, DeviceFacts, SunTimes
from rules.engine import RuleEngine, Transition
from rules.settings import RulesSettings
from rules.spec import Rule, Severity
from telemetry.points import FieldValue, Point
from telemetry.store import TimeSeriesStore


class BacktestAlert(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule_id: str
    device_id: str
    severity: Severity
    raised_at: datetime
    cleared_at: datetime | None = Field(description="None: still raised at the period's end")
    value: float | None
    message: str


class BacktestResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime
    devices: int
    readings: int
    evaluations: int
    alerts: list[BacktestAlert]


@dataclass(slots=True)
class _Open:
    transition: Transition
    cleared_at: datetime | None = None


@dataclass(slots=True)
class _Collector:
    alerts: list[_Open] = field(default_factory=list)
    live: dict[tuple[str, str], _Open] = field(default_factory=dict)

    def take(self, transitions: Iterable[Transition]) -> None:
        for t in transitions:
            key = (t.rule.id, t.device.device_id)
            if t.kind == "raised":
                entry = _Open(t)
                self.alerts.append(entry)
                self.live[key] = entry
            elif key in self.live:
                self.live.pop(key).cleared_at = t.at


def _kinds_of(rules: Sequence[Rule]) -> list[str]:
    if any(rule.scope.kind is None for rule in rules):
        return [k.value for k in DeviceKind]
    return sorted({rule.scope.kind.value for rule in rules if rule.scope.kind is not None})


def _numeric_metrics(kind: str) -> list[str]:
    return [m.name for m in kind_spec(kind).metrics if not m.boolean]


async def _device_ids(
    store: TimeSeriesStore, kind: str, device_ids: Sequence[str] | None
) -> list[str]:
    latest = await store.latest(kind=kind, device_ids=device_ids)
    return sorted({v.device_id for v in latest})


async def _readings(
    store: TimeSeriesStore,
    facts: DeviceFacts,
    start: datetime,
    end: datetime,
    resolution: timedelta,
) -> list[Point]:
    by_time: dict[datetime, dict[str, FieldValue]] = defaultdict(dict)
    for metric in _numeric_metrics(facts.kind):
        buckets = await store.history(
            kind=facts.kind,
            metric=metric,
            start=start,
            end=end,
            interval=resolution,
            aggregate="mean",
            device_id=facts.device_id,
        )
        for bucket in buckets:
            by_time[bucket.start][metric] = bucket.value
    return [Point(facts.kind, facts.tags(), fields, when) for when, fields in by_time.items()]


async def backtest(
    rules: Sequence[Rule],
    store: TimeSeriesStore,
    catalog: Catalog,
    *,
    settings: RulesSettings,
    sun: SunTimes,
    start: datetime,
    end: datetime,
    device_ids: Sequence[str] | None = None,
    resolution: timedelta = timedelta(seconds=1),
    tick_s: float = 60.0,
) -> BacktestResult:
    """The alerts ``rules`` would have raised over ``[start, end)``; see the module docstring."""
    engine = RuleEngine(rules, Derivations(settings, sun), catalog.get)
    points: list[Point] = []
    devices = 0
    for kind in _kinds_of(rules):
        for device_id in await _device_ids(store, kind, device_ids):
            facts = catalog.get(device_id) or DeviceFacts(device_id, kind)
            devices += 1
            points += await _readings(store, facts, start, end, resolution)
    points.sort(key=lambda p: (p.time, p.tags["device_id"]))
    collector = _Collector()
    tick = timedelta(seconds=tick_s)
    next_tick = start + tick
    for point in points:
        while next_tick <= point.time:
            collector.take(engine.tick(next_tick))
            next_tick += tick
        collector.take(engine.on_points([point]).transitions)
    while next_tick < end:
        collector.take(engine.tick(next_tick))
        next_tick += tick
    alerts = [
        BacktestAlert(
            rule_id=o.transition.rule.id,
            device_id=o.transition.device.device_id,
            severity=o.transition.rule.severity,
            raised_at=o.transition.at,
            cleared_at=o.cleared_at,
            value=o.transition.value,
            message=o.transition.message,
        )
        for o in collector.alerts
    ]
    return BacktestResult(
        start=start,
        end=end,
        devices=devices,
        readings=len(points),
        evaluations=engine.stats.evaluations,
        alerts=alerts,
    )
