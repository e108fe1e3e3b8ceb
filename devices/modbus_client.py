"""The async Modbus TCP client of Pharos: one connection and one lock per host:port.

Owns talking Modbus TCP to meters and cabinet controllers: the telemetry poller reads
register maps with it and ``control`` writes cabinet coils with it. It wraps pymodbus
3.16's ``AsyncModbusTcpClient`` so that:

* requests to one host:port never interleave (an ``asyncio.Lock``): a real gateway
  serves one request at a time, and many meters sit behind one gateway;
* every request has its own deadline, and a timeout CLOSES the connection: the next
  request opens a fresh one (a new pymodbus client), so a late reply to the timed-out
  request can never be read as the answer to the next one;
* every answer is checked against its request (transaction id, unit id, function):
  pymodbus skips frames with another non-zero transaction id but accepts id 0;
* pymodbus's own retries and background reconnects are off (``retries=0``,
  ``reconnect_delay=0``); retries here back off exponentially with the lock released,
  so a coil write can go between the attempts of a failing read.

Errors are typed (``ModbusTimeout``, ``ModbusExceptionResponse``,
``ModbusConnectionError``, ``ModbusProtocolError``) and name host, unit and function.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from devices.wire.registers import (
    LIGHTING_CABINET,
    MAX_REGISTERS_PER_READ,
    FunctionCode,
    RegisterMap,
    WordOrder,
    decode_block,
)

MetricValue = float | bool
MAX_BITS_PER_READ = 2000  # Modbus application protocol limit for fc 01/02

EXCEPTION_MEANINGS: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge (busy with a long command)",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
# Worth asking again: the device said it is busy, not that the request is wrong.
RETRYABLE_EXCEPTION_CODES = frozenset({5, 6})

_FUNCTION_NAMES: dict[int, str] = {
    FunctionCode.READ_COILS: "read coils",
    FunctionCode.READ_DISCRETE_INPUTS: "read discrete inputs",
    FunctionCode.READ_HOLDING_REGISTERS: "read holding registers",
    FunctionCode.READ_INPUT_REGISTERS: "read input registers",
    FunctionCode.WRITE_SINGLE_COIL: "write single coil",
    FunctionCode.WRITE_MULTIPLE_COILS: "write multiple coils",
}


def function_label(function: int) -> str:
    """``fc 04 (read input registers)``: how errors name a function."""
    name = _FUNCTION_NAMES.get(function)
    return f"fc {function:02d}" + (f" ({name})" if name else "")


class ModbusError(Exception):
    """A request that got no usable answer; the message names host, unit and function."""

    def __init__(self, host: str, port: int, unit: int, function: int, reason: str) -> None:
        super().__init__(f"{host}:{port} unit {unit} {function_label(function)}: {reason}")
        self.host = host
        self.port = port
        self.unit = unit
        self.function = function
        self.reason = reason


class ModbusTimeout(ModbusError):
    """No answer within the request's timeout (the connection was closed)."""


class ModbusConnectionError(ModbusError):
    """The host could not be reached, or closed the connection."""


class ModbusProtocolError(ModbusError):
    """An answer that does not answer the request (ids, function, length)."""


class ModbusExceptionResponse(ModbusError):
    """The device answered with a Modbus exception code."""

    def __init__(self, host: str, port: int, unit: int, function: int, code: int) -> None:
        self.code = code
        self.meaning = EXCEPTION_MEANINGS.get(code, "unknown exception code")
        super().__init__(host, port, unit, function, f"exception {code} ({self.meaning})")


@dataclass(frozen=True, slots=True)
class ModbusClientOptions:
    """How patiently to talk to one host (defaults suit meters answering in ~20 ms)."""

    timeout_s: float = 1.0  # per request attempt
    connect_timeout_s: float = 2.0
    retries: int = 2  # further attempts after the first
    backoff_s: float = 0.1  # before the first retry; doubles each time
    backoff_max_s: float = 2.0
    max_registers_per_read: int = MAX_REGISTERS_PER_READ  # some gateways take fewer
    max_gap: int | None = None  # for devices that refuse reads over unmapped registers

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("timeout_s and connect_timeout_s must be positive")
        if self.retries < 0 or self.backoff_s < 0 or self.backoff_max_s < self.backoff_s:
            raise ValueError("retries and backoff_s must be >= 0, backoff_max_s >= backoff_s")


_Call = Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]
_Check = Callable[[ModbusPDU], str | None]  # a problem with an answer, or None


@dataclass(frozen=True, slots=True)
class _Request:
    unit: int
    function: FunctionCode
    call: _Call
    check: _Check


def _bits_check(count: int) -> _Check:
    def check(response: ModbusPDU) -> str | None:
        # Bits come in whole bytes: more than asked is padding, fewer is wrong.
        got = len(response.bits)
        return None if got >= count else f"asked {count} bits, got {got}"

    return check


