"""Simulated meters and cabinets over real Modbus TCP, read by an independent client (pymodbus).

The simulator's servers run modbus-tk on free ports; pymodbus reads them, and the test
decodes the floats with its own byte shuffling, so neither side checks itself.
"""

from __future__ import annotations

import random
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from pymodbus.client import AsyncModbusTcpClient, ModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from devices.wire import LIGHTING_CABINET, SDM120, SDM630, RegisterMap, WordOrder
from firmware_sim.faults import Fault, FaultConfig
from firmware_sim.modbus import (
    CabinetModel,
    ModbusDeviceServer,
    ModbusServerPool,
    ModbusUnit,
    building_meter,
)
from firmware_sim.modbus.loads import BuildingType
from pharos_core.clock import SteppedClock

SCHOOL_MORNING = datetime(2026, 3, 18, 3, 0, tzinfo=UTC)  # 10:00 in Cần Thơ, a Wednesday
DUSK = datetime(2026, 3, 18, 11, 0, tzinfo=UTC)


def independent_float(registers: Sequence[int], order: WordOrder) -> float:
    """The float in two registers, by byte slicing written here, not by the wire module."""
    wire = struct.pack(">HH", *registers)  # as sent: reg0 hi, reg0 lo, reg1 hi, reg1 lo
    big_endian = {
        WordOrder.ABCD: wire,
        WordOrder.BADC: bytes([wire[1], wire[0], wire[3], wire[2]]),
        WordOrder.CDAB: wire[2:] + wire[:2],
        WordOrder.DCBA: wire[::-1],
    }[order]
    value: float = struct.unpack(">f", big_endian)[0]
    return value


ClientFactory = Callable[..., ModbusTcpClient]


def as_float32(value: float) -> float:
    result: float = struct.unpack(">f", struct.pack(">f", value))[0]
    return result


def read_map(
    client: ModbusTcpClient, register_map: RegisterMap, unit: int, order: WordOrder
) -> dict[str, float]:
    """Read every field the way a poller would: in the map's few contiguous blocks."""
    values: dict[str, float] = {}
    blocks = register_map.read_blocks()
    for block in blocks:
        reply = client.read_input_registers(block.start, count=block.count, device_id=unit)
        assert not reply.isError(), reply
        for name in block.fields:
            offset = register_map.fields[name].address - block.start
            values[name] = independent_float(reply.registers[offset : offset + 2], order)
    return values


@pytest.fixture
def client_for() -> Iterator[ClientFactory]:
    clients: list[ModbusTcpClient] = []

    def connect(server: ModbusDeviceServer, timeout: float = 2.0) -> ModbusTcpClient:
        client = ModbusTcpClient(server.host, port=server.port, timeout=timeout, retries=0)
        assert client.connect(), f"cannot connect to the simulator on {server.port}"
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.mark.parametrize("order", list(WordOrder))
def test_sdm630_reads_as_the_simulators_truth_in_every_word_order(
    order: WordOrder, client_for: ClientFactory
) -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    meter = building_meter("meter-1", BuildingType.SCHOOL, 7, clock.now())
    unit = ModbusUnit(meter, SDM630, unit_id=1, word_order=order)
    with ModbusDeviceServer([unit], clock) as server:
        client = client_for(server)
        read = read_map(client, SDM630, 1, order)
    truth = meter.measurements(clock.now())  # time stood still: the same instant
    assert set(read) == set(SDM630.fields)
    assert read == {name: as_float32(truth[name]) for name in SDM630.fields}
    assert read["power_w"] > 50_000  # a school at 10:00 on a weekday
    assert 49.95 <= read["frequency_hz"] <= 50.05


