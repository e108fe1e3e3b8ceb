"""Writing line protocol to InfluxDB over HTTP, and what each answer means.

``InfluxClient`` posts one batch (gzip) to the 1.x ``/write`` or the 2.x
``/api/v2/write`` API and classifies the answer:

- 204: stored.
- 400 (and 2.x's 422) partial write: InfluxDB stored the good lines and names the
  bad ones; they come back as ``RejectedLine`` values (to be dead-lettered). The
  batch is never retried as a whole. When the answer does not say exactly which
  lines were dropped (1.x names only the first field type conflict, and only counts
  the rest), the batch is halved and each half written again until every dropped
  line is found: rewriting a stored line is harmless (same series and time is one point).
- 413: the body is over the server's limit; the batch is split in halves.
- 401, 403, 404 and any other unexpected 4xx: ``InfluxConfigurationError``, which
  says what to fix. Retrying cannot help.
- 408, 429, 5xx, timeouts, refused connections: ``InfluxUnavailableError``, carrying
  the server's ``Retry-After``; ``write_retrying`` backs off and tries again.

Plain httpx serves both APIs with one code path. influxdb-client is not used: its
batching drops data after its retries (the spool is ours), and the status handling
above needs the raw answer anyway.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Literal, Protocol

import httpx
from pydantic import SecretStr

from telemetry.influx.line_protocol import Precision, field_types, join_lines, measurement_of

Api = Literal["v1", "v2"]

_V1_PRECISION: dict[Precision, str] = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}
_RETRYABLE_4XX = (408, 429)
_PARSE_MARKER = "unable to parse '"
_DROPPED = re.compile(r"\s*dropped=(\d+)\s*$")
_CONFLICT = re.compile(
    r'field type conflict: input field "(?P<field>(?:[^"\\]|\\.)*)" on measurement '
    r'"(?P<measurement>(?:[^"\\]|\\.)*)" is type (?P<type>\w+)'
)
_PARTIAL_PREFIX = re.compile(r"^.*?partial write(?: error \(\d+ written\))?:\s*", re.DOTALL)
_MESSAGE_CHARS = 500


class InfluxError(Exception):
    """Base of the writer's InfluxDB errors."""


class InfluxConfigurationError(InfluxError):
    """InfluxDB refuses us for a reason only a person can fix (credentials, database)."""


