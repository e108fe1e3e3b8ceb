"""MqttSession against a real Mosquitto: PUBACK-tracked publishes, subscriptions, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from pharos.broker_process import MosquittoProcess
from pharos_core.mqtt import MqttAccount, MqttError, MqttSession, SessionOptions
from tests.firmware_sim.test_mqtt_device import Accounts, open_accounts

SERVICE = "pharos-core-test"
WAIT_S = 10.0


@pytest.fixture
def accounts(mosquitto: MosquittoProcess) -> Iterator[Accounts]:
    yield from open_accounts(mosquitto)


def account(accounts: Accounts, password: str | None = None) -> MqttAccount:
    accounts.add([], services=[SERVICE])
    broker = accounts.broker
    return MqttAccount(broker.host, broker.port, SERVICE, password or accounts.secrets[SERVICE])


async def test_publish_returns_once_the_broker_acknowledged_it(accounts: Accounts) -> None:
    session_account = account(accounts)
    probe = accounts.backend("pharos/v1/test/#")
    async with MqttSession(session_account, name="test") as session:
        await session.publish("pharos/v1/test/a", b"one")
        assert session.published == 1
        assert session.unacked == 0
        assert await asyncio.to_thread(probe.wait_for_payload, b"one", None, WAIT_S)


async def test_nowait_publishes_are_counted_until_their_pubacks(accounts: Accounts) -> None:
    session_account = account(accounts)
    probe = accounts.backend("pharos/v1/test/#")
    options = SessionOptions(max_inflight=10)
    async with MqttSession(session_account, options, name="test") as session:
        assert all(session.publish_nowait("pharos/v1/test/b", b"%d" % i) for i in range(500))
        assert session.unacked > 0  # none can be acknowledged before the loop turns
        async with asyncio.timeout(WAIT_S):
            await session.wait_below(1)
        assert session.published == 500
        got = await asyncio.to_thread(
            probe.wait_for, lambda: len(probe.payloads("pharos/v1/test/b")) == 500, WAIT_S
        )
        assert got


async def test_subscriptions_deliver_on_the_event_loop(accounts: Accounts) -> None:
    session_account = account(accounts)
    probe = accounts.backend("pharos/v1/none")
    received: list[tuple[str, bytes]] = []
    arrived = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_message(topic: str, payload: bytes) -> None:
        assert asyncio.get_running_loop() is loop  # never paho's thread
        received.append((topic, payload))
        arrived.set()

    session = MqttSession(
        session_account, subscriptions=["pharos/v1/in/#"], on_message=on_message, name="test"
    )
    async with session:
        assert not (await asyncio.to_thread(probe.publish, "pharos/v1/in/x", b"hello")).is_failure
        async with asyncio.timeout(WAIT_S):
            await arrived.wait()
    assert received == [("pharos/v1/in/x", b"hello")]


async def test_a_refused_login_raises_mqtt_error_naming_the_session(accounts: Accounts) -> None:
    wrong = account(accounts, password="not-the-secret")
    with pytest.raises(MqttError, match="rules: the broker refused the session"):
        async with MqttSession(wrong, SessionOptions(connect_timeout_s=WAIT_S), name="rules"):
            pass


async def test_an_unreachable_broker_raises_mqtt_error_with_the_address() -> None:
    nowhere = MqttAccount("127.0.0.1", 1, SERVICE, "secret")
    with pytest.raises(MqttError, match=r"cannot reach the broker at 127\.0\.0\.1:1: "):
        async with MqttSession(nowhere, name="rules"):
            pass
