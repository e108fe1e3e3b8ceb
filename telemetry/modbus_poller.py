"""The Modbus poller: reads every meter and cabinet at its interval into telemetry points.

Owns polling the registry's Modbus TCP devices (energy meters, lighting cabinets):
which devices and how (``MeterTarget``, loaded from the registry by
``load_meter_targets``), when (a schedule per meter), their health, and turning a
read into a ``Point`` plus dead letters for values outside the catalogue's ranges.

How it runs:

* One task per host:port, all in one ``TaskGroup``. A gateway answers one request at a
  time anyway (the client holds one lock per host), so the meters behind one host are
  read one after the other, and a host that stops answering only delays itself.
  Thousands of meters behind hundreds of gateways are hundreds of tasks.
* Each meter keeps its own grid of poll times (its interval, first slot staggered by
  its id so a city's meters do not all ask at once). A poll that overruns skips the
  slots it missed rather than bursting to catch up.
* A meter failing ``unhealthy_after`` polls in a row is unhealthy: it is polled with
  back-off (its interval doubling up to ``backoff_max_s``) and without client retries,
  so it holds its gateway as little as possible; the next good read makes it healthy.
* Time comes from injected ``now`` and ``sleep`` callables, so tests drive it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from sqlalchemy import select
from sqlalchemy.orm import Session

from devices.modbus_client import (
    ModbusClientPool,
    ModbusConnectionError,
    ModbusError,
    ModbusExceptionResponse,
    ModbusTimeout,
)
from devices.registry.models import Device, LifecycleState
from devices.wire import (
    DeviceKind,
    MetricError,
    RegisterMap,
    WordOrder,
    get_register_map,
    kind_spec,
    validate_metrics,
)
from pharos_core.points import PointSink
from telemetry.metrics import TelemetryMetrics
from telemetry.points import DeadLetter, DeadLetterSink, FieldValue, Point

log = logging.getLogger(__name__)

Now = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]
Endpoint = tuple[str, int]

POLLED_KINDS = (DeviceKind.ENERGY_METER, DeviceKind.LIGHTING_CABINET)
DEFAULT_PORT = 502
DEFAULT_UNIT = 1


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class MeterTarget:
    """One Modbus device to poll and how to tag what it reports.

    ``circuits``: for a cabinet, the circuits whose contactor state is reported (those
    with lamps bound in the registry); ``None`` reports every coil of the map.
    """

    device_id: str
    kind: DeviceKind
    host: str
    port: int
    unit: int
    register_map: RegisterMap
    word_order: WordOrder | None = None  # None: the register map's own order
    interval_s: float | None = None  # None: the poller's default
    district: str | None = None
    group: str | None = None
    circuits: tuple[int, ...] | None = None

    @property
    def endpoint(self) -> Endpoint:
        return (self.host, self.port)

    def tags(self) -> dict[str, str]:
        tags = {"device_id": self.device_id}
        if self.district:
            tags["district"] = self.district
        if self.group:
            tags["group"] = self.group
        return tags

    def metric_names(self) -> frozenset[str]:
        """The catalogue metrics this device reports (other registers are not stored)."""
        spec = kind_spec(self.kind)
        names = {metric.name for metric in spec.metrics}
        coils = self.register_map.coil_count
        circuits = range(1, coils + 1) if self.circuits is None else self.circuits
        names.update(f"circuit_{n}_on" for n in circuits if 1 <= n <= coils)
        return frozenset(names)


def meter_target(
    device: Device,
    *,
    circuits: Iterable[int] = (),
    word_order: WordOrder | None = None,
    interval_s: float | None = None,
) -> MeterTarget:
    """The target of a registry device; ``ValueError`` names the field that is wrong.

    ``circuits``: circuits with lamps bound to this cabinet (none bound: all circuits).
    The tag ``group`` is the device's first group by id (a point carries one group).
    """
    try:
        kind = DeviceKind(device.kind)
    except ValueError:
        raise ValueError(f"kind: unknown device kind {device.kind!r}") from None
    if kind not in POLLED_KINDS:
        raise ValueError(f"kind: {kind.value} is not read over Modbus")
    if not device.modbus_host:
        raise ValueError("modbus_host: missing")
    try:
        register_map = get_register_map(device.register_map or _default_map(kind))
    except ValueError as exc:
        raise ValueError(f"register_map: {exc}") from None
    bound = tuple(sorted(set(circuits)))
    return MeterTarget(
        device_id=device.id,
        kind=kind,
        host=device.modbus_host,
        port=device.modbus_port or DEFAULT_PORT,
        unit=DEFAULT_UNIT if device.modbus_unit is None else device.modbus_unit,
        register_map=register_map,
        word_order=word_order or _registry_word_order(device),
        interval_s=interval_s if interval_s is not None else device.poll_interval_s,
        district=device.district,
        group=device.groups[0].id if device.groups else None,
        circuits=bound if bound and register_map.coil_count else None,
    )


def _registry_word_order(device: Device) -> WordOrder | None:
    return WordOrder(device.modbus_word_order) if device.modbus_word_order else None


def _default_map(kind: DeviceKind) -> str:
    return "lighting_cabinet" if kind is DeviceKind.LIGHTING_CABINET else "sdm630"


def load_meter_targets(
    session: Session, word_orders: Mapping[str, WordOrder] | None = None
) -> tuple[list[MeterTarget], dict[str, str]]:
    """Every Modbus device in service or on its way there, and the ones that cannot be.

    Blocking (SQLAlchemy): call it with ``asyncio.to_thread``. Returns the targets and,
    by device id, why a device cannot be polled (a registry record to fix).
    """
    overrides = word_orders or {}
    devices = session.scalars(
        select(Device)
        .where(Device.kind.in_([kind.value for kind in POLLED_KINDS]))
        .where(Device.state != LifecycleState.DECOMMISSIONED.value)
        .order_by(Device.id)
    ).unique()
    bound: dict[str, set[int]] = {}
    bindings = session.execute(
        select(Device.cabinet_id, Device.cabinet_circuit)
        .where(Device.cabinet_id.is_not(None), Device.cabinet_circuit.is_not(None))
        .where(Device.state != LifecycleState.DECOMMISSIONED.value)
        .distinct()
    )
    for cabinet_id, circuit in bindings:
        if cabinet_id is not None and circuit is not None:  # filtered above; for mypy
            bound.setdefault(cabinet_id, set()).add(circuit)
    targets: list[MeterTarget] = []
    problems: dict[str, str] = {}
    for device in devices:
        try:
            targets.append(
                meter_target(
                    device,
                    circuits=bound.get(device.id, ()),
                    word_order=overrides.get(device.id),
                )
            )
        except ValueError as exc:
            problems[device.id] = str(exc)
    return targets, problems


@dataclass(frozen=True, slots=True)
class MeterHealth:
    """What the API shows of one meter: is it answering, since when, and why not."""

    device_id: str
    healthy: bool = True
    consecutive_failures: int = 0
    last_ok: datetime | None = None
    last_attempt: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    next_poll: datetime | None = None


@dataclass(slots=True)
class PollerCounters:
    polls: int = 0  # reads attempted
    ok: int = 0  # reads answered
    failed: int = 0  # reads that got no usable answer (the three below, or a bug)
    timeouts: int = 0
    exceptions: int = 0  # Modbus exception responses
    connection_errors: int = 0
    points: int = 0  # points handed to the sink
    dead_letters: int = 0  # metrics refused (out of range, not finite)
    sink_errors: int = 0  # points or letters the sinks refused (logged)


@dataclass(eq=False, slots=True)
class _Meter:
    target: MeterTarget
    interval_s: float
    anchor: datetime  # the grid of poll times: anchor + k * interval_s
    due: datetime
    health: MeterHealth


@dataclass(eq=False, slots=True)
class _Host:
    """The task polling one host:port; replaced (never reused) when its meters change."""

    endpoint: Endpoint
    meters: list[_Meter]
    sleeping: bool = False
    task: asyncio.Task[None] | None = None


class ModbusPoller:
    """Polls Modbus meters into points; an async context manager owning its tasks.

    ``submit`` takes the points (e.g. the InfluxDB writer's ``submit``), ``dead_letters``
    the refused metrics. Word orders: ``word_orders`` (by device id) overrides the
    target's, which overrides the register map's.
    """

    def __init__(
        self,
        meters: Iterable[MeterTarget],
        pool: ModbusClientPool,
        submit: PointSink,
        dead_letters: DeadLetterSink,
        *,
        now: Now = _utcnow,
        sleep: Sleep = asyncio.sleep,
        default_interval_s: float = 60.0,
        unhealthy_after: int = 3,
        backoff_max_s: float = 600.0,
        word_orders: Mapping[str, WordOrder] | None = None,
        stagger: bool = True,
        metrics: TelemetryMetrics | None = None,
    ) -> None:
        if default_interval_s <= 0 or backoff_max_s <= 0:
            raise ValueError("default_interval_s and backoff_max_s must be positive")
        if unhealthy_after < 1:
            raise ValueError("unhealthy_after must be at least 1")
        self._pool = pool
        self._submit = submit
        self._dead_letters = dead_letters
        self._now = now
        self._sleep = sleep
        self._default_interval_s = default_interval_s
        self._unhealthy_after = unhealthy_after
        self._backoff_max_s = backoff_max_s
        self._word_orders = dict(word_orders or {})
        self._stagger = stagger
        self._metrics = metrics
        self._counters = PollerCounters()
        self._meters: dict[str, _Meter] = {}
        self._hosts: dict[Endpoint, _Host] = {}
        self._group: asyncio.TaskGroup | None = None
        self._stopping = False
        self._install(meters)

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        self._stopping = False
        for endpoint in list(self._hosts):
            self._restart(endpoint)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A host in the middle of a poll finishes it (its point is not lost); a
        # sleeping one is cancelled where it sleeps, which loses nothing.
        self._stopping = True
        for host in self._hosts.values():
            if host.sleeping and host.task is not None:
                host.task.cancel()
        group, self._group = self._group, None
        if group is not None:
            await group.__aexit__(exc_type, exc, tb)

    # -- what the API reads --------------------------------------------------------------

    def health(self) -> dict[str, MeterHealth]:
        """The health of every meter by device id (a snapshot)."""
        return {device_id: meter.health for device_id, meter in self._meters.items()}

    def counters(self) -> PollerCounters:
        """A snapshot of the counters."""
        return replace(self._counters)

    @property
    def meters(self) -> list[MeterTarget]:
        return [meter.target for meter in self._meters.values()]

    # -- changing what is polled ------------------------------------------------------------

    def set_meters(self, meters: Iterable[MeterTarget]) -> None:
        """Poll ``meters`` from now on (e.g. after a registry reload).

        Unchanged meters keep their schedule and health; hosts whose meters changed
        pick the change up at once if idle, or after the poll they are in.
        """
        before = dict(self._hosts)
        lists = {endpoint: list(host.meters) for endpoint, host in before.items()}
        self._install(meters)
        if self._group is None:
            return
        for endpoint, host in before.items():
            if endpoint not in self._hosts and host.sleeping and host.task is not None:
                host.task.cancel()  # no meters left there; mid-poll it ends by itself
        for endpoint, host in self._hosts.items():
            if lists.get(endpoint) != host.meters:
                self._restart(endpoint)

    def _install(self, meters: Iterable[MeterTarget]) -> None:
        start = self._now()
        installed: dict[str, _Meter] = {}
        for target in meters:
            if target.device_id in installed:
                raise ValueError(f"device {target.device_id!r} is listed twice")
            if target.interval_s is not None and target.interval_s <= 0:
                raise ValueError(f"{target.device_id}: interval_s must be positive")
            old = self._meters.get(target.device_id)
            keep = old is not None and old.target == target
            installed[target.device_id] = old if old and keep else self._new_meter(target, start)
        self._meters = installed
        by_host: dict[Endpoint, list[_Meter]] = {}
        for meter in installed.values():
            by_host.setdefault(meter.target.endpoint, []).append(meter)
        for endpoint in [e for e in self._hosts if e not in by_host]:
            self._hosts.pop(endpoint).meters = []  # its loop ends after a poll it is in
        for endpoint, host_meters in by_host.items():
            existing = self._hosts.get(endpoint)
            if existing is None:
                self._hosts[endpoint] = _Host(endpoint, host_meters)
            else:
                existing.meters = host_meters

    def _new_meter(self, target: MeterTarget, start: datetime) -> _Meter:
        interval = target.interval_s or self._default_interval_s
        offset = 0.0
        if self._stagger:
            # Stable across restarts, spread over the interval: no thundering herd.
            offset = (zlib.crc32(target.device_id.encode()) % 10_000) / 10_000 * interval
        first = start + timedelta(seconds=offset)
        health = MeterHealth(target.device_id, next_poll=first)
        return _Meter(target, interval, anchor=first, due=first, health=health)

    def _restart(self, endpoint: Endpoint) -> None:
        """A fresh task for ``endpoint`` (the old one is cancelled if it sleeps)."""
        old = self._hosts.get(endpoint)
        if old is None:
            return
        if old.task is not None and not old.task.done():
            if not old.sleeping:
                return  # mid-poll: its loop reads the new meter list when it is done
            old.task.cancel()
        host = self._hosts[endpoint] = _Host(endpoint, old.meters)
        assert self._group is not None
        host.task = self._group.create_task(self._run_host(host), name=f"modbus-poll {endpoint}")

    # -- polling ----------------------------------------------------------------------------

    async def _run_host(self, host: _Host) -> None:
        while not self._stopping and host.meters:
            meter = min(host.meters, key=lambda m: m.due)
            wait = (meter.due - self._now()).total_seconds()
            if wait > 0:
                host.sleeping = True
                try:
                    await self._sleep(wait)
                finally:
                    host.sleeping = False
                continue
            await self.poll_now(meter.target.device_id)
            meter.due = self._next_due(meter)
            meter.health = replace(meter.health, next_poll=meter.due)

    async def poll_now(self, device_id: str) -> MeterHealth:
        """Poll one meter now, outside its schedule (e.g. a technician commissioning it).

        Never raises for the meter's sake: failures go to its health and the counters.
        """
        meter = self._meters.get(device_id)
        if meter is None:
            raise KeyError(f"no Modbus meter {device_id!r} is polled")
        target = meter.target
        started = self._now()
        self._counters.polls += 1
        client = self._pool.client(target.host, target.port)
        order = self._word_orders.get(device_id) or target.word_order
        # An unhealthy meter gets one attempt: retries would only hold its gateway longer.
        retries = 0 if not meter.health.healthy else None
        try:
            values = await client.read_map(target.unit, target.register_map, order, retries=retries)
        except ModbusError as exc:
            self._failed(meter, started, exc)
        except Exception as exc:
            # A bug (or a broken register map) costs this poll, never the poller.
            log.exception("modbus poll of %s failed unexpectedly", device_id)
            self._failed(meter, started, exc)
        else:
            self._succeeded(meter, started)
            await self._deliver(target, values, started)
        return meter.health

    def _succeeded(self, meter: _Meter, at: datetime) -> None:
        self._counters.ok += 1
        if self._metrics is not None:
            self._metrics.received += 1
        if not meter.health.healthy:
            log.info("modbus meter %s answers again", meter.target.device_id)
        meter.health = replace(
            meter.health, healthy=True, consecutive_failures=0, last_ok=at, last_attempt=at
        )
        self._count_unhealthy()

    def _failed(self, meter: _Meter, at: datetime, exc: Exception) -> None:
        counters = self._counters
        counters.failed += 1
        if isinstance(exc, ModbusTimeout):
            counters.timeouts += 1
        elif isinstance(exc, ModbusExceptionResponse):
            counters.exceptions += 1
        elif isinstance(exc, ModbusConnectionError):
            counters.connection_errors += 1
        failures = meter.health.consecutive_failures + 1
        healthy = failures < self._unhealthy_after
        reason = str(exc) or type(exc).__name__
        if meter.health.healthy and not healthy:
            log.warning("modbus meter %s is unhealthy: %s", meter.target.device_id, reason)
        meter.health = replace(
            meter.health,
            healthy=healthy,
            consecutive_failures=failures,
            last_attempt=at,
            last_error=reason,
            last_error_at=at,
        )
        self._count_unhealthy()

    def _count_unhealthy(self) -> None:
        if self._metrics is not None:
            self._metrics.modbus_unhealthy = sum(
                1 for meter in self._meters.values() if not meter.health.healthy
            )

    def _next_due(self, meter: _Meter) -> datetime:
        """The next slot on the meter's grid, or a back-off delay while it is unhealthy."""
        now = self._now()
        health = meter.health
        if not health.healthy:
            excess = health.consecutive_failures - self._unhealthy_after
            delay = min(meter.interval_s * 2 ** min(excess + 1, 30), self._backoff_max_s)
            return now + timedelta(seconds=max(delay, meter.interval_s))
        elapsed = (now - meter.anchor).total_seconds()
        slots = math.floor(elapsed / meter.interval_s) + 1
        return meter.anchor + timedelta(seconds=slots * meter.interval_s)

    # -- delivering -------------------------------------------------------------------------

    async def _deliver(
        self, target: MeterTarget, values: Mapping[str, FieldValue], at: datetime
    ) -> None:
        wanted = target.metric_names()
        good, errors = validate_metrics(
            target.kind, {name: value for name, value in values.items() if name in wanted}
        )
        if errors:
            letters = [_dead_letter(target, error, values, at) for error in errors]
            self._counters.dead_letters += len(letters)
            if self._metrics is not None:
                self._metrics.invalid += len(letters)
            try:
                await self._dead_letters.put(letters)
            except Exception:
                self._counters.sink_errors += 1
                log.exception("modbus: dead letters of %s refused", target.device_id)
        if not good:
            return
        fields: dict[str, FieldValue] = dict(good)
        point = Point(target.kind.value, target.tags(), fields, at)
        try:
            await self._submit([point])
        except Exception:
            self._counters.sink_errors += 1
            log.exception("modbus: the point of %s was refused", target.device_id)
        else:
            self._counters.points += 1


def _dead_letter(
    target: MeterTarget, error: MetricError, values: Mapping[str, FieldValue], at: datetime
) -> DeadLetter:
    value = values.get(error.metric)
    shown = value if isinstance(value, bool | int) or _finite(value) else repr(value)
    payload = json.dumps({"metric": error.metric, "value": shown}).encode()
    return DeadLetter(
        received_at=at,
        source="modbus",
        reason=f"{error.metric}: {error.reason}",
        device_id=target.device_id,
        topic=f"modbus://{target.host}:{target.port}/{target.unit}",
        payload=payload,
        details={
            "metric": error.metric,
            "register_map": target.register_map.name,
            "unit": str(target.unit),
        },
    )


def _finite(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value)
