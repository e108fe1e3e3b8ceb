"""The ingest's MQTT 5 session against a real Mosquitto run from the project's config."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from devices.wire import Channel, device_topic
from telemetry.ingest import InboundMessage, MqttConfigurationError, MqttOptions, MqttSubscriber
from tests.telemetry.ingest.conftest import Site, eventually, reading

pytestmark = pytest.mark.broker

TOPIC = device_topic("env-0001", Channel.TELEMETRY)
FILTERS = ["pharos/v1/dev/+/telemetry"]


class Received:
    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []

    def __call__(self, messages: list[InboundMessage]) -> None:
        self.messages.extend(messages)

    @property
    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]


@asynccontextmanager
async def subscribed(options: MqttOptions, received: Received) -> AsyncIterator[MqttSubscriber]:
    subscriber = MqttSubscriber(options, FILTERS, received)
    task = asyncio.create_task(subscriber.run())
    try:
        async with asyncio.timeout(10):
            await subscriber.wait_connected()
        yield subscriber
    finally:
        subscriber.stop()
        await task


async def test_unacknowledged_messages_come_again_in_the_next_session(site: Site) -> None:
    site.register("env-0001")
    options = site.mqtt_options()
    device = site.device("env-0001")
    first = Received()
    async with subscribed(options, first) as subscriber:
        await asyncio.to_thread(device.readings, "env-0001", range(10))
        assert await eventually(lambda: len(first.messages) == 10)
        acked = first.messages[:4]
        assert subscriber.ack(acked[0].connection, [m.mid for m in acked])
    second = Received()
    async with subscribed(options, second) as subscriber:
        assert await eventually(lambda: len(second.messages) == 6)
        assert second.payloads == first.payloads[4:]
        subscriber.ack(second.messages[0].connection, [m.mid for m in second.messages])
    third = Received()
    async with subscribed(options, third):
        await asyncio.to_thread(device.readings, "env-0001", range(10, 11))
        assert await eventually(lambda: len(third.messages) >= 1)
        assert third.payloads == [reading(10)], "acknowledged messages are gone"


async def test_a_large_receive_maximum_lets_thousands_wait_for_their_ack(site: Site) -> None:
    site.register("env-0001")
    received = Received()
    async with subscribed(site.mqtt_options(), received):
        await asyncio.to_thread(site.device("env-0001").readings, "env-0001", range(3000))
        assert await eventually(lambda: len(received.messages) == 3000)


async def test_a_small_receive_maximum_holds_the_rest_at_the_broker(site: Site) -> None:
    """What MQTT 3.1.1 (max_inflight_messages 100) would do to ingest's throughput.

    Mosquitto 2.0.11 refills the window more generously than MQTT 5 requires (one
    PUBACK let a whole new window through, measured), so ingest bounds its own memory
    by pausing reads, never by this window alone.
    """
    site.register("env-0001")
    received = Received()
    options = replace(site.mqtt_options(), receive_maximum=100)
    async with subscribed(options, received) as subscriber:
        await asyncio.to_thread(site.device("env-0001").readings, "env-0001", range(1000))
        assert await eventually(lambda: len(received.messages) >= 100)
        assert len(received.messages) == 100, "no more than the window before an ack"
        acked = 0

        def ack_what_came() -> bool:
            nonlocal acked
            fresh = received.messages[acked:]
            subscriber.ack(subscriber.connection, [m.mid for m in fresh])
            acked += len(fresh)
            return acked == 1000

        assert await eventually(ack_what_came)


async def test_a_refused_account_stops_with_a_configuration_error(site: Site) -> None:
    options = replace(site.mqtt_options(), password="wrong")
    subscriber = MqttSubscriber(options, FILTERS, Received())
    with pytest.raises(MqttConfigurationError, match="refused 'pharos-ingest'"):
        async with asyncio.timeout(10):
            await subscriber.run()


async def test_it_reconnects_after_a_broker_restart_and_keeps_its_session(site: Site) -> None:
    site.register("env-0001")
    received = Received()
    async with subscribed(site.mqtt_options(), received) as subscriber:
        first = subscriber.connection
        await asyncio.to_thread(site.broker.stop)
        await asyncio.to_thread(site.broker.start)
        assert await eventually(lambda: subscriber.is_connected and subscriber.connection > first)
        device = site.device("env-0001")
        await asyncio.to_thread(device.readings, "env-0001", range(3))
        assert await eventually(lambda: len(received.messages) == 3)
        assert not subscriber.ack(first, [received.messages[0].mid]), "an old connection's mid"
        assert subscriber.ack(subscriber.connection, [m.mid for m in received.messages])
