"""The command service's MQTT link: publish on ``cmd``, hear ``cmd/ack`` and ``state``.

The session is the backend's one publishing session (``pharos_core.mqtt.MqttSession``:
MQTT 5, persistent, its own broker account such as ``pharos-commands``, QoS 1
publishes counted until the broker's PUBACK so the sender can hold back instead of
piling up in paho). This module adds only what is control's: the topics of the wire
contract, and every message received handed over as a typed ``Inbound`` value (on the
event loop), parsed there by the command service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from devices.wire import Channel
from devices.wire.commands import Command
from devices.wire.topics import device_topic, parse_device_topic, subscription
from pharos_core.mqtt import MqttAccount, MqttSession, SessionOptions


@dataclass(frozen=True, slots=True)
class LinkOptions:
    host: str
    port: int
    username: str
    password: str | None
    keepalive_s: int = 30
    session_expiry_s: int = 86_400
    connect_timeout_s: float = 10.0
    max_inflight: int = 1000


@dataclass(frozen=True, slots=True)
class Inbound:
    device_id: str
    channel: Channel  # CMD_ACK or STATE
    payload: bytes


class MqttCommandLink:
    """An async context manager: connected and subscribed inside, disconnected after."""

    def __init__(self, options: LinkOptions, on_inbound: Callable[[Inbound], None]) -> None:
        self.options = options
        self._on_inbound = on_inbound
        self.session = MqttSession(
            MqttAccount(options.host, options.port, options.username, options.password),
            SessionOptions(
                keepalive_s=options.keepalive_s,
                session_expiry_s=options.session_expiry_s,
                connect_timeout_s=options.connect_timeout_s,
                max_inflight=options.max_inflight,
            ),
            name="command link",
            subscriptions=[subscription(Channel.CMD_ACK), subscription(Channel.STATE)],
            on_message=self._on_message,
        )

    @property
    def unacked(self) -> int:
        return self.session.unacked

    async def __aenter__(self) -> MqttCommandLink:
        await self.session.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.session.__aexit__(exc_type, exc, tb)

    async def wait_below(self, limit: int) -> None:
        """Until fewer than ``limit`` publishes wait for the broker's acknowledgement."""
        await self.session.wait_below(limit)

    def publish(self, device_id: str, command: Command) -> bool:
        """Queue ``command`` for ``device_id`` (QoS 1); False if the client refused it."""
        topic = device_topic(device_id, Channel.CMD)
        return self.session.publish_nowait(topic, command.to_payload())

    def _on_message(self, topic_name: str, payload: bytes) -> None:
        topic = parse_device_topic(topic_name)
        if topic is None or topic.channel not in (Channel.CMD_ACK, Channel.STATE):
            return
        self._on_inbound(Inbound(topic.device_id, topic.channel, payload))
