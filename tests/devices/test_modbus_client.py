"""The Modbus TCP client over real sockets: the simulator's servers, a recording proxy,
and a scripted server for answers a well-behaved device never gives.

The simulator serves its models' truth; decoded values must equal that truth to float32
precision. Stale and mismatched answers come from ``ScriptedServer``, whose frames are
built here by hand.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import pytest

from devices.modbus_client import (
    ModbusClient,
    ModbusClientOptions,
    ModbusClientPool,
    ModbusConnectionError,
    ModbusExceptionResponse,
    ModbusProtocolError,
    ModbusTimeout,
)
from devices.wire import LIGHTING_CABINET, SDM120, SDM630, RegisterMap, WordOrder
from firmware_sim.faults import Fault, FaultConfig
from firmware_sim.modbus import (
    CabinetModel,
    EnergyMeterModel,
    ModbusDeviceServer,
    ModbusUnit,
    building_meter,
)
from firmware_sim.modbus.loads import BuildingType
from pharos_core.clock import SteppedClock

SCHOOL_MORNING = datetime(2026, 3, 18, 3, 0, tzinfo=UTC)  # 10:00 in Cần Thơ, a Wednesday
FAST = ModbusClientOptions(timeout_s=0.3, connect_timeout_s=1.0, retries=0)


def as_float32(value: float) -> float:
    result: float = struct.unpack(">f", struct.pack(">f", value))[0]
    return result


def float32_truth(values: Mapping[str, float], names: Iterable[str]) -> dict[str, float]:
    return {name: as_float32(values[name]) for name in names}


def school_meter(
    device_id: str, clock: SteppedClock, *, single_phase: bool = False
) -> EnergyMeterModel:
    if single_phase:  # an SDM120 on a small office
        return building_meter(device_id, BuildingType.OFFICE, 7, clock.now(), phases=1, scale=0.05)
    return building_meter(device_id, BuildingType.SCHOOL, 7, clock.now())


def cabinet(device_id: str, clock: SteppedClock) -> CabinetModel:
    return CabinetModel(device_id, random.Random(device_id), clock.now(), closed=True)


async def eventually(condition: Callable[[], bool], within_s: float = 5.0) -> bool:
    """Wait (5 ms steps) until ``condition`` holds or ``within_s`` passes; its last value."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() >= deadline:
            return condition()
        await asyncio.sleep(0.005)
    return True


# -- a proxy that watches the wire -------------------------------------------------------


class WireRecorder:
    """A TCP proxy in front of a Modbus server that records every frame both ways.

    ``max_outstanding`` is the most requests ever sent without their answer: 1 means
    requests on a connection never interleaved.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.connections = 0
        self.outstanding = 0
        self.max_outstanding = 0
        self.requests: list[tuple[int, int]] = []  # (transaction id, unit)
        self.answers: list[tuple[int, int]] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    def _request(self, frame: bytes) -> None:
        self.requests.append((int.from_bytes(frame[:2], "big"), frame[6]))
        self.outstanding += 1
        self.max_outstanding = max(self.max_outstanding, self.outstanding)

    def _answer(self, frame: bytes) -> None:
        self.answers.append((int.from_bytes(frame[:2], "big"), frame[6]))
        self.outstanding -= 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers += [writer, up_writer]
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_pipe(reader, up_writer, self._request))
            tasks.create_task(_pipe(up_reader, writer, self._answer))


async def _pipe(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: Callable[[bytes], None]
) -> None:
    try:
        while True:
            header = await source.readexactly(7)
            body = await source.readexactly(int.from_bytes(header[4:6], "big") - 1)
            record(header + body)
            sink.write(header + body)
            await sink.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        sink.close()


# -- a server that answers as scripted --------------------------------------------------

Script = Callable[[int, int, bytes], list[bytes]]  # (tid, unit, pdu) -> frames to send


def frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def registers_pdu(registers: Iterable[int], function: int = 4) -> bytes:
    values = list(registers)
    return struct.pack(f">BB{len(values)}H", function, 2 * len(values), *values)


class ScriptedServer:
    """Answers each request with whatever frames ``script`` returns (none: silence)."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.requests: list[tuple[int, int, bytes]] = []
        self.connections = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                header = await reader.readexactly(7)
                pdu = await reader.readexactly(int.from_bytes(header[4:6], "big") - 1)
                tid, unit = int.from_bytes(header[:2], "big"), header[6]
                self.requests.append((tid, unit, pdu))
                for answer in self._script(tid, unit, pdu):
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