def test_pymodbus_own_float_decoding_agrees_for_word_orders_it_knows(
    client_for: ClientFactory,
) -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    meter = building_meter("meter-2", BuildingType.HOSPITAL, 3, clock.now())
    units = [
        ModbusUnit(meter, SDM630, unit_id=1),  # the map's ABCD
        ModbusUnit(meter, SDM630, unit_id=2, word_order=WordOrder.CDAB),
    ]
    with ModbusDeviceServer(units, clock) as server:
        client = client_for(server)
        big = client.read_input_registers(0x34, count=2, device_id=1).registers
        little = client.read_input_registers(0x34, count=2, device_id=2).registers
    float32 = ModbusTcpClient.DATATYPE.FLOAT32
    truth = as_float32(meter.measurements(clock.now())["power_w"])
    assert ModbusTcpClient.convert_from_registers(big, float32, word_order="big") == truth
    assert ModbusTcpClient.convert_from_registers(little, float32, word_order="little") == truth


def test_sdm120_map_serves_a_single_phase_meter(client_for: ClientFactory) -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    meter = building_meter("meter-3", BuildingType.OFFICE, 5, clock.now(), scale=0.05, phases=1)
    with ModbusDeviceServer([ModbusUnit(meter, SDM120, unit_id=7)], clock) as server:
        client = client_for(server)
        assert len(SDM120.read_blocks()) == 2
        read = read_map(client, SDM120, 7, WordOrder.ABCD)
    truth = meter.measurements(clock.now())
    assert read == {name: as_float32(truth[name]) for name in SDM120.fields}
    assert read["va_total"] == pytest.approx(read["voltage_v"] * read["current_a"], rel=1e-5)


def test_readings_follow_the_clock(client_for: ClientFactory) -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    meter = building_meter("meter-4", BuildingType.SCHOOL, 7, clock.now())
    with ModbusDeviceServer([ModbusUnit(meter, SDM630)], clock) as server:
        client = client_for(server)
        morning = read_map(client, SDM630, 1, WordOrder.ABCD)
        clock.advance(14 * 3600)  # midnight
        night = read_map(client, SDM630, 1, WordOrder.ABCD)
    assert night["power_w"] < morning["power_w"] / 4
    assert night["import_kwh"] > morning["import_kwh"] + 100  # an afternoon of classes


def test_cabinet_coils_switch_the_lamps_and_the_meter_follows(client_for: ClientFactory) -> None:
    clock = SteppedClock(DUSK)
    cabinet = CabinetModel("cab-1", random.Random("cab-1"), clock.now())
    with ModbusDeviceServer([ModbusUnit(cabinet, LIGHTING_CABINET)], clock) as server:
        client = client_for(server)
        assert read_map(client, LIGHTING_CABINET, 1, WordOrder.ABCD)["power_w"] == 0

        assert not client.write_coils(0, [True] * 4, device_id=1).isError()
        assert client.read_coils(0, count=4, device_id=1).bits[:4] == [True] * 4
        assert [cabinet.is_closed(n) for n in range(1, 5)] == [True] * 4
        all_on = read_map(client, LIGHTING_CABINET, 1, WordOrder.ABCD)["power_w"]

        assert not client.write_coil(0, False, device_id=1).isError()  # circuit 1: 20 x 90 W
        one_off = read_map(client, LIGHTING_CABINET, 1, WordOrder.ABCD)["power_w"]
        assert not cabinet.is_closed(1)
        assert all_on - one_off == pytest.approx(20 * 90, abs=0.5)

        # Dimming told to the cabinet shows at cabinet level over Modbus too.
        cabinet.set_lamp_level(2, 50, clock.now())
        dimmed = read_map(client, LIGHTING_CABINET, 1, WordOrder.ABCD)["power_w"]
        assert one_off - dimmed == pytest.approx(16 * 120 * 0.475, abs=0.5)

        # A command to the model shows in the coils the client reads.
        ack = cabinet.handle("switch_circuit", {"circuit": 3, "on": False}, clock.now())
        assert ack.status == "ok"
        bits = client.read_coils(0, count=LIGHTING_CABINET.coil_count, device_id=1).bits
        assert LIGHTING_CABINET.decode_coils(bits) == {
            f"circuit_{n}_on": n in (2, 4) for n in range(1, 17)
        }


