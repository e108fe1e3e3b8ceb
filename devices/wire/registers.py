"""Modbus register maps as data: where each metric sits and how its 32-bit float is laid out.

The telemetry poller reads meters with these maps and the simulator serves them, so both
sides agree by construction. Addresses are 0-based (register number = address + 30001 for
input registers). Nothing here does I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Literal

MAX_REGISTERS_PER_READ = 125  # Modbus application protocol limit for fc 03/04
MAX_REGISTER_VALUE = 0xFFFF


class WordOrder(StrEnum):
    """How the four bytes A B C D of a big-endian IEEE 754 float sit in two registers."""

    ABCD = "ABCD"  # big-endian, high word first (Eastron SDM)
    BADC = "BADC"  # bytes swapped inside each word
    CDAB = "CDAB"  # words swapped ("little-endian word order")
    DCBA = "DCBA"  # fully little-endian


# Position in the big-endian float of each byte as it appears on the wire (reg0 hi, reg0 lo,
# reg1 hi, reg1 lo). Every one of these permutations is its own inverse, but decoding is
# written generally so a new order cannot silently break it.
_WIRE_BYTES: dict[WordOrder, tuple[int, int, int, int]] = {
    WordOrder.ABCD: (0, 1, 2, 3),
    WordOrder.BADC: (1, 0, 3, 2),
    WordOrder.CDAB: (2, 3, 0, 1),
    WordOrder.DCBA: (3, 2, 1, 0),
}


class FunctionCode(IntEnum):
    READ_COILS = 1
    READ_DISCRETE_INPUTS = 2
    READ_HOLDING_REGISTERS = 3
    READ_INPUT_REGISTERS = 4
    WRITE_SINGLE_COIL = 5
    WRITE_MULTIPLE_COILS = 15


def encode_float32(value: float, order: WordOrder = WordOrder.ABCD) -> tuple[int, int]:
    """The two register values holding ``value`` as a float32 in ``order``."""
    try:
        big_endian = struct.pack(">f", value)
    except OverflowError:
        raise ValueError(f"{value!r} is outside the float32 range") from None
    wire = bytes(big_endian[i] for i in _WIRE_BYTES[WordOrder(order)])
    return (wire[0] << 8) | wire[1], (wire[2] << 8) | wire[3]


def decode_float32(registers: Sequence[int], order: WordOrder = WordOrder.ABCD) -> float:
    """The float32 held by two register values in ``order``."""
    if len(registers) != 2:
        raise ValueError(f"a float32 takes 2 registers, got {len(registers)}")
    _check_register_values(registers)
    wire = struct.pack(">HH", registers[0], registers[1])
    big_endian = bytearray(4)
    for wire_index, float_index in enumerate(_WIRE_BYTES[WordOrder(order)]):
        big_endian[float_index] = wire[wire_index]
    value: float = struct.unpack(">f", bytes(big_endian))[0]
    return value


def _check_register_values(registers: Sequence[int]) -> None:
    for index, register in enumerate(registers):
        if not 0 <= register <= MAX_REGISTER_VALUE:
            raise ValueError(f"register {index}: {register} is not a 16-bit value")


@dataclass(frozen=True, slots=True)
class RegisterField:
    """One metric in the input registers: its first address and its encoding."""

    address: int
    type: Literal["float32"] = "float32"

    @property
    def count(self) -> int:
        """Registers the value takes."""
        return 2

    @property
    def end(self) -> int:
        """The first address after the value."""
        return self.address + self.count


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One contiguous read: ``count`` registers from ``start``, covering ``fields``."""

    start: int
    count: int
    fields: tuple[str, ...]


@dataclass(frozen=True)
class RegisterMap:
    """Where a device model keeps its metrics.

    ``fields`` live in the table read by ``function`` (input registers, fc 04). A
    controller with outputs adds ``coil_count`` coils: coil ``n - 1`` is the contactor
    of circuit ``n`` (read fc 01, written fc 05/15). ``discrete_inputs`` names the
    metric of each discrete input by address (fc 02).
    """

    name: str
    fields: Mapping[str, RegisterField]
    function: FunctionCode = FunctionCode.READ_INPUT_REGISTERS
    word_order: WordOrder = WordOrder.ABCD
    coil_count: int = 0
    discrete_inputs: tuple[str, ...] = ()
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))
        taken: dict[int, str] = {}
        for metric, spec in self.fields.items():
            if spec.address < 0 or spec.end - 1 > MAX_REGISTER_VALUE:
                raise ValueError(f"{self.name}.{metric}: address {spec.address} out of range")
            for address in range(spec.address, spec.end):
                if address in taken:
                    raise ValueError(
                        f"{self.name}.{metric}: address {address:#x} overlaps {taken[address]}"
                    )
                taken[address] = metric
        if not 0 <= self.coil_count <= 2000:
            raise ValueError(f"{self.name}: coil_count {self.coil_count} out of range")

    @property
    def register_span(self) -> int:
        """Registers from address 0 up to the end of the last field."""
        return max((spec.end for spec in self.fields.values()), default=0)

    def read_blocks(
        self, max_count: int = MAX_REGISTERS_PER_READ, max_gap: int | None = None
    ) -> tuple[ReadBlock, ...]:
        """Group the fields into few contiguous reads of at most ``max_count`` registers.

        Unused registers between fields are read along (real meters answer for them);
        ``max_gap`` limits how many, for devices that reject reads over holes.
        """
        if not 1 <= max_count <= MAX_REGISTERS_PER_READ:
            raise ValueError(f"max_count must be 1..{MAX_REGISTERS_PER_READ}")
        blocks: list[ReadBlock] = []
        current: list[str] = []
        start = end = 0
        for metric, spec in sorted(self.fields.items(), key=lambda item: item[1].address):
            fits = spec.end - start <= max_count
            close = max_gap is None or spec.address - end <= max_gap
            if current and fits and close:
                current.append(metric)
                end = spec.end
                continue
            if current:
                blocks.append(ReadBlock(start, end - start, tuple(current)))
            current, start, end = [metric], spec.address, spec.end
        if current:
            blocks.append(ReadBlock(start, end - start, tuple(current)))
        return tuple(blocks)

    def circuit_metric(self, circuit: int) -> str:
        """The metric reporting the contactor of ``circuit`` (1-based)."""
        self.coil_address(circuit)
        return f"circuit_{circuit}_on"

    def coil_address(self, circuit: int) -> int:
        """The coil switching ``circuit`` (1-based)."""
        if not 1 <= circuit <= self.coil_count:
            raise ValueError(f"{self.name}: circuit {circuit} not in 1..{self.coil_count}")
        return circuit - 1

    def decode_coils(self, bits: Sequence[bool], start: int = 0) -> dict[str, bool]:
        """Circuit metrics from coils read from address ``start``."""
        return {
            f"circuit_{start + offset + 1}_on": bool(bit)
            for offset, bit in enumerate(bits)
            if start + offset < self.coil_count
        }

    def decode_discrete_inputs(self, bits: Sequence[bool], start: int = 0) -> dict[str, bool]:
        """Named metrics from discrete inputs read from address ``start``."""
        return {
            self.discrete_inputs[start + offset]: bool(bit)
            for offset, bit in enumerate(bits)
            if start + offset < len(self.discrete_inputs)
        }