class InfluxUnavailableError(InfluxError):
    """InfluxDB cannot take the write now; try again later (after ``retry_after`` s)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class RejectedLine:
    line: str
    reason: str


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: int  # lines InfluxDB stored
    rejected: tuple[RejectedLine, ...] = ()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Back-off between attempts; ``attempts=None`` tries until it succeeds."""

    attempts: int | None = 3
    initial_delay_s: float = 0.2
    max_delay_s: float = 5.0
    multiplier: float = 2.0
    max_retry_after_s: float = 300.0  # a longer Retry-After is capped to this

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``; ``None``: give up now.

        A server's ``Retry-After`` wins over the back-off; with a bounded number of
        attempts, one longer than ``max_delay_s`` means giving up (the caller spools).
        """
        if self.attempts is not None and attempt >= self.attempts:
            return None
        if retry_after is not None:
            if self.attempts is not None and retry_after > self.max_delay_s:
                return None
            return min(retry_after, self.max_retry_after_s)
        return min(self.max_delay_s, self.initial_delay_s * self.multiplier ** (attempt - 1))


class InfluxSettingsLike(Protocol):
    """The fields of ``pharos.settings.InfluxSettings`` this client reads."""

    @property
    def url(self) -> str | None: ...
    @property
    def api(self) -> Api: ...
    @property
    def database(self) -> str: ...
    @property
    def org(self) -> str | None: ...
    @property
    def token(self) -> SecretStr | None: ...


Sleep = Callable[[float], Awaitable[None]]


class InfluxClient:
    """One InfluxDB write endpoint; an async context manager owning its HTTP client."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        api: Api = "v1",
        org: str | None = None,
        token: str | None = None,
        precision: Precision = "ns",
        timeout_s: float = 10.0,
        gzip_level: int = 1,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``token``: 1.x ``user:password`` (sent as basic auth); 2.x an API token."""
        self.url = url.rstrip("/")
        self.database = database
        self.api = api
        self.precision = precision
        self._timeout_s = timeout_s
        self._gzip_level = gzip_level
        self._transport = transport
        self._path, self._params = _endpoint(api, database, org, precision)
        self._headers, self._auth = _credentials(api, token)
        self._http: httpx.AsyncClient | None = None
        self.requests = 0  # HTTP requests sent, for stats and tests

    @classmethod
    def from_settings(
        cls, settings: InfluxSettingsLike, *, timeout_s: float = 10.0
    ) -> InfluxClient:
        if not settings.url:
            raise InfluxConfigurationError("influx.url is not set (the embedded store is in use)")
        token = settings.token.get_secret_value() if settings.token else None
        return cls(
            settings.url,
            settings.database,
            api=settings.api,
            org=settings.org,
            token=token,
            timeout_s=timeout_s,
        )

    async def __aenter__(self) -> InfluxClient:
        self._http = httpx.AsyncClient(
            base_url=self.url,
            timeout=httpx.Timeout(self._timeout_s),
            auth=self._auth,
            headers=self._headers,
            transport=self._transport,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def write(self, lines: Sequence[str]) -> WriteResult:
        """Write ``lines`` once (splitting on 413, halving to attribute a 400)."""
        written, rejected = await self._write(list(lines))
        return WriteResult(written, tuple(rejected))

    async def write_retrying(
        self, lines: Sequence[str], policy: RetryPolicy, *, sleep: Sleep = asyncio.sleep
    ) -> WriteResult:
        """``write``, again after ``InfluxUnavailableError`` as ``policy`` allows."""
        attempt = 0
        while True:
            try:
                return await self.write(lines)
            except InfluxUnavailableError as exc:
                attempt += 1
                delay = policy.delay(attempt, exc.retry_after)
                if delay is None:
                    raise
                await sleep(delay)

    # --- one request and its answer -----------------------------------------------------

    async def _write(self, lines: list[str]) -> tuple[int, list[RejectedLine]]:
        if not lines:
            return 0, []
        response = await self._post(lines)
        status = response.status_code
        if status in (200, 204):
            return len(lines), []
        message = _error_message(response)
        if status == 413:
            if len(lines) == 1:
                reason = f"line larger than InfluxDB's request limit (413: {message})"
                return 0, [RejectedLine(lines[0], reason)]
            return await self._halves(lines)
        if status in (400, 422) and _about_lines(message, status):
            bad = attribute_rejections(lines, message)
            if bad is None:
                if len(lines) > 1:
                    return await self._halves(lines)
                bad = {0: _partial_reason(message)}
            rejected = [RejectedLine(lines[i], reason) for i, reason in sorted(bad.items())]
            return len(lines) - len(rejected), rejected
        raise self._classify_failure(status, message, response.headers.get("Retry-After"))

    async def _halves(self, lines: list[str]) -> tuple[int, list[RejectedLine]]:
        middle = len(lines) // 2
        first_written, first_rejected = await self._write(lines[:middle])
        second_written, second_rejected = await self._write(lines[middle:])
        return first_written + second_written, first_rejected + second_rejected

    async def _post(self, lines: list[str]) -> httpx.Response:
        if self._http is None:
            raise RuntimeError("InfluxClient is used outside its 'async with' block")
        # zlib releases the GIL: compressing a large batch in a thread keeps the loop free.
        body = await asyncio.to_thread(gzip.compress, join_lines(lines), self._gzip_level)
        self.requests += 1
        try:
            return await self._http.post(self._path, params=self._params, content=body)
        except httpx.TimeoutException as exc:
            raise InfluxUnavailableError(
                f"InfluxDB at {self.url} did not answer within {self._timeout_s} s "
                f"({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise InfluxUnavailableError(
                f"InfluxDB at {self.url} is unreachable: {exc or type(exc).__name__}"
            ) from exc

    def _classify_failure(self, status: int, message: str, retry_after: str | None) -> InfluxError:
        where = f"InfluxDB at {self.url}"
        if status in _RETRYABLE_4XX or status >= 500:
            return InfluxUnavailableError(
                f"{where} answered {status}: {message}", retry_after=parse_retry_after(retry_after)
            )
        if status == 401:
            return InfluxConfigurationError(
                f"{where} refused the credentials (401: {message}): check influx.token "
                "('user:password' for InfluxDB 1.x, an API token for 2.x)"
            )
        if status == 403:
            return InfluxConfigurationError(
                f"{where}: the account may not write to {self._target()} (403: {message}); "
                "grant it write access or use another influx.token"
            )
        if status == 404:
            return InfluxConfigurationError(
                f"{where}: {self._target()} not found (404: {message}); create it (the "
                "retention setup does on 1.x) or fix influx.database"
                + (", influx.org, or influx.api (1.x has no /api/v2)" if self.api == "v2" else "")
            )
        return InfluxConfigurationError(f"{where} refused the write ({status}: {message})")

    def _target(self) -> str:
        kind = "database" if self.api == "v1" else "bucket"
        return f'{kind} "{self.database}"'


# --- pure helpers ------------------------------------------------------------------------


def _endpoint(
    api: Api, database: str, org: str | None, precision: Precision
) -> tuple[str, dict[str, str]]:
    if api == "v1":
        return "/write", {"db": database, "precision": _V1_PRECISION[precision]}
    params = {"bucket": database, "precision": precision}
    if org:
        params["org"] = org
    return "/api/v2/write", params


def _credentials(api: Api, token: str | None) -> tuple[dict[str, str], httpx.BasicAuth | None]:
    headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
    if not token:
        return headers, None
    if api == "v2":
        return {**headers, "Authorization": f"Token {token}"}, None
    user, colon, password = token.partition(":")
    if not colon:
        raise InfluxConfigurationError("influx.token for InfluxDB 1.x must be 'user:password'")
    # Basic auth rather than u=/p= parameters: a password in a URL ends up in logs.
    return headers, httpx.BasicAuth(user, password)


def _error_message(response: httpx.Response) -> str:
    """InfluxDB's reason: ``{"error"}`` (1.x), ``{"message"}`` (2.x), header, or text."""
    try:
        document = json.loads(response.content)
    except ValueError:
        document = None
    if isinstance(document, dict):
        for key in ("error", "message"):
            if isinstance(document.get(key), str):
                return str(document[key])
    header: str | None = response.headers.get("X-Influxdb-Error")
    if header:
        return header
    text = response.text.strip()
    return text[:_MESSAGE_CHARS] if text else str(response.reason_phrase)