def test_spare_outputs_keep_what_is_written_without_lamps(client_for: ClientFactory) -> None:
    clock = SteppedClock(DUSK)
    cabinet = CabinetModel("cab-2", random.Random("cab-2"), clock.now())
    with ModbusDeviceServer([ModbusUnit(cabinet, LIGHTING_CABINET)], clock) as server:
        client = client_for(server)
        assert not client.write_coil(9, True, device_id=1).isError()  # circuit 10: not wired
        assert client.read_coils(9, count=1, device_id=1).bits[0] is True
        assert cabinet.coil_states(clock.now()) == [False] * 4
        assert read_map(client, LIGHTING_CABINET, 1, WordOrder.ABCD)["power_w"] == 0
        beyond = client.read_coils(0, count=17, device_id=1)  # 16 outputs only
        assert beyond.isError() and beyond.exception_code == 2  # illegal data address


def test_discrete_input_shows_the_door(client_for: ClientFactory) -> None:
    clock = SteppedClock(DUSK)
    cabinet = CabinetModel("cab-3", random.Random("cab-3"), clock.now())
    with ModbusDeviceServer([ModbusUnit(cabinet, LIGHTING_CABINET)], clock) as server:
        client = client_for(server)
        assert client.read_discrete_inputs(0, count=1, device_id=1).bits[0] is False
        cabinet.open_door()
        bits = client.read_discrete_inputs(0, count=1, device_id=1).bits
        assert LIGHTING_CABINET.decode_discrete_inputs(bits) == {"door_open": True}
        cabinet.close_door()
        assert client.read_discrete_inputs(0, count=1, device_id=1).bits[0] is False


def test_modbus_exception_fault_answers_with_its_code(client_for: ClientFactory) -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    meter = building_meter("meter-5", BuildingType.SCHOOL, 7, clock.now())
    failing = FaultConfig(faults=frozenset({Fault.MODBUS_EXCEPTION}), modbus_exception_code=4)
    busy = FaultConfig(faults=frozenset({Fault.MODBUS_EXCEPTION}), modbus_exception_code=6)
    units = [
        ModbusUnit(meter, SDM630, unit_id=1, faults=failing),
        ModbusUnit(meter, SDM630, unit_id=2),
    ]
    with ModbusDeviceServer(units, clock) as server:
        client = client_for(server)
        reply = client.read_input_registers(0, count=2, device_id=1)
        assert reply.isError() and reply.exception_code == 4  # slave device failure
        assert not client.read_input_registers(0, count=2, device_id=2).isError()
        server.set_faults(1, busy)
        assert client.read_input_registers(0, count=2, device_id=1).exception_code == 6
        server.set_faults(1, FaultConfig())
        assert not client.read_input_registers(0, count=2, device_id=1).isError()


def test_modbus_timeout_fault_stays_silent_while_another_meter_answers(
    client_for: ClientFactory,
) -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    silent = FaultConfig(faults=frozenset({Fault.MODBUS_TIMEOUT}))
    dead = building_meter("meter-6", BuildingType.SCHOOL, 7, clock.now())
    alive = building_meter("meter-7", BuildingType.OFFICE, 7, clock.now())
    dead_server = ModbusDeviceServer([ModbusUnit(dead, SDM630, faults=silent)], clock)
    alive_server = ModbusDeviceServer([ModbusUnit(alive, SDM630)], clock)
    with ModbusServerPool([dead_server, alive_server]), ThreadPoolExecutor(1) as pool:
        dead_client = client_for(dead_server, timeout=0.3)
        alive_client = client_for(alive_server)
        started = time.monotonic()
        waiting = pool.submit(dead_client.read_input_registers, 0, count=2, device_id=1)
        reply = alive_client.read_input_registers(0, count=2, device_id=1)
        answered_after = time.monotonic() - started
        assert not reply.isError()
        assert not waiting.done()  # the silent meter is still being waited for
        with pytest.raises(ModbusIOException):
            waiting.result(timeout=5)
        timed_out_after = time.monotonic() - started
    assert answered_after < 0.2
    assert timed_out_after >= 0.3


