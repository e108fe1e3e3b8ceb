"""Register maps: float32 word orders, the Eastron addresses, grouping into reads, decoding."""

from __future__ import annotations

import math
import struct

import pytest

from devices.wire import (
    LIGHTING_CABINET,
    MAX_REGISTERS_PER_READ,
    REGISTER_MAPS,
    SDM120,
    SDM630,
    DeviceKind,
    RegisterField,
    RegisterMap,
    WordOrder,
    decode_block,
    decode_float32,
    encode_float32,
    encode_registers,
    get_register_map,
    kind_spec,
)

TYPICAL_AND_EDGE = [
    0.0,
    -0.0,
    230.0,
    49.98,
    0.93,
    -1234.5,
    -0.75,
    1.5e-30,
    98_911.640625,
    3.0e38,
    -3.0e38,
    float("inf"),
]


def _as_float32(value: float) -> float:
    result: float = struct.unpack(">f", struct.pack(">f", value))[0]
    return result


@pytest.mark.parametrize("order", list(WordOrder))
@pytest.mark.parametrize("value", TYPICAL_AND_EDGE)
def test_float32_round_trips_in_every_word_order(order: WordOrder, value: float) -> None:
    registers = encode_float32(value, order)
    assert all(0 <= r <= 0xFFFF for r in registers)
    decoded = decode_float32(registers, order)
    assert decoded == _as_float32(value)
    assert math.copysign(1, decoded) == math.copysign(1, value)


@pytest.mark.parametrize("order", list(WordOrder))
def test_nan_survives_every_word_order(order: WordOrder) -> None:
    assert math.isnan(decode_float32(encode_float32(float("nan"), order), order))


@pytest.mark.parametrize(
    ("order", "registers"),
    [
        # 230.0 is 0x43 0x66 0x00 0x00 as a big-endian float.
        (WordOrder.ABCD, (0x4366, 0x0000)),
        (WordOrder.BADC, (0x6643, 0x0000)),
        (WordOrder.CDAB, (0x0000, 0x4366)),
        (WordOrder.DCBA, (0x0000, 0x6643)),
    ],
)
def test_known_patterns_of_230_volts(order: WordOrder, registers: tuple[int, int]) -> None:
    assert encode_float32(230.0, order) == registers
    assert decode_float32(registers, order) == 230.0


def test_known_pattern_with_all_four_bytes_distinct() -> None:
    # -1234.5 is 0xC4 0x9A 0x50 0x00; 1.0 is 0x3F 0x80 0x00 0x00.
    assert encode_float32(-1234.5, WordOrder.ABCD) == (0xC49A, 0x5000)
    assert encode_float32(-1234.5, WordOrder.BADC) == (0x9AC4, 0x0050)
    assert encode_float32(-1234.5, WordOrder.CDAB) == (0x5000, 0xC49A)
    assert encode_float32(-1234.5, WordOrder.DCBA) == (0x0050, 0x9AC4)
    assert decode_float32((0x3F80, 0x0000)) == 1.0


def test_values_beyond_float32_and_bad_registers_are_refused() -> None:
    with pytest.raises(ValueError, match="float32 range"):
        encode_float32(1e39)
    with pytest.raises(ValueError, match="2 registers"):
        decode_float32([0x4366])
    with pytest.raises(ValueError, match="16-bit"):
        decode_float32([0x4366, 0x10000])


def test_maps_are_known_by_the_names_the_registry_uses() -> None:
    assert set(REGISTER_MAPS) == {"sdm630", "sdm120", "lighting_cabinet"}
    assert get_register_map("sdm120") is SDM120
    with pytest.raises(ValueError, match="known: sdm630, sdm120, lighting_cabinet"):
        get_register_map("sdm72")


def test_sdm630_addresses_follow_eastron() -> None:
    addresses = {name: spec.address for name, spec in SDM630.fields.items()}
    assert addresses["voltage_v"] == 0x00
    assert addresses["voltage_l3_v"] == 0x04
    assert addresses["current_a"] == 0x06
    assert addresses["power_l2_w"] == 0x0E
    assert addresses["power_w"] == 0x34
    assert addresses["va_total"] == 0x38
    assert addresses["var_total"] == 0x3C
    assert addresses["power_factor"] == 0x3E
    assert addresses["frequency_hz"] == 0x46
    assert addresses["import_kwh"] == 0x48
    assert addresses["export_kwh"] == 0x4A
    assert addresses["voltage_thd_pct"] == 0xF8
    assert addresses["energy_kwh"] == 0x156
    assert len(addresses) == 18
    assert SDM630.word_order is WordOrder.ABCD


