"""InfluxClient against a real InfluxDB 1.6.7: partial writes, 401/403/404, 413, unreachable.

The error bodies quoted in the pure tests below are the ones 1.6.7 sent here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pharos.broker_process import free_port
from telemetry.influx.client import (
    InfluxClient,
    InfluxConfigurationError,
    InfluxUnavailableError,
    RejectedLine,
    RetryPolicy,
    attribute_rejections,
)
from telemetry.influx.line_protocol import encode_point
from tests.fixtures.influx import ADMIN, InfluxDB, InfluxFactory
from tests.telemetry.influx.helpers import reading

# What 1.6.7 answers (the "error" of the JSON body).
CONFLICT_1 = (
    'partial write: field type conflict: input field "pm25" on measurement "env_monitor" '
    "is type boolean, already exists as type float dropped=1"
)
UNPARSEABLE = (
    "partial write: unable to parse 'this is bad': invalid field format\n"
    "unable to parse 'also bad=': missing field value dropped=0"
)
NOTHING_PARSED = (
    "unable to parse 'bad line': invalid field format\n"
    "unable to parse 'another bad': invalid field format"
)
BEYOND_RETENTION = "partial write: points beyond retention policy dropped=2"


def seqs(server: InfluxDB, db: str) -> list[int]:
    return [row[1] for row in server.values("SELECT seq FROM env_monitor", db)]


# --- attribution of a 400 (pure, on real answers) --------------------------------------


def test_a_conflict_names_the_lines_of_that_field_and_type() -> None:
    lines = [
        encode_point(reading(1)),
        encode_point(reading(2, pm25=True)),
        encode_point(reading(3)),
    ]
    reason = (
        'field type conflict: input field "pm25" on measurement "env_monitor" is type '
        "boolean, already exists as type float"
    )
    assert attribute_rejections(lines, CONFLICT_1) == {1: reason}


def test_unparseable_lines_are_named_exactly() -> None:
    lines = ["env,d=a v=1 1", "this is bad", "env,d=b v=2 1", "also bad="]
    assert attribute_rejections(lines, UNPARSEABLE) == {
        1: "unable to parse: invalid field format",
        3: "unable to parse: missing field value",
    }


def test_a_request_where_nothing_parsed_rejects_every_line() -> None:
    lines = ["bad line", "another bad"]
    assert attribute_rejections(lines, NOTHING_PARSED) == {
        0: "unable to parse: invalid field format",
        1: "unable to parse: invalid field format",
    }


def test_drops_it_cannot_place_are_left_to_halving() -> None:
    lines = [encode_point(reading(n)) for n in range(4)]
    assert attribute_rejections(lines, BEYOND_RETENTION) is None
    # ... unless every line was dropped.
    assert attribute_rejections(lines[:2], BEYOND_RETENTION) == {
        0: "points beyond retention policy",
        1: "points beyond retention policy",
    }


# --- against the real server -------------------------------------------------------------


async def test_a_batch_with_one_bad_line_stores_the_rest_and_names_it_in_one_request(
    influxdb: InfluxDB, influx_db: str
) -> None:
    async with InfluxClient(influxdb.url, influx_db) as client:
        await client.write([encode_point(reading(0))])  # pm25 is a float in this shard
        good = [encode_point(reading(n)) for n in range(1, 10)]
        bad = encode_point(reading(10, pm25=True))
        result = await client.write([*good[:5], bad, *good[5:]])
        assert client.requests == 2  # no retry, no halving

    assert result.written == 9
    assert result.rejected == (
        RejectedLine(
            bad,
            'field type conflict: input field "pm25" on measurement "env_monitor" is type '
            "boolean, already exists as type float",
        ),
    )
    assert seqs(influxdb, influx_db) == list(range(10))


async def test_conflicts_it_does_not_name_are_found_by_halving(
    influxdb: InfluxDB, influx_db: str
) -> None:
    # 1.6.7 names only the first conflicting field and counts the others.
    async with InfluxClient(influxdb.url, influx_db) as client:
        await client.write([encode_point(reading(0, no2=1.0, so2=2))])
        lines = [encode_point(reading(n)) for n in range(1, 65)]
        lines[10] = encode_point(reading(11, pm25=True))  # bool into a float
        lines[40] = encode_point(reading(41, no2=7))  # integer into a float
        lines[50] = encode_point(reading(51, so2=1.5))  # float into an integer
        result = await client.write(lines)
        requests = client.requests - 1

    assert sorted(r.line for r in result.rejected) == sorted([lines[10], lines[40], lines[50]])
    assert {r.line: r.reason.split(":")[0] for r in result.rejected} == {
        line: "field type conflict" for line in (lines[10], lines[40], lines[50])
    }
    assert result.written == 61
    assert 1 < requests <= 1 + 2 * 3 * 6  # halving costs O(bad lines × log2 lines)
    assert len(seqs(influxdb, influx_db)) == 62


async def test_points_beyond_the_retention_policy_are_found_and_rejected(
    influxdb: InfluxDB, influx_db: str
) -> None:
    influxdb.query(
        f'CREATE RETENTION POLICY "short" ON "{influx_db}" DURATION 1h REPLICATION 1 DEFAULT'
    )
    now = datetime.now(UTC).replace(microsecond=0)
    fresh = [encode_point(reading(n, at=now - timedelta(seconds=n))) for n in range(6)]
    stale = [encode_point(reading(n, at=now - timedelta(days=3, seconds=n))) for n in (6, 7)]
    async with InfluxClient(influxdb.url, influx_db) as client:
        result = await client.write([*fresh[:3], stale[0], *fresh[3:], stale[1]])
    assert result.written == 6
    assert {r.line: r.reason for r in result.rejected} == {
        line: "points beyond retention policy" for line in stale
    }


async def test_wrong_credentials_stop_with_a_configuration_error(
    influxdb_factory: InfluxFactory,
) -> None:
    server = influxdb_factory(auth=True)
    server.create_database("pharos")
    async with InfluxClient(server.url, "pharos", token="admin:wrong") as client:
        with pytest.raises(InfluxConfigurationError, match=r"refused the credentials \(401"):
            await client.write_retrying([encode_point(reading(1))], RetryPolicy(attempts=5))
        assert client.requests == 1  # never retried

    server.query("CREATE USER reader WITH PASSWORD 'r'")
    async with InfluxClient(server.url, "pharos", token="reader:r") as client:
        with pytest.raises(InfluxConfigurationError, match=r'may not write to database "pharos"'):
            await client.write([encode_point(reading(1))])

    async with InfluxClient(server.url, "pharos", token=":".join(ADMIN)) as client:
        assert (await client.write([encode_point(reading(1))])).written == 1


async def test_a_missing_database_is_a_configuration_error(influxdb: InfluxDB) -> None:
    async with InfluxClient(influxdb.url, "no_such_db") as client:
        with pytest.raises(InfluxConfigurationError) as caught:
            await client.write_retrying([encode_point(reading(1))], RetryPolicy(attempts=5))
        assert client.requests == 1
    assert 'database "no_such_db" not found' in str(caught.value)
    assert "influx.database" in str(caught.value)


async def test_a_body_over_the_servers_limit_is_split_until_it_fits(
    influxdb_factory: InfluxFactory,
) -> None:
    # max-body-size counts the bytes on the wire (gzip), so the batch must be large.
    server = influxdb_factory(max_body_size=4000)
    server.create_database("pharos")
    lines = [encode_point(reading(n, device_id=f"env-{n:04d}", no2=n * 1.37)) for n in range(600)]
    async with InfluxClient(server.url, "pharos") as client:
        result = await client.write(lines)
        assert client.requests >= 3
    assert (result.written, result.rejected) == (600, ())
    assert sorted(seqs(server, "pharos")) == list(range(600))


async def test_an_unreachable_server_is_retried_then_reported_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    policy = RetryPolicy(attempts=3, initial_delay_s=0.01)
    async with InfluxClient(url, "pharos") as client:
        with pytest.raises(InfluxUnavailableError, match="unreachable"):
            await client.write_retrying([encode_point(reading(1))], policy)
        assert client.requests == 3


def test_v1_credentials_must_be_user_and_password() -> None:
    with pytest.raises(InfluxConfigurationError, match="must be 'user:password'"):
        InfluxClient("http://127.0.0.1:1", "pharos", token="just-a-token")