def _about_lines(message: str, status: int) -> bool:
    """Whether a 400/422 is about lines (else the request itself was wrong)."""
    return status == 422 or "partial write" in message or _PARSE_MARKER in message


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def attribute_rejections(lines: Sequence[str], message: str) -> dict[int, str] | None:
    """Index → reason of every line InfluxDB dropped, or ``None`` when it cannot tell.

    Exact when: the answer lists the unparseable lines (1.x lists every one); or
    the lines matching its (first) field type conflict are as many as it dropped; or
    it dropped every line. Otherwise the caller halves the batch.

    Known limit: 1.x checks field types per shard, and when a batch also has a field
    type conflict it does not mention unparseable lines. The encoder never writes an
    unparseable line, and a conflicting line that another shard accepted is only
    taken for a dropped one if the counts still agree.
    """
    bad = _unparseable(lines, message)
    if "partial write" not in message:
        if not bad:
            return None
        # Nothing parsed, so nothing was stored: every line is rejected.
        return {i: bad.get(i, message) for i in range(len(lines))}
    found = _DROPPED.search(message)
    if found is None or int(found.group(1)) == 0:
        return bad or None
    dropped = int(found.group(1))
    reason = _partial_reason(message)
    remaining = [i for i in range(len(lines)) if i not in bad]
    conflict = _CONFLICT.search(message)
    if conflict is not None:
        matching = _conflicting(lines, remaining, conflict)
        if len(matching) == dropped:
            return bad | dict.fromkeys(matching, reason)
    if dropped == len(remaining):
        return bad | dict.fromkeys(remaining, reason)
    return None


def _partial_reason(message: str) -> str:
    """The reason without the ``partial write:`` prefix and ``dropped=N`` suffix."""
    return _DROPPED.sub("", _PARTIAL_PREFIX.sub("", message, count=1)).strip() or message


def _unparseable(lines: Sequence[str], message: str) -> dict[int, str]:
    """Lines named by ``unable to parse '<line>': <reason>``, matched exactly."""
    if _PARSE_MARKER not in message:
        return {}
    index_of: dict[str, int] = {}
    for i, line in enumerate(lines):
        index_of.setdefault(line, i)
    bad: dict[int, str] = {}
    for segment in message.split(_PARSE_MARKER)[1:]:
        # The line itself may contain "': ", so try each split point against the batch.
        start = 0
        while (cut := segment.find("': ", start)) >= 0:
            if segment[:cut] in index_of:
                reason = _DROPPED.sub("", segment[cut + 3 :]).strip()
                bad[index_of[segment[:cut]]] = f"unable to parse: {reason}"
                break
            start = cut + 1
    return bad


def _conflicting(
    lines: Sequence[str], indices: Sequence[int], conflict: re.Match[str]
) -> list[int]:
    field = _unquote(conflict.group("field"))
    measurement = _unquote(conflict.group("measurement"))
    wanted = conflict.group("type")
    return [
        i
        for i in indices
        if measurement_of(lines[i]) == measurement and field_types(lines[i]).get(field) == wanted
    ]


def _unquote(text: str) -> str:
    """Undo Go's %q quoting of a name (only ``\\"`` and ``\\\\`` occur in practice)."""
    try:
        value = json.loads(f'"{text}"')
    except ValueError:
        return text
    return value if isinstance(value, str) else text