# -- decoding: every word order, every map ------------------------------------------------


@pytest.mark.parametrize("order", list(WordOrder))
@pytest.mark.parametrize("register_map", [SDM630, SDM120], ids=lambda m: m.name)
async def test_read_map_decodes_a_meter_in_every_word_order(
    order: WordOrder, register_map: RegisterMap
) -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    meter = school_meter("meter-1", clock, single_phase=register_map is SDM120)
    unit = ModbusUnit(meter, register_map, unit_id=7, word_order=order)
    async with (
        ModbusDeviceServer([unit], clock) as server,
        ModbusClient(server.host, server.port, FAST) as client,
    ):
        values = await client.read_map(7, register_map, order)
    truth = meter.measurements(clock.now())
    assert values == float32_truth(truth, register_map.fields)
    assert values["power_w"] > 100  # a building at 10:00 on a weekday draws power


async def test_read_map_in_the_wrong_word_order_reads_other_numbers() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    meter = school_meter("meter-1", clock)
    unit = ModbusUnit(meter, SDM630, word_order=WordOrder.CDAB)
    async with (
        ModbusDeviceServer([unit], clock) as server,
        ModbusClient(server.host, server.port, FAST) as client,
    ):
        right = await client.read_map(1, SDM630, WordOrder.CDAB)
        by_map = await client.read_map(1, SDM630)  # the map's ABCD is not this meter's
    assert right["frequency_hz"] == pytest.approx(50, abs=0.1)
    assert by_map["frequency_hz"] != pytest.approx(50, abs=10)


@pytest.mark.parametrize("order", list(WordOrder))
async def test_read_map_reads_a_cabinets_meter_coils_and_door(order: WordOrder) -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    model = cabinet("cab-1", clock)
    model.switch_circuit(3, False, clock.now())
    model.open_door()
    unit = ModbusUnit(model, LIGHTING_CABINET, unit_id=2, word_order=order)
    async with (
        ModbusDeviceServer([unit], clock) as server,
        ModbusClient(server.host, server.port, FAST) as client,
    ):
        values = await client.read_map(2, LIGHTING_CABINET, order)
    truth = model.measurements(clock.now())
    floats = {name: values[name] for name in LIGHTING_CABINET.fields}
    assert floats == float32_truth(truth, LIGHTING_CABINET.fields)
    circuits = {n: values[f"circuit_{n}_on"] for n in range(1, 17)}
    assert circuits == {n: n in (1, 2, 4) for n in range(1, 17)}  # 4 circuits, 3 open
    assert values["door_open"] is True


# -- writes ------------------------------------------------------------------------------


async def test_write_circuit_switches_the_contactor_and_the_meter_follows() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    model = cabinet("cab-1", clock)
    circuit_w = model.circuit_power_w(2)
    unit = ModbusUnit(model, LIGHTING_CABINET, unit_id=3)
    async with (
        ModbusDeviceServer([unit], clock) as server,
        ModbusClient(server.host, server.port, FAST) as client,
    ):
        before = await client.read_map(3, LIGHTING_CABINET)
        await client.write_circuit(3, 2, False)
        after = await client.read_map(3, LIGHTING_CABINET)
        with pytest.raises(ValueError, match=r"circuit 17 not in 1\.\.16"):
            await client.write_circuit(3, 17, True)
    assert model.is_closed(2) is False
    assert (before["circuit_2_on"], after["circuit_2_on"]) == (True, False)
    assert float(before["power_w"]) - float(after["power_w"]) == pytest.approx(circuit_w, 1e-5)


# -- errors ------------------------------------------------------------------------------


async def test_a_silent_meter_times_out_and_the_error_names_host_unit_and_function() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    silent = FaultConfig(faults=frozenset({Fault.MODBUS_TIMEOUT}))
    unit = ModbusUnit(school_meter("m", clock), SDM630, unit_id=5, faults=silent)
    async with (
        ModbusDeviceServer([unit], clock) as server,
        ModbusClient(server.host, server.port, FAST) as client,
    ):
        where = f"{server.host}:{server.port}"
        started = time.monotonic()
        with pytest.raises(ModbusTimeout) as caught:
            await client.read_map(5, SDM630)
        took = time.monotonic() - started
    error = caught.value
    assert str(error).startswith(f"{where} unit 5 fc 04")
    assert "read input registers" in str(error) and "no answer within 0.3 s" in str(error)
    assert (error.unit, error.function) == (5, 4)
    assert 0.3 <= took < 1.0
    assert client.timeouts == 1


