"""The dead-letter store: input that could not be stored, kept with its reason.

``DeadLetterStore`` is the ``DeadLetterSink`` of ingest and the writer, and what the
API lists. A batch of letters is one transaction in a worker thread. Every letter gets
a reason class for counting: ``details["class"]`` when the producer set one, else
the reason up to its first ``:`` (the field a ``PayloadError`` names, for instance).
The payload is kept as bytes (up to ``MAX_PAYLOAD_BYTES``) with a text preview.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.db import transaction
from telemetry.models import DeadLetterRow
from telemetry.points import DeadLetter

MAX_PAYLOAD_BYTES = 1 << 20  # a broker's packets are smaller; this only bounds the table
PREVIEW_CHARS = 200
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
    return DeadLetterRow(
        received_at=letter.received_at,
        source=_text(letter.source, 16),
        reason=_text(letter.reason),
        reason_class=_text(reason_class(letter)),
        device_id=_text(letter.device_id, _DEVICE_ID_CHARS) if letter.device_id else None,
        topic=_text(letter.topic, _TOPIC_CHARS) if letter.topic else None,
        payload=payload[:MAX_PAYLOAD_BYTES],
        payload_size=len(payload),
        payload_preview=_text(preview, PREVIEW_CHARS),
        details={_text(k): _text(v) for k, v in letter.details.items()} or None,
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

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    async def put(self, letters: Sequence[DeadLetter]) -> None:
        if letters:
            rows = [_row(letter) for letter in letters]
            await asyncio.to_thread(self._insert, rows)

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
