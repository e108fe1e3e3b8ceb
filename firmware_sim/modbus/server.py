"""Modbus TCP servers (modbus-tk) that serve simulated meters and cabinets.

A ``ModbusDeviceServer`` listens on one port, like a real meter on its own IP address,
and hosts one or several units (Modbus unit ids), each backed by a model and a
register map of ``devices.wire.registers``. Before each request is answered the unit's
registers are refreshed from its model at the clock's now; a coil write switches the
model's circuit. Per-unit faults: ``MODBUS_TIMEOUT`` (the unit never answers) and
``MODBUS_EXCEPTION`` (it answers with the configured exception code).

How modbus-tk 1.1.5 is used, and why it is subclassed rather than hooked:

* ``modbus_tk.hooks`` is one process-wide registry, and ``call_hooks`` runs every hook
  while holding one process-wide ``RLock``. A latency sleep or a model refresh in a
  hook would serialise every server of the process. So per-server behaviour lives in
  an override of ``Server._handle`` (request ADU in, response ADU out; an empty
  response sends nothing), and no hook is installed at all.
* ``TcpServer._do_run`` waits with ``select.select``, which fails for descriptors
  above 1023: a simulator holding thousands of MQTT sockets plus hundreds of meters
  gets there. ``_do_run`` is replaced by a ``selectors.PollSelector`` loop.
* ``TcpServer`` binds inside its thread, so a port-0 server cannot tell its port and a
  bind error is only logged. The listening socket is bound in ``start`` instead.
* ``Server._run_server`` polls ``threading.Event.isSet`` (a ``DeprecationWarning``
  since Python 3.10, raised as an error under ``filterwarnings = error`` and then
  swallowed by the thread: the server silently dies), its thread is not a daemon, and
  ``Server.stop`` may join a replacement thread that was never started. The run flag
  and thread are replaced, and ``stop`` wakes the loop by connecting to itself.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

from modbus_tk import defines as mb
from modbus_tk import modbus, modbus_tcp

from devices.wire import FunctionCode, RegisterMap, WordOrder, encode_registers
from firmware_sim.faults import Fault, FaultConfig
from pharos_core.clock import Clock

LOGGER = logging.getLogger(__name__)

_MBAP_LENGTH = 7  # transaction id, protocol id, length, unit id
_MAX_ADU_LENGTH = 260  # Modbus TCP: 7-byte MBAP + at most 253 bytes of PDU
_IDLE_POLL_S = 1.0  # the loop checks its run flag at least this often
_READ_TIMEOUT_S = 1.0  # a client has this long to finish sending a request it started
_STOP_TIMEOUT_S = 5.0
_INPUT_BLOCK = "input_registers"
_COIL_BLOCK = "coils"
_DISCRETE_BLOCK = "discrete_inputs"
_COIL_WRITES = (FunctionCode.WRITE_SINGLE_COIL, FunctionCode.WRITE_MULTIPLE_COILS)


class ModbusModel(Protocol):
    """What the server needs of a device model (``EnergyMeterModel``, ``CabinetModel``)."""

    device_id: str

    def measurements(self, now: datetime) -> Mapping[str, float]:
        """Every register quantity at ``now``, by the names of the register map."""
        ...

    def coil_states(self, now: datetime) -> Sequence[bool]:
        """Coil ``i`` (a circuit contactor) for the coils the model owns."""
        ...

    def discrete_input_states(self, now: datetime) -> Sequence[bool]:
        """Discrete input ``i`` (the cabinet door) for the inputs the model owns."""
        ...

    def write_coil(self, address: int, on: bool, now: datetime) -> None:
        """A coil written over Modbus."""
        ...


@dataclass
class ModbusUnit:
    """One unit id on a server: a model served through a register map."""

    model: ModbusModel
    register_map: RegisterMap
    unit_id: int = 1
    word_order: WordOrder | None = None  # None: the map's own order
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.unit_id <= 247:
            raise ValueError(f"unit id {self.unit_id} not in 1..247")

    @property
    def order(self) -> WordOrder:
        return self.word_order or self.register_map.word_order


class _Slot:
    """A unit and its modbus-tk slave: copies the model into the slave's blocks."""

    def __init__(self, unit: ModbusUnit, slave: Any) -> None:
        self.unit = unit
        self._slave = slave
        register_map = unit.register_map
        if register_map.register_span:
            slave.add_block(_INPUT_BLOCK, mb.ANALOG_INPUTS, 0, register_map.register_span)
        if register_map.coil_count:
            slave.add_block(_COIL_BLOCK, mb.COILS, 0, register_map.coil_count)
        inputs = len(register_map.discrete_inputs)
        if inputs:
            slave.add_block(_DISCRETE_BLOCK, mb.DISCRETE_INPUTS, 0, inputs)

    def refresh(self, now: datetime) -> None:
        """Load the model's values at ``now`` into the slave (server thread only)."""
        register_map = self.unit.register_map
        model = self.unit.model
        if register_map.register_span:
            registers = encode_registers(register_map, model.measurements(now), self.unit.order)
            self._slave.set_values(_INPUT_BLOCK, 0, registers)
        coils = list(model.coil_states(now))[: register_map.coil_count]
        if coils:
            self._slave.set_values(_COIL_BLOCK, 0, [int(c) for c in coils])
        inputs = list(model.discrete_input_states(now))[: len(register_map.discrete_inputs)]
        if inputs:
            self._slave.set_values(_DISCRETE_BLOCK, 0, [int(i) for i in inputs])

    def apply_coil_writes(self, now: datetime) -> None:
        """Pass coils a client changed on to the model (coils it does not own stay as set)."""
        model = self.unit.model
        owned = list(model.coil_states(now))[: self.unit.register_map.coil_count]
        if not owned:
            return
        written = self._slave.get_values(_COIL_BLOCK, 0, len(owned))
        for address, (was, now_set) in enumerate(zip(owned, written, strict=True)):
            if bool(now_set) != was:
                model.write_coil(address, bool(now_set), now)


