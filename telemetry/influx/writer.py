"""The InfluxDB writer: points in, durably out (InfluxDB, or the spool until it is back).

``InfluxWriter.submit`` is the ``PointSink`` of ingest: it returns once its points
are durable: stored by InfluxDB, dead-lettered with a reason, or appended to the
spool; only then may ingest acknowledge the reading to the broker. It raises
``SpoolFull`` when InfluxDB is away and the spool has no room (ingest stops
acknowledging, so the broker keeps the messages) and ``InfluxConfigurationError``
once InfluxDB has refused the credentials or the database (nothing is retried then:
a person must fix the settings).

Two tasks, owned by the writer's task group:

- the batcher takes submitted lines from a bounded buffer (``submit`` waits while it
  is full) and writes a batch when it holds ``batch_size`` points or its first point
  has waited ``batch_interval_s``. A batch gets a short retry budget; if InfluxDB
  still cannot take it, it goes to the spool. While the spool holds anything, new
  batches go behind it, so InfluxDB receives batches in the order they arrived.
- the replayer writes the spool's oldest batch, retrying with back-off (and the
  server's ``Retry-After``) until InfluxDB takes it, then pops it.

Every batch is written as nanosecond line protocol (the spool keeps it as written).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol

from telemetry.influx.client import (
    InfluxClient,
    InfluxConfigurationError,
    InfluxSettingsLike,
    InfluxUnavailableError,
    RetryPolicy,
    WriteResult,
)
from telemetry.influx.line_protocol import encode_points, join_lines, series_tags, split_lines
from telemetry.metrics import TelemetryMetrics
from telemetry.points import DeadLetter, DeadLetterSink, Point
from telemetry.spool import DurableSpool

log = logging.getLogger(__name__)

DIRECT_RETRY = RetryPolicy(attempts=3, initial_delay_s=0.2, max_delay_s=2.0)
REPLAY_RETRY = RetryPolicy(attempts=None, initial_delay_s=0.2, max_delay_s=5.0)
_SOURCE = "influx"


@dataclass(slots=True)
class WriterStats:
    """The writer's figures for ``/metrics`` (counters grow; depths are current)."""

    written: int = 0  # points InfluxDB stored (directly or from the spool)
    spooled: int = 0  # points appended to the spool
    replayed: int = 0  # points written from the spool
    dead_lettered: int = 0  # points refused (unwritable, or by InfluxDB), with reasons
    batches: int = 0  # batches InfluxDB accepted (directly or from the spool)
    requests: int = 0  # HTTP write requests sent
    pending_points: int = 0  # submitted, waiting in memory for their batch
    spool_depth_bytes: int = 0
    spool_depth_points: int = 0
    last_error: str | None = None


class TelemetrySettingsLike(Protocol):
    """The fields of ``pharos.settings.TelemetrySettings`` the writer reads."""

    @property
    def batch_size(self) -> int: ...
    @property
    def batch_interval_s(self) -> float: ...
    @property
    def spool_max_bytes(self) -> int: ...


@dataclass(slots=True)
class _Pending:
    lines: list[str]
    future: asyncio.Future[None]
    enqueued_at: float
    points: int = field(init=False)

    def __post_init__(self) -> None:
        self.points = len(self.lines)


