"""The reported side of each device's twin: online/offline, last seen, last values, state.

Ingest feeds ``DeviceTwinStore`` with every status message, retained state and batch
of points. Thousands of readings a second must not become thousands of transactions,
so updates are coalesced per device in memory (the newest per device and metric; the
pending set is bounded by the fleet's size, and a large one wakes the flusher early)
and written once a second by the store's own task. The first reading seen from a
device ticks its commissioning checklist, once, through the registry (actor
``telemetry``), so the tick is audited like every other registry change.

Run it as ``async with DeviceTwinStore(sessions) as twin:``; on exit the last updates
are flushed. ``get`` reads the database (after flushing this store's pending updates).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.db import transaction
from devices.registry.models import Commissioning, Device
from devices.registry.service import registry_session
from devices.wire import DeviceState, DeviceStatus
from pharos_core.lifecycle import ServiceTasks
from telemetry.models import DeviceStatusRow
from telemetry.points import SEQ_FIELD, TS_REPLACED_FIELD, FieldValue, Point

log = logging.getLogger(__name__)

ACTOR = "telemetry"
# Bookkeeping fields Pharos adds to points; they are not the device's metrics.
_NOT_METRICS = frozenset({SEQ_FIELD, TS_REPLACED_FIELD})
_CHUNK = 500  # device ids per IN (...) list: well under every database's parameter limit


class MetricValue(BaseModel):
    model_config = ConfigDict(frozen=True)

    value: float | bool
    at: datetime


class TwinPublic(BaseModel):
    """What the device last told us about itself."""

    model_config = ConfigDict(frozen=True)

    device_id: str
    online: bool | None = Field(None, description="None until the device reported a status")
    status_changed_at: datetime | None = Field(None, description="since when online/offline")
    last_seen_at: datetime | None = Field(None, description="time of its newest reading")
    last_values: dict[str, MetricValue] = Field(default_factory=dict)
    reported_state: dict[str, Any] | None = None
    reported_at: datetime | None = None


@dataclass(slots=True)
class _Seen:
    last_seen_at: datetime
    values: dict[str, tuple[float | bool, datetime]] = field(default_factory=dict)

    def add(self, name: str, value: float | bool, at: datetime) -> None:
        known = self.values.get(name)
        if known is None or at >= known[1]:
            self.values[name] = (value, at)


@dataclass(slots=True)
class _Pending:
    status: dict[str, tuple[bool, datetime]] = field(default_factory=dict)
    state: dict[str, tuple[dict[str, Any], datetime]] = field(default_factory=dict)
    seen: dict[str, _Seen] = field(default_factory=dict)
    first_reading: dict[str, datetime] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.status) + len(self.state) + len(self.seen) + len(self.first_reading)

    def put_status(self, device_id: str, online: bool, at: datetime) -> None:
        known = self.status.get(device_id)
        if known is None or at >= known[1]:
            self.status[device_id] = (online, at)

    def put_state(self, device_id: str, state: dict[str, Any], at: datetime) -> None:
        known = self.state.get(device_id)
        if known is None or at >= known[1]:
            self.state[device_id] = (state, at)

    def put_seen(self, device_id: str, seen: _Seen) -> None:
        mine = self.seen.get(device_id)
        if mine is None:
            self.seen[device_id] = _Seen(seen.last_seen_at, dict(seen.values))
            return
        mine.last_seen_at = max(mine.last_seen_at, seen.last_seen_at)
        for name, (value, at) in seen.values.items():
            mine.add(name, value, at)

    def put_first(self, device_id: str, at: datetime) -> None:
        known = self.first_reading.get(device_id)
        self.first_reading[device_id] = at if known is None else min(known, at)

    def merge(self, older: _Pending) -> None:
        """Take back a batch that failed to flush; what arrived since stays newer."""
        for device_id, (online, at) in older.status.items():
            self.put_status(device_id, online, at)
        for device_id, (state, at) in older.state.items():
            self.put_state(device_id, state, at)
        for device_id, seen in older.seen.items():
            self.put_seen(device_id, seen)
        for device_id, at in older.first_reading.items():
            self.put_first(device_id, at)


class DeviceTwinStore:
    """Coalescing writer (and reader) of the ``device_status`` table."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        flush_interval_s: float = 1.0,
        flush_at: int = 5_000,
    ) -> None:
        """``flush_at``: pending updates that wake the flusher before its interval."""
        self._sessions = sessions
        self._interval = flush_interval_s
        self._flush_at = flush_at
        self._pending = _Pending()
        self._commissioned: set[str] = set()  # first reading known ticked; at most the fleet
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks = ServiceTasks(self._stopping, self._wake)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._tasks.start(("device-twin-flush", self._run()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._tasks.stop(exc_type, exc, tb)
        finally:
            if exc is None:
                await self.flush()
            else:  # leaving on an error: try to keep the updates, never hide that error
                try:
                    await self.flush()
                except Exception:
                    log.exception("device twin: final flush failed")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                return  # __aexit__ flushes
            try:
                await self.flush()
            except Exception:
                # The batch went back to pending; the next round retries it. Waiting
                # out the interval keeps a dead database from turning into a busy loop.
                log.exception("device twin: flush failed; retrying in %.1f s", self._interval)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._stopping.wait()

    # -- recording ----------------------------------------------------------------------

    async def record_status(self, device_id: str, status: DeviceStatus, at: datetime) -> None:
        self._pending.put_status(device_id, status == DeviceStatus.ONLINE, at)
        self._maybe_wake()

    async def record_state(self, device_id: str, state: DeviceState, at: datetime) -> None:
        reported = state.model_dump(mode="json", exclude_none=True)
        self._pending.put_state(device_id, reported, at)
        self._maybe_wake()

    async def record_points(self, points: Sequence[Point]) -> None:
        pending = self._pending
        commissioned = self._commissioned
        for point in points:
            # Straight into the pending update (this runs for every reading).
            device_id = point.tags["device_id"]
            at = point.time
            seen = pending.seen.get(device_id)
            if seen is None:
                seen = pending.seen[device_id] = _Seen(at)
            elif at > seen.last_seen_at:
                seen.last_seen_at = at
            values = seen.values
            for name, value in point.fields.items():
                if name not in _NOT_METRICS:
                    known = values.get(name)
                    if known is None or at >= known[1]:
                        values[name] = (_json_value(value), at)
            if device_id not in commissioned:
                pending.put_first(device_id, at)
        self._maybe_wake()

    def _maybe_wake(self) -> None:
        if len(self._pending) >= self._flush_at:
            self._wake.set()

    # -- flushing and reading -----------------------------------------------------------

    async def flush(self) -> None:
        """Write every pending update now (tests; the flusher's task calls it too)."""
        async with self._flush_lock:
            batch, self._pending = self._pending, _Pending()
            if not len(batch):
                return
            # The worker thread cannot be cancelled: if this task is, wait for the
            # thread's outcome, so the batch is neither lost nor written twice.
            work = asyncio.ensure_future(asyncio.to_thread(self._write_batch, batch))
            try:
                ticked = await asyncio.shield(work)
            except asyncio.CancelledError:
                try:
                    ticked = await work
                except Exception:
                    self._requeue(batch)
                else:
                    self._commissioned |= ticked
                raise
            except BaseException:
                self._requeue(batch)
                raise
            self._commissioned |= ticked

    def _requeue(self, batch: _Pending) -> None:
        batch.merge(self._pending)
        self._pending = batch

    def _write_batch(self, batch: _Pending) -> set[str]:
        self._write(batch)
        return self._tick_first_readings(batch.first_reading)

    async def get(self, device_id: str) -> TwinPublic:
        """The device's twin, with this store's pending updates in it."""
        await self.flush()
        return await read_twin(self._sessions, device_id)

    def _write(self, batch: _Pending) -> None:
        ids = sorted(set(batch.status) | set(batch.state) | set(batch.seen))
        if not ids:
            return
        with transaction(self._sessions) as session:
            ids = sorted(set(ids) - _write_seen_only(session, batch))
            if not ids:
                return
            # A device deleted meanwhile is skipped rather than failing the whole batch.
            live = set(session.scalars(select(Device.id).where(Device.id.in_(ids))))
            rows = {
                row.device_id: row
                for row in session.scalars(
                    select(DeviceStatusRow).where(DeviceStatusRow.device_id.in_(live))
                )
            }
            for device_id in sorted(live):
                row = rows.get(device_id)
                if row is None:
                    row = DeviceStatusRow(device_id=device_id)
                    session.add(row)
                if device_id in batch.status:
                    _apply_status(row, *batch.status[device_id])
                if device_id in batch.state:
                    _apply_state(row, *batch.state[device_id])
                if device_id in batch.seen:
                    _apply_seen(row, batch.seen[device_id])

    def _tick_first_readings(self, first: dict[str, datetime]) -> set[str]:
        """Tick 'first telemetry' where not yet ticked; the devices now known ticked."""
        if not first:
            return set()
        with self._sessions() as session:
            query = select(Commissioning.device_id, Commissioning.first_telemetry_at).where(
                Commissioning.device_id.in_(sorted(first))
            )
            known = {device_id: at for device_id, at in session.execute(query)}
        todo = sorted(device_id for device_id, at in known.items() if at is None)
        if todo:
            with registry_session(self._sessions, ACTOR) as registry:
                for device_id in todo:
                    registry.record_first_telemetry(device_id, first[device_id])
        return set(known)


def _json_value(value: FieldValue) -> float | bool:
    return value if isinstance(value, bool) else float(value)


def _apply_status(row: DeviceStatusRow, online: bool, at: datetime) -> None:
    if row.status_changed_at is not None and at < row.status_changed_at:
        return  # older than what we know (a late redelivery)
    if row.online is not online:
        row.online = online
        row.status_changed_at = at


def _apply_state(row: DeviceStatusRow, state: dict[str, Any], at: datetime) -> None:
    if row.reported_at is None or at >= row.reported_at:
        row.reported_state = state
        row.reported_at = at


def _apply_seen(row: DeviceStatusRow, seen: _Seen) -> None:
    row.last_seen_at, row.last_values = _merged_seen(row.last_seen_at, row.last_values, seen)


def _merged_seen(
    last_seen_at: datetime | None, last_values: dict[str, Any] | None, seen: _Seen
) -> tuple[datetime, dict[str, Any]]:
    """The row's last seen and last values with ``seen`` applied (newest wins)."""
    if last_seen_at is None or seen.last_seen_at > last_seen_at:
        last_seen_at = seen.last_seen_at
    values = dict(last_values or {})  # a new dict, so the JSON column sees the change
    for name, (value, at) in seen.values.items():
        known = values.get(name)
        if known is None or at >= datetime.fromisoformat(known["at"]):
            values[name] = {"value": value, "at": at.astimezone(UTC).isoformat()}
    return last_seen_at, values


def _write_seen_only(session: Session, batch: _Pending) -> set[str]:
    """Readings of devices that have a status row and nothing else new, in bulk.

    The common flush (every device's last values, each second) as one read and one
    executemany UPDATE per chunk instead of the ORM's unit of work per row: at tens of
    thousands of devices the ORM would cost more than the rest of ingest. A device
    whose row is missing (its first reading) or that also has a status or state goes
    the ORM way. The devices written here are returned.
    """
    row = DeviceStatusRow
    candidates = sorted(d for d in batch.seen if d not in batch.status and d not in batch.state)
    written: set[str] = set()
    for start in range(0, len(candidates), _CHUNK):
        chunk = candidates[start : start + _CHUNK]
        current = session.execute(
            select(row.device_id, row.last_seen_at, row.last_values).where(row.device_id.in_(chunk))
        ).all()
        updates = []
        for device_id, last_seen_at, last_values in current:
            seen_at, values = _merged_seen(last_seen_at, last_values, batch.seen[device_id])
            updates.append({"device_id": device_id, "last_seen_at": seen_at, "last_values": values})
        if updates:
            # ORM bulk UPDATE by primary key: one executemany, no unit of work.
            session.execute(update(row), updates)
            written.update(u["device_id"] for u in updates)
    return written


async def read_twin(sessions: sessionmaker[Session], device_id: str) -> TwinPublic:
    """The stored twin of ``device_id``; all empty if it never reported anything."""
    return await asyncio.to_thread(_read_twin, sessions, device_id)


def _read_twin(sessions: sessionmaker[Session], device_id: str) -> TwinPublic:
    with sessions() as session:
        row = session.get(DeviceStatusRow, device_id)
        if row is None:
            return TwinPublic(device_id=device_id)
        return TwinPublic(
            device_id=device_id,
            online=row.online,
            status_changed_at=row.status_changed_at,
            last_seen_at=row.last_seen_at,
            last_values={
                name: MetricValue.model_validate(entry)
                for name, entry in sorted((row.last_values or {}).items())
            },
            reported_state=row.reported_state,
            reported_at=row.reported_at,
        )
