"""The alert lifecycle on SQLite and PostgreSQL, and migration 0005 against the models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

import rules.models
from devices.registry.db import Base
from rules.alerts import AlertFilter, AlertState, AlertStateError, AlertStore
from rules.derived import DeviceFacts
from rules.engine import Transition
from rules.spec import Severity, parse_rule_text

T0 = datetime(2026, 10, 22, 11, 0, tzinfo=UTC)
RULE = parse_rule_text(
    "rules:\n  - {id: bd2, name: BĐ II, severity: major, escalate_after: 15m,"
    " when: {value: flood_level, above: 1.5}}\n"
).rules[0]
GAUGE = DeviceFacts("gauge-nk-1", "flood_gauge", "Ninh Kiều")


def transition(kind: str, minutes: float, value: float = 2.0) -> Transition:
    return Transition(kind, RULE, GAUGE, T0 + timedelta(minutes=minutes), value, f"{kind} {value}")  # type: ignore[arg-type]


def test_migration_0005_builds_the_tables_the_models_declare(engine: Engine) -> None:
    ours = {t for t in Base.metadata.tables if t.startswith("rule_")}
    assert ours == {"rule_alerts", "rule_alert_events", "rule_work_items"}
    assert rules.models.AlertRow.__tablename__ == "rule_alerts"
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    mine = [d for d in diff if "rule_" in repr(d)]
    assert mine == []


def test_one_alert_per_rule_and_device_with_repeats_counted(
    sessions: sessionmaker[Session],
) -> None:
    store = AlertStore(sessions)
    first = store.record_raise(transition("raised", 0))
    assert first.event == "raised" and first.alert.state is AlertState.OPEN
    again = store.record_raise(transition("raised", 5, 2.1))
    assert again.event == "repeated"
    assert again.alert.id == first.alert.id and again.alert.repeats == 1
    cleared = store.record_clear(transition("cleared", 10), auto_close=False)
    assert cleared is not None and cleared.alert.state is AlertState.CLEARED
    assert store.record_clear(transition("cleared", 11), auto_close=False) is None
    reopened = store.record_raise(transition("raised", 20))
    assert reopened.alert.id == first.alert.id
    assert reopened.alert.state is AlertState.OPEN and reopened.alert.repeats == 2
    items, total = store.list(AlertFilter())
    assert total == 1 and items[0].id == first.alert.id


def test_lifecycle_acknowledge_comment_close_and_history(sessions: sessionmaker[Session]) -> None:
    store = AlertStore(sessions)
    alert = store.record_raise(transition("raised", 0)).alert
    acked = store.acknowledge(alert.id, "op-an", T0 + timedelta(minutes=2), "on it")
    assert acked.alert.state is AlertState.ACKNOWLEDGED and acked.alert.acknowledged_by == "op-an"
    with pytest.raises(AlertStateError, match="acknowledged by op-an"):
        store.acknowledge(alert.id, "op-binh", T0 + timedelta(minutes=3))
    store.comment(alert.id, "op-an", T0 + timedelta(minutes=4), "sandbags at the wharf")
    store.record_clear(transition("cleared", 30), auto_close=False)
    closed = store.close(alert.id, "op-an", T0 + timedelta(minutes=40), "water down")
    assert closed.alert.state is AlertState.CLOSED
    with pytest.raises(AlertStateError, match="already closed"):
        store.close(alert.id, "op-an", T0 + timedelta(minutes=41))
    detail = store.get(alert.id)
    assert [e.event for e in detail.events] == [
        "raised",
        "acknowledged",
        "commented",
        "cleared",
        "closed",
    ]
    assert detail.events[2].text == "sandbags at the wharf"
    # After closing, a new raise is a new alert.
    fresh = store.record_raise(transition("raised", 60))
    assert fresh.event == "raised" and fresh.alert.id != alert.id
    assert store.list(AlertFilter(live=True))[1] == 1
    assert store.list(AlertFilter(state=AlertState.CLOSED))[1] == 1


def test_escalation_once_when_not_acknowledged_in_time(sessions: sessionmaker[Session]) -> None:
    store = AlertStore(sessions)
    alert = store.record_raise(transition("raised", 0)).alert
    rules = {RULE.id: RULE}
    assert store.escalate_due(T0 + timedelta(minutes=14), rules) == []
    changes = store.escalate_due(T0 + timedelta(minutes=15), rules)
    assert [c.alert.id for c in changes] == [alert.id]
    assert changes[0].alert.severity is Severity.CRITICAL
    assert store.escalate_due(T0 + timedelta(minutes=60), rules) == []
    assert store.open_counts() == {("critical", "Ninh Kiều"): 1}
    assert store.live_pairs() == {("bd2", "gauge-nk-1")}


def test_auto_close_and_work_items(sessions: sessionmaker[Session]) -> None:
    store = AlertStore(sessions)
    alert = store.record_raise(transition("raised", 0)).alert
    change = store.record_clear(transition("cleared", 5), auto_close=True)
    assert change is not None and change.event == "closed"
    first = store.add_work_item("lamp-1", alert.id, "replace the driver", T0)
    assert store.add_work_item("lamp-1", None, "again", T0) == first  # one open item
    assert [w.text for w in store.work_items("lamp-1")] == ["replace the driver"]