class ModbusClient:
    """One host:port: one connection, one request at a time, typed errors.

    Counters (``requests``, ``timeouts``, ``connections_opened``) are plain ints for
    health pages and tests.
    """

    def __init__(
        self, host: str, port: int = 502, options: ModbusClientOptions | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.options = options or ModbusClientOptions()
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | None = None
        self._sent_tid: int | None = None
        self.requests = 0
        self.timeouts = 0
        self.connections_opened = 0

    # -- public operations -----------------------------------------------------------

    async def read_registers(
        self,
        unit: int,
        start: int,
        count: int,
        *,
        function: FunctionCode = FunctionCode.READ_INPUT_REGISTERS,
        retries: int | None = None,
    ) -> list[int]:
        """``count`` registers from ``start`` (input registers, or holding with fc 03)."""
        _check_count(count, MAX_REGISTERS_PER_READ)
        if function is FunctionCode.READ_INPUT_REGISTERS:
            read = AsyncModbusTcpClient.read_input_registers
        elif function is FunctionCode.READ_HOLDING_REGISTERS:
            read = AsyncModbusTcpClient.read_holding_registers
        else:
            raise ValueError(f"{function_label(function)} does not read registers")

        def check(response: ModbusPDU) -> str | None:
            got = len(response.registers)
            return None if got == count else f"asked {count} registers, got {got}"

        request = _Request(
            unit, function, lambda c: read(c, start, count=count, device_id=unit), check
        )
        response = await self._request(request, retries)
        return list(response.registers)

    async def read_coils(
        self, unit: int, start: int, count: int, *, retries: int | None = None
    ) -> list[bool]:
        """``count`` coils from ``start`` (fc 01)."""
        _check_count(count, MAX_BITS_PER_READ)
        request = _Request(
            unit,
            FunctionCode.READ_COILS,
            lambda c: c.read_coils(start, count=count, device_id=unit),
            _bits_check(count),
        )
        response = await self._request(request, retries)
        return [bool(bit) for bit in response.bits[:count]]

    async def read_discrete_inputs(
        self, unit: int, start: int, count: int, *, retries: int | None = None
    ) -> list[bool]:
        """``count`` discrete inputs from ``start`` (fc 02)."""
        _check_count(count, MAX_BITS_PER_READ)
        request = _Request(
            unit,
            FunctionCode.READ_DISCRETE_INPUTS,
            lambda c: c.read_discrete_inputs(start, count=count, device_id=unit),
            _bits_check(count),
        )
        response = await self._request(request, retries)
        return [bool(bit) for bit in response.bits[:count]]

    async def write_coil(
        self, unit: int, address: int, value: bool, *, retries: int | None = None
    ) -> None:
        """Set one coil (fc 05). Setting a state is idempotent, so retrying is safe."""
        if not 0 <= address <= 0xFFFF:
            raise ValueError(f"coil address {address} not in 0..65535")

        def check(response: ModbusPDU) -> str | None:
            echoed = list(response.bits[:1])
            if response.address == address and echoed == [value]:
                return None
            return f"wrote coil {address}={value}, the echo says {response.address}={echoed}"

        request = _Request(
            unit,
            FunctionCode.WRITE_SINGLE_COIL,
            lambda c: c.write_coil(address, value, device_id=unit),
            check,
        )
        await self._request(request, retries)

    async def write_circuit(
        self,
        unit: int,
        circuit: int,
        on: bool,
        register_map: RegisterMap = LIGHTING_CABINET,
        *,
        retries: int | None = None,
    ) -> None:
        """Close (``on``) or open the contactor of cabinet ``circuit`` (1-based)."""
        await self.write_coil(unit, register_map.coil_address(circuit), on, retries=retries)

    async def read_map(
        self,
        unit: int,
        register_map: RegisterMap,
        word_order: WordOrder | None = None,
        *,
        retries: int | None = None,
    ) -> dict[str, MetricValue]:
        """Every value of ``register_map``: its register blocks, coils and discrete inputs.

        Floats are decoded in ``word_order`` (default: the map's own). Each request
        takes the lock on its own, so a write can go between the blocks of a read.
        """
        order = word_order or register_map.word_order
        values: dict[str, MetricValue] = {}
        blocks = register_map.read_blocks(self.options.max_registers_per_read, self.options.max_gap)
        for block in blocks:
            registers = await self.read_registers(
                unit, block.start, block.count, function=register_map.function, retries=retries
            )
            values.update(decode_block(register_map, block.start, registers, order))
        if register_map.coil_count:
            bits = await self.read_coils(unit, 0, register_map.coil_count, retries=retries)
            values.update(register_map.decode_coils(bits))
        if register_map.discrete_inputs:
            count = len(register_map.discrete_inputs)
            bits = await self.read_discrete_inputs(unit, 0, count, retries=retries)
            values.update(register_map.decode_discrete_inputs(bits))
        return values

    async def close(self) -> None:
        """Close the connection; the next request would open a new one."""
        self._discard()
        # The transport closes its socket in a callback: let it run before returning.
        await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"ModbusClient({self.host}:{self.port})"

    # -- requests --------------------------------------------------------------------

    async def _request(self, request: _Request, retries: int | None) -> ModbusPDU:
        """One request with retries and exponential back-off, the lock held per attempt."""
        if not 0 <= request.unit <= 255:
            raise ValueError(f"unit id {request.unit} not in 0..255")
        attempts = 1 + (self.options.retries if retries is None else max(0, retries))
        delay = self.options.backoff_s
        for attempt in range(1, attempts + 1):
            try:
                async with self._lock:
                    return await self._attempt(request)
            except ModbusExceptionResponse as exc:
                if exc.code not in RETRYABLE_EXCEPTION_CODES or attempt == attempts:
                    raise
            except (ModbusTimeout, ModbusConnectionError, ModbusProtocolError) as exc:
                if attempt == attempts:
                    if attempts > 1:
                        exc.add_note(f"gave up after {attempts} attempts")
                    raise
            # Sleeping without the lock: other devices behind this host go meanwhile.
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.backoff_max_s)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(self, request: _Request) -> ModbusPDU:
        """One attempt, under the lock: any doubt about the stream closes the connection."""
        client = await self._connected(request)
        self._sent_tid = None
        self.requests += 1
        answered = False
        try:
            async with asyncio.timeout(self.options.timeout_s):
                response = await request.call(client)
            answered = True
        except TimeoutError:
            if not client.connected:
                raise self._error(request, ModbusConnectionError, "connection closed") from None
            self.timeouts += 1
            reason = f"no answer within {self.options.timeout_s:g} s (connection closed)"
            raise self._error(request, ModbusTimeout, reason) from None
        except ConnectionException as exc:
            raise self._error(request, ModbusConnectionError, str(exc)) from None
        except ModbusException as exc:  # an undecodable or mismatched frame
            raise self._error(request, ModbusProtocolError, str(exc)) from None
        finally:
            # Any way out but an answer (timeout, error, cancellation) leaves a reply
            # possibly on its way: that connection must never carry another request.
            if not answered:
                self._discard()
        problem = self._mismatch(request, response)
        if problem is not None:
            self._discard()  # the stream may be out of step: start clean
            raise self._error(request, ModbusProtocolError, problem)
        return response

    def _mismatch(self, request: _Request, response: ModbusPDU) -> str | None:
        """What is wrong with ``response`` as the answer to ``request``, if anything."""
        function = request.function
        if self._sent_tid is None or response.transaction_id != self._sent_tid:
            return f"answer has transaction id {response.transaction_id}, sent {self._sent_tid}"
        if request.unit and response.dev_id != request.unit:
            return f"answer comes from unit {response.dev_id}"
        if response.function_code == function | 0x80:
            code = response.exception_code
            raise ModbusExceptionResponse(self.host, self.port, request.unit, function, code)
        if response.function_code != function:
            return f"answer is for function {response.function_code}"
        return request.check(response)

    # -- connection --------------------------------------------------------------------

    async def _connected(self, request: _Request) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        self._discard()
        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            name=f"{self.host}:{self.port}",
            # pymodbus uses one timeout for connecting and answering; ours are stricter
            # and enforced outside, so pymodbus never times out (and retries) on its own.
            timeout=2 * max(self.options.timeout_s, self.options.connect_timeout_s) + 1,
            retries=0,
            reconnect_delay=0,  # no background reconnect task: we reconnect on demand
            trace_pdu=self._trace_pdu,
        )
        connected = False
        try:
            async with asyncio.timeout(self.options.connect_timeout_s):
                connected = await client.connect()
        except TimeoutError:
            pass
        finally:
            if not connected:
                client.close()
        if not connected:
            # pymodbus reports refused and unanswered connects alike (it logs the cause).
            reason = (
                f"cannot connect (refused, or no answer in {self.options.connect_timeout_s:g} s)"
            )
            raise self._error(request, ModbusConnectionError, reason)
        self._client = client
        self.connections_opened += 1
        return client

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        # pymodbus numbers the request just before sending: remember it to check the answer.
        if sending:
            self._sent_tid = pdu.transaction_id
        return pdu

    def _discard(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _error(self, request: _Request, kind: type[ModbusError], reason: str) -> ModbusError:
        return kind(self.host, self.port, request.unit, request.function, reason)


def _check_count(count: int, maximum: int) -> None:
    if not 1 <= count <= maximum:
        raise ValueError(f"count {count} not in 1..{maximum}")


class ModbusClientPool:
    """One ``ModbusClient`` per host:port, so devices behind one gateway share its lock.

    The poller and ``control`` should share one pool in a process, so a coil write
    and a poll of the same gateway queue on the same lock.
    """

    def __init__(self, options: ModbusClientOptions | None = None) -> None:
        self.options = options or ModbusClientOptions()
        self._clients: dict[tuple[str, int], ModbusClient] = {}

    def client(self, host: str, port: int = 502) -> ModbusClient:
        key = (host, port)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = ModbusClient(host, port, self.options)
        return client

    def __len__(self) -> int:
        return len(self._clients)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