class InfluxWriter:
    """Batching, spooling writer; an async context manager owning its tasks."""

    def __init__(
        self,
        client: InfluxClient,
        spool: DurableSpool,
        dead_letters: DeadLetterSink,
        *,
        batch_size: int = 5000,
        batch_interval_s: float = 0.5,
        max_pending_points: int | None = None,
        direct_retry: RetryPolicy = DIRECT_RETRY,
        replay_retry: RetryPolicy = REPLAY_RETRY,
        metrics: TelemetryMetrics | None = None,
    ) -> None:
        if batch_size < 1 or batch_interval_s <= 0:
            raise ValueError("batch_size must be ≥ 1 and batch_interval_s > 0")
        self._client = client
        self._spool = spool
        self._dead_letters = dead_letters
        self._batch_size = batch_size
        self._interval = batch_interval_s
        self._capacity = max(max_pending_points or 4 * batch_size, batch_size)
        self._direct_retry = direct_retry
        self._replay_retry = replay_retry
        self._metrics = metrics
        self._stats = WriterStats()
        self._buffer: deque[_Pending] = deque()
        self._buffered = 0
        self._cond = asyncio.Condition()
        self._spooled_data = asyncio.Event()
        self._error: InfluxConfigurationError | None = None
        self._open = False
        self._closing = False
        self._stack: AsyncExitStack | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        influx: InfluxSettingsLike,
        telemetry: TelemetrySettingsLike,
        *,
        spool_dir: Path,
        dead_letters: DeadLetterSink,
        metrics: TelemetryMetrics | None = None,
    ) -> InfluxWriter:
        return cls(
            InfluxClient.from_settings(influx),
            DurableSpool(spool_dir, telemetry.spool_max_bytes),
            dead_letters,
            batch_size=telemetry.batch_size,
            batch_interval_s=telemetry.batch_interval_s,
            metrics=metrics,
        )

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> InfluxWriter:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._client)
            await stack.enter_async_context(self._spool)
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            self._batcher = tasks.create_task(self._run_batcher(), name="influx-batcher")
            self._replayer = tasks.create_task(self._run_replayer(), name="influx-replayer")
            if not self._spool.empty:
                log.info(
                    "spool %s holds %d points from before; replaying them",
                    self._spool.directory,
                    self._spool.depth_items,
                )
            self._open = True
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Write (or spool) what was submitted, stop replaying, close the spool."""
        assert self._stack is not None and self._batcher is not None
        self._open = False
        async with self._cond:
            self._closing = True
            self._cond.notify_all()
        try:
            await self._batcher
        finally:
            if self._replayer is not None:
                self._replayer.cancel()
            await self._stack.__aexit__(exc_type, exc, tb)

    # --- the sink ------------------------------------------------------------------------

    async def submit(self, points: Sequence[Point]) -> None:
        """Return once ``points`` are durable (see the module docstring for the errors)."""
        self._check_accepting()
        encoded = encode_points(points)
        if encoded.refused:
            await self._dead_letter_points(encoded.refused)
        futures: list[asyncio.Future[None]] = []
        try:
            for start in range(0, len(encoded.lines), self._batch_size):
                chunk = encoded.lines[start : start + self._batch_size]
                futures.append(await self._enqueue(chunk))
        except BaseException:
            for future in futures:  # queued chunks are still written; nobody waits for them
                future.cancel()
            raise
        if futures:
            await asyncio.gather(*futures)

    async def write(self, points: Sequence[Point]) -> None:
        """The same as ``submit`` (the name the stores use)."""
        await self.submit(points)

    @property
    def stats(self) -> WriterStats:
        """A snapshot of the figures."""
        self._stats.requests = self._client.requests
        self._stats.pending_points = self._buffered
        self._stats.spool_depth_bytes = self._spool.depth_bytes
        self._stats.spool_depth_points = self._spool.depth_items
        return replace(self._stats)

    @property
    def error(self) -> InfluxConfigurationError | None:
        """The configuration error that stopped the writer, if any."""
        return self._error

    def _check_accepting(self) -> None:
        if self._error is not None:
            raise self._error
        if not self._open or self._closing:
            raise RuntimeError("the InfluxDB writer is not running (use it in 'async with')")

    async def _enqueue(self, lines: list[str]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        async with self._cond:
            await self._cond.wait_for(
                lambda: (
                    self._error is not None
                    or self._closing
                    or self._buffered + len(lines) <= self._capacity
                )
            )
            self._check_accepting()
            pending = _Pending(lines, loop.create_future(), loop.time())
            self._buffer.append(pending)
            self._buffered += pending.points
            self._cond.notify_all()
        return pending.future

    # --- the batcher ---------------------------------------------------------------------

    async def _run_batcher(self) -> None:
        while (batch := await self._next_batch()) is not None:
            await self._flush(batch)

    async def _next_batch(self) -> list[_Pending] | None:
        async with self._cond:
            await self._cond.wait_for(lambda: bool(self._buffer) or self._closing)
            if not self._buffer:
                return None
            deadline = self._buffer[0].enqueued_at + self._interval
            with suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._cond.wait_for(
                        lambda: self._buffered >= self._batch_size or self._closing
                    )
            batch: list[_Pending] = []
            size = 0
            while self._buffer and (not batch or size + self._buffer[0].points <= self._batch_size):
                pending = self._buffer.popleft()
                batch.append(pending)
                size += pending.points
            self._buffered -= size
            self._cond.notify_all()
            return batch

    async def _flush(self, batch: list[_Pending]) -> None:
        lines = [line for pending in batch for line in pending.lines]
        try:
            await self._store(lines)
        except Exception as exc:  # every submitter of the batch must hear why
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result(None)

    async def _store(self, lines: list[str]) -> None:
        if self._error is not None:
            raise self._error
        if self._spool.empty:
            try:
                result = await self._client.write_retrying(lines, self._direct_retry)
            except InfluxUnavailableError as exc:
                self._note_error(exc)
                log.warning("InfluxDB cannot take a batch now (%s); spooling it", exc)
            except InfluxConfigurationError as exc:
                await self._fail(exc)
                raise
            else:
                await self._account(result, replayed=False)
                return
        # Behind what is already spooled, so batches reach InfluxDB in order.
        await self._spool.append(join_lines(lines), len(lines))
        self._stats.spooled += len(lines)
        if self._metrics is not None:
            self._metrics.spooled += len(lines)
        self._update_depth()
        self._spooled_data.set()

    # --- the replayer --------------------------------------------------------------------

    async def _run_replayer(self) -> None:
        while self._error is None:
            record = await self._spool.oldest()
            if record is None:
                self._update_depth()
                self._spooled_data.clear()
                if self._spool.empty:  # checked after clear(): an append sets it again
                    await self._spooled_data.wait()
                continue
            try:
                result = await self._client.write_retrying(
                    split_lines(record.payload), self._replay_retry
                )
                await self._account(result, replayed=True)
            except InfluxConfigurationError as exc:
                await self._fail(exc)
                return
            except Exception as exc:  # InfluxDB or the dead-letter store: try again later
                self._note_error(exc)
                log.warning("replaying the spool failed (%s); retrying", exc)
                await asyncio.sleep(self._replay_retry.max_delay_s)
                continue
            await self._spool.pop_oldest()
            self._update_depth()

    # --- accounting ----------------------------------------------------------------------

    async def _account(self, result: WriteResult, *, replayed: bool) -> None:
        if result.rejected:
            now = datetime.now(UTC)
            await self._put_letters(
                [
                    DeadLetter(
                        received_at=now,
                        source=_SOURCE,
                        reason=f"refused by InfluxDB: {rejected.reason}",
                        device_id=series_tags(rejected.line).get("device_id"),
                        payload=rejected.line.encode("utf-8"),
                        details={"class": "refused by InfluxDB"},
                    )
                    for rejected in result.rejected
                ]
            )
        self._stats.written += result.written
        self._stats.batches += 1
        if replayed:
            self._stats.replayed += result.written
        if self._metrics is not None:
            self._metrics.written += result.written

    async def _dead_letter_points(self, refused: Sequence[tuple[Point, str]]) -> None:
        now = datetime.now(UTC)
        await self._put_letters(
            [
                DeadLetter(
                    received_at=now,
                    source=_SOURCE,
                    reason=f"not writable to InfluxDB: {reason}",
                    device_id=point.tags.get("device_id"),
                    payload=_point_json(point),
                    details={"class": "not writable to InfluxDB"},
                )
                for point, reason in refused
            ]
        )

    async def _put_letters(self, letters: list[DeadLetter]) -> None:
        await self._dead_letters.put(letters)
        self._stats.dead_lettered += len(letters)
        if self._metrics is not None:
            self._metrics.invalid += len(letters)

    def _update_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.spool_depth_bytes = self._spool.depth_bytes
            self._metrics.spool_depth_points = self._spool.depth_items

    def _note_error(self, exc: BaseException) -> None:
        self._stats.last_error = f"{type(exc).__name__}: {exc}"

    async def _fail(self, exc: InfluxConfigurationError) -> None:
        if self._error is None:
            log.error("InfluxDB writer stopped: %s", exc)
        self._error = exc
        self._note_error(exc)
        self._spooled_data.set()  # the replayer sees the error and ends
        async with self._cond:
            self._cond.notify_all()


def _point_json(point: Point) -> bytes:
    document = {
        "measurement": point.measurement,
        "tags": point.tags,
        "fields": point.fields,
        "time": point.time.isoformat(),
    }
    return json.dumps(document, ensure_ascii=False, default=str).encode("utf-8")
