"""The rule engine proper: events in, alert transitions and derived points out (no I/O).

``RuleEngine`` keeps the compiled rules indexed by device kind, the per-device facts,
when each device was last heard from, and which (rule, device) pairs are raised. It is
fed in event time: ``on_point`` for every reading (derived values computed first),
``on_status`` for ``online``/``offline``, and ``tick(now)`` from the service's clock
for silence. Each returns ``Transition`` values (``raised`` / ``cleared``) for the
alert lifecycle; ``on_point`` also returns the derived points of the contract
(``aqi``, ``flood``). Memory is bounded by devices × rules (see ``conditions``).
Rules can be replaced at run time (``set_rules``): the state of a rule whose
definition did not change is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from rules.aqi import AqiResult
from rules.conditions import Context, Node, compile_condition, uses_silence
from rules.derived import Derivations, DeviceFacts
from rules.settings import FloodLevels
from rules.spec import Rule
from telemetry.points import FieldValue, Point

FactsLookup = Callable[[str], DeviceFacts | None]
TransitionKind = Literal["raised", "cleared"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Transition:
    kind: TransitionKind
    rule: Rule
    device: DeviceFacts
    at: datetime
    value: float | None
    message: str


class CompiledRule:
    __slots__ = ("clear", "rule", "silence", "when")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.when: Node = compile_condition(rule.when)
        self.clear: Node | None = compile_condition(rule.clear) if rule.clear else None
        self.silence = uses_silence(rule.when) or uses_silence(rule.clear)

    def applies(self, facts: DeviceFacts) -> bool:
        scope = self.rule.scope
        if scope.kind is not None and facts.kind != scope.kind.value:
            return False
        if scope.device is not None and facts.device_id != scope.device:
            return False
        if scope.district is not None and facts.district != scope.district:
            return False
        return scope.group is None or scope.group in facts.groups

    def forget(self, device_id: str) -> None:
        self.when.forget(device_id)
        if self.clear is not None:
            self.clear.forget(device_id)


@dataclass(slots=True)
class _Seen:
    facts: DeviceFacts
    last_ts: float
    offline: bool = False


@dataclass(slots=True)
class EngineStats:
    points: int = 0
    evaluations: int = 0  # one rule against one event of one device
    raised: int = 0
    cleared: int = 0
    derived_points: int = 0


@dataclass(slots=True)
class Outcome:
    transitions: list[Transition] = field(default_factory=list)
    derived: list[Point] = field(default_factory=list)
    aqi: list[tuple[DeviceFacts, AqiResult]] = field(default_factory=list)


class RuleEngine:
    def __init__(
        self,
        rules: Sequence[Rule],
        derivations: Derivations,
        facts: FactsLookup,
        *,
        max_devices: int = 1_000_000,
        silence_clear_readings: int = 1,
    ) -> None:
        if silence_clear_readings < 1:
            raise ValueError("silence_clear_readings must be at least 1")
        self._derivations = derivations
        # Hysteresis of silence: a raised silence alert (of a rule without its own
        # ``clear``) clears only after this many fresh readings in a row, never on a
        # tick or a status, so a device reporting around the threshold does not flap.
        self._clear_after = silence_clear_readings
        self._fresh: dict[tuple[str, str], int] = {}
        self._facts = facts
        self._max_devices = max_devices
        self._seen: dict[str, _Seen] = {}
        self._active: dict[tuple[str, str], float | None] = {}
        self.stats = EngineStats()
        self._rules: list[CompiledRule] = []
        self._by_kind: dict[str, list[CompiledRule]] = {}
        self.set_rules(rules)

    # -- rules ---------------------------------------------------------------------------

    @property
    def rules(self) -> list[Rule]:
        return [c.rule for c in self._rules]

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Use ``rules`` from now on; unchanged rules keep their state, others start fresh."""
        old = {c.rule.id: c for c in self._rules}
        compiled: list[CompiledRule] = []
        for rule in rules:
            if not rule.enabled:
                continue
            kept = old.get(rule.id)
            compiled.append(kept if kept is not None and kept.rule == rule else CompiledRule(rule))
        keep_ids = {c.rule.id for c in compiled if old.get(c.rule.id) is c}
        self._active = {k: v for k, v in self._active.items() if k[0] in keep_ids}
        self._fresh = {k: v for k, v in self._fresh.items() if k in self._active}
        self._rules = compiled
        self._by_kind = {}

    def _rules_for(self, kind: str) -> list[CompiledRule]:
        found = self._by_kind.get(kind)
        if found is None:
            found = [
                c for c in self._rules if c.rule.scope.kind is None or c.rule.scope.kind == kind
            ]
            self._by_kind[kind] = found
        return found

    def is_raised(self, rule_id: str, device_id: str) -> bool:
        return (rule_id, device_id) in self._active

    def mark_raised(self, rule_id: str, device_id: str) -> None:
        """Restore a raised pair (alerts open in the database when the service starts)."""
        self._active[(rule_id, device_id)] = None

    # -- events --------------------------------------------------------------------------

    def facts_of(self, point: Point) -> DeviceFacts:
        device_id = point.tags["device_id"]
        facts = self._facts(device_id)
        if facts is None:
            group = point.tags.get("group")
            facts = DeviceFacts(
                device_id,
                point.measurement,
                point.tags.get("district"),
                frozenset({group}) if group else frozenset(),
            )
        return facts

    def on_points(self, points: Iterable[Point]) -> Outcome:
        outcome = Outcome()
        for point in points:
            self.on_point(point, outcome)
        return outcome

    def on_point(self, point: Point, outcome: Outcome) -> None:
        facts = self.facts_of(point)
        ts = (point.time - _EPOCH).total_seconds()
        self._note_seen(facts, ts, offline=False)
        derived, aqi = self._derivations.values(facts, point.time, point.fields)
        self.stats.points += 1
        if aqi is not None:
            outcome.aqi.append((facts, aqi))
            outcome.derived.append(_aqi_point(facts, point.time, aqi))
        if "flood_level" in derived:
            levels = self._derivations.flood_levels(facts)
            level = float(point.fields["water_level_m"])
            outcome.derived.append(_flood_point(facts, point.time, level, derived, levels))
        ctx = Context(facts.device_id, point.time, ts, point.fields, derived, is_reading=True)
        self._evaluate(facts, ctx, self._rules_for(facts.kind), outcome.transitions)

    def on_status(
        self, device_id: str, online: bool, at: datetime, kind: str | None = None
    ) -> list[Transition]:
        facts = self._facts(device_id)
        seen = self._seen.get(device_id)
        if facts is None:
            facts = seen.facts if seen is not None else None
        if facts is None:
            if kind is None:
                return []
            facts = DeviceFacts(device_id, kind)
        ts = (at - _EPOCH).total_seconds()
        last_ts = seen.last_ts if seen is not None and not online else ts
        self._note_seen(facts, last_ts, offline=not online)
        ctx = Context(device_id, at, ts, offline=not online, silent_s=ts - last_ts)
        rules = [c for c in self._rules_for(facts.kind) if c.silence]
        transitions: list[Transition] = []
        self._evaluate(facts, ctx, rules, transitions)
        return transitions

    def tick(self, now: datetime) -> list[Transition]:
        """Silence: every device heard from, against every silence rule, at ``now``."""
        ts = (now - _EPOCH).total_seconds()
        transitions: list[Transition] = []
        for seen in list(self._seen.values()):
            rules = [c for c in self._rules_for(seen.facts.kind) if c.silence]
            if not rules:
                continue
            ctx = Context(
                seen.facts.device_id,
                now,
                ts,
                offline=seen.offline,
                silent_s=max(0.0, ts - seen.last_ts),
            )
            self._evaluate(seen.facts, ctx, rules, transitions)
        return transitions

    def _note_seen(self, facts: DeviceFacts, ts: float, *, offline: bool) -> None:
        seen = self._seen.get(facts.device_id)
        if seen is None:
            if len(self._seen) >= self._max_devices:
                oldest = next(iter(self._seen))
                del self._seen[oldest]
                for compiled in self._rules:
                    compiled.forget(oldest)
                self._derivations.forget(oldest)
            self._seen[facts.device_id] = _Seen(facts, ts, offline)
            return
        seen.facts = facts
        seen.last_ts = max(seen.last_ts, ts)
        seen.offline = offline

    def _evaluate(
        self,
        facts: DeviceFacts,
        ctx: Context,
        rules: list[CompiledRule],
        out: list[Transition],
    ) -> None:
        device_id = facts.device_id
        active = self._active
        for compiled in rules:
            if not compiled.applies(facts):
                continue
            self.stats.evaluations += 1
            key = (compiled.rule.id, device_id)
            ctx.value = ctx.value_name = None
            when = compiled.when.evaluate(ctx)
            if key not in active:
                if compiled.clear is not None:
                    compiled.clear.evaluate(ctx)  # keep its windows and timers current
                if when:
                    active[key] = ctx.value
                    self.stats.raised += 1
                    out.append(self._transition("raised", compiled, facts, ctx))
                continue
            if compiled.clear is not None:
                ctx.value = ctx.value_name = None
                cleared = compiled.clear.evaluate(ctx)
            else:
                cleared = None if when is None else not when
            if cleared and compiled.silence and compiled.clear is None:
                if not self._fresh_enough(key, ctx):
                    continue
            elif compiled.silence and when:
                self._fresh.pop(key, None)  # silent again: the fresh readings start over
            if cleared:
                del active[key]
                self.stats.cleared += 1
                out.append(self._transition("cleared", compiled, facts, ctx))

    def _fresh_enough(self, key: tuple[str, str], ctx: Context) -> bool:
        """Whether this event ends a silence: the ``silence_clear_readings``-th reading."""
        if not ctx.is_reading:
            return False
        fresh = self._fresh.get(key, 0) + 1
        if fresh < self._clear_after:
            self._fresh[key] = fresh
            return False
        self._fresh.pop(key, None)
        return True

    @staticmethod
    def _transition(
        kind: TransitionKind, compiled: CompiledRule, facts: DeviceFacts, ctx: Context
    ) -> Transition:
        rule = compiled.rule
        if ctx.value_name is not None and ctx.value is not None:
            detail = f"{ctx.value_name} = {ctx.value:g}"
        else:
            detail = "condition met" if kind == "raised" else "condition cleared"
        message = f"{rule.name} ({facts.device_id}): {detail}"
        return Transition(kind, rule, facts, ctx.now, ctx.value, message)


def _aqi_point(facts: DeviceFacts, when: datetime, result: AqiResult) -> Point:
    fields: dict[str, FieldValue] = {"vn_aqi": result.aqi, "category": int(result.category)}
    if result.pm25_nowcast is not None:
        fields["pm25_nowcast"] = result.pm25_nowcast
    if result.pm10_nowcast is not None:
        fields["pm10_nowcast"] = result.pm10_nowcast
    return Point("aqi", facts.tags(), fields, when)


def _flood_point(
    facts: DeviceFacts,
    when: datetime,
    level_m: float,
    derived: dict[str, float],
    levels: FloodLevels,
) -> Point:
    fields: dict[str, FieldValue] = {
        "water_level_m": level_m,
        "alert_level": int(derived["flood_level"]),
        "bd1_m": levels.bd1_m,
        "bd2_m": levels.bd2_m,
        "bd3_m": levels.bd3_m,
    }
    return Point("flood", facts.tags(), fields, when)
