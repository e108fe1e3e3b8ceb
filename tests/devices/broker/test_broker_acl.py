"""The files Pharos writes, enforced by a real Mosquitto run from the project's config.

Absence is proven without waiting out a timeout: after the message that must not
arrive, a sentinel that must arrive is sent. Mosquitto queues a QoS 1 message to its
subscribers before it sends the publisher its PUBACK (which ``publish`` waits for),
and each subscriber's queue is delivered in order; so once the sentinel is in, the
forbidden message would have been too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devices.broker import BrokerAccessWriter, BrokerAccount, Role, hash_password, new_secret
from devices.wire.topics import Channel, device_topic, subscription
from pharos import broker_process
from pharos.broker_process import DEFAULT_BASE_CONF, MosquittoProcess
from tests.fixtures.broker import MqttProbe, Protocol, connect_refused, wait_until

pytestmark = pytest.mark.broker

BACKEND = "pharos-backend"
TELEMETRY_A = device_topic("dev-a", Channel.TELEMETRY)
TELEMETRY_B = device_topic("dev-b", Channel.TELEMETRY)
CMD_A = device_topic("dev-a", Channel.CMD)
CMD_B = device_topic("dev-b", Channel.CMD)
NOT_AUTHORIZED = 0x87


@dataclass
class Fleet:
    """Accounts written by ``BrokerAccessWriter`` into a running broker."""

    broker: MosquittoProcess
    roles: dict[str, Role]
    secrets: dict[str, str] = field(default_factory=dict)
    probes: list[MqttProbe] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.writer = BrokerAccessWriter(
            self.broker.password_file, self.broker.acl_file, self.broker.pid_file
        )
        self.secrets = {name: new_secret() for name in self.roles}

    def sync(self) -> None:
        """Write the accounts and wait until the broker has reloaded them (via SIGHUP)."""
        before = self.broker.reloads_seen()
        self.writer.sync(
            BrokerAccount(name, hash_password(self.secrets[name]), role)
            for name, role in self.roles.items()
        )
        self.broker.wait_for_reload(before)

    def probe(
        self,
        username: str,
        *,
        secret: str | None = None,
        client_id: str | None = None,
        protocol: Protocol = "5",
    ) -> MqttProbe:
        """A connected session as ``username`` (its client id is its username unless given)."""
        probe = MqttProbe(
            self.broker.port,
            username,
            secret if secret is not None else self.secrets[username],
            client_id=client_id if client_id is not None else username,
            protocol=protocol,
        )
        self.probes.append(probe)
        reason = probe.connect()
        assert not reason.is_failure, f"{username} refused: {reason}"
        return probe

    def refused(self, username: str, secret: str, protocol: Protocol = "5") -> bool:
        return connect_refused(self.broker.port, username, secret, protocol=protocol)


@pytest.fixture
def fleet(mosquitto: MosquittoProcess) -> Iterator[Fleet]:
    fleet = Fleet(mosquitto, {"dev-a": "device", "dev-b": "device", BACKEND: "service"})
    fleet.sync()
    yield fleet
    for probe in fleet.probes:
        probe.close()


def test_device_telemetry_reaches_the_backend(fleet: Fleet) -> None:
    backend = fleet.probe(BACKEND)
    assert not backend.subscribe(subscription(Channel.TELEMETRY))[0].is_failure
    dev_a = fleet.probe("dev-a")

    assert dev_a.publish(TELEMETRY_A, b'{"seq": 1}') == 0

    assert backend.wait_for_payload(b'{"seq": 1}', TELEMETRY_A)


def test_device_cannot_publish_as_another_device(fleet: Fleet) -> None:
    backend = fleet.probe(BACKEND)
    backend.subscribe(subscription(Channel.TELEMETRY))
    dev_a = fleet.probe("dev-a")

    assert dev_a.publish(TELEMETRY_B, b"forged") == NOT_AUTHORIZED  # MQTT 5 PUBACK says so
    dev_a.publish(TELEMETRY_A, b"sentinel")

    assert backend.wait_for_payload(b"sentinel")
    assert b"forged" not in backend.payloads()
    assert dev_a.connected  # a denied publish is dropped, the session stays


def test_device_cannot_read_another_devices_commands(fleet: Fleet) -> None:
    dev_b = fleet.probe("dev-b")
    dev_b.subscribe(CMD_B)
    dev_a = fleet.probe("dev-a")
    # Mosquitto 2.0 grants these subscriptions; its ACL checks each delivery instead.
    dev_a.subscribe("#")
    dev_a.subscribe(CMD_B)
    backend = fleet.probe(BACKEND)

    backend.publish(CMD_B, b"for b only")
    backend.publish(CMD_A, b"sentinel")

    assert dev_a.wait_for_payload(b"sentinel", CMD_A)
    assert dev_b.wait_for_payload(b"for b only", CMD_B)  # it was published, to b
    assert [m.topic for m in dev_a.messages] == [CMD_A]


def test_device_receives_its_own_commands_only_by_reading(fleet: Fleet) -> None:
    dev_a = fleet.probe("dev-a")
    dev_a.subscribe(CMD_A)
    dev_a.subscribe(TELEMETRY_A)  # write-only for the device: never delivered back
    backend = fleet.probe(BACKEND)

    dev_a.publish(TELEMETRY_A, b"own reading")
    backend.publish(CMD_A, b'{"action": "self_test"}')

    assert dev_a.wait_for_payload(b'{"action": "self_test"}', CMD_A)
    assert dev_a.payloads(TELEMETRY_A) == []


def test_another_devices_client_id_does_not_take_over_the_session(fleet: Fleet) -> None:
    dev_a = fleet.probe("dev-a")
    dev_a.subscribe(CMD_A)

    # use_username_as_clientid: the intruder's session is dev-b's, whatever id it sends.
    intruder = fleet.probe("dev-b", client_id="dev-a")
    intruder.subscribe(CMD_A)
    intruder.subscribe(CMD_B)
    backend = fleet.probe(BACKEND)
    backend.publish(CMD_A, b"still yours")
    backend.publish(CMD_B, b"sentinel")

    assert dev_a.wait_for_payload(b"still yours", CMD_A)
    assert dev_a.connected
    assert intruder.wait_for_payload(b"sentinel", CMD_B)
    assert intruder.payloads(CMD_A) == []


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_wrong_password_and_anonymous_are_refused(fleet: Fleet, protocol: Protocol) -> None:
    assert fleet.refused("dev-a", fleet.secrets["dev-b"], protocol)
    assert fleet.refused("dev-a", "", protocol)
    assert fleet.refused("nobody", "whatever", protocol)
    assert connect_refused(fleet.broker.port, None, None, protocol=protocol)
    assert not fleet.refused("dev-a", fleet.secrets["dev-a"], protocol)


def test_removed_device_is_disconnected_and_refused_after_reload(fleet: Fleet) -> None:
    dev_b = fleet.probe("dev-b")
    dev_a = fleet.probe("dev-a")
    old_secret = fleet.secrets["dev-b"]

    del fleet.roles["dev-b"]
    fleet.sync()

    assert wait_until(lambda: not dev_b.connected), "dev-b still connected after reload"
    assert fleet.refused("dev-b", old_secret)
    assert dev_a.connected  # unchanged accounts keep their sessions


def test_rotated_secret_replaces_the_old_one(fleet: Fleet) -> None:
    old_session = fleet.probe("dev-a")
    old_secret = fleet.secrets["dev-a"]

    fleet.secrets["dev-a"] = new_secret()
    fleet.sync()

    # The session opened with the old secret is dropped too: a leaked secret, once
    # rotated, loses its live connection as well as future logins.
    assert wait_until(lambda: not old_session.connected), "old session survived rotation"
    assert fleet.refused("dev-a", old_secret)
    assert not fleet.refused("dev-a", fleet.secrets["dev-a"])


def test_service_shared_subscription_receives(fleet: Fleet) -> None:
    workers = [fleet.probe(BACKEND)]
    shared = "$share/ingest/" + subscription(Channel.TELEMETRY)
    assert workers[0].subscribe(shared, qos=1)[0] == 1  # granted QoS 1
    dev_a = fleet.probe("dev-a")

    dev_a.publish(TELEMETRY_A, b"shared")

    # Delivered on the plain topic: the read check uses it, not the $share filter.
    assert workers[0].wait_for_payload(b"shared", TELEMETRY_A)


@pytest.mark.xfail(
    strict=True,
    reason="Mosquitto 2.0's acl_file never checks SUBSCRIBE: a device that joins the "
    "backend's share group takes its turn and the broker drops what is routed to it",
)
def test_device_joining_the_backend_share_group_costs_no_readings(fleet: Fleet) -> None:
    shared = "$share/ingest/" + subscription(Channel.TELEMETRY)
    backend = fleet.probe(BACKEND)
    backend.subscribe(shared)
    backend.subscribe(device_topic("dev-b", Channel.STATE))  # the sentinel's path
    squatter = fleet.probe("dev-a")
    squatter.subscribe(shared)
    dev_b = fleet.probe("dev-b")

    for seq in range(4):
        dev_b.publish(TELEMETRY_B, f"{seq}".encode())
    dev_b.publish(device_topic("dev-b", Channel.STATE), b"sentinel")

    assert backend.wait_for_payload(b"sentinel")
    assert backend.payloads(TELEMETRY_B) == [b"0", b"1", b"2", b"3"]


def test_test_broker_runs_the_production_config_on_one_port(mosquitto: MosquittoProcess) -> None:
    rewritten = ("listener", "password_file", "acl_file", "persistence_location", "pid_file")
    base = DEFAULT_BASE_CONF.read_text(encoding="utf-8").splitlines()
    rendered = mosquitto.config_file.read_text(encoding="utf-8").splitlines()
    kept = [line for line in base if not line.startswith((*rewritten, "log_dest"))]
    assert [line for line in rendered if line in kept] == kept  # verbatim, in order
    assert f"listener {mosquitto.port} 127.0.0.1" in rendered
    assert f"password_file {mosquitto.password_file}" in rendered
    assert f"acl_file {mosquitto.acl_file}" in rendered
    assert f"pid_file {mosquitto.pid_file}" in rendered
    assert f"log_dest file {mosquitto.log_file}" in rendered
    # A listener-scoped option before `listener` would open a default listener on 1883.
    opened = re.findall(r"Opening ipv[46] listen socket on port (\d+)", mosquitto.log_tail(100))
    assert opened == [str(mosquitto.port)]


def test_broker_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    bad_conf = tmp_path / "bad.conf"
    bad_conf.write_text("listener 1883\nno_such_option true\n", encoding="utf-8")
    broker = MosquittoProcess(tmp_path / "work", base_conf=bad_conf)
    with pytest.raises(RuntimeError, match="no_such_option"):
        broker.start()
    assert not broker.is_running()


def test_missing_mosquitto_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(broker_process, "_DEBIAN_PATH", Path("/nonexistent/mosquitto"))
    with pytest.raises(RuntimeError, match="apt-get install mosquitto mosquitto-clients"):
        broker_process.find_mosquitto()
