"""Every long-lived service of one ``pharos serve`` (or demo) process, started in order.

``PharosServices`` starts, in one async exit stack (stopped in reverse):

1. storage: the point sink of ``TelemetryServices`` (InfluxDB writer + spool, or the
   embedded store), so the services below may write derived points into it;
2. control: the command service and the lighting scheduler (``runtime.control``), with
   the Modbus client pool shared with the poller (a coil write and a poll of the same
   gateway queue on one lock), and the ``energy`` reporter;
3. the ``fleet`` / ``devices`` statistics writer for the IOC boards;
4. rules: the engine on the live stream (``runtime.rules``), its alerts published on
   ``pharos/v1/alerts``, its commands through control's command service only (with
   ``--no-control`` they are not sent, and a warning says so);
5. the inputs: MQTT ingest (with rules as its observer) and the Modbus poller.

On the way out the inputs stop first (ingest stores and acknowledges what it
received), then rules, the reporters and control, and storage last.
Each service with a broker session of its own needs its account's secret in settings:
``broker.password`` (ingest), ``control.broker_password``, ``rules.broker_password``.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from control.energy_report import EnergyReporter
from control.plane import ControlPlane
from control.program import Site
from devices.modbus_client import ModbusClientPool
from pharos.api.routes.energy import store_measured_kwh
from pharos.runtime import Runtime
from pharos.services import (
    ServiceConfigurationError,
    TelemetryOptions,
    TelemetryServices,
)
from pharos_core.clock import Clock
from pharos_core.mqtt import MqttAccount, MqttSession, SessionOptions
from pharos_core.points import PointSink
from rules.actions import RegistryMaintenance, WebhookSender
from rules.alerts import AlertStore
from rules.catalog import DeviceCatalog
from rules.control_port import ControlCommands
from rules.derived import SunTimes
from rules.service import RulesService
from telemetry.deadletters import DeadLetterStore
from telemetry.fleet_stats import FleetStatsWriter
from telemetry.ingest import MqttOptions

log = logging.getLogger(__name__)
_RULES_QUEUED = 10_000  # alert events paho may hold while the broker is away


@dataclass(frozen=True, slots=True)
class ServiceSet:
    """Which services this process runs."""

    telemetry: TelemetryOptions = field(default_factory=TelemetryOptions)
    control: bool = True
    rules: bool = True
    fleet_stats: bool = True


class PharosServices:
    """See the module docstring; an async context manager."""

    def __init__(
        self,
        runtime: Runtime,
        services: ServiceSet | None = None,
        *,
        clock: Clock | None = None,
        ingest_mqtt: MqttOptions | None = None,
    ) -> None:
        self.runtime = runtime
        self.services = services or ServiceSet()
        # One clock: the services' and the API's (``runtime.clock``, read by ``ClockDep``).
        self.clock = clock or runtime.clock
        runtime.clock = self.clock
        self._check_secrets(ingest_mqtt is None)
        self._pool = ModbusClientPool()  # no I/O until a device is asked
        self.telemetry = TelemetryServices(
            runtime, self.services.telemetry, mqtt=ingest_mqtt, clock=self.clock, modbus=self._pool
        )
        self.control: ControlPlane | None = None
        self.rules: RulesService | None = None
        self.energy: EnergyReporter | None = None
        self._stack: AsyncExitStack | None = None

    def _check_secrets(self, ingest_from_settings: bool) -> None:
        """Every missing broker secret in one message, before anything starts."""
        settings = self.runtime.settings
        missing = []
        ingest = self.services.telemetry.ingest and ingest_from_settings
        if ingest and settings.broker.password is None:
            missing.append(("broker.password", settings.broker.username))
        if self.services.control and settings.control.broker_password is None:
            missing.append(("control.broker_password", settings.control.broker_username))
        if self.services.rules and settings.rules.broker_password is None:
            missing.append(("rules.broker_password", settings.rules.broker_username))
        if missing:
            raise ServiceConfigurationError(
                "; ".join(
                    f"{field} is not set: create the account with `pharos broker "
                    f"service-account {account}` and put its secret in "
                    f"PHAROS_{field.upper().replace('.', '__')}"
                    for field, account in missing
                )
            )

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self._pool.close)
            submit = await self.telemetry.open_sink(stack)
            if self.services.control:
                await self._start_control(stack, self._pool, submit)
            if self.services.fleet_stats:
                writer = FleetStatsWriter(
                    self.runtime.sessions, submit, clock=self.clock, reachable=self._reachable
                )
                await stack.enter_async_context(writer)
            if self.services.rules:
                await self._start_rules(stack, submit)
            await self.telemetry.start_inputs(stack)
            if self.services.telemetry.modbus:  # Modbus devices have no MQTT status
                self.runtime.modbus_reachable = self._reachable
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                await stack.__aexit__(exc_type, exc, tb)
        finally:
            self.runtime.control = None
            self.runtime.rules = None
            self.runtime.modbus_reachable = None

    def _reachable(self) -> set[str]:
        """Modbus devices answering now (they have no MQTT status of their own)."""
        poller = self.telemetry.poller
        if poller is None:
            return set()
        return {device_id for device_id, health in poller.health().items() if health.healthy}

    async def _start_control(
        self, stack: AsyncExitStack, pool: ModbusClientPool, submit: PointSink
    ) -> None:
        runtime, settings = self.runtime, self.runtime.settings
        site = Site(
            latitude=settings.site.latitude,
            longitude=settings.site.longitude,
            timezone=settings.site.timezone,
        )
        plane = ControlPlane.from_settings(
            runtime.sessions,
            runtime.engine,
            settings.control,
            broker_host=settings.broker.host,
            broker_port=settings.broker.port,
            site=site,
            modbus=pool,
            clock=self.clock,
        )
        self.control = await stack.enter_async_context(plane)
        runtime.control = plane
        if runtime.timeseries is not None:
            self.energy = await stack.enter_async_context(
                EnergyReporter(
                    runtime.sessions,
                    plane.clock,
                    site,
                    settings.control.energy,
                    measured_kwh=store_measured_kwh(runtime.timeseries),
                    submit=submit,
                )
            )

    async def _start_rules(self, stack: AsyncExitStack, submit: PointSink) -> None:
        runtime, settings = self.runtime, self.runtime.settings
        rules, broker = settings.rules, settings.broker
        assert rules.broker_password is not None  # checked at construction
        account = MqttAccount(
            broker.host,
            broker.port,
            rules.broker_username,
            rules.broker_password.get_secret_value(),
        )
        # Rules' own session publishes alert events; its commands go through control.
        publisher = await stack.enter_async_context(
            MqttSession(account, SessionOptions(max_queued=_RULES_QUEUED), name="rules")
        )
        catalog = await stack.enter_async_context(DeviceCatalog(runtime.sessions))
        control = None
        if self.control is not None:
            control = ControlCommands.of_plane(self.control, runtime.sessions)
        else:
            log.warning("rules run without control: their command actions are not sent")
        service = RulesService(
            settings=rules,
            catalog=catalog,
            alerts=AlertStore(runtime.sessions),
            clock=self.clock,
            sun=SunTimes(settings.site.latitude, settings.site.longitude, settings.site.timezone),
            publisher=publisher,
            control=control,
            webhooks=WebhookSender(
                DeadLetterStore(runtime.sessions),
                self.clock,
                attempts=rules.webhook_attempts,
                backoff_s=rules.webhook_backoff_s,
            ),
            maintenance=RegistryMaintenance(runtime.sessions),
            submit=submit,
        )
        self.rules = await stack.enter_async_context(service)
        runtime.rules = service
        self.telemetry.add_observer(service)
