"""The device's next step on its link, from its fault plan (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from firmware_sim.mqtt.faults import LinkStep, link_step
from firmware_sim.mqtt.link import LinkState
from firmware_sim.wire_faults import DropStyle, LinkPlan

T0 = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)


def test_an_offline_fault_leaves_cleanly_or_cuts_as_its_style_says() -> None:
    clean = LinkPlan(T0, DropStyle.CLEAN, offline_at=T0 + timedelta(minutes=5))
    abrupt = LinkPlan(T0, DropStyle.ABRUPT, offline_at=T0 + timedelta(minutes=5))
    assert link_step(clean, LinkState.UP, T0, T0) is LinkStep.STAY
    assert link_step(clean, LinkState.UP, LATER, T0) is LinkStep.LEAVE
    assert link_step(abrupt, LinkState.UP, LATER, T0) is LinkStep.CUT
    assert link_step(abrupt, LinkState.DOWN, LATER, T0) is LinkStep.STAY_AWAY


def test_a_down_link_reconnects_only_once_the_back_off_allows() -> None:
    plan = LinkPlan(T0)
    retry_at = T0 + timedelta(seconds=30)
    assert link_step(plan, LinkState.DOWN, T0, retry_at) is LinkStep.STAY
    assert link_step(plan, LinkState.DOWN, retry_at, retry_at) is LinkStep.CONNECT
    assert link_step(plan, LinkState.CONNECTING, retry_at, retry_at) is LinkStep.STAY


def test_flapping_drops_every_other_period() -> None:
    plan = LinkPlan(T0, flap_period=timedelta(minutes=10))
    assert link_step(plan, LinkState.UP, T0 + timedelta(minutes=5), T0) is LinkStep.STAY
    assert link_step(plan, LinkState.UP, T0 + timedelta(minutes=15), T0) is LinkStep.CUT
    back = T0 + timedelta(minutes=25)
    assert link_step(plan, LinkState.DOWN, back, T0) is LinkStep.CONNECT
