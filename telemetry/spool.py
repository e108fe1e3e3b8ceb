"""The durable spool: batches waiting on disk for InfluxDB, bounded, replayed in order.

Layout of the spool directory::

    0000000000000001.seg   append-only segments of records
    0000000000000002.seg
    cursor                 "<segment> <offset>" of the oldest record not yet replayed
    LOCK                   held (flock) by the one process using the spool

A record is a 16-byte header (magic ``PSR1``, payload length, item count, CRC-32 of
count and payload, all big-endian) and the payload (one batch of line protocol).
``append`` writes a record and fsyncs before it returns, so an acknowledged batch
survives a crash of the process or the machine. The cursor moves (atomic rename)
when a record is popped; a crash before that replays the record again, which is
harmless (a point written twice is one point).

Opening scans every unread record. A record cut short at the end of a segment (the
process died inside ``append``, so it was never acknowledged) is cut off with a
warning. A complete record whose CRC fails is moved to a ``.corrupt`` file beside
the segment, with a warning, and skipped; bytes that no longer look like records
are moved there too. The spool is bounded by the bytes of its unread records:
``append`` raises ``SpoolFull`` rather than dropping anything.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TypeVar

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MAGIC = b"PSR1"
HEADER = struct.Struct(">4sIII")  # magic, payload length, items, crc32(items + payload)
_SEGMENT_SUFFIX = ".seg"
_CURSOR = "cursor"
_LOCK = "LOCK"
_MAX_SEGMENT_BYTES = 64 << 20
_MIN_SEGMENT_BYTES = 1 << 20


class SpoolError(Exception):
    """The spool cannot do what was asked (locked, unwritable)."""


class SpoolFull(SpoolError):
    """No room for the record: stop acknowledging input until the spool drains."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    payload: bytes
    items: int


@dataclass(frozen=True, slots=True)
class _Ref:
    segment: int
    offset: int
    length: int  # payload bytes
    items: int

    @property
    def size(self) -> int:
        return HEADER.size + self.length

    @property
    def end(self) -> int:
        return self.offset + self.size


def _checksum(items: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(items.to_bytes(4, "big")))


def encode_record(payload: bytes, items: int) -> bytes:
    return HEADER.pack(MAGIC, len(payload), items, _checksum(items, payload)) + payload