def decode_block(
    register_map: RegisterMap,
    start: int,
    registers: Sequence[int],
    order: WordOrder | None = None,
) -> dict[str, float]:
    """Every field of ``register_map`` lying wholly inside registers read from ``start``."""
    _check_register_values(registers)
    word_order = order or register_map.word_order
    end = start + len(registers)
    values: dict[str, float] = {}
    for metric, spec in register_map.fields.items():
        if start <= spec.address and spec.end <= end:
            offset = spec.address - start
            values[metric] = decode_float32(registers[offset : offset + spec.count], word_order)
    return values


def encode_registers(
    register_map: RegisterMap,
    values: Mapping[str, float],
    order: WordOrder | None = None,
) -> list[int]:
    """Register values from address 0 to ``register_span``; unmapped addresses read 0.

    Every field must have a value: a device serves its whole map.
    """
    missing = sorted(set(register_map.fields) - set(values))
    if missing:
        raise ValueError(f"{register_map.name}: no value for {', '.join(missing)}")
    word_order = order or register_map.word_order
    registers = [0] * register_map.register_span
    for metric, spec in register_map.fields.items():
        high, low = encode_float32(values[metric], word_order)
        registers[spec.address] = high
        registers[spec.address + 1] = low
    return registers


def _fields(addresses: Mapping[str, int]) -> dict[str, RegisterField]:
    return {metric: RegisterField(address) for metric, address in addresses.items()}


# Eastron SDM630 (three-phase), DOMAIN.md. The catalogue metrics of an energy meter are
# L1 voltage/current and the totals; the other registers go under names of their own.
_SDM630_ADDRESSES = {
    "voltage_v": 0x00,
    "voltage_l2_v": 0x02,
    "voltage_l3_v": 0x04,
    "current_a": 0x06,
    "current_l2_a": 0x08,
    "current_l3_a": 0x0A,
    "power_l1_w": 0x0C,
    "power_l2_w": 0x0E,
    "power_l3_w": 0x10,
    "power_w": 0x34,
    "va_total": 0x38,
    "var_total": 0x3C,
    "power_factor": 0x3E,
    "frequency_hz": 0x46,
    "import_kwh": 0x48,
    "export_kwh": 0x4A,
    "voltage_thd_pct": 0xF8,
    "energy_kwh": 0x156,
}

# Eastron SDM120 (single-phase), DOMAIN.md.
_SDM120_ADDRESSES = {
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

CABINET_CIRCUITS = 16  # outputs of the cabinet controller; the catalogue's max_circuits

SDM630 = RegisterMap(
    name="sdm630",
    fields=_fields(_SDM630_ADDRESSES),
    description="Eastron SDM630 three-phase meter, input registers",
)
SDM120 = RegisterMap(
    name="sdm120",
    fields=_fields(_SDM120_ADDRESSES),
    description="Eastron SDM120 single-phase meter, input registers",
)
LIGHTING_CABINET = RegisterMap(
    name="lighting_cabinet",
    fields=_fields(_SDM630_ADDRESSES),
    coil_count=CABINET_CIRCUITS,
    discrete_inputs=("door_open",),
    description=(
        "cabinet controller: its SDM630 meter in the input registers, coil n-1 the "
        "contactor of circuit n, discrete input 0 the door switch"
    ),
)

REGISTER_MAPS: dict[str, RegisterMap] = {m.name: m for m in (SDM630, SDM120, LIGHTING_CABINET)}


def get_register_map(name: str) -> RegisterMap:
    """The map called ``name``; ``ValueError`` names the known maps."""
    try:
        return REGISTER_MAPS[name]
    except KeyError:
        known = ", ".join(REGISTER_MAPS)
        raise ValueError(f"unknown register map {name!r}; known: {known}") from None


__all__ = [
    "CABINET_CIRCUITS",
    "LIGHTING_CABINET",
    "MAX_REGISTERS_PER_READ",
    "REGISTER_MAPS",
    "SDM120",
    "SDM630",
    "FunctionCode",
    "ReadBlock",
    "RegisterField",
    "RegisterMap",
    "WordOrder",
    "decode_block",
    "decode_float32",
    "encode_float32",
    "encode_registers",
    "get_register_map",
]