async def test_an_exception_response_is_typed_with_its_code_and_meaning() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    failing = FaultConfig(faults=frozenset({Fault.MODBUS_EXCEPTION}), modbus_exception_code=2)
    unit = ModbusUnit(school_meter("m", clock), SDM630, unit_id=4, faults=failing)
    options = ModbusClientOptions(timeout_s=0.5, retries=3, backoff_s=0.01)
    async with (
        ModbusDeviceServer([unit], clock) as server,
        ModbusClient(server.host, server.port, options) as client,
    ):
        with pytest.raises(ModbusExceptionResponse) as caught:
            await client.read_map(4, SDM630)
        requests = client.requests
    assert (caught.value.code, caught.value.meaning) == (2, "illegal data address")
    assert "unit 4 fc 04 (read input registers): exception 2" in str(caught.value)
    assert requests == 1  # an illegal address stays illegal: no retry


async def test_a_busy_device_is_asked_again_with_back_off() -> None:
    busy_left = [2]

    def script(tid: int, unit: int, pdu: bytes) -> list[bytes]:
        if busy_left[0]:
            busy_left[0] -= 1
            return [frame(tid, unit, bytes([0x84, 6]))]
        return [frame(tid, unit, registers_pdu([0x4248, 0]))]  # 50.0 as ABCD

    options = ModbusClientOptions(timeout_s=0.5, retries=2, backoff_s=0.05)
    async with (
        ScriptedServer(script) as server,
        ModbusClient("127.0.0.1", server.port, options) as client,
    ):
        started = time.monotonic()
        registers = await client.read_registers(1, 0x46, 2)
        took = time.monotonic() - started
    assert registers == [0x4248, 0]
    assert len(server.requests) == 3
    assert took >= 0.05 + 0.1  # back-off doubles: 50 ms, then 100 ms


async def test_an_unreachable_host_is_a_connection_error() -> None:
    async with ScriptedServer(lambda *_: []) as server:
        port = server.port  # a port that was just free again: nobody listens
    async with ModbusClient("127.0.0.1", port, FAST) as client:
        with pytest.raises(ModbusConnectionError, match=rf"127.0.0.1:{port} unit 1 fc 01"):
            await client.read_coils(1, 0, 16)


async def test_retries_back_off_without_holding_the_host() -> None:
    """While a failing read waits between attempts, another unit's read goes through."""
    clock = SteppedClock(SCHOOL_MORNING)
    silent = FaultConfig(faults=frozenset({Fault.MODBUS_TIMEOUT}))
    units = [
        ModbusUnit(school_meter("dead", clock), SDM630, unit_id=1, faults=silent),
        ModbusUnit(school_meter("alive", clock), SDM630, unit_id=2),
    ]
    options = ModbusClientOptions(timeout_s=0.2, retries=2, backoff_s=0.4, backoff_max_s=1.0)
    finished: dict[str, float] = {}

    async def read(client: ModbusClient, unit: int, name: str) -> None:
        try:
            await client.read_registers(unit, 0, 2)
        except ModbusTimeout as exc:
            assert "gave up after 3 attempts" in exc.__notes__
        finished[name] = time.monotonic()

    async with (
        ModbusDeviceServer(units, clock) as server,
        ModbusClient(server.host, server.port, options) as client,
        asyncio.TaskGroup() as tasks,
    ):
        tasks.create_task(read(client, 1, "dead"))
        # The dead unit's first attempt holds the lock once its request is out.
        assert await eventually(lambda: client.requests == 1)
        tasks.create_task(read(client, 2, "alive"))
    # Holding the lock through the back-off would finish "alive" after "dead" (~1.8 s).
    assert finished["alive"] < finished["dead"] - 0.5


# -- late replies are never taken for the next answer --------------------------------------