class DurableSpool:
    """An on-disk FIFO of byte records; an async context manager (opens and locks)."""

    def __init__(self, directory: Path, max_bytes: int, *, segment_bytes: int | None = None):
        if max_bytes < HEADER.size + 1:
            raise ValueError(f"max_bytes: {max_bytes} is too small for any record")
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(
            _MAX_SEGMENT_BYTES, max(_MIN_SEGMENT_BYTES, max_bytes // 16)
        )
        self._refs: deque[_Ref] = deque()
        self._depth_bytes = 0
        self._depth_items = 0
        self._active: IO[bytes] | None = None
        self._active_segment = 0
        self._last_segment = 0
        self._lock_file: IO[bytes] | None = None
        # A lock the worker threads take: a cancelled caller cannot release it while
        # its thread is still writing (an asyncio lock would be released at once).
        self._mutex = threading.Lock()
        self.quarantined = 0  # corrupt records set aside since opening

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> DurableSpool:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        await self._run(self._close)

    # --- the FIFO ------------------------------------------------------------------------

    @property
    def depth_bytes(self) -> int:
        """Bytes of the records not yet popped (headers included)."""
        return self._depth_bytes

    @property
    def depth_records(self) -> int:
        return len(self._refs)

    @property
    def depth_items(self) -> int:
        return self._depth_items

    @property
    def empty(self) -> bool:
        return not self._refs

    async def append(self, payload: bytes, items: int = 1) -> None:
        """Store ``payload`` durably (fsync) at the tail; ``SpoolFull`` if it does not fit."""
        await self._run(self._append, payload, items)

    async def oldest(self) -> SpoolRecord | None:
        """The record at the head, or ``None`` when the spool is empty."""
        return await self._run(self._oldest)

    async def pop_oldest(self) -> None:
        """Drop the head record (after it was written elsewhere), durably."""
        await self._run(self._pop_oldest)

    # --- blocking work (a worker thread, one call at a time) -----------------------------

    async def _run(self, work: Callable[..., _T], *args: object) -> _T:
        return await asyncio.to_thread(self._locked, work, *args)

    def _locked(self, work: Callable[..., _T], *args: object) -> _T:
        with self._mutex:
            return work(*args)

    def _open(self) -> None:
        if self._lock_file is not None:
            raise SpoolError(f"spool {self.directory} is already open")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock(self.directory / _LOCK)
        cursor = self._read_cursor()
        segments = self._segments()
        # Never reuse a number at or below the cursor's: it would read as replayed.
        self._last_segment = max([cursor[0], *segments])
        for segment in segments:
            if segment < cursor[0]:
                # Fully replayed; left behind by a crash between pop and delete.
                self._segment_path(segment).unlink()
                continue
            start = cursor[1] if segment == cursor[0] else 0
            self._scan(segment, start, is_last=segment == segments[-1])
        if segments and self._segment_path(segments[-1]).exists():
            self._active_segment = segments[-1]
            self._active = self._segment_path(segments[-1]).open("ab")
        if not self._refs:
            self._reset()

    def _close(self) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None
        self._refs.clear()
        self._depth_bytes = self._depth_items = 0

    def _append(self, payload: bytes, items: int) -> None:
        self._require_open()
        record = encode_record(payload, items)
        if self._depth_bytes + len(record) > self.max_bytes:
            raise SpoolFull(
                f"spool {self.directory} is full: {self._depth_bytes} of {self.max_bytes} bytes "
                f"in use, the batch needs {len(record)}"
            )
        active = self._writable_segment()
        offset = active.tell()
        try:
            active.write(record)
            active.flush()
            os.fsync(active.fileno())
        except OSError as exc:
            self._abandon_segment(offset)
            raise SpoolError(f"spool {self.directory}: cannot append: {exc}") from exc
        self._add(_Ref(self._active_segment, offset, len(payload), items))

    def _oldest(self) -> SpoolRecord | None:
        self._require_open()
        while self._refs:
            ref = self._refs[0]
            with self._segment_path(ref.segment).open("rb") as segment:
                segment.seek(ref.offset)
                data = segment.read(ref.size)
            record = _decode(data)
            if record is not None and record.items == ref.items:
                return record
            # The bytes changed on disk since the spool was opened.
            self._quarantine(ref.segment, ref.offset, data, "failed its CRC when read")
            self._pop()
        return None

    def _pop_oldest(self) -> None:
        self._require_open()
        if self._refs:
            self._pop()

    # --- helpers -------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._lock_file is None:
            raise SpoolError(f"spool {self.directory} is not open")

    def _add(self, ref: _Ref) -> None:
        self._refs.append(ref)
        self._depth_bytes += ref.size
        self._depth_items += ref.items

    def _pop(self) -> None:
        ref = self._refs.popleft()
        self._depth_bytes -= ref.size
        self._depth_items -= ref.items
        if not self._refs:
            self._reset()
            return
        head = self._refs[0]
        self._write_cursor(head.segment, head.offset)
        if head.segment != ref.segment:
            for segment in range(ref.segment, head.segment):
                self._segment_path(segment).unlink(missing_ok=True)
            _fsync_dir(self.directory)

    def _reset(self) -> None:
        """Nothing unread: remove every segment; the next append starts a new one."""
        if self._active is not None:
            self._active.close()
            self._active = None
        for segment in self._segments():
            self._segment_path(segment).unlink()
        (self.directory / _CURSOR).unlink(missing_ok=True)
        _fsync_dir(self.directory)

    def _abandon_segment(self, offset: int) -> None:
        """After a failed append: cut the partial record; later appends use a new segment."""
        path = self._segment_path(self._active_segment)
        if self._active is not None:
            with suppress(OSError):
                self._active.close()
            self._active = None
        with suppress(OSError):
            os.truncate(path, offset)  # if this fails too, opening sets the bytes aside

    def _writable_segment(self) -> IO[bytes]:
        if self._active is not None and self._active.tell() < self.segment_bytes:
            return self._active
        if self._active is not None:
            self._active.close()
        self._last_segment += 1
        self._active_segment = self._last_segment
        self._active = self._segment_path(self._active_segment).open("ab")
        _fsync_dir(self.directory)
        return self._active

    def _segments(self) -> list[int]:
        found = []
        for path in self.directory.glob(f"*{_SEGMENT_SUFFIX}"):
            if path.stem.isdigit():
                found.append(int(path.stem))
        return sorted(found)

    def _segment_path(self, segment: int) -> Path:
        return self.directory / f"{segment:016d}{_SEGMENT_SUFFIX}"

    def _read_cursor(self) -> tuple[int, int]:
        path = self.directory / _CURSOR
        try:
            segment, offset = path.read_text().split()
            return int(segment), int(offset)
        except FileNotFoundError:
            return 0, 0
        except ValueError:
            log.warning("spool %s: unreadable cursor file; replaying from the start", path)
            return 0, 0

    def _write_cursor(self, segment: int, offset: int) -> None:
        path = self.directory / _CURSOR
        temporary = path.with_suffix(".tmp")
        with temporary.open("w") as file:
            file.write(f"{segment} {offset}\n")
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(path)
        _fsync_dir(self.directory)

    def _scan(self, segment: int, start: int, *, is_last: bool) -> None:
        """Index the records of ``segment`` from ``start``; cut off what is not a record."""
        path = self._segment_path(segment)
        data = path.read_bytes()
        offset = start
        while offset < len(data):
            header = data[offset : offset + HEADER.size]
            if len(header) < HEADER.size:
                self._cut(segment, offset, data, torn=is_last)
                return
            magic, length, items, _ = HEADER.unpack(header)
            end = offset + HEADER.size + length
            if magic != MAGIC:
                self._cut(segment, offset, data, torn=False)
                return
            if end > len(data):
                self._cut(segment, offset, data, torn=is_last)
                return
            if _decode(data[offset:end]) is None:
                self._quarantine(segment, offset, data[offset:end], "failed its CRC")
            else:
                self._add(_Ref(segment, offset, length, items))
            offset = end

    def _cut(self, segment: int, offset: int, data: bytes, *, torn: bool) -> None:
        path = self._segment_path(segment)
        if torn:
            log.warning(
                "spool %s: a record cut short at offset %d (%d bytes; the process stopped "
                "while appending it, so it was never acknowledged) is ignored",
                path,
                offset,
                len(data) - offset,
            )
        else:
            self._quarantine(segment, offset, data[offset:], "is not a record")
        with path.open("r+b") as file:
            file.truncate(offset)
            file.flush()
            os.fsync(file.fileno())

    def _quarantine(self, segment: int, offset: int, data: bytes, why: str) -> None:
        path = self._segment_path(segment).with_suffix(f".{offset}.corrupt")
        path.write_bytes(data)
        self.quarantined += 1
        log.warning(
            "spool %s: %d bytes at offset %d %s; moved to %s",
            self._segment_path(segment),
            len(data),
            offset,
            why,
            path,
        )


def _decode(data: bytes) -> SpoolRecord | None:
    """The record in ``data`` (exactly one), or ``None`` if it is not intact."""
    if len(data) < HEADER.size:
        return None
    magic, length, items, checksum = HEADER.unpack(data[: HEADER.size])
    payload = data[HEADER.size :]
    if magic != MAGIC or length != len(payload) or _checksum(items, payload) != checksum:
        return None
    return SpoolRecord(payload, items)


def _lock(path: Path) -> IO[bytes]:
    file = path.open("ab")
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        raise SpoolError(
            f"spool {path.parent} is in use by another process; give each ingest worker "
            "its own spool directory"
        ) from None
    return file


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
