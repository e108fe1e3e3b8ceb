"""Helpers of the InfluxDB writer tests: points, a recording dead-letter sink, waiting,
and a small real HTTP server for the answers a real InfluxDB 1.6.7 cannot give here.

``FakeInflux`` is an asyncio HTTP/1.1 server on a free port (not a mock object): it
records every request (method, path, query, headers, the gunzipped body, arrival
time) and answers each from a script of ``Answer`` values (the last one repeats), so
429 with ``Retry-After``, 503, slow answers and the 2.x API can be exercised over a
real socket. ``hold`` keeps answers back until released, to observe back-pressure.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from telemetry.points import SEQ_FIELD, DeadLetter, FieldValue, Point

T0 = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)


def reading(
    seq: int,
    *,
    device_id: str = "env-0001",
    district: str = "Ninh Kiều",
    measurement: str = "env_monitor",
    at: datetime | None = None,
    **fields: FieldValue,
) -> Point:
    """One env monitor reading, a second apart per ``seq``."""
    return Point(
        measurement,
        {"device_id": device_id, "district": district},
        {SEQ_FIELD: seq, "pm25": 10.0 + seq / 8, **fields},
        at if at is not None else T0 + timedelta(seconds=seq),
    )


class LetterBox:
    """A ``DeadLetterSink`` that keeps the letters in memory, for assertions."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def put(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


async def eventually(
    condition: Callable[[], bool], within_s: float = 10.0, what: str = "condition"
) -> None:
    """Wait until ``condition()`` holds (polled every 10 ms) or fail after ``within_s``."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not hold within {within_s} s")
        await asyncio.sleep(0.01)


@dataclass(frozen=True)
class Answer:
    status: int = 204
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # the server takes this long to answer (a slow InfluxDB)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes  # gunzipped when Content-Encoding: gzip
    at: float  # time.monotonic() on arrival

    @property
    def lines(self) -> list[str]:
        return self.body.decode().split("\n") if self.body else []


class FakeInflux:
    """A real local HTTP server answering from a script (see the module docstring)."""

    def __init__(self, *answers: Answer) -> None:
        self.script = list(answers) or [Answer()]
        self.requests: list[Request] = []
        self.released = asyncio.Event()
        self.released.set()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer_with(self, *answers: Answer) -> None:
        """From the next request on, answer from this script."""
        self.script = list(answers)

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    async def __aenter__(self) -> FakeInflux:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._connections):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while (request := await _read_request(reader)) is not None:
                self.requests.append(request)
                answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
                await self.released.wait()
                if answer.delay_s:
                    await asyncio.sleep(answer.delay_s)  # the server being slow
                writer.write(_response(answer))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return None
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    if headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    url = urlsplit(target)
    params = {k: v[0] for k, v in parse_qs(url.query).items()}
    return Request(method, url.path, params, headers, body, time.monotonic())


def _response(answer: Answer) -> bytes:
    reason = {204: "No Content", 400: "Bad Request", 413: "Request Entity Too Large"}.get(
        answer.status, "Status"
    )
    headers = {"Content-Length": str(len(answer.body)), **answer.headers}
    if answer.body:
        headers.setdefault("Content-Type", "application/json")
    head = f"HTTP/1.1 {answer.status} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    return (head + "\r\n").encode("latin-1") + answer.body
