"""Wire faults: their seeded decisions, and how each shows on a real broker.

On the wire: a malformed message is bad JSON, a wrong type or an unknown metric (and
nothing else is wrong with the others); a skewed clock shifts every ``ts``; a flapping
device goes up and down every period with the Last Will each time; ``offline_clean``
leaves with ``offline`` and DISCONNECT, ``offline_abrupt`` with the Last Will. The
same seed gives the same bytes on the wire.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta

import pytest

from devices.wire import (
    Channel,
    DeviceKind,
    DeviceState,
    PayloadError,
    parse_reading,
    validate_metrics,
)
from firmware_sim.faults import Fault, FaultConfig
from firmware_sim.mqtt.link import LinkState
from firmware_sim.wire_faults import (
    UNKNOWN_METRIC,
    WRONG_NUMBER,
    DropStyle,
    LinkPlan,
    Malformation,
    WireFaults,
)
from pharos.broker_process import MosquittoProcess
from pharos_core.clock import SteppedClock
from tests.firmware_sim.test_mqtt_device import (
    START,
    Accounts,
    FakeLamp,
    drive,
    on,
    open_accounts,
    running,
    wait_for,
)


@pytest.fixture
def accounts(mosquitto: MosquittoProcess) -> Iterator[Accounts]:
    yield from open_accounts(mosquitto)


def faults(*which: Fault, **knobs: float) -> FaultConfig:
    return FaultConfig(faults=frozenset(which), **knobs)


def wire(config: FaultConfig, seed: str = "1:dev") -> WireFaults:
    return WireFaults(config, random.Random(seed))


# --- decisions ------------------------------------------------------------------------------


def test_no_fault_means_always_linked_never_malformed_never_skewed() -> None:
    plain = wire(FaultConfig())
    plan = plain.link_plan(START)
    assert plan == LinkPlan(START)
    assert plan.wants_link(START + timedelta(days=30))
    assert plan.next_change(START) is None
    assert plain.device_time(START) == START
    assert [plain.next_malformation() for _ in range(100)] == [None] * 100
    assert plain.active == frozenset()


@pytest.mark.parametrize(
    ("fault", "drop"),
    [(Fault.OFFLINE_CLEAN, DropStyle.CLEAN), (Fault.OFFLINE_ABRUPT, DropStyle.ABRUPT)],
)
def test_offline_fault_leaves_once_between_half_and_one_and_a_half_periods(
    fault: Fault, drop: DropStyle
) -> None:
    plan = wire(faults(fault, flap_period_s=600)).link_plan(START)
    assert plan.drop is drop
    assert plan.offline_at is not None
    assert START + timedelta(seconds=300) <= plan.offline_at <= START + timedelta(seconds=900)
    assert plan.wants_link(plan.offline_at - timedelta(seconds=1))
    assert not plan.wants_link(plan.offline_at)
    assert not plan.wants_link(plan.offline_at + timedelta(days=1))
    assert plan.next_change(START) == plan.offline_at
    assert plan.next_change(plan.offline_at) is None
    # Seeded per device: another device leaves at another time, the same one at the same.
    assert wire(faults(fault, flap_period_s=600)).link_plan(START) == plan
    assert wire(faults(fault, flap_period_s=600), "1:other").link_plan(START) != plan


def test_flapping_alternates_every_period() -> None:
    plan = wire(faults(Fault.FLAPPING, flap_period_s=120)).link_plan(START)
    at = [START + timedelta(seconds=s) for s in (0, 119, 120, 239, 240, 360)]
    assert [plan.wants_link(t) for t in at] == [True, True, False, False, True, False]
    assert plan.next_change(START) == START + timedelta(seconds=120)
    assert plan.next_change(START + timedelta(seconds=130)) == START + timedelta(seconds=240)
    assert plan.drop is DropStyle.ABRUPT


def test_clock_skew_shifts_the_device_time_either_way() -> None:
    assert wire(faults(Fault.CLOCK_SKEW, skew_s=600)).device_time(START) == START + timedelta(
        minutes=10
    )
    assert wire(faults(Fault.CLOCK_SKEW, skew_s=-30)).device_time(START) == START - timedelta(
        seconds=30
    )


def test_malformation_rate_and_mix_follow_the_probability_and_the_seed() -> None:
    config = faults(Fault.MALFORMED, malformed_probability=0.2)
    faulty = wire(config)
    outcomes = [faulty.next_malformation() for _ in range(2000)]
    hits = [o for o in outcomes if o is not None]
    assert 0.15 < len(hits) / len(outcomes) < 0.25
    assert set(hits) == set(Malformation)
    again = wire(config)
    assert [again.next_malformation() for _ in range(2000)] == outcomes
    other = wire(config, "2:dev")
    assert [other.next_malformation() for _ in range(2000)] != outcomes


def test_each_malformation_is_caught_by_the_wire_models() -> None:
    faulty = wire(faults(Fault.MALFORMED))
    metrics = {"power_w": 120.0, "lamp_on": True, "dim_level": 100.0}

    wrong = faulty.malform_metrics(metrics, Malformation.WRONG_TYPE)
    good, errors = validate_metrics(DeviceKind.STREETLIGHT, wrong)
    assert len(errors) == 1 and len(good) == 2
    assert wrong[errors[0].metric] in (WRONG_NUMBER, "yes")

    unknown = faulty.malform_metrics(metrics, Malformation.UNKNOWN_METRIC)
    good, errors = validate_metrics(DeviceKind.STREETLIGHT, unknown)
    assert [e.metric for e in errors] == [UNKNOWN_METRIC] and good == metrics

    payload = b'{"ts": "2026-03-20T17:00:00+07:00", "seq": 1, "metrics": {"power_w": 1.0}}'
    with pytest.raises(PayloadError, match="not valid JSON"):
        parse_reading(WireFaults.malform_payload(payload, Malformation.BAD_JSON), "dev")
    assert WireFaults.malform_payload(payload, Malformation.WRONG_TYPE) == payload
    assert metrics == {"power_w": 120.0, "lamp_on": True, "dim_level": 100.0}  # not mutated


# --- on the wire ----------------------------------------------------------------------------


def classify(payload: bytes, device_id: str) -> Malformation | None:
    """What is wrong with a telemetry message, as the backend would find out."""
    try:
        [reading] = parse_reading(payload, device_id)
    except PayloadError:
        return Malformation.BAD_JSON
    _, errors = validate_metrics(DeviceKind.STREETLIGHT, reading.metrics)
    if not errors:
        return None
    assert len(errors) == 1, errors
    return (
        Malformation.UNKNOWN_METRIC
        if errors[0].metric == UNKNOWN_METRIC
        else Malformation.WRONG_TYPE
    )


@pytest.mark.broker
async def test_malformed_messages_show_each_kind_and_leave_the_others_valid(
    accounts: Accounts,
) -> None:
    clock = SteppedClock(START)
    backend = accounts.backend()
    lamp = FakeLamp("sl-fault-malformed")
    config = {lamp.device_id: faults(Fault.MALFORMED, malformed_probability=0.5)}

    async with running(accounts, [lamp], clock, faults=config) as (hub, _):
        await drive(hub, clock, 60 * 59)
        assert await wait_for(
            backend, lambda: len(on(backend, lamp.device_id, Channel.TELEMETRY)) == 60
        )

    kinds = [
        classify(m.payload, lamp.device_id) for m in on(backend, lamp.device_id, Channel.TELEMETRY)
    ]
    assert set(kinds) == {None, *Malformation}
    assert 15 <= sum(k is not None for k in kinds) <= 45
    assert hub.counters.readings_sent == 60


@pytest.mark.broker
async def test_skewed_clock_shifts_reading_and_state_times(accounts: Accounts) -> None:
    clock = SteppedClock(START)
    backend = accounts.backend()
    lamp = FakeLamp("sl-fault-skew")
    config = {lamp.device_id: faults(Fault.CLOCK_SKEW, skew_s=-900)}

    async with running(accounts, [lamp], clock, faults=config) as (hub, _):
        await drive(hub, clock, 120)
        assert await wait_for(
            backend, lambda: len(on(backend, lamp.device_id, Channel.TELEMETRY)) == 3
        )

    skew = timedelta(seconds=-900)
    times = [
        parse_reading(m.payload, lamp.device_id)[0].ts
        for m in on(backend, lamp.device_id, Channel.TELEMETRY)
    ]
    assert times == [START + skew + timedelta(seconds=s) for s in (0, 60, 120)]
    state = DeviceState.parse(on(backend, lamp.device_id, Channel.STATE)[0].payload)
    assert state.ts == START + skew


@pytest.mark.broker
async def test_flapping_device_drops_with_the_last_will_and_comes_back(accounts: Accounts) -> None:
    clock = SteppedClock(START)
    backend = accounts.backend()
    lamp = FakeLamp("sl-fault-flap", interval_s=30)
    config = {lamp.device_id: faults(Fault.FLAPPING, flap_period_s=120)}

    async with running(accounts, [lamp], clock, faults=config) as (hub, [device]):
        await drive(hub, clock, 500)  # up 0-120, down 120-240, up 240-360, down 360-480, up
        assert await wait_for(
            backend, lambda: len(on(backend, lamp.device_id, Channel.STATUS)) == 5
        )
        assert device.link is LinkState.UP

    status = [m.payload for m in on(backend, lamp.device_id, Channel.STATUS)][:5]
    assert status == [b"online", b"offline", b"online", b"offline", b"online"]
    assert (
        accounts.broker.log_tail(300).count(f"Client {lamp.device_id} closed its connection.") == 2
    )
    seconds = [
        (parse_reading(m.payload, lamp.device_id)[0].ts - START).total_seconds()  # type: ignore[operator]
        for m in on(backend, lamp.device_id, Channel.TELEMETRY)
    ]
    assert seconds and all(int(s // 120) % 2 == 0 for s in seconds)  # only while up
    assert hub.counters.readings_dropped > 0  # readings taken while down are lost


@pytest.mark.broker
@pytest.mark.parametrize(
    ("fault", "log_line"),
    [(Fault.OFFLINE_CLEAN, "disconnected."), (Fault.OFFLINE_ABRUPT, "closed its connection.")],
)
async def test_offline_faults_leave_clean_or_abrupt(
    accounts: Accounts, fault: Fault, log_line: str
) -> None:
    clock = SteppedClock(START)
    backend = accounts.backend()
    lamp = FakeLamp(f"sl-fault-{fault.value.replace('_', '-')}")
    config = {lamp.device_id: faults(fault, flap_period_s=300)}

    async with running(accounts, [lamp], clock, faults=config) as (hub, [device]):
        await drive(hub, clock, 3600)
        assert await wait_for(
            backend, lambda: len(on(backend, lamp.device_id, Channel.STATUS)) == 2
        )
        assert device.link is LinkState.DOWN
        sent = hub.counters.readings_sent

    assert [m.payload for m in on(backend, lamp.device_id, Channel.STATUS)] == [
        b"online",
        b"offline",
    ]
    assert f"Client {lamp.device_id} {log_line}" in accounts.broker.log_tail(300)
    assert 3 <= sent <= 8  # up 150-450 s at one reading a minute, then nothing for the hour
    assert hub.counters.readings_dropped == 61 - sent


@pytest.mark.broker
async def test_same_seed_same_bytes_on_the_wire(accounts: Accounts) -> None:
    faulty = faults(
        Fault.MALFORMED,
        Fault.CLOCK_SKEW,
        Fault.FLAPPING,
        malformed_probability=0.3,
        flap_period_s=300,
        skew_s=42,
    )

    async def telemetry(seed: int) -> list[bytes]:
        clock = SteppedClock(START)
        backend = accounts.backend()
        lamp = FakeLamp("sl-fault-seed")
        async with running(accounts, [lamp], clock, faults={lamp.device_id: faulty}, seed=seed) as (
            hub,
            _,
        ):
            await drive(hub, clock, 1800)
            sent = hub.counters.readings_sent
        assert await wait_for(
            backend, lambda: len(on(backend, lamp.device_id, Channel.TELEMETRY)) == sent
        )
        backend.close()
        return [m.payload for m in on(backend, lamp.device_id, Channel.TELEMETRY)]

    first = await telemetry(seed=11)
    assert len(first) >= 10
    assert await telemetry(seed=11) == first
    assert await telemetry(seed=12) != first
