"""The dead-letter store: input that could not be stored, kept with its reason.

``DeadLetterStore`` is the ``DeadLetterSink`` of ingest and the writer, and what the
API lists. A batch of letters is one transaction in a worker thread. Every letter gets
a reason class for counting: ``details["class"]`` when the producer set one, else
the reason up to its first ``:`` (the field a ``PayloadError`` names, for instance).
The payload is kept as bytes up to ``MAX_PAYLOAD_BYTES`` (4 KiB; a longer one is cut,
``payload_size`` keeps its length and ``details["payload_sha256"]`` the hash of all of
it), with a text preview; the reason is kept up to ``MAX_REASON_CHARS``.

Bounded storage: the store keeps the newest ``max_rows`` letters (100,000 by default,
so at most ~0.5 GB whatever arrives); older ones are deleted in steps after inserts,
and the number deleted is counted (``pruned``, and ``TelemetryMetrics``).

``DeadLetterLimiter`` stands in front of the store in ingest: a token bucket per device
(``burst`` letters, then ``per_s`` a second). A letter over the limit is not stored on
its own but counted for its device (per class); a summary letter of class
``rate_limited`` (how many, of which classes, from when to when) is stored when the
burst ends (the device's next admitted letter, or ``summary_every_s`` into a long
burst, or ``flush``), so nothing is dropped silently and no device can fill the disk or
hold the database's write lock.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.db import transaction
from telemetry.models import DeadLetterRow
from telemetry.points import DeadLetter

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 4096  # enough to see what went wrong; the hash identifies the rest
MAX_REASON_CHARS = 8000
MAX_ROWS = 100_000
PREVIEW_CHARS = 200
RATE_LIMITED = "rate_limited"
_CLASS_CHARS = 64
_DEVICE_ID_CHARS = 255
_TOPIC_CHARS = 1024


class DeadLetterPublic(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    received_at: datetime
    source: str = Field(description='"mqtt", "modbus" or "influx"')
    reason: str
    reason_class: str = Field(description="what the letters are counted by")
    device_id: str | None
    topic: str | None
    payload_size: int = Field(description="bytes received (the stored copy may be cut)")
    payload_preview: str = Field(description="the start of the payload as text")
    payload_base64: str = Field(description="the stored payload, base64")
    details: dict[str, Any] | None


def reason_class(letter: DeadLetter) -> str:
    """The class a letter is counted under (see the module docstring)."""
    explicit = letter.details.get("class")
    text = explicit if explicit else letter.reason.split(":", 1)[0]
    return text.strip()[:_CLASS_CHARS] or "unspecified"


def _text(value: str, limit: int | None = None) -> str:
    # PostgreSQL text cannot hold NUL, and bad input is exactly where NUL turns up.
    return value[:limit].replace("\x00", "\ufffd")


def _row(letter: DeadLetter) -> DeadLetterRow:
    payload = letter.payload
    preview = payload[: PREVIEW_CHARS * 4].decode("utf-8", "replace")
    details = {_text(k, 64): _text(v, 1000) for k, v in letter.details.items()}
    if len(payload) > MAX_PAYLOAD_BYTES:
        details["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    return DeadLetterRow(
        received_at=letter.received_at,
        source=_text(letter.source, 16),
        reason=_text(letter.reason, MAX_REASON_CHARS),
        reason_class=_text(reason_class(letter)),
        device_id=_text(letter.device_id, _DEVICE_ID_CHARS) if letter.device_id else None,
        topic=_text(letter.topic, _TOPIC_CHARS) if letter.topic else None,
        payload=payload[:MAX_PAYLOAD_BYTES],
        payload_size=len(payload),
        payload_preview=_text(preview, PREVIEW_CHARS),
        details=details or None,
    )


def _public(row: DeadLetterRow) -> DeadLetterPublic:
    return DeadLetterPublic(
        id=row.id,
        received_at=row.received_at,
        source=row.source,
        reason=row.reason,
        reason_class=row.reason_class,
        device_id=row.device_id,
        topic=row.topic,
        payload_size=row.payload_size,
        payload_preview=row.payload_preview,
        payload_base64=base64.b64encode(row.payload).decode("ascii"),
        details=row.details,
    )


def _conditions(device_id: str | None, source: str | None) -> list[ColumnElement[bool]]:
    conditions = []
    if device_id is not None:
        conditions.append(DeadLetterRow.device_id == device_id)
    if source is not None:
        conditions.append(DeadLetterRow.source == source)
    return conditions


# Named here: inside the class, ``list`` is the method.
DeadLetterPage = tuple[list[DeadLetterPublic], int]


class DeadLetterStore:
    """Dead letters in the registry database (SQLite or PostgreSQL)."""

    def __init__(self, sessions: sessionmaker[Session], max_rows: int = MAX_ROWS) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self._sessions = sessions
        self._max_rows = max_rows
        # Pruning is a range delete on the primary key, done once per ~1 % of the bound.
        self._prune_every = max(1, max_rows // 100)
        self._since_prune = max_rows  # prune on the first put: the table may be over
        self.pruned = 0  # letters deleted to keep the bound, since start

    async def put(self, letters: Sequence[DeadLetter]) -> None:
        if letters:
            rows = [_row(letter) for letter in letters]
            await asyncio.to_thread(self._insert, rows)
            self._since_prune += len(rows)
            if self._since_prune >= self._prune_every:
                self._since_prune = 0
                deleted = await asyncio.to_thread(self._prune)
                if deleted:
                    self.pruned += deleted
                    log.warning(
                        "dead letters: %d oldest deleted to keep the newest %d",
                        deleted,
                        self._max_rows,
                    )

    async def list(
        self,
        offset: int = 0,
        limit: int = 100,
        device_id: str | None = None,
        source: str | None = None,
    ) -> DeadLetterPage:
        """Newest first, and the total matching the filters."""
        return await asyncio.to_thread(self._list, offset, limit, device_id, source)

    async def counts(
        self, device_id: str | None = None, source: str | None = None
    ) -> dict[str, int]:
        """Letters per reason class, for the filters."""
        return await asyncio.to_thread(self._counts, device_id, source)

    def _insert(self, rows: Sequence[DeadLetterRow]) -> None:
        with transaction(self._sessions) as session:
            session.add_all(rows)

    def _prune(self) -> int:
        with transaction(self._sessions) as session:
            newest = session.scalar(select(func.max(DeadLetterRow.id)))
            if newest is None or newest <= self._max_rows:
                return 0
            floor = newest - self._max_rows  # ids grow: everything at or below goes
            result = session.execute(delete(DeadLetterRow).where(DeadLetterRow.id <= floor))
            return int(getattr(result, "rowcount", 0) or 0)

    def _list(
        self, offset: int, limit: int, device_id: str | None, source: str | None
    ) -> DeadLetterPage:
        with self._sessions() as session:
            query = select(DeadLetterRow).where(*_conditions(device_id, source))
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(
                query.order_by(DeadLetterRow.id.desc()).offset(offset).limit(limit)
            )
            return [_public(row) for row in rows], total

    def _counts(self, device_id: str | None, source: str | None) -> dict[str, int]:
        query = (
            select(DeadLetterRow.reason_class, func.count())
            .where(*_conditions(device_id, source))
            .group_by(DeadLetterRow.reason_class)
        )
        with self._sessions() as session:
            return {str(cls): int(n) for cls, n in session.execute(query)}


# -- the per-device rate limit --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimit:
    """How many dead letters a device may have stored one by one."""

    burst: int = 20
    per_s: float = 0.2  # one every 5 s after the burst
    summary_every_s: float = 60.0  # a long burst still shows up this often
    max_devices: int = 100_000  # buckets kept (the least recently used go, summarised)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: datetime
    suppressed: int = 0
    classes: Counter[str] = field(default_factory=Counter)
    first: datetime | None = None
    last: DeadLetter | None = None


class DeadLetterLimiter:
    """A token bucket per device in front of the dead-letter store (module docstring).

    Letters without a device (a topic outside the contract) share one bucket. Time is
    the letters' own ``received_at``, so the limiter has no clock of its own.
    """

    def __init__(self, limit: RateLimit | None = None) -> None:
        self.limit = limit or RateLimit()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._suppressing: dict[str, _Bucket] = {}
        self.suppressed = 0  # letters counted instead of stored, since start
        self.suppressed_by_device: Counter[str] = Counter()  # in the current bursts

    @property
    def suppressing(self) -> bool:
        """Whether some device's burst is being counted now."""
        return bool(self._suppressing)

    def admit(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        """The letters to store now: those within the limit, and summaries of ended bursts."""
        kept: list[DeadLetter] = []
        for letter in letters:
            key = letter.device_id or ""
            bucket = self._bucket(key, letter.received_at, kept)
            self._refill(bucket, letter.received_at)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                if bucket.suppressed:
                    kept.append(self._summary(key, bucket))
                kept.append(letter)
            else:
                self._count(key, bucket, letter)
        if letters:
            kept += self.due(max(letter.received_at for letter in letters))
        return kept

    def due(self, now: datetime) -> list[DeadLetter]:
        """Summaries of bursts that ended by ``now`` (or ran ``summary_every_s``)."""
        every = timedelta(seconds=self.limit.summary_every_s)
        summaries = []
        for key, bucket in list(self._suppressing.items()):
            self._refill(bucket, now)
            started = bucket.first or now
            if bucket.tokens >= 1.0 or now - started >= every:
                summaries.append(self._summary(key, bucket))
        return summaries

    def flush(self) -> list[DeadLetter]:
        """Summaries of every burst still counting (when ingest stops)."""
        return [self._summary(key, bucket) for key, bucket in list(self._suppressing.items())]

    def _bucket(self, key: str, at: datetime, kept: list[DeadLetter]) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._buckets.move_to_end(key)
            return bucket
        while len(self._buckets) >= self.limit.max_devices:
            old_key, old = self._buckets.popitem(last=False)
            if old.suppressed:
                kept.append(self._summary(old_key, old))
        bucket = _Bucket(tokens=float(self.limit.burst), at=at)
        self._buckets[key] = bucket
        return bucket

    def _refill(self, bucket: _Bucket, at: datetime) -> None:
        elapsed = (at - bucket.at).total_seconds()
        if elapsed > 0:
            bucket.tokens = min(float(self.limit.burst), bucket.tokens + elapsed * self.limit.per_s)
            bucket.at = at

    def _count(self, key: str, bucket: _Bucket, letter: DeadLetter) -> None:
        if not bucket.suppressed:
            bucket.first = letter.received_at
            self._suppressing[key] = bucket
        bucket.suppressed += 1
        bucket.classes[reason_class(letter)] += 1
        bucket.last = letter
        self.suppressed += 1
        self.suppressed_by_device[key] += 1

    def _summary(self, key: str, bucket: _Bucket) -> DeadLetter:
        last = bucket.last
        assert last is not None and bucket.first is not None
        classes = ", ".join(f"{cls} {n}" for cls, n in bucket.classes.most_common())
        reason = (
            f"{RATE_LIMITED}: {bucket.suppressed} more dead letters of this device were "
            f"counted, not stored one by one (over {self.limit.burst} then "
            f"{self.limit.per_s:g}/s): {classes}; the last one's payload is kept"
        )
        letter = DeadLetter(
            received_at=last.received_at,
            source=last.source,
            reason=reason,
            device_id=last.device_id,
            topic=last.topic,
            payload=last.payload,
            details={
                "class": RATE_LIMITED,
                "suppressed": str(bucket.suppressed),
                "classes": ",".join(bucket.classes),
                "first": bucket.first.isoformat(),
                "last": last.received_at.isoformat(),
            },
        )
        bucket.suppressed = 0
        bucket.classes = Counter()
        bucket.first = None
        bucket.last = None
        self._suppressing.pop(key, None)
        self.suppressed_by_device.pop(key, None)
        return letter