class _RunFlag(threading.Event):
    """modbus-tk's loop asks ``isSet``; answer without the deprecation warning."""

    def isSet(self) -> bool:
        return self.is_set()


Handler = Callable[[bytes], Any]  # modbus-tk's own request handling: ADU in, ADU out
Answer = Callable[[bytes, Handler], bytes]


class _SimTcpServer(modbus_tcp.TcpServer):  # type: ignore[misc]  # modbus-tk is untyped
    """modbus-tk's TCP server with the simulator's request handling and socket loop."""

    def __init__(self, answer: Answer, host: str, port: int) -> None:
        self._answer = answer
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._connections: set[socket.socket] = set()
        super().__init__(port=port, address=host)

    def _make_thread(self) -> None:
        # Called by modbus-tk's constructor and again after each run.
        self._thread = threading.Thread(
            target=modbus.Server._run_server, args=(self,), name="modbus-sim", daemon=True
        )
        self._go = _RunFlag()

    def bind(self) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(self._sa)
            listener.listen(64)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        port: int = listener.getsockname()[1]
        return port

    def _do_init(self) -> None:
        assert self._listener is not None, "bind() before start()"
        self._selector = selectors.PollSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)

    def _do_exit(self) -> None:
        for connection in self._connections:
            connection.close()
        self._connections.clear()
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _do_run(self) -> None:
        assert self._selector is not None
        for key, _ in self._selector.select(timeout=_IDLE_POLL_S):
            if not self._go.is_set():
                return
            if key.data is None:
                self._accept()
            else:
                self._serve(key.data)

    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        try:
            connection, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        connection.settimeout(_READ_TIMEOUT_S)
        self._selector.register(connection, selectors.EVENT_READ, connection)
        self._connections.add(connection)

    def _serve(self, connection: socket.socket) -> None:
        try:
            request = _read_adu(connection)
            if request is None:
                self._drop(connection)
                return
            response = self._handle(request)
            if response:
                connection.sendall(response)
        except OSError as exc:
            LOGGER.debug("modbus connection dropped: %s", exc)
            self._drop(connection)
        except Exception:
            # A bug must cost one connection, never the server thread (modbus-tk would
            # only log it and leave a port that accepts and never answers).
            LOGGER.exception("modbus request failed; connection dropped")
            self._drop(connection)

    def _drop(self, connection: socket.socket) -> None:
        assert self._selector is not None
        self._selector.unregister(connection)
        self._connections.discard(connection)
        connection.close()

    def _handle(self, request: bytes) -> bytes:
        return self._answer(request, super()._handle)


def _read_adu(connection: socket.socket) -> bytes | None:
    """One request ADU, or None when the client has closed the connection."""
    header = _read_exact(connection, _MBAP_LENGTH)
    if header is None:
        return None
    length = struct.unpack(">H", header[4:6])[0]
    if not 2 <= length <= _MAX_ADU_LENGTH - 6:
        raise ConnectionError(f"MBAP length {length} is not a Modbus request")
    body = _read_exact(connection, length - 1)
    if body is None:
        raise ConnectionError("connection closed inside a request")
    return header + body


