"""InfluxClient against a local HTTP server, for answers a real 1.6.7 cannot give here:
429 with Retry-After, 503, a slow server, and the whole 2.x ``/api/v2/write`` API.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from telemetry.influx.client import (
    InfluxClient,
    InfluxConfigurationError,
    InfluxUnavailableError,
    RetryPolicy,
    parse_retry_after,
)
from telemetry.influx.line_protocol import encode_point
from tests.telemetry.influx.helpers import Answer, FakeInflux, reading

LINES = [encode_point(reading(n)) for n in range(3)]
QUICK = RetryPolicy(attempts=3, initial_delay_s=0.05, max_delay_s=2.0)


def error(message: str, key: str = "error") -> bytes:
    return json.dumps({key: message}).encode()


async def test_429_waits_as_long_as_retry_after_says() -> None:
    async with (
        FakeInflux(Answer(429, error("too many"), {"Retry-After": "1"}), Answer()) as fake,
        InfluxClient(fake.url, "pharos") as client,
    ):
        result = await client.write_retrying(LINES, QUICK)
    assert result.written == 3
    first, second = fake.requests
    assert second.at - first.at >= 0.95  # not the 0.05 s back-off
    assert second.lines == first.lines == LINES


async def test_a_retry_after_beyond_the_budget_gives_up_at_once() -> None:
    async with (
        FakeInflux(Answer(429, error("slow down"), {"Retry-After": "120"})) as fake,
        InfluxClient(fake.url, "pharos") as client,
    ):
        with pytest.raises(InfluxUnavailableError, match="429") as caught:
            await client.write_retrying(LINES, QUICK)
    assert caught.value.retry_after == 120
    assert len(fake.requests) == 1  # the caller spools instead of waiting two minutes


async def test_503_is_retried_with_back_off_until_it_succeeds() -> None:
    answers = [Answer(503, error("engine overloaded"))] * 2 + [Answer()]
    async with FakeInflux(*answers) as fake, InfluxClient(fake.url, "pharos") as client:
        result = await client.write_retrying(LINES, QUICK)
    assert result.written == 3
    gaps = [b.at - a.at for a, b in zip(fake.requests, fake.requests[1:], strict=False)]
    assert len(gaps) == 2
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095  # 0.05 s, then doubled


async def test_5xx_that_persists_is_reported_unavailable_after_the_attempts() -> None:
    async with (
        FakeInflux(Answer(500, error("timeout"))) as fake,
        InfluxClient(fake.url, "pharos") as client,
    ):
        with pytest.raises(InfluxUnavailableError, match="answered 500: timeout"):
            await client.write_retrying(LINES, QUICK)
    assert len(fake.requests) == 3


async def test_a_server_that_does_not_answer_in_time_is_unavailable() -> None:
    async with (
        FakeInflux(Answer(delay_s=2.0)) as fake,
        InfluxClient(fake.url, "pharos", timeout_s=0.2) as client,
    ):
        with pytest.raises(InfluxUnavailableError, match=r"did not answer within 0\.2 s"):
            await client.write(LINES)


async def test_413_splits_the_batch_in_halves() -> None:
    async with (
        FakeInflux(Answer(413, error("Request Entity Too Large")), Answer()) as fake,
        InfluxClient(fake.url, "pharos") as client,
    ):
        lines = [encode_point(reading(n)) for n in range(8)]
        result = await client.write(lines)
    assert result.written == 8
    assert [r.lines for r in fake.requests] == [lines, lines[:4], lines[4:]]


async def test_a_single_line_over_the_limit_is_rejected_not_retried() -> None:
    async with (
        FakeInflux(Answer(413, error("Request Entity Too Large"))) as fake,
        InfluxClient(fake.url, "pharos") as client,
    ):
        result = await client.write(LINES[:1])
    assert result.written == 0
    assert "larger than InfluxDB's request limit" in result.rejected[0].reason
    assert len(fake.requests) == 1


async def test_an_unexpected_400_is_a_configuration_error_not_dead_letters() -> None:
    async with (
        FakeInflux(Answer(400, error("gzip: invalid header"))) as fake,
        InfluxClient(fake.url, "pharos") as client,
    ):
        with pytest.raises(InfluxConfigurationError, match="gzip: invalid header"):
            await client.write(LINES)


# --- the 2.x API --------------------------------------------------------------------------


async def test_v2_writes_gzip_to_api_v2_write_with_org_bucket_and_token() -> None:
    async with FakeInflux() as fake:
        client = InfluxClient(fake.url, "pharos", api="v2", org="can-tho-ioc", token="t0k3n")
        async with client:
            result = await client.write(LINES)
    assert result.written == 3
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/api/v2/write")
    assert request.params == {"org": "can-tho-ioc", "bucket": "pharos", "precision": "ns"}
    assert request.headers["authorization"] == "Token t0k3n"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"] == "text/plain; charset=utf-8"
    assert request.lines == LINES  # the recorded body was gunzipped


async def test_v1_sends_db_precision_and_basic_auth() -> None:
    async with (
        FakeInflux() as fake,
        InfluxClient(fake.url, "pharos", token="pharos:s3cret", precision="us") as c,
    ):
        await c.write(LINES)
    [request] = fake.requests
    assert (request.path, request.params) == ("/write", {"db": "pharos", "precision": "u"})
    assert request.headers["authorization"] == "Basic cGhhcm9zOnMzY3JldA=="
    assert "p" not in request.params  # the password stays out of the URL


async def test_v2_partial_write_422_names_the_bad_line() -> None:
    bad = encode_point(reading(9, pm25=True))
    message = (
        "failure writing points to database: partial write: field type conflict: input field "
        '"pm25" on measurement "env_monitor" is type boolean, already exists as type float '
        "dropped=1"
    )
    body = json.dumps({"code": "unprocessable entity", "message": message}).encode()
    async with (
        FakeInflux(Answer(422, body)) as fake,
        InfluxClient(fake.url, "pharos", api="v2", org="o", token="t") as client,
    ):
        result = await client.write([*LINES, bad])
    assert result.written == 3
    assert [r.line for r in result.rejected] == [bad]
    assert result.rejected[0].reason.startswith('field type conflict: input field "pm25"')
    assert len(fake.requests) == 1


async def test_v2_unauthorised_and_missing_bucket_are_configuration_errors() -> None:
    unauthorised = Answer(401, error("unauthorized access", key="message"))
    missing = Answer(404, error('bucket "pharos" not found', key="message"))
    async with (
        FakeInflux(unauthorised, missing) as fake,
        InfluxClient(fake.url, "pharos", api="v2", org="o", token="t") as client,
    ):
        with pytest.raises(InfluxConfigurationError, match="401: unauthorized access"):
            await client.write(LINES)
        with pytest.raises(InfluxConfigurationError, match=r"influx\.api") as caught:
            await client.write(LINES)
    assert 'bucket "pharos" not found' in str(caught.value)


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 11, 22, 11, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Sun, 22 Nov 2026 11:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sun, 22 Nov 2026 10:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