async def test_a_late_reply_is_not_taken_for_the_next_request_of_another_meter() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    first, second = school_meter("first", clock), school_meter("second", clock)
    units = [ModbusUnit(first, SDM630, unit_id=1), ModbusUnit(second, SDM630, unit_id=2)]
    async with (
        ModbusDeviceServer(units, clock, latency_s=0.6) as server,
        ModbusClient(server.host, server.port, FAST) as client,
    ):
        with pytest.raises(ModbusTimeout):
            await client.read_map(1, SDM630)  # its answer comes 0.3 s after we gave up
        server.latency_s = 0.0
        values = await client.read_map(2, SDM630)
        opened = client.connections_opened
    assert values == float32_truth(second.measurements(clock.now()), SDM630.fields)
    assert values != float32_truth(first.measurements(clock.now()), SDM630.fields)
    assert opened == 2  # the timed-out connection was closed, not reused


async def test_a_late_reply_is_not_taken_for_the_next_read_of_a_changed_meter() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    model = cabinet("cab", clock)
    unit = ModbusUnit(model, LIGHTING_CABINET, unit_id=1)
    async with (
        ModbusDeviceServer([unit], clock, latency_s=0.6) as server,
        ModbusClient(server.host, server.port, FAST) as client,
    ):
        with pytest.raises(ModbusTimeout):
            await client.read_coils(1, 0, 16)  # all four circuits closed, answered late
        model.switch_circuit(1, False, clock.now())
        server.latency_s = 0.0
        coils = await client.read_coils(1, 0, 16)
    assert coils[:4] == [False, True, True, True]


async def test_a_stale_frame_with_another_transaction_id_is_skipped() -> None:
    def script(tid: int, unit: int, pdu: bytes) -> list[bytes]:
        stale = frame((tid + 100) % 65536, unit, registers_pdu([0xDEAD, 0xBEEF]))
        return [stale, frame(tid, unit, registers_pdu([1, 2]))]

    async with (
        ScriptedServer(script) as server,
        ModbusClient("127.0.0.1", server.port, FAST) as client,
    ):
        first = await client.read_registers(1, 0, 2)
        second = await client.read_registers(1, 0, 2)
    assert first == second == [1, 2]


async def test_an_answer_with_transaction_id_0_is_refused_and_the_connection_reset() -> None:
    """pymodbus accepts a reply numbered 0 for any request; the wrapper does not."""
    answers = iter([0, None])

    def script(tid: int, unit: int, pdu: bytes) -> list[bytes]:
        numbered = next(answers)
        return [frame(tid if numbered is None else numbered, unit, registers_pdu([7, 8]))]

    async with (
        ScriptedServer(script) as server,
        ModbusClient("127.0.0.1", server.port, FAST) as client,
    ):
        with pytest.raises(ModbusProtocolError, match="transaction id 0, sent 1"):
            await client.read_registers(1, 0, 2)
        assert await client.read_registers(1, 0, 2) == [7, 8]
    assert server.connections == 2


async def test_a_short_answer_is_a_protocol_error() -> None:
    async with (
        ScriptedServer(lambda tid, unit, pdu: [frame(tid, unit, registers_pdu([1]))]) as server,
        ModbusClient("127.0.0.1", server.port, FAST) as client,
    ):
        with pytest.raises(ModbusProtocolError, match="asked 2 registers, got 1"):
            await client.read_registers(1, 0, 2)


# -- one connection per host ---------------------------------------------------------------


async def test_devices_behind_one_host_share_one_connection_and_never_interleave() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    meters = {unit: school_meter(f"meter-{unit}", clock) for unit in (1, 2)}
    units = [ModbusUnit(meter, SDM630, unit_id=unit) for unit, meter in meters.items()]
    async with (
        ModbusDeviceServer(units, clock, latency_s=0.005) as server,
        WireRecorder(server.host, server.port) as proxy,
        ModbusClientPool(ModbusClientOptions(timeout_s=2.0)) as pool,
    ):
        reads = [pool.client("127.0.0.1", proxy.port).read_map(u, SDM630) for u in (1, 2) * 5]
        results = await asyncio.gather(*reads)
        same_client = pool.client("127.0.0.1", proxy.port) is pool.client("127.0.0.1", proxy.port)
        pool_size = len(pool)
    for unit, values in zip((1, 2) * 5, results, strict=True):
        assert values == float32_truth(meters[unit].measurements(clock.now()), SDM630.fields)
    assert same_client and pool_size == 1
    assert proxy.connections == 1
    assert proxy.max_outstanding == 1
    assert len(proxy.requests) == 10 * len(SDM630.read_blocks())
    assert {unit for _, unit in proxy.requests} == {1, 2}
    assert proxy.answers == proxy.requests  # each answer right after its own request