def test_a_silent_unit_does_not_hold_up_its_neighbour_on_the_same_server(
    client_for: ClientFactory,
) -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    meter = building_meter("meter-8", BuildingType.SCHOOL, 7, clock.now())
    silent = FaultConfig(faults=frozenset({Fault.MODBUS_TIMEOUT}))
    units = [ModbusUnit(meter, SDM630, unit_id=1, faults=silent), ModbusUnit(meter, SDM630, 2)]
    with ModbusDeviceServer(units, clock) as server:
        silent_client = client_for(server, timeout=0.3)
        other_client = client_for(server)
        with pytest.raises(ModbusIOException):
            silent_client.read_input_registers(0, count=2, device_id=1)
        assert not other_client.read_input_registers(0, count=2, device_id=2).isError()


def test_latency_delays_each_answer(client_for: ClientFactory) -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    meter = building_meter("meter-9", BuildingType.SCHOOL, 7, clock.now())
    with ModbusDeviceServer([ModbusUnit(meter, SDM630)], clock, latency_s=0.05) as server:
        client = client_for(server)
        started = time.monotonic()
        for _ in range(3):
            assert not client.read_input_registers(0, count=2, device_id=1).isError()
        assert time.monotonic() - started >= 0.15


async def test_asyncio_code_runs_servers_without_blocking_its_loop() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    meter = building_meter("meter-10", BuildingType.HOSPITAL, 7, clock.now())
    unit = ModbusUnit(meter, SDM630, word_order=WordOrder.DCBA)
    async with ModbusDeviceServer([unit], clock, latency_s=0.02) as server:
        client = AsyncModbusTcpClient(server.host, port=server.port, timeout=2, retries=0)
        assert await client.connect()
        try:
            reply = await client.read_input_registers(0x34, count=2, device_id=1)
        finally:
            client.close()
    truth = as_float32(meter.measurements(clock.now())["power_w"])
    assert independent_float(reply.registers, WordOrder.DCBA) == truth


def test_hundreds_of_meters_each_on_its_own_port(client_for: ClientFactory) -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    threads_before = threading.active_count()
    meters = [
        building_meter(f"meter-{n:03}", BuildingType.OFFICE, 11, clock.now()) for n in range(200)
    ]
    servers = [ModbusDeviceServer([ModbusUnit(m, SDM630)], clock) for m in meters]
    with ModbusServerPool(servers):
        assert len({server.port for server in servers}) == 200
        for meter, server in zip(meters, servers, strict=True):
            client = client_for(server)
            registers = client.read_input_registers(0x34, count=2, device_id=1).registers
            client.close()
            truth = as_float32(meter.measurements(clock.now())["power_w"])
            assert independent_float(registers, WordOrder.ABCD) == truth
        assert threading.active_count() >= threads_before + 200
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5
    assert threading.active_count() == threads_before
    with pytest.raises(RuntimeError, match="not started"):
        _ = servers[0].port


def test_a_stopped_server_starts_again_and_a_bound_port_is_refused() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    meter = building_meter("meter-11", BuildingType.OFFICE, 1, clock.now())
    server = ModbusDeviceServer([ModbusUnit(meter, SDM630)], clock)
    with server:
        port = server.port
        clash = ModbusDeviceServer([ModbusUnit(meter, SDM630)], clock, port=port)
        with pytest.raises(OSError):
            clash.start()
    with server:
        client = ModbusTcpClient(server.host, port=server.port, timeout=2, retries=0)
        try:
            assert client.connect()
            assert not client.read_input_registers(0, count=2, device_id=1).isError()
        finally:
            client.close()
    with pytest.raises(ValueError, match="duplicate unit ids"):
        ModbusDeviceServer([ModbusUnit(meter, SDM630), ModbusUnit(meter, SDM120)], clock)
