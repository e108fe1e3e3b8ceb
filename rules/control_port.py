"""``ControlPort`` through ``control/``: commands stored, acknowledged and retried.

``ControlCommands`` is what the composition root passes to ``RulesService`` when the
control plane runs (``runtime.control``): an ``override`` becomes a control override
per lamp (so the step scheduler does not set the lamp back at its next step) and the
lamp's own timed ``override`` command; any other action is a tracked command per
device. It is rules' only command path: control's acknowledgement tracking, retries and
expiry apply to every command a rule sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from control.commands.model import CommandRequest
from control.commands.service import CommandService
from control.plan import Target, TargetType
from control.plane import ControlPlane
from control.store import add_override
from devices.registry.db import transaction
from pharos_core.clock import Clock

ACTOR = "rules"


class ControlCommands:
    def __init__(
        self,
        commands: CommandService,
        sessions: sessionmaker[Session],
        clock: Clock,
        *,
        plan_changed: Callable[[], None] | None = None,
        ttl_s: int = 600,
    ) -> None:
        self._commands = commands
        self._sessions = sessions
        self._clock = clock
        self._plan_changed = plan_changed
        self._ttl_s = ttl_s

    @classmethod
    def of_plane(cls, plane: ControlPlane, sessions: sessionmaker[Session]) -> ControlCommands:
        """The port over a running control plane (its scheduler re-plans on overrides)."""
        return cls(plane.commands, sessions, plane.clock, plan_changed=plane.scheduler.plan_changed)

    async def send_command(
        self, device_ids: Sequence[str], action: str, params: dict[str, Any], *, reason: str
    ) -> int:
        if action == "override" and params.get("minutes"):
            await asyncio.to_thread(self._store_overrides, device_ids, params, reason)
        for device_id in device_ids:
            request = CommandRequest(
                action=action,
                params=params,
                target_type=TargetType.DEVICE,
                target_id=device_id,
                ttl_s=self._ttl_s,
            )
            await self._commands.submit(request, ACTOR, source="rules")
        if action == "override" and self._plan_changed is not None:
            self._plan_changed()
        return len(device_ids)

    def _store_overrides(
        self, device_ids: Sequence[str], params: dict[str, Any], reason: str
    ) -> None:
        now = self._clock.now()
        until = now + timedelta(minutes=float(params["minutes"]))
        level = float(params["level"])
        with transaction(self._sessions) as session:
            for device_id in device_ids:
                target = Target(TargetType.DEVICE, device_id)
                add_override(session, target, level, now, until, ACTOR, reason)
