"""Each lamp's desired state (what commands and the schedule asked) and reported state
(its retained ``state`` message), and the drift between them.

Bulk upserts that work the same on SQLite and PostgreSQL: read which rows exist,
insert the others, update the rest by primary key.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from control.models import LampStateRow

# A reported level within this of the desired one is no drift (controllers round).
LEVEL_TOLERANCE = 1.0


def upsert_lamp_state(session: Session, values: Mapping[str, Mapping[str, Any]]) -> None:
    """Set columns per device id, creating rows that do not exist yet (one statement per
    set of columns, ``INSERT ... ON CONFLICT DO UPDATE`` on SQLite and PostgreSQL alike,
    so the command service and the scheduler may write the same lamp at once)."""
    by_columns: dict[frozenset[str], list[dict[str, Any]]] = {}
    for device_id, columns in values.items():
        row = {**columns, "device_id": device_id}
        by_columns.setdefault(frozenset(row), []).append(row)
    dialect = session.get_bind().dialect.name
    make_insert = pg_insert if dialect == "postgresql" else sqlite_insert
    for names, rows in by_columns.items():
        statement = make_insert(LampStateRow).values(corrections=0)
        updates = {c: statement.excluded[c] for c in names if c != "device_id"}
        session.execute(
            statement.on_conflict_do_update(index_elements=["device_id"], set_=updates), rows
        )


def set_desired(
    session: Session,
    device_ids: list[str],
    at: datetime,
    *,
    level: float | None = None,
    program_id: str | None = None,
) -> None:
    values: dict[str, Any] = {"desired_at": at}
    if level is not None:
        values["desired_level"] = level
    if program_id is not None:
        values["desired_program_id"] = program_id
    upsert_lamp_state(session, {device_id: values for device_id in device_ids})


class LampStatePublic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str
    desired_level: float | None = Field(description="what commands or the program asked")
    desired_program_id: str | None
    reported_level: float | None = Field(description="from the lamp's retained state")
    reported_power: str | None
    reported_program_id: str | None
    reported_at: datetime | None
    drifting: bool = Field(description="reported differs from desired")
    drift_since: datetime | None
    corrections: int = Field(description="commands sent to bring it back")


def is_drifting(row: LampStateRow) -> bool:
    if row.desired_level is not None and row.reported_level is not None:
        reported = row.reported_level if row.reported_power != "off" else 0.0
        if abs(reported - row.desired_level) > LEVEL_TOLERANCE:
            return True
    return (
        row.desired_program_id is not None
        and row.reported_program_id is not None
        and row.desired_program_id != row.reported_program_id
    )


def lamp_state_public(row: LampStateRow) -> LampStatePublic:
    return LampStatePublic(
        device_id=row.device_id,
        desired_level=row.desired_level,
        desired_program_id=row.desired_program_id,
        reported_level=row.reported_level,
        reported_power=row.reported_power,
        reported_program_id=row.reported_program_id,
        reported_at=row.reported_at,
        drifting=is_drifting(row),
        drift_since=row.drift_since,
        corrections=row.corrections,
    )


def list_lamp_states(session: Session, *, drifting_only: bool = False) -> list[LampStatePublic]:
    rows = session.scalars(select(LampStateRow).order_by(LampStateRow.device_id))
    states = [lamp_state_public(r) for r in rows]
    return [s for s in states if s.drifting] if drifting_only else states