def test_sdm120_addresses_follow_eastron() -> None:
    addresses = {name: spec.address for name, spec in SDM120.fields.items()}
    assert addresses == {
        "voltage_v": 0x00,
        "current_a": 0x06,
        "power_w": 0x0C,
        "va_total": 0x12,
        "var_total": 0x18,
        "power_factor": 0x1E,
        "frequency_hz": 0x46,
        "import_kwh": 0x48,
        "export_kwh": 0x4A,
        "energy_kwh": 0x156,
    }


@pytest.mark.parametrize("register_map", [SDM630, SDM120, LIGHTING_CABINET])
def test_every_map_carries_the_catalogue_metrics_of_a_meter(register_map: RegisterMap) -> None:
    assert set(kind_spec(DeviceKind.ENERGY_METER).metric_names()) <= set(register_map.fields)


def test_cabinet_map_adds_circuit_coils_and_the_door() -> None:
    cabinet = kind_spec(DeviceKind.LIGHTING_CABINET)
    assert LIGHTING_CABINET.fields == SDM630.fields
    assert LIGHTING_CABINET.coil_count == cabinet.max_circuits == 16
    assert LIGHTING_CABINET.coil_address(1) == 0
    assert LIGHTING_CABINET.circuit_metric(16) == "circuit_16_on"
    assert cabinet.metric(LIGHTING_CABINET.circuit_metric(3)) is not None
    assert LIGHTING_CABINET.decode_coils([True, False, True]) == {
        "circuit_1_on": True,
        "circuit_2_on": False,
        "circuit_3_on": True,
    }
    assert LIGHTING_CABINET.decode_coils([True], start=3) == {"circuit_4_on": True}
    # pymodbus pads bits to whole bytes: the padding is not a circuit or an input.
    assert len(LIGHTING_CABINET.decode_coils([False] * 24)) == 16
    assert LIGHTING_CABINET.decode_discrete_inputs([True, False, False]) == {"door_open": True}
    assert cabinet.metric("door_open") is not None
    with pytest.raises(ValueError, match="circuit 17"):
        LIGHTING_CABINET.coil_address(17)
    assert SDM630.coil_count == 0


@pytest.mark.parametrize("register_map", [SDM630, SDM120, LIGHTING_CABINET])
def test_a_poller_reads_a_meter_in_few_requests(register_map: RegisterMap) -> None:
    blocks = register_map.read_blocks()
    assert 2 <= len(blocks) <= 4
    covered = [name for block in blocks for name in block.fields]
    assert sorted(covered) == sorted(register_map.fields)
    for block in blocks:
        assert 1 <= block.count <= MAX_REGISTERS_PER_READ
        for name in block.fields:
            spec = register_map.fields[name]
            assert block.start <= spec.address and spec.end <= block.start + block.count


def test_read_blocks_respect_a_gap_limit_and_a_smaller_maximum() -> None:
    assert [(b.start, b.count) for b in SDM630.read_blocks()] == [(0, 76), (0xF8, 96)]
    tight = SDM630.read_blocks(max_gap=8)
    assert [(b.start, b.count) for b in tight] == [(0, 18), (0x34, 24), (0xF8, 2), (0x156, 2)]
    small = SDM630.read_blocks(max_count=10)
    assert all(b.count <= 10 for b in small)
    with pytest.raises(ValueError, match="max_count"):
        SDM630.read_blocks(max_count=126)


@pytest.mark.parametrize("order", list(WordOrder))
def test_encode_then_decode_a_whole_map_by_blocks(order: WordOrder) -> None:
    truth = {name: 10.5 * (i + 1) - 40 for i, name in enumerate(SDM630.fields)}
    registers = encode_registers(SDM630, truth, order)
    assert len(registers) == SDM630.register_span == 0x158
    decoded: dict[str, float] = {}
    for block in SDM630.read_blocks():
        chunk = registers[block.start : block.start + block.count]
        decoded.update(decode_block(SDM630, block.start, chunk, order))
    assert decoded == {name: _as_float32(value) for name, value in truth.items()}


def test_decode_block_takes_only_whole_fields_and_the_map_order_by_default() -> None:
    registers = encode_registers(SDM120, dict.fromkeys(SDM120.fields, 1.0))
    # From 0x07 the current (0x06-0x07) is cut: only the power at 0x0C-0x0D is whole.
    decoded = decode_block(SDM120, 0x07, registers[0x07:0x0E])
    assert decoded == {"power_w": 1.0}


def test_encode_registers_names_missing_values() -> None:
    with pytest.raises(ValueError, match="no value for energy_kwh"):
        encode_registers(SDM120, {name: 1.0 for name in SDM120.fields if name != "energy_kwh"})


def test_overlapping_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        RegisterMap("bad", {"a": RegisterField(0), "b": RegisterField(1)})
