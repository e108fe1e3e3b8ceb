"""The long-lived telemetry services of one process, composed from settings.

``TelemetryServices`` is what ``pharos ingest``, ``pharos serve`` and the demo run: the
point sink (the InfluxDB writer with its durable spool when ``influx.url`` is set,
else the embedded store), the dead-letter store, the device twin and directory, the
MQTT ingest and the Modbus poller, in one async context manager. On InfluxDB 1.x it
also sets up the retention policies and the hourly continuous query at start.

Other services (control, rules) join here through ``submit`` (to write derived points
through the same sink) and ``observers`` (to see every parsed batch before storage).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from devices.modbus_client import ModbusClientPool
from pharos.runtime import Runtime
from pharos.settings import BrokerSettings, Settings
from pharos_core.clock import Clock, SystemClock
from pharos_core.points import PointSink
from telemetry.deadletters import DeadLetterStore
from telemetry.influx import InfluxWriter, setup_retention
from telemetry.influx.client import InfluxConfigurationError
from telemetry.ingest import (
    DeviceDirectory,
    IngestObserver,
    IngestOptions,
    IngestService,
    MqttOptions,
    counted,
)
from telemetry.modbus_poller import MeterTarget, ModbusPoller, load_meter_targets
from telemetry.periodic import repeat_every
from telemetry.twin import DeviceTwinStore

log = logging.getLogger(__name__)


class ServiceConfigurationError(Exception):
    """A setting a person must fix before the services can run."""


@dataclass(frozen=True, slots=True)
class TelemetryOptions:
    """What one process runs of the telemetry services."""

    worker_id: int | None = None  # one of several ingest workers (own account and spool)
    ingest: bool = True
    modbus: bool = True  # poll the registry's Modbus meters (one process should)
    meters_refresh_s: float = 60.0  # how often the registry's meter list is re-read
    stats_interval_s: float | None = 60.0
    setup_retention: bool = True  # InfluxDB 1.x: retention policies and continuous query


def mqtt_options(broker: BrokerSettings, worker_id: int | None) -> MqttOptions:
    """The broker account of this ingest worker (``<username>-N`` for worker N)."""
    if broker.password is None:
        raise ServiceConfigurationError(
            "broker.password is not set: create the account with `pharos broker "
            "service-account NAME` and put its secret in PHAROS_BROKER__PASSWORD"
        )
    username = broker.username if worker_id is None else f"{broker.username}-{worker_id}"
    return MqttOptions(
        host=broker.host,
        port=broker.port,
        username=username,
        password=broker.password.get_secret_value(),
    )


def spool_dir(settings: Settings, worker_id: int | None) -> Path:
    """Each worker keeps its own spool: one process at a time may hold a spool."""
    base = settings.telemetry.spool_dir or settings.data_dir / "spool"
    return base if worker_id is None else base / f"worker-{worker_id}"


class TelemetryServices:
    """Sink, dead letters, twin, directory, ingest and Modbus poller; an async context manager.

    ``clock`` paces the Modbus poller and stamps its readings (the demo passes its
    fleet's accelerated clock, so meters and MQTT devices share one timeline).
    """

    def __init__(
        self,
        runtime: Runtime,
        options: TelemetryOptions | None = None,
        *,
        mqtt: MqttOptions | None = None,
        observers: Sequence[IngestObserver] = (),
        clock: Clock | None = None,
        modbus: ModbusClientPool | None = None,
    ) -> None:
        self.runtime = runtime
        self.clock = clock or SystemClock()
        self._pool = modbus  # shared with control (coil writes queue on the same lock)
        self.options = options or TelemetryOptions()
        settings = runtime.settings
        self._mqtt = mqtt
        if self.options.ingest and mqtt is None:
            self._mqtt = mqtt_options(settings.broker, self.options.worker_id)
        self._observers = list(observers)
        self.dead_letters = DeadLetterStore(runtime.sessions)
        self.ingest: IngestService | None = None
        self.poller: ModbusPoller | None = None
        self.writer: InfluxWriter | None = None
        self._submit: PointSink | None = None
        self._stack: AsyncExitStack | None = None

    @property
    def submit(self) -> PointSink:
        """Where points go (readings, and derived points of other services)."""
        if self._submit is None:
            raise RuntimeError("the telemetry services are not running")
        return self._submit

    @property
    def where(self) -> str:
        settings = self.runtime.settings
        if settings.influx.url:
            spool = spool_dir(settings, self.options.worker_id)
            return f"InfluxDB {settings.influx.url} (spool {spool})"
        return f"the embedded store in {settings.data_dir}"

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            await self.open_sink(stack)
            await self.start_inputs(stack)
            self._stack = stack.pop_all()
        return self

    async def open_sink(self, stack: AsyncExitStack) -> PointSink:
        """The first phase: storage (other services may write derived points from now)."""
        self._submit = await self._open_sink(stack)
        stack.callback(self._closed)
        return self._submit

    def add_observer(self, observer: IngestObserver) -> None:
        """Another service that sees every parsed batch (before ``start_inputs``)."""
        if self.ingest is not None:
            raise RuntimeError("observers join before ingest starts")
        self._observers.append(observer)

    async def start_inputs(self, stack: AsyncExitStack) -> None:
        """The second phase: MQTT ingest and the Modbus poller (stopped first on exit)."""
        if self.options.ingest:
            await self._start_ingest(stack)
        if self.options.modbus:
            await self._start_poller(stack)

    def _closed(self) -> None:
        self._submit = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    async def _open_sink(self, stack: AsyncExitStack) -> PointSink:
        settings = self.runtime.settings
        metrics = self.runtime.telemetry_metrics
        if not settings.influx.url:
            assert self.runtime.timeseries is not None  # build_runtime opens the embedded one
            return counted(self.runtime.timeseries.write, metrics)
        if self.options.setup_retention and settings.influx.api == "v1":
            await self._setup_retention()
        self.writer = InfluxWriter.from_settings(
            settings.influx,
            settings.telemetry,
            spool_dir=spool_dir(settings, self.options.worker_id),
            dead_letters=self.dead_letters,
            metrics=metrics,
        )
        return (await stack.enter_async_context(self.writer)).submit

    async def _setup_retention(self) -> None:
        """Retention policies and the hourly query; InfluxDB away only postpones it."""
        settings = self.runtime.settings
        assert settings.influx.url is not None
        token = settings.influx.token
        try:
            report = await setup_retention(
                settings.influx.url,
                settings.influx.database,
                raw_retention=settings.telemetry.raw_retention,
                hourly_retention=settings.telemetry.hourly_retention,
                credentials=token.get_secret_value() if token else None,
            )
        except InfluxConfigurationError:
            raise
        except (httpx.HTTPError, OSError) as exc:
            # Readings still flow (into the spool); the next start sets retention up.
            log.warning("InfluxDB retention not set up (unreachable: %s); next start retries", exc)
            return
        log.info("InfluxDB retention: created %s; updated %s", report.created, report.updated)

    async def _start_ingest(self, stack: AsyncExitStack) -> None:
        assert self._mqtt is not None and self._submit is not None
        runtime = self.runtime
        twin = await stack.enter_async_context(DeviceTwinStore(runtime.sessions))
        directory = await stack.enter_async_context(DeviceDirectory(runtime.sessions))
        ingest_options = IngestOptions.from_settings(
            runtime.settings.telemetry, stats_interval_s=self.options.stats_interval_s
        )
        self.ingest = await stack.enter_async_context(
            IngestService(
                self._mqtt,
                submit=self._submit,
                dead_letters=self.dead_letters,
                twin=twin,
                directory=directory,
                metrics=runtime.telemetry_metrics,
                options=ingest_options,
                observers=self._observers,
                clock=self.clock,
            )
        )
        log.info(
            "ingest: %s on %s:%d into %s; %d devices known",
            self._mqtt.username,
            self._mqtt.host,
            self._mqtt.port,
            self.where,
            len(directory),
        )

    async def _start_poller(self, stack: AsyncExitStack) -> None:
        assert self._submit is not None
        pool = self._pool
        if pool is None:
            pool = ModbusClientPool()
            stack.push_async_callback(pool.close)
        targets = await self._meter_targets()
        self.poller = await stack.enter_async_context(
            ModbusPoller(
                targets,
                pool,
                self._submit,
                self.dead_letters,
                now=self.clock.now,
                sleep=self.clock.sleep,
                metrics=self.runtime.telemetry_metrics,
            )
        )
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        stop = asyncio.Event()
        stack.callback(stop.set)  # runs before the task group waits: the refresher ends
        tasks.create_task(self._refresh_meters(stop), name="modbus-meters-refresh")
        log.info("modbus: polling %d meters", len(targets))

    async def _meter_targets(self) -> list[MeterTarget]:
        def load() -> tuple[list[MeterTarget], dict[str, str]]:
            with self.runtime.sessions() as session:
                return load_meter_targets(session)

        targets, problems = await asyncio.to_thread(load)
        for device_id, reason in problems.items():
            log.warning("modbus: %s cannot be polled: %s", device_id, reason)
        return targets

    async def _refresh_meters(self, stop: asyncio.Event) -> None:
        """Meters registered, changed or decommissioned since start join or leave the poll.

        A failed re-read keeps the current list; the next round tries again.
        """
        poller = self.poller
        assert poller is not None

        async def reload() -> None:
            poller.set_meters(await self._meter_targets())

        await repeat_every(
            self.options.meters_refresh_s, stop, reload, what="modbus meter list re-read"
        )
