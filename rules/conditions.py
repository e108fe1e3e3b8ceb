"""Compiled conditions: each rule condition as a node that keeps its state per device.

``compile_condition`` turns a ``rules.spec`` condition into a ``Node``. A node answers
``evaluate(ctx)`` with True, False, or None when this event says nothing about it (the
value is absent from the reading): None never changes an alert. State (held-since
times, windows of samples) is kept per device inside the node, bounded: windows hold
at most ``MAX_SAMPLES`` samples and are trimmed to their duration on every sample.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from rules.spec import (
    AggregateCondition,
    AllCondition,
    AnyCondition,
    Compare,
    Condition,
    FlagCondition,
    RateCondition,
    SilenceCondition,
    ValueCondition,
)

MAX_SAMPLES = 4096


@dataclass(slots=True)
class Context:
    """One event for one device: a reading (``fields`` and ``derived``), a status, a tick."""

    device_id: str
    now: datetime
    ts: float  # ``now`` as epoch seconds (windows work on floats)
    fields: Mapping[str, float | bool | int] = field(default_factory=dict)
    derived: Mapping[str, float] = field(default_factory=dict)
    is_reading: bool = False
    offline: bool = False
    silent_s: float = 0.0  # seconds since the device was last heard from
    value: float | None = None  # the value the last leaf looked at (for the message)
    value_name: str | None = None

    def get(self, name: str) -> float | None:
        found = self.derived.get(name)
        if found is not None:
            return found
        raw = self.fields.get(name)
        if raw is None:
            return None
        return float(raw)


class Node(Protocol):
    def evaluate(self, ctx: Context) -> bool | None: ...
    def forget(self, device_id: str) -> None: ...


class _Held:
    """Wraps a node: true only once the inner node has held for ``seconds``."""

    __slots__ = ("_inner", "_seconds", "_since")

    def __init__(self, inner: Node, seconds: float) -> None:
        self._inner = inner
        self._seconds = seconds
        self._since: dict[str, float] = {}

    def evaluate(self, ctx: Context) -> bool | None:
        result = self._inner.evaluate(ctx)
        if result is None:
            return None
        if not result:
            self._since.pop(ctx.device_id, None)
            return False
        since = self._since.setdefault(ctx.device_id, ctx.ts)
        return ctx.ts - since >= self._seconds

    def forget(self, device_id: str) -> None:
        self._since.pop(device_id, None)
        self._inner.forget(device_id)


class _Value:
    __slots__ = ("_compare", "_name")

    def __init__(self, name: str, compare: Compare) -> None:
        self._name = name
        self._compare = compare

    def evaluate(self, ctx: Context) -> bool | None:
        value = ctx.get(self._name)
        if value is None:
            return None
        ctx.value, ctx.value_name = value, self._name
        return self._compare.test(value)

    def forget(self, device_id: str) -> None:
        return None


class _Flag:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def evaluate(self, ctx: Context) -> bool | None:
        value = ctx.get(self._name)
        if value is None:
            return None
        ctx.value, ctx.value_name = value, self._name
        return value != 0.0

    def forget(self, device_id: str) -> None:
        return None


class _Window:
    """Samples of one value per device over ``seconds``."""

    __slots__ = ("_samples", "_seconds")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._samples: dict[str, deque[tuple[float, float]]] = {}

    def add(self, ctx: Context, value: float) -> deque[tuple[float, float]]:
        samples = self._samples.get(ctx.device_id)
        if samples is None:
            samples = self._samples[ctx.device_id] = deque(maxlen=MAX_SAMPLES)
        if samples and ctx.ts < samples[-1][0]:
            return samples  # out of order: ignored (readings arrive in order per device)
        samples.append((ctx.ts, value))
        horizon = ctx.ts - self._seconds
        while samples and samples[0][0] < horizon:
            samples.popleft()
        return samples

    def forget(self, device_id: str) -> None:
        self._samples.pop(device_id, None)


class _Rate:
    """Change per ``per`` seconds across the window; needs half a window of samples."""

    __slots__ = ("_compare", "_name", "_per", "_window", "_window_s")

    def __init__(self, cond: RateCondition) -> None:
        self._name = cond.rate
        self._compare: Compare = cond
        self._per = cond.per
        self._window_s = cond.window
        self._window = _Window(cond.window)

    def evaluate(self, ctx: Context) -> bool | None:
        value = ctx.get(self._name)
        if value is None:
            return None
        samples = self._window.add(ctx, value)
        (t0, v0), (t1, v1) = samples[0], samples[-1]
        if t1 - t0 < self._window_s / 2:
            return None
        rate = (v1 - v0) / (t1 - t0) * self._per
        ctx.value, ctx.value_name = rate, f"rate of {self._name}"
        return self._compare.test(rate)

    def forget(self, device_id: str) -> None:
        self._window.forget(device_id)


class _Aggregate:
    __slots__ = ("_compare", "_fn", "_name", "_window")

    def __init__(self, cond: AggregateCondition) -> None:
        self._name = cond.aggregate
        self._compare: Compare = cond
        self._fn = cond.fn
        self._window = _Window(cond.window)

    def evaluate(self, ctx: Context) -> bool | None:
        value = ctx.get(self._name)
        if value is None:
            return None
        samples = self._window.add(ctx, value)
        values = [v for _, v in samples]
        if self._fn == "mean":
            result = sum(values) / len(values)
        elif self._fn == "max":
            result = max(values)
        else:
            result = min(values)
        ctx.value, ctx.value_name = result, f"{self._fn} of {self._name}"
        return self._compare.test(result)

    def forget(self, device_id: str) -> None:
        self._window.forget(device_id)


class _Silence:
    __slots__ = ("_offline", "_seconds")

    def __init__(self, cond: SilenceCondition) -> None:
        self._seconds = cond.silent
        self._offline = cond.offline

    def evaluate(self, ctx: Context) -> bool | None:
        if ctx.is_reading:
            return False
        ctx.value, ctx.value_name = ctx.silent_s, "seconds silent"
        return (self._offline and ctx.offline) or ctx.silent_s >= self._seconds

    def forget(self, device_id: str) -> None:
        return None


class _All:
    __slots__ = ("_children",)

    def __init__(self, children: list[Node]) -> None:
        self._children = children

    def evaluate(self, ctx: Context) -> bool | None:
        # Every child sees every event (their windows and timers must advance).
        results = [child.evaluate(ctx) for child in self._children]
        if any(r is False for r in results):
            return False
        if any(r is None for r in results):
            return None
        return True

    def forget(self, device_id: str) -> None:
        for child in self._children:
            child.forget(device_id)


class _Any(_All):
    __slots__ = ()

    def evaluate(self, ctx: Context) -> bool | None:
        results = [child.evaluate(ctx) for child in self._children]
        if any(r is True for r in results):
            return True
        if any(r is None for r in results):
            return None
        return False


def compile_condition(cond: Condition) -> Node:
    node: Node
    hold = getattr(cond, "for_", 0.0)
    if isinstance(cond, ValueCondition):
        node = _Value(cond.value, cond)
    elif isinstance(cond, FlagCondition):
        node = _Flag(cond.flag)
    elif isinstance(cond, RateCondition):
        node = _Rate(cond)
    elif isinstance(cond, AggregateCondition):
        node = _Aggregate(cond)
    elif isinstance(cond, SilenceCondition):
        node = _Silence(cond)
    elif isinstance(cond, AllCondition):
        node = _All([compile_condition(c) for c in cond.all])
    elif isinstance(cond, AnyCondition):
        node = _Any([compile_condition(c) for c in cond.any])
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"unknown condition {cond!r}")
    return _Held(node, hold) if hold > 0 else node


def uses_silence(cond: Condition | None) -> bool:
    if cond is None:
        return False
    if isinstance(cond, SilenceCondition):
        return True
    if isinstance(cond, AllCondition):
        return any(uses_silence(c) for c in cond.all)
    if isinstance(cond, AnyCondition):
        return any(uses_silence(c) for c in cond.any)
    return False
