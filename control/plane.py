"""The control plane: the command service and the step scheduler, started together.

``ControlPlane`` is what the composition root builds (``pharos serve`` / ``pharos
demo``) and what API routes find on the runtime: ``commands`` to send and track,
``scheduler`` to re-plan when programs, calendars, assignments or overrides change.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import TracebackType

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from control.commands.link import LinkOptions
from control.commands.service import CommandOptions, CommandService
from control.energy import EnergySettings
from control.program import Site
from control.schedule import ScheduleOptions, StepScheduler
from control.settings import ControlSettings
from devices.modbus_client import ModbusClientPool
from pharos_core.clock import Clock, SystemClock


class ControlPlane:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        engine: Engine,
        link: LinkOptions,
        site: Site,
        *,
        clock: Clock | None = None,
        modbus: ModbusClientPool | None = None,
        energy: EnergySettings | None = None,
        command_options: CommandOptions | None = None,
        schedule_options: ScheduleOptions | None = None,
    ) -> None:
        self.site = site
        self.energy = energy or EnergySettings()
        self.clock = clock or SystemClock()
        self.commands = CommandService(
            sessions, self.clock, link, modbus=modbus, options=command_options
        )
        self.scheduler = StepScheduler(
            sessions, engine, self.clock, self.commands, site, schedule_options
        )
        self._stack: AsyncExitStack | None = None

    @classmethod
    def from_settings(
        cls,
        sessions: sessionmaker[Session],
        engine: Engine,
        settings: ControlSettings,
        *,
        broker_host: str,
        broker_port: int,
        site: Site,
        modbus: ModbusClientPool | None = None,
        clock: Clock | None = None,
    ) -> ControlPlane:
        """The plane as ``pharos serve`` runs it, from control's settings section."""
        secret = settings.broker_password
        link = LinkOptions(
            broker_host,
            broker_port,
            settings.broker_username,
            secret.get_secret_value() if secret else None,
        )
        return cls(
            sessions,
            engine,
            link,
            site,
            clock=clock,
            modbus=modbus,
            energy=settings.energy,
            command_options=CommandOptions(
                rate_per_s=settings.rate_per_s,
                retry_initial_s=settings.retry_initial_s,
                retry_max_s=settings.retry_max_s,
            ),
            schedule_options=ScheduleOptions(
                command_ttl_s=settings.command_ttl_s,
                drift_grace_s=settings.drift_grace_s,
                max_corrections=settings.max_corrections,
            ),
        )

    async def __aenter__(self) -> ControlPlane:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.commands)
            await stack.enter_async_context(self.scheduler)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        await self._stack.__aexit__(exc_type, exc, tb)
