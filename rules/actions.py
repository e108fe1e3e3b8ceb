"""Actions of an alert: commands and overrides to devices, publishing, webhooks, maintenance.

``ControlPort`` is what rules needs of ``control/`` (commands with acknowledgement,
overrides, the lamp's expected level): ``rules.control_port.ControlCommands``, over
control's command service, is the one command path (without the control plane a rule's
command actions are not sent, and the composition says so). Alert events are published
through a ``Publisher``: rules' own ``pharos_core.mqtt.MqttSession``. Webhooks are
HTTP POSTs (httpx) retried with doubling waits; one that keeps failing becomes a dead
letter (source ``webhook``) with the reason. ``MaintenancePort`` puts a failed lamp
into ``maintenance`` and opens a work item for the technicians.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import httpx
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.models import LifecycleState
from devices.registry.service import ConflictError, NotFoundError, registry_session
from pharos_core.clock import Clock
from telemetry.points import DeadLetter, DeadLetterSink

log = logging.getLogger(__name__)
WEBHOOK_SOURCE = "webhook"


class ControlPort(Protocol):
    """What rules needs of ``control/`` (``rules.control_port.ControlCommands``)."""

    async def send_command(
        self, device_ids: Sequence[str], action: str, params: dict[str, Any], *, reason: str
    ) -> int:
        """Send ``action`` to each device; how many commands went out."""
        ...


class Publisher(Protocol):
    """Where alert events go: ``pharos_core.mqtt.MqttSession.publish`` (returns once the
    broker acknowledged the message)."""

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None: ...


class WebhookSender:
    """POSTs JSON with retries; a hook that keeps failing is dead-lettered with the reason."""

    def __init__(
        self,
        dead_letters: DeadLetterSink,
        clock: Clock,
        *,
        attempts: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
    ) -> None:
        self._dead_letters = dead_letters
        self._clock = clock
        self._attempts = attempts
        self._backoff = backoff_s
        self._timeout = timeout_s
        self.delivered = 0
        self.dead_lettered = 0

    async def post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> bool:
        payload = json.dumps(body, ensure_ascii=False).encode()
        reason = "not tried"
        delay = self._backoff
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            for attempt in range(1, self._attempts + 1):
                try:
                    response = await client.post(
                        url,
                        content=payload,
                        headers={"content-type": "application/json", **headers},
                    )
                    if response.is_success:
                        self.delivered += 1
                        return True
                    reason = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                if attempt < self._attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
        letter = DeadLetter(
            received_at=self._clock.now(),
            source=WEBHOOK_SOURCE,
            reason=f"webhook: {url} failed {self._attempts} times; last: {reason}",
            device_id=_device_of(body),
            topic=url,
            payload=payload,
            details={"class": "webhook", "url": url},
        )
        await self._dead_letters.put([letter])
        self.dead_lettered += 1
        return False


def _device_of(body: dict[str, Any]) -> str | None:
    alert = body.get("alert")
    if isinstance(alert, dict):
        device = alert.get("device_id")
        return device if isinstance(device, str) else None
    return None


class MaintenancePort(Protocol):
    async def to_maintenance(self, device_id: str, note: str) -> bool: ...


class RegistryMaintenance:
    """Moves an ``in_service`` device to ``maintenance`` in the registry (audited)."""

    def __init__(self, sessions: sessionmaker[Session], actor: str = "rules") -> None:
        self._sessions = sessions
        self._actor = actor

    async def to_maintenance(self, device_id: str, note: str) -> bool:
        return await asyncio.to_thread(self._transition, device_id, note)

    def _transition(self, device_id: str, note: str) -> bool:
        try:
            with registry_session(self._sessions, self._actor) as registry:
                device = registry.get_device(device_id)
                if device.state != LifecycleState.IN_SERVICE.value:
                    return False
                registry.transition(device_id, LifecycleState.MAINTENANCE, note)
                return True
        except (NotFoundError, ConflictError) as exc:
            log.warning("rules: %s not put into maintenance: %s", device_id, exc)
            return False
