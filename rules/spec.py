"""Rule files: the YAML format, its validation, and errors naming file, line and field.

A rule file holds ``rules:``, a list of rules. A rule has an ``id``, a ``severity``, a
``scope`` (kind, device, group, district), a ``when`` condition, an optional ``clear``
condition (hysteresis; without one an alert clears when ``when`` stops holding), an
optional ``escalate_after`` and a list of ``actions``. Conditions:

- ``{value: NAME, above|below|between: …, for: 10m}``: a metric or a derived value;
- ``{flag: NAME, for: …}``: a boolean metric or derived flag is true;
- ``{rate: NAME, window: 1h, per: 1h, above|below|between: …}``: change per ``per``;
- ``{aggregate: NAME, fn: mean|max|min, window: 15m, above|below|between: …}``;
- ``{silent: 10m, offline: true}``: no reading for that long, or an ``offline`` status;
- ``{all: [...]}`` / ``{any: [...]}``: AND / OR over the same device.

Derived names: ``vn_aqi``, ``aqi_category`` (1..6), ``flood_level`` (0..3),
``lamp_failure``, ``day_burning``, ``power_too_low``, ``power_too_high``.
Durations: ``30s``, ``10m``, ``1h``, ``1d`` or seconds. ``load_rule_file`` raises
``RuleFileError`` listing every problem as ``file:line: field: reason``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from devices.wire import CommandParamsError, DeviceKind, kind_spec, validate_command_params
from pharos_core.source_file import (
    FileError,
    FileProblem,
    LineMap,
    field_name,
    line_for,
    validation_problems,
    yaml_with_lines,
)
from pharos_core.yaml_limits import MAX_BYTES as MAX_YAML_BYTES
from pharos_core.yaml_limits import yaml_limit_problems

DERIVED_NUMBERS = frozenset({"vn_aqi", "aqi_category", "flood_level"})
DERIVED_FLAGS = frozenset({"lamp_failure", "day_burning", "power_too_low", "power_too_high"})
DERIVED = DERIVED_NUMBERS | DERIVED_FLAGS
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*")
_ID = r"^[a-z0-9][a-z0-9_.-]{0,99}$"


def parse_duration(value: object) -> float:
    """Seconds of ``10m``, ``1h``, ``30s``, ``1d`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 10m, 1h, 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value))
        if match is None:
            raise ValueError(f"expected a duration like 30s, 10m, 1h, 1d; got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Severity(StrEnum):
    INFO = "info"
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"

    def escalated(self) -> Severity:
        order = list(Severity)
        return order[min(order.index(self) + 1, len(order) - 1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Compare(_Model):
    above: float | None = Field(None, description="true when the value is above this")
    below: float | None = Field(None, description="true when the value is below this")
    between: tuple[float, float] | None = Field(None, description="true within [low, high]")

    @model_validator(mode="after")
    def _one(self) -> Compare:
        given = [x for x in (self.above, self.below, self.between) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of above, below, between")
        if self.between is not None and self.between[0] > self.between[1]:
            raise ValueError("between: low must not exceed high")
        return self

    def test(self, value: float) -> bool:
        if self.above is not None:
            return value > self.above
        if self.below is not None:
            return value < self.below
        low, high = self.between  # type: ignore[misc]
        return low <= value <= high


class ValueCondition(Compare):
    value: str = Field(description="a metric of the kind, or a derived value")
    for_: Duration = Field(0.0, alias="for", description="how long it must hold")

    @model_validator(mode="after")
    def _known(self) -> ValueCondition:
        for problem in _name_problems(self, None):
            raise ValueError(problem)
        return self


class FlagCondition(_Model):
    flag: str = Field(description="a boolean metric or derived flag")
    for_: Duration = Field(0.0, alias="for", description="how long it must hold")

    @model_validator(mode="after")
    def _known(self) -> FlagCondition:
        for problem in _name_problems(self, None):
            raise ValueError(problem)
        return self


class RateCondition(Compare):
    rate: str = Field(description="the metric whose change is measured")
    window: Duration = Field(3600.0, description="over this window")
    per: Duration = Field(3600.0, description="the change is expressed per this duration")
    for_: Duration = Field(0.0, alias="for", description="how long it must hold")

    @model_validator(mode="after")
    def _known(self) -> RateCondition:
        for problem in _name_problems(self, None):
            raise ValueError(problem)
        return self


class AggregateCondition(Compare):
    aggregate: str = Field(description="the metric aggregated")
    fn: Literal["mean", "max", "min"] = Field("mean", description="the aggregate")
    window: Duration = Field(900.0, description="over this window")
    for_: Duration = Field(0.0, alias="for", description="how long it must hold")

    @model_validator(mode="after")
    def _known(self) -> AggregateCondition:
        for problem in _name_problems(self, None):
            raise ValueError(problem)
        return self


class SilenceCondition(_Model):
    silent: Duration = Field(description="no reading for this long")
    offline: bool = Field(True, description="an `offline` status (Last Will) counts at once")


class AllCondition(_Model):
    all: list[Condition] = Field(min_length=1, description="every one holds")
    for_: Duration = Field(0.0, alias="for", description="how long it must hold")


class AnyCondition(_Model):
    any: list[Condition] = Field(min_length=1, description="at least one holds")
    for_: Duration = Field(0.0, alias="for", description="how long it must hold")


_KEYS = ("value", "flag", "rate", "aggregate", "silent", "all", "any")


def _condition_tag(data: Any) -> str | None:
    if isinstance(data, dict):
        for key in _KEYS:
            if key in data:
                return key
        return None
    for key in _KEYS:
        if hasattr(data, key):
            return key
    return None


Condition = Annotated[
    Annotated[ValueCondition, Tag("value")]
    | Annotated[FlagCondition, Tag("flag")]
    | Annotated[RateCondition, Tag("rate")]
    | Annotated[AggregateCondition, Tag("aggregate")]
    | Annotated[SilenceCondition, Tag("silent")]
    | Annotated[AllCondition, Tag("all")]
    | Annotated[AnyCondition, Tag("any")],
    Discriminator(
        _condition_tag,
        custom_error_type="condition",
        custom_error_message="a condition needs one of: " + ", ".join(_KEYS),
    ),
]
AllCondition.model_rebuild()
AnyCondition.model_rebuild()


class Scope(_Model):
    kind: DeviceKind | None = Field(None, description="devices of this kind")
    device: str | None = Field(None, description="this device only")
    group: str | None = Field(None, description="members of this registry group")
    district: str | None = Field(None, description="devices in this district")


Event = Literal["raised", "cleared", "escalated"]
RAISED: Event = "raised"
CLEARED: Event = "cleared"
ESCALATED: Event = "escalated"


class CommandTarget(StrEnum):
    DEVICE = "device"  # the device that raised the alert
    DISTRICT = "district"  # the lamps of its district
    GROUP = "group"  # the members of a named group


class CommandActionSpec(_Model):
    command: str = Field(description="a wire command: override, set_dim, switch, …")
    params: dict[str, Any] = Field(default_factory=dict, description="the command's params")
    target: CommandTarget = Field(CommandTarget.DEVICE, description="who gets it")
    group: str | None = Field(None, description="for target: group")
    kinds: list[DeviceKind] = Field(
        default_factory=lambda: [DeviceKind.STREETLIGHT, DeviceKind.SMART_POLE],
        description="for district/group targets: the kinds that get it",
    )
    until_sunrise: bool = Field(
        False, description="override: minutes until the next sunrise (lamps for the night)"
    )
    on: list[Event] = Field(default_factory=lambda: [RAISED])

    @model_validator(mode="after")
    def _group(self) -> CommandActionSpec:
        if self.target is CommandTarget.GROUP and not self.group:
            raise ValueError("target: group needs `group`")
        params = dict(self.params)
        if self.until_sunrise:
            if self.command != "override":
                raise ValueError("until_sunrise: only for the override command")
            params.setdefault("minutes", 60)
        for kind in self.kinds:
            try:
                validate_command_params(kind, self.command, params)
            except CommandParamsError as exc:
                raise ValueError(f"{kind.value}: {exc}") from None
        return self


class MaintenanceActionSpec(_Model):
    maintenance: str = Field(description="the work item's text for the technicians")
    on: list[Event] = Field(default_factory=lambda: [RAISED])


class PublishActionSpec(_Model):
    publish: str = Field(description="an extra MQTT topic under pharos/v1/ for the event")
    on: list[Event] = Field(default_factory=lambda: [RAISED, CLEARED, ESCALATED])

    @model_validator(mode="after")
    def _root(self) -> PublishActionSpec:
        if not self.publish.startswith("pharos/v1/") or any(c in self.publish for c in "+#"):
            raise ValueError("publish: a topic under pharos/v1/ without wildcards")
        return self


class WebhookActionSpec(_Model):
    webhook: str = Field(description="URL that gets an HTTP POST of the event (JSON)")
    headers: dict[str, str] = Field(default_factory=dict)
    on: list[Event] = Field(default_factory=lambda: [RAISED, CLEARED, ESCALATED])

    @model_validator(mode="after")
    def _url(self) -> WebhookActionSpec:
        if not self.webhook.startswith(("http://", "https://")):
            raise ValueError("webhook: an http:// or https:// URL")
        return self


def _action_tag(data: Any) -> str | None:
    for key in ("command", "maintenance", "publish", "webhook"):
        if (isinstance(data, dict) and key in data) or hasattr(data, key):
            return key
    return None


Action = Annotated[
    Annotated[CommandActionSpec, Tag("command")]
    | Annotated[MaintenanceActionSpec, Tag("maintenance")]
    | Annotated[PublishActionSpec, Tag("publish")]
    | Annotated[WebhookActionSpec, Tag("webhook")],
    Discriminator(
        _action_tag,
        custom_error_type="action",
        custom_error_message="an action needs one of: command, maintenance, publish, webhook",
    ),
]


class Rule(_Model):
    id: str = Field(pattern=_ID, description="unique within the rule set")
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    severity: Severity = Severity.MINOR
    scope: Scope = Field(default_factory=Scope)
    when: Condition
    clear: Condition | None = Field(None, description="hysteresis: what clears the alert")
    escalate_after: Duration | None = Field(None, description="unacknowledged this long")
    auto_close: bool = Field(False, description="close the alert when it clears")
    actions: list[Action] = Field(default_factory=list)
    enabled: bool = True

    @model_validator(mode="after")
    def _names(self) -> Rule:
        problems = [
            f"{where}: {problem}"
            for where, condition in (("when", self.when), ("clear", self.clear))
            if condition is not None
            for problem in _name_problems(condition, self.scope.kind)
        ]
        if problems:  # all of them: one run of `pharos rules check` shows every one
            raise ValueError("; ".join(problems))
        return self


class RuleFile(_Model):
    version: Literal[1] = 1
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RuleFile:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} appears twice")
            seen.add(rule.id)
        return self


def _known_metric(name: str, kind: DeviceKind | None) -> bool:
    kinds = [kind] if kind is not None else list(DeviceKind)
    return any(kind_spec(k).metric(name) is not None for k in kinds)


def _name_problems(condition: object, kind: DeviceKind | None) -> Iterator[str]:
    if isinstance(condition, AllCondition | AnyCondition):
        for child in condition.all if isinstance(condition, AllCondition) else condition.any:
            yield from _name_problems(child, kind)
        return
    for attr in ("value", "rate", "aggregate", "flag"):
        name = getattr(condition, attr, None)
        if isinstance(name, str):
            derived: frozenset[str] = frozenset()
            if attr in ("flag", "value"):
                derived = DERIVED_FLAGS if attr == "flag" else DERIVED_NUMBERS
            if name not in derived and not _known_metric(name, kind):
                where = f"kind {kind.value}" if kind is not None else "any kind"
                yield f"{attr}: unknown metric or derived value {name!r} for {where}"


# -- loading with line numbers ---------------------------------------------------------------


RuleIssue = FileProblem  # one problem: line, field, reason (and file, when gathered)


class RuleFileError(FileError):
    """A rule file that cannot be used; ``issues`` name line, field and reason."""

    @property
    def issues(self) -> list[FileProblem]:
        return self.problems


def _data_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` without the union tags pydantic inserts after each condition or action."""
    path: list[Any] = []
    skip_next = False
    for part in loc:
        if skip_next:
            skip_next = False
            if isinstance(part, str) and part in _TAG_NAMES:
                continue
        path.append(part)
        parent = path[-2] if len(path) > 1 else None
        union_key = part in ("when", "clear")
        union_item = isinstance(part, int) and parent in ("all", "any", "actions")
        skip_next = union_key or union_item
    return tuple(path)


_TAG_NAMES = frozenset({*_KEYS, "command", "maintenance", "publish", "webhook"})


def _duplicate_ids(data: dict[str, Any], lines: LineMap) -> list[RuleIssue]:
    """Rule ids given twice, found on the document itself: ``RuleFile``'s own check runs
    only once every rule is valid, which would hide them until a second run."""
    rules = data.get("rules")
    if not isinstance(rules, list):
        return []
    first: dict[str, int] = {}
    issues = []
    for index, rule in enumerate(rules):
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        if not isinstance(rule_id, str):
            continue
        if rule_id in first:
            path = ("rules", index, "id")
            reason = f"rule id {rule_id!r} appears twice (first as rules[{first[rule_id]}])"
            issues.append(RuleIssue(line_for(path, lines), field_name(path), reason))
        else:
            first[rule_id] = index
    return issues


def parse_rule_text(text: str, source: str = "<rules>") -> RuleFile:
    """Validate rule YAML; ``RuleFileError`` (every problem, with lines) when it is wrong."""
    bounds = yaml_limit_problems(text)  # before the loader: aliases, depth, size, tags
    if bounds:
        raise RuleFileError(source, [RuleIssue(b.line, b.field, b.reason) for b in bounds])
    try:
        data, lines = yaml_with_lines(text, source)
    except FileError as exc:
        raise RuleFileError(source, exc.problems) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RuleFileError(source, [RuleIssue(1, "file", "expected a mapping with `rules:`")])
    duplicates = _duplicate_ids(data, lines)
    try:
        parsed = RuleFile.model_validate(data)
    except ValidationError as exc:
        issues = validation_problems(exc, lines, data_path=_data_path)
        issues = [i for i in issues if "appears twice" not in i.reason]  # told below, at its line
        raise RuleFileError(source, issues + duplicates) from None
    if duplicates:
        raise RuleFileError(source, duplicates)
    return parsed


def load_rule_file(path: Path) -> RuleFile:
    """Read and validate one rule file (blocking)."""
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            reason = f"{path.stat().st_size} bytes; at most {MAX_YAML_BYTES} are read"
            raise RuleFileError(str(path), [RuleIssue(None, "file", reason)])
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleFileError(str(path), [RuleIssue(None, "file", str(exc))]) from None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte {exc.start})"
        raise RuleFileError(str(path), [RuleIssue(None, "file", reason)]) from None
    return parse_rule_text(text, str(path))


def load_rule_files(paths: list[Path]) -> list[Rule]:
    """Every rule of ``paths``; ids must be unique across files. All problems at once."""
    rules: list[Rule] = []
    errors: list[RuleFileError] = []
    seen: dict[str, str] = {}
    for path in paths:
        try:
            loaded = load_rule_file(path)
        except RuleFileError as exc:
            errors.append(exc)
            continue
        for index, rule in enumerate(loaded.rules):
            if rule.id in seen:
                reason = f"{rule.id!r} also in {seen[rule.id]}"
                issue = RuleIssue(None, f"rules[{index}].id", reason)
                errors.append(RuleFileError(str(path), [issue]))
            seen[rule.id] = str(path)
            rules.append(rule)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise RuleFileError(
            ", ".join(e.source for e in errors), [i for e in errors for i in _sourced(e)]
        )
    return rules


def _sourced(error: RuleFileError) -> list[RuleIssue]:
    # Keep each issue's own file when several files' errors are gathered.
    return [RuleIssue(i.line, i.field, i.reason, i.source or error.source) for i in error.problems]
