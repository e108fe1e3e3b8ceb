"""The alert lifecycle and its store: open → acknowledged → cleared → closed.

``AlertStore`` keeps alerts in the registry database (``rules.models``); every method
is one transaction, run in a worker thread by the async wrappers. Rules of the life:

- at most one alert per rule and device is not closed: raising again bumps ``repeats``
  (and a cleared one opens again), never a second row;
- ``acknowledge`` (operator) on an unacknowledged alert; ``clear`` when the rule's
  clear condition holds (``auto_close`` closes it at once); ``close`` (operator) ends
  it for good: the next raise is a new alert;
- ``escalate_due``: open and unacknowledged for the rule's ``escalate_after`` → one
  severity up, once;
- comments and every change are events with who and when (the history).

Each change returns an ``AlertChange`` (the event and the alert after it), which the
service publishes on ``pharos/v1/alerts``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.db import transaction
from rules.engine import Transition
from rules.models import AlertEventRow, AlertRow, WorkItemRow
from rules.spec import Rule, Severity

SYSTEM = "rules"


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"
    CLOSED = "closed"


LIVE_STATES = (AlertState.OPEN.value, AlertState.ACKNOWLEDGED.value)
EventKind = Literal[
    "raised", "repeated", "acknowledged", "commented", "cleared", "escalated", "closed"
]


class AlertNotFoundError(LookupError):
    pass


class AlertStateError(ValueError):
    """A lifecycle step the alert's state does not allow; the message says why."""


