"""The durable spool: order, bounds, reopening, torn and corrupt records, SIGKILL."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import pytest

from telemetry.spool import HEADER, DurableSpool, SpoolError, SpoolFull, SpoolRecord

ROOT = Path(__file__).resolve().parents[2]


def payload(n: int) -> bytes:
    return f"env_monitor,device_id=env-{n:04d} seq={n}i {n}".encode()


async def drain(spool: DurableSpool) -> list[SpoolRecord]:
    records = []
    while (record := await spool.oldest()) is not None:
        records.append(record)
        await spool.pop_oldest()
    return records


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def set_aside(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.corrupt"))


async def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    async with DurableSpool(tmp_path, 1_000_000, segment_bytes=200) as spool:
        for n in range(40):
            await spool.append(payload(n), items=n + 1)
        assert spool.depth_records == 40
        assert spool.depth_items == sum(range(1, 41))
        assert spool.depth_bytes == sum(HEADER.size + len(payload(n)) for n in range(40))
        assert len(segments(tmp_path)) > 5

        records = await drain(spool)

        assert [r.payload for r in records] == [payload(n) for n in range(40)]
        assert [r.items for r in records] == list(range(1, 41))
        assert (spool.empty, spool.depth_bytes, spool.depth_items) == (True, 0, 0)
        assert segments(tmp_path) == []  # an empty spool leaves no files behind
        await spool.append(payload(99))
        assert (await spool.oldest()) == SpoolRecord(payload(99), 1)


async def test_popped_records_stay_popped_after_a_reopen(tmp_path: Path) -> None:
    async with DurableSpool(tmp_path, 1_000_000, segment_bytes=200) as spool:
        for n in range(10):
            await spool.append(payload(n))
        for _ in range(4):
            await spool.pop_oldest()
    async with DurableSpool(tmp_path, 1_000_000, segment_bytes=200) as spool:
        assert spool.depth_records == 6
        assert [r.payload for r in await drain(spool)] == [payload(n) for n in range(4, 10)]


async def test_a_full_spool_refuses_without_dropping_anything(tmp_path: Path) -> None:
    record_size = HEADER.size + 100
    async with DurableSpool(tmp_path, 8 * record_size + 50) as spool:
        for n in range(8):
            await spool.append(bytes([n]) * 100)
        with pytest.raises(SpoolFull, match="full: 928 of 978 bytes in use"):
            await spool.append(b"x" * 100)
        assert spool.depth_records == 8
        await spool.pop_oldest()
        await spool.append(b"y" * 100)  # room again
        records = await drain(spool)
    assert [r.payload[:1] for r in records] == [bytes([n]) for n in range(1, 8)] + [b"y"]


async def test_a_torn_last_record_is_ignored_and_appending_continues(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with DurableSpool(tmp_path, 1_000_000) as spool:
        for n in range(5):
            await spool.append(payload(n))
    [segment] = segments(tmp_path)
    size = segment.stat().st_size
    with segment.open("r+b") as file:
        file.truncate(size - 7)  # the process died in the middle of the last append

    with caplog.at_level(logging.WARNING, logger="telemetry.spool"):
        async with DurableSpool(tmp_path, 1_000_000) as spool:
            assert spool.depth_records == 4
            await spool.append(payload(5))
            records = await drain(spool)
    assert [r.payload for r in records] == [payload(n) for n in (0, 1, 2, 3, 5)]
    assert "cut short" in caplog.text


async def test_a_torn_header_is_ignored_too(tmp_path: Path) -> None:
    async with DurableSpool(tmp_path, 1_000_000) as spool:
        await spool.append(payload(0))
    [segment] = segments(tmp_path)
    with segment.open("ab") as file:
        file.write(b"PSR1\x00\x00")  # six bytes of a header
    async with DurableSpool(tmp_path, 1_000_000) as spool:
        assert [r.payload for r in await drain(spool)] == [payload(0)]


async def test_a_corrupt_record_is_caught_by_its_crc_and_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with DurableSpool(tmp_path, 1_000_000) as spool:
        for n in range(5):
            await spool.append(payload(n))
    [segment] = segments(tmp_path)
    data = bytearray(segment.read_bytes())
    third = 2 * (HEADER.size + len(payload(0)))
    data[third + HEADER.size + 3] ^= 0x01  # one bit of record 2's payload
    segment.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="telemetry.spool"):
        async with DurableSpool(tmp_path, 1_000_000) as spool:
            assert spool.quarantined == 1
            records = await drain(spool)
    assert [r.payload for r in records] == [payload(n) for n in (0, 1, 3, 4)]
    assert "failed its CRC" in caplog.text
    [kept] = set_aside(tmp_path)
    assert kept.read_bytes()[HEADER.size :] != payload(2)
    assert len(kept.read_bytes()) == HEADER.size + len(payload(2))


async def test_corruption_after_opening_is_caught_when_read(tmp_path: Path) -> None:
    async with DurableSpool(tmp_path, 1_000_000) as spool:
        for n in range(3):
            await spool.append(payload(n))
        [segment] = segments(tmp_path)
        data = bytearray(segment.read_bytes())
        data[HEADER.size + len(payload(0)) + HEADER.size] ^= 0xFF  # record 1's payload
        segment.write_bytes(bytes(data))
        records = await drain(spool)
    assert [r.payload for r in records] == [payload(0), payload(2)]


async def test_bytes_that_are_not_records_are_set_aside(tmp_path: Path) -> None:
    async with DurableSpool(tmp_path, 1_000_000) as spool:
        for n in range(4):
            await spool.append(payload(n))
    [segment] = segments(tmp_path)
    data = bytearray(segment.read_bytes())
    data[2 * (HEADER.size + len(payload(0)))] = ord("X")  # record 2's magic
    segment.write_bytes(bytes(data))
    async with DurableSpool(tmp_path, 1_000_000) as spool:
        assert [r.payload for r in await drain(spool)] == [payload(0), payload(1)]
    assert len(set_aside(tmp_path)) == 1


async def test_one_process_at_a_time(tmp_path: Path) -> None:
    async with DurableSpool(tmp_path, 1_000_000):
        with pytest.raises(SpoolError, match="in use by another process"):
            await DurableSpool(tmp_path, 1_000_000).open()


_APPENDER = """
import asyncio, sys
from pathlib import Path
from telemetry.spool import DurableSpool

async def main() -> None:
    async with DurableSpool(Path(sys.argv[1]), 10**9, segment_bytes=4096) as spool:
        n = 0
        while True:
            await spool.append(f"batch {n} ".encode() * 40, items=n)
            print(n, flush=True)  # acknowledged: durable on disk
            n += 1

asyncio.run(main())
"""


async def test_every_acknowledged_record_survives_sigkill(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _APPENDER,
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    acknowledged = -1
    async with asyncio.timeout(30):
        while acknowledged < 300:
            acknowledged = int(await process.stdout.readline())
    process.send_signal(signal.SIGKILL)
    printed_meanwhile = (await process.stdout.read()).split()  # printed before the kill
    await process.wait()
    assert process.returncode == -signal.SIGKILL
    acknowledged = max([acknowledged, *(int(n) for n in printed_meanwhile)])

    async with DurableSpool(tmp_path, 10**9, segment_bytes=4096) as spool:
        records = await drain(spool)
    # Every acknowledged record, in order; at most one more that was not yet printed.
    assert len(records) - 1 - acknowledged in (0, 1)
    for n, record in enumerate(records):
        assert record == SpoolRecord(f"batch {n} ".encode() * 40, n)