def _read_exact(connection: socket.socket, count: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = connection.recv(count - len(chunks))
        if not chunk:
            if chunks:
                raise ConnectionError("connection closed inside a request")
            return None
        chunks += chunk
    return bytes(chunks)


def _exception_response(request: bytes, code: int) -> bytes:
    """The exception answer to ``request``: same transaction and unit, fc | 0x80."""
    transaction, protocol = struct.unpack(">HH", request[:4])
    unit_id, function = request[6], request[7]
    return struct.pack(">HHHBBB", transaction, protocol, 3, unit_id, function | 0x80, code)


class ModbusDeviceServer:
    """One Modbus TCP endpoint (one port) hosting one or several simulated units.

    Usable as a context manager from threads (``with``) or from asyncio code
    (``async with``: starting and stopping run in a worker thread, never on the loop).
    modbus-tk answers from a thread of its own, one per server, so a slow unit (the
    ``latency_s`` of a real meter, about 20 ms) only delays its own server.
    """

    def __init__(
        self,
        units: Sequence[ModbusUnit],
        clock: Clock,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
    ) -> None:
        if not units:
            raise ValueError("a server hosts at least one unit")
        ids = [unit.unit_id for unit in units]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate unit ids: {sorted(ids)}")
        if latency_s < 0:
            raise ValueError("latency_s must not be negative")
        self._clock = clock
        self.latency_s = latency_s
        self._server = _SimTcpServer(self._answer, host, port)
        self._slots = {
            unit.unit_id: _Slot(unit, self._server.add_slave(unit.unit_id)) for unit in units
        }
        self._host = host
        self._port: int | None = None
        self._thread: threading.Thread | None = None  # the modbus-tk thread of this run

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def units(self) -> list[ModbusUnit]:
        return [slot.unit for slot in self._slots.values()]

    def set_faults(self, unit_id: int, faults: FaultConfig) -> None:
        """Switch a unit's faults while the server runs (takes effect on the next request)."""
        self._slots[unit_id].unit.faults = faults  # one reference swap: atomic

    def start(self) -> None:
        if self._port is not None:
            raise RuntimeError("the server is already started")
        self._port = self._server.bind()
        # modbus-tk swaps in a fresh thread object when a run ends: keep the one that runs.
        self._thread = self._server._thread
        self._thread.name = f"modbus-sim:{self._port}"
        self._server.start()

    def stop(self) -> None:
        """Stop answering and close every connection; returns once the thread is gone."""
        self.request_stop()
        self.join()

    def request_stop(self) -> None:
        """Tell the server thread to stop without waiting (stop many servers at once)."""
        if self._thread is None or not self._thread.is_alive():
            return
        self._server._go.clear()
        self._wake()

    def join(self, timeout: float = _STOP_TIMEOUT_S) -> None:
        """Wait for the server thread after ``request_stop``."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"modbus server on port {self._port} did not stop")
        self._thread = None
        self._port = None

    def _wake(self) -> None:
        """Connect to ourselves so the loop leaves its wait now rather than within 1 s."""
        try:
            with socket.create_connection((self._host, self.port), timeout=0.5):
                pass
        except OSError:
            pass  # the loop still notices within _IDLE_POLL_S

    def __enter__(self) -> ModbusDeviceServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> ModbusDeviceServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _answer(self, request: bytes, handle: Handler) -> bytes:
        """Answer one request ADU in the server thread: faults, refresh, modbus-tk, coils."""
        if len(request) <= _MBAP_LENGTH:
            return b""
        slot = self._slots.get(request[6])
        if slot is None:
            return b""  # no such unit: stay silent, as modbus-tk and most meters do
        faults = slot.unit.faults
        if faults.has(Fault.MODBUS_TIMEOUT):
            return b""
        if self.latency_s:
            time.sleep(self.latency_s)  # the server's own thread: only this meter waits
        if faults.has(Fault.MODBUS_EXCEPTION):
            return _exception_response(request, faults.modbus_exception_code)
        now = self._clock.now()
        try:
            slot.refresh(now)
        except Exception:
            LOGGER.exception("unit %d: the model failed to refresh", slot.unit.unit_id)
            return _exception_response(request, mb.SLAVE_DEVICE_FAILURE)
        response: bytes = bytes(handle(request))
        answered_ok = len(response) > _MBAP_LENGTH and response[7] == request[7]
        if answered_ok and request[7] in _COIL_WRITES:
            try:
                slot.apply_coil_writes(now)
            except Exception:
                LOGGER.exception("unit %d: the model refused a coil write", slot.unit.unit_id)
                return _exception_response(request, mb.SLAVE_DEVICE_FAILURE)
        return response


class ModbusServerPool:
    """Many single-meter servers started and stopped together (a city's meters).

    Stopping signals every server first and then waits for them, so a pool of hundreds
    stops in about the time of one.
    """

    def __init__(self, servers: Sequence[ModbusDeviceServer]) -> None:
        self.servers = list(servers)

    def start(self) -> None:
        started: list[ModbusDeviceServer] = []
        try:
            for server in self.servers:
                server.start()
                started.append(server)
        except BaseException:
            ModbusServerPool(started).stop()
            raise

    def stop(self) -> None:
        for server in self.servers:
            server.request_stop()
        for server in self.servers:
            server.join()

    def __enter__(self) -> ModbusServerPool:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> ModbusServerPool:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)