class AlertPublic(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    rule_id: str
    rule_name: str
    device_id: str
    kind: str | None
    district: str | None
    severity: Severity
    state: AlertState
    message: str
    value: float | None = Field(description="the value that raised it (last raise)")
    repeats: int = Field(description="raises after the first, while not closed")
    escalations: int
    raised_at: datetime
    last_raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None
    escalated_at: datetime | None
    closed_at: datetime | None
    closed_by: str | None


class AlertEventPublic(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    at: datetime
    event: str
    actor: str | None
    text: str | None
    value: float | None


class AlertDetail(AlertPublic):
    events: list[AlertEventPublic] = Field(description="the history, oldest first")


class AlertNote(BaseModel):
    """Body of acknowledge and close: an optional note kept in the history."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=2000, description="kept in the alert's history")


class AlertCommentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=4000, description="the comment")


class WorkItemPublic(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    device_id: str
    alert_id: int | None
    created_at: datetime
    text: str
    state: str


@dataclass(frozen=True, slots=True)
class AlertChange:
    event: EventKind
    alert: AlertPublic
    actor: str | None = None
    text: str | None = None

    def message(self) -> dict[str, object]:
        """What goes on ``pharos/v1/alerts`` (JSON-ready)."""
        return {
            "event": self.event,
            "actor": self.actor,
            "text": self.text,
            "alert": self.alert.model_dump(mode="json"),
        }


@dataclass(frozen=True, slots=True)
class AlertTally:
    """Counts an operator can check against the alert list (``AlertStore.tally``)."""

    live: int  # open or acknowledged now
    raised: int  # new alerts (one per alert, however often its condition recurs)
    repeats: int  # a live alert's condition seen again (the alert's ``repeats``)
    cleared: int


@dataclass(frozen=True, slots=True)
class AlertFilter:
    state: AlertState | None = None
    live: bool = False  # open or acknowledged
    severity: Severity | None = None
    rule_id: str | None = None
    device_id: str | None = None
    district: str | None = None
    since: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.state is not None:
            found.append(AlertRow.state == self.state.value)
        if self.live:
            found.append(AlertRow.state.in_(LIVE_STATES))
        if self.severity is not None:
            found.append(AlertRow.severity == self.severity.value)
        for column, value in (
            (AlertRow.rule_id, self.rule_id),
            (AlertRow.device_id, self.device_id),
            (AlertRow.district, self.district),
        ):
            if value is not None:
                found.append(column == value)
        if self.since is not None:
            found.append(AlertRow.raised_at >= self.since)
        return found


def _public(row: AlertRow) -> AlertPublic:
    return AlertPublic.model_validate(row)


def _event(
    session: Session,
    row: AlertRow,
    event: EventKind,
    at: datetime,
    actor: str | None = None,
    text: str | None = None,
    value: float | None = None,
) -> None:
    session.add(
        AlertEventRow(alert_id=row.id, at=at, event=event, actor=actor, text=text, value=value)
    )


class AlertStore:
    """Alerts in the registry database (SQLite or PostgreSQL); see the module docstring."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    # -- from the engine -------------------------------------------------------------------

    def record_raise(self, transition: Transition) -> AlertChange:
        with transaction(self._sessions) as session:
            row = self._live_row(session, transition.rule.id, transition.device.device_id)
            at = transition.at
            if row is None:
                row = AlertRow(
                    rule_id=transition.rule.id,
                    rule_name=transition.rule.name,
                    device_id=transition.device.device_id,
                    kind=transition.device.kind,
                    district=transition.device.district,
                    severity=transition.rule.severity.value,
                    state=AlertState.OPEN.value,
                    message=transition.message,
                    value=transition.value,
                    repeats=0,
                    escalations=0,
                    raised_at=at,
                    last_raised_at=at,
                )
                session.add(row)
                session.flush()
                event: EventKind = "raised"
            else:
                row.repeats += 1
                row.last_raised_at = at
                row.message = transition.message
                row.value = transition.value
                if row.state == AlertState.CLEARED.value:
                    row.state = (
                        AlertState.ACKNOWLEDGED.value
                        if row.acknowledged_at is not None
                        else AlertState.OPEN.value
                    )
                    row.cleared_at = None
                event = "repeated"
            _event(session, row, event, at, SYSTEM, transition.message, transition.value)
            session.flush()
            return AlertChange(event, _public(row), SYSTEM, transition.message)

    def record_clear(self, transition: Transition, *, auto_close: bool) -> AlertChange | None:
        with transaction(self._sessions) as session:
            row = self._live_row(session, transition.rule.id, transition.device.device_id)
            if row is None or row.state == AlertState.CLEARED.value:
                return None
            row.state = AlertState.CLEARED.value
            row.cleared_at = transition.at
            _event(session, row, "cleared", transition.at, SYSTEM, transition.message)
            event: EventKind = "cleared"
            if auto_close:
                row.state = AlertState.CLOSED.value
                row.closed_at = transition.at
                row.closed_by = SYSTEM
                _event(session, row, "closed", transition.at, SYSTEM, "auto_close")
                event = "closed"
            session.flush()
            return AlertChange(event, _public(row), SYSTEM, transition.message)

    def escalate_due(self, now: datetime, rules: Mapping[str, Rule]) -> list[AlertChange]:
        """Open, unacknowledged alerts past their rule's ``escalate_after``: one step up."""
        changes: list[AlertChange] = []
        with transaction(self._sessions) as session:
            query = select(AlertRow).where(
                AlertRow.state == AlertState.OPEN.value, AlertRow.escalations == 0
            )
            for row in session.scalars(query):
                rule = rules.get(row.rule_id)
                if rule is None or rule.escalate_after is None:
                    continue
                if (now - row.raised_at).total_seconds() < rule.escalate_after:
                    continue
                before = row.severity
                row.severity = Severity(row.severity).escalated().value
                row.escalations += 1
                row.escalated_at = now
                text = (
                    f"not acknowledged within {rule.escalate_after:g} s: {before} → {row.severity}"
                )
                _event(session, row, "escalated", now, SYSTEM, text)
                session.flush()
                changes.append(AlertChange("escalated", _public(row), SYSTEM, text))
        return changes

    def live_pairs(self) -> set[tuple[str, str]]:
        """(rule, device) of alerts open or acknowledged: the engine's raised state."""
        with self._sessions() as session:
            query = select(AlertRow.rule_id, AlertRow.device_id).where(
                AlertRow.state.in_(LIVE_STATES)
            )
            return {(r, d) for r, d in session.execute(query)}

    def open_counts(self) -> dict[tuple[str, str], int]:
        """Live alerts per (severity, district) (district "" when none)."""
        with self._sessions() as session:
            query = (
                select(AlertRow.severity, AlertRow.district, func.count())
                .where(AlertRow.state.in_(LIVE_STATES))
                .group_by(AlertRow.severity, AlertRow.district)
            )
            return {(s, d or ""): n for s, d, n in session.execute(query)}

    def last_event_id(self) -> int:
        """The newest event's id (0 when none): the mark ``tally`` counts from."""
        with self._sessions() as session:
            return session.scalar(select(func.max(AlertEventRow.id))) or 0

    def tally(self, after_event: int = 0) -> AlertTally:
        """Alerts live now, and what happened after event ``after_event``: new alerts
        raised (each once), repeats of raised ones, clears."""
        with self._sessions() as session:
            live = session.scalar(
                select(func.count()).select_from(AlertRow).where(AlertRow.state.in_(LIVE_STATES))
            )
            query = (
                select(AlertEventRow.event, func.count())
                .where(AlertEventRow.id > after_event)
                .group_by(AlertEventRow.event)
            )
            events: dict[str, int] = {e: n for e, n in session.execute(query).tuples()}
        return AlertTally(
            live=live or 0,
            raised=events.get("raised", 0),
            repeats=events.get("repeated", 0),
            cleared=events.get("cleared", 0),
        )

    def add_work_item(self, device_id: str, alert_id: int | None, text: str, at: datetime) -> int:
        with transaction(self._sessions) as session:
            open_item = session.scalar(
                select(WorkItemRow).where(
                    WorkItemRow.device_id == device_id, WorkItemRow.state == "open"
                )
            )
            if open_item is not None:
                return open_item.id
            item = WorkItemRow(
                device_id=device_id, alert_id=alert_id, created_at=at, text=text, state="open"
            )
            session.add(item)
            session.flush()
            return item.id

    def work_items(self, device_id: str | None = None) -> list[WorkItemPublic]:
        with self._sessions() as session:
            query = select(WorkItemRow).order_by(WorkItemRow.id)
            if device_id is not None:
                query = query.where(WorkItemRow.device_id == device_id)
            return [WorkItemPublic.model_validate(r) for r in session.scalars(query)]

    # -- from operators --------------------------------------------------------------------

    def acknowledge(
        self, alert_id: int, actor: str, at: datetime, note: str | None = None
    ) -> AlertChange:
        with transaction(self._sessions) as session:
            row = self._row(session, alert_id)
            if row.state == AlertState.CLOSED.value:
                raise AlertStateError(f"alert {alert_id} is closed")
            if row.acknowledged_at is not None:
                raise AlertStateError(
                    f"alert {alert_id} was acknowledged by {row.acknowledged_by} "
                    f"at {row.acknowledged_at.isoformat()}"
                )
            row.acknowledged_at = at
            row.acknowledged_by = actor
            if row.state == AlertState.OPEN.value:
                row.state = AlertState.ACKNOWLEDGED.value
            _event(session, row, "acknowledged", at, actor, note)
            session.flush()
            return AlertChange("acknowledged", _public(row), actor, note)

    def comment(self, alert_id: int, actor: str, at: datetime, text: str) -> AlertChange:
        with transaction(self._sessions) as session:
            row = self._row(session, alert_id)
            _event(session, row, "commented", at, actor, text)
            session.flush()
            return AlertChange("commented", _public(row), actor, text)

    def close(
        self, alert_id: int, actor: str, at: datetime, note: str | None = None
    ) -> AlertChange:
        with transaction(self._sessions) as session:
            row = self._row(session, alert_id)
            if row.state == AlertState.CLOSED.value:
                raise AlertStateError(f"alert {alert_id} is already closed")
            row.state = AlertState.CLOSED.value
            row.closed_at = at
            row.closed_by = actor
            _event(session, row, "closed", at, actor, note)
            session.flush()
            return AlertChange("closed", _public(row), actor, note)

    # -- reading ---------------------------------------------------------------------------

    def list(
        self, filters: AlertFilter, offset: int = 0, limit: int = 100
    ) -> tuple[list[AlertPublic], int]:
        """Newest first, and the total matching."""
        conditions = filters.conditions()
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(AlertRow).where(*conditions))
            query = (
                select(AlertRow)
                .where(*conditions)
                .order_by(AlertRow.raised_at.desc(), AlertRow.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [_public(r) for r in session.scalars(query)], int(total or 0)

    def get(self, alert_id: int) -> AlertDetail:
        with self._sessions() as session:
            row = self._row(session, alert_id)
            events = session.scalars(
                select(AlertEventRow)
                .where(AlertEventRow.alert_id == alert_id)
                .order_by(AlertEventRow.id)
            )
            return AlertDetail(
                **_public(row).model_dump(),
                events=[AlertEventPublic.model_validate(e) for e in events],
            )

    @staticmethod
    def _row(session: Session, alert_id: int) -> AlertRow:
        row = session.get(AlertRow, alert_id)
        if row is None:
            raise AlertNotFoundError(f"alert {alert_id} does not exist")
        return row

    @staticmethod
    def _live_row(session: Session, rule_id: str, device_id: str) -> AlertRow | None:
        return session.scalar(
            select(AlertRow)
            .where(
                AlertRow.rule_id == rule_id,
                AlertRow.device_id == device_id,
                AlertRow.state != AlertState.CLOSED.value,
            )
            .order_by(AlertRow.id.desc())
            .limit(1)
        )


class AsyncAlerts:
    """The store's calls from the event loop (each in a worker thread)."""

    def __init__(self, store: AlertStore) -> None:
        self.store = store

    async def record_raise(self, transition: Transition) -> AlertChange:
        return await asyncio.to_thread(self.store.record_raise, transition)

    async def record_clear(self, transition: Transition, auto_close: bool) -> AlertChange | None:
        return await asyncio.to_thread(self.store.record_clear, transition, auto_close=auto_close)

    async def escalate_due(self, now: datetime, rules: Mapping[str, Rule]) -> list[AlertChange]:
        return await asyncio.to_thread(self.store.escalate_due, now, rules)

    async def open_counts(self) -> dict[tuple[str, str], int]:
        return await asyncio.to_thread(self.store.open_counts)

    async def live_pairs(self) -> set[tuple[str, str]]:
        return await asyncio.to_thread(self.store.live_pairs)

    async def add_work_item(
        self, device_id: str, alert_id: int | None, text: str, at: datetime
    ) -> int:
        return await asyncio.to_thread(self.store.add_work_item, device_id, alert_id, text, at)
